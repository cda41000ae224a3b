//! Errors over gRPC: an [`ApiError`] as a `tonic::Status` whose code is the REST code's gRPC
//! twin ([`proto::rest::ErrorCode::grpc`], docs/api.md's table), with a
//! `google.rpc.ErrorInfo` in the details (reason: the REST code; metadata: the REST body's
//! extra field) and, on a `not_leader` refusal, the leader's addresses in the metadata.

use std::collections::HashMap;

use proto::metadata;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::service::ApiError;

/// The status for an error (see the module).
pub fn status_of(e: ApiError) -> Status {
    let code = Code::from_i32(e.code.grpc() as i32);
    let mut info = HashMap::new();
    if let Some((field, value)) = &e.extra {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        info.insert(field.to_string(), text);
    }
    let mut headers = MetadataMap::new();
    if let Some(leader) = &e.leader {
        let mut put = |key: &'static str, value: &str| {
            if let Ok(value) = MetadataValue::try_from(value) {
                headers.insert(key, value);
            }
        };
        put(metadata::LEADER, &leader.name);
        put(metadata::LEADER_HTTP, &leader.http_addr);
        if let Some(grpc) = &leader.grpc_addr {
            put(metadata::LEADER_GRPC, grpc);
        }
    }
    Status::with_error_details_and_metadata(
        code,
        e.message,
        ErrorDetails::with_error_info(e.code.as_str(), metadata::ERROR_DOMAIN, info),
        headers,
    )
}

/// Whether a status came from a RaftKV node (it carries our `ErrorInfo`), as opposed to the
/// gRPC machinery (a broken connection, a deadline).
pub fn is_ours(status: &Status) -> bool {
    status
        .get_details_error_info()
        .is_some_and(|info| info.domain == metadata::ERROR_DOMAIN)
}
