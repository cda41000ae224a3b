//! Label values from closed sets: what an HTTP request's method, route and status, or a gRPC
//! call's method, are labelled with. Anything outside the set is labelled `other`, so a client
//! cannot mint series.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use opentelemetry::{StringValue, Value};

/// The label of any value outside a closed set.
pub const OTHER: &str = "other";

/// The `code` label of a request whose client went away before it was answered.
pub const CANCELLED: &str = "cancelled";

/// The most distinct gRPC methods labelled by name: more than the server has; past it (it
/// cannot be reached, since only methods the server answered are named) calls are `other`.
pub const GRPC_METHODS_MAX: usize = 128;

/// An HTTP method's label.
pub fn http_method(method: &hyper::Method) -> &'static str {
    match *method {
        hyper::Method::GET => "GET",
        hyper::Method::PUT => "PUT",
        hyper::Method::POST => "POST",
        hyper::Method::DELETE => "DELETE",
        hyper::Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

/// The route template a path matches (`/keys/{key}` for every key), or `other` for a path
/// no route serves.
pub fn route_template(path: &str) -> &'static str {
    if path.starts_with("/keys/") {
        return "/keys/{key}";
    }
    if let Some(rest) = path.strip_prefix("/auth/") {
        let segments: Vec<&str> = rest.split('/').collect();
        return match segments.as_slice() {
            ["login"] => "/auth/login",
            ["status"] => "/auth/status",
            ["enable"] => "/auth/enable",
            ["disable"] => "/auth/disable",
            ["users"] => "/auth/users",
            ["users", _] => "/auth/users/{name}",
            ["users", _, "password"] => "/auth/users/{name}/password",
            ["roles"] => "/auth/roles",
            ["roles", _] => "/auth/roles/{name}",
            ["apikeys"] => "/auth/apikeys",
            ["apikeys", _] => "/auth/apikeys/{id}",
            _ => OTHER,
        };
    }
    match path {
        "/keys" => "/keys",
        "/sessions" => "/sessions",
        "/health" => "/health",
        "/ready" => "/ready",
        "/status" => "/status",
        "/metrics" => "/metrics",
        "/cluster/nodes" => "/cluster/nodes",
        "/cluster/leader" => "/cluster/leader",
        "/cluster/id" => "/cluster/id",
        "/cluster/join" => "/cluster/join",
        "/cluster/remove" => "/cluster/remove",
        "/cluster/transfer-leader" => "/cluster/transfer-leader",
        "/admin/snapshot" => "/admin/snapshot",
        proto::rest::backup::BACKUP_PATH => proto::rest::backup::BACKUP_PATH,
        _ => OTHER,
    }
}

/// The status label of a request whose client went away before it was answered (nginx's
/// number for it): the server never sends it.
pub const CLIENT_GONE: u16 = 499;

/// An HTTP status code's label: the codes the server answers with (every error code's, as
/// a test checks, and the successes), each as its number, and [`CLIENT_GONE`].
pub fn http_status(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        307 => "307",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        410 => "410",
        411 => "411",
        413 => "413",
        415 => "415",
        429 => "429",
        431 => "431",
        499 => "499",
        500 => "500",
        503 => "503",
        504 => "504",
        507 => "507",
        _ => OTHER,
    }
}

/// A gRPC method's label value (`/raftkv.v1.KV/Put`), shared rather than copied per call.
#[derive(Clone)]
pub(crate) struct GrpcMethod(pub(crate) Value);

/// The names of the gRPC methods the server has answered, interned: a name enters only once
/// a call to it was answered with something other than `UNIMPLEMENTED` (so it is one of the
/// server's own), and each call then labels with a shared copy.
#[derive(Default)]
pub(crate) struct GrpcMethods(RwLock<HashMap<String, Value>>);

const METHODS_LOCK: &str = "the gRPC method table lock is never held across a panic";

impl GrpcMethods {
    /// The label of a call to `path` whose client went away before it was answered: its name
    /// only when an answered call already made it one of the server's methods.
    pub(crate) fn known(&self, path: &str) -> GrpcMethod {
        match self.0.read().expect(METHODS_LOCK).get(path) {
            Some(value) => GrpcMethod(value.clone()),
            None => GrpcMethod(Value::from(OTHER)),
        }
    }

    /// The label of a call to `path` answered with `code`.
    pub(crate) fn label(&self, path: &str, code: tonic::Code) -> GrpcMethod {
        if code == tonic::Code::Unimplemented {
            return GrpcMethod(Value::from(OTHER));
        }
        if let Some(value) = self.0.read().expect(METHODS_LOCK).get(path) {
            return GrpcMethod(value.clone());
        }
        let mut table = self.0.write().expect(METHODS_LOCK);
        if table.len() >= GRPC_METHODS_MAX {
            return GrpcMethod(Value::from(OTHER));
        }
        let value = Value::String(StringValue::from(Arc::<str>::from(path)));
        table.insert(path.to_string(), value.clone());
        GrpcMethod(value)
    }
}

/// A gRPC status code's name, as `grpc-status` numbers it.
pub fn grpc_code(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_becomes_a_label() {
        assert_eq!(route_template("/keys/user%2F42"), "/keys/{key}");
        assert_eq!(route_template("/keys/a/b/c"), "/keys/{key}");
        assert_eq!(
            route_template("/auth/users/alice/password"),
            "/auth/users/{name}/password"
        );
        assert_eq!(route_template("/no/such/route"), OTHER);
        assert_eq!(route_template("/auth/users/a/b/c"), OTHER);
        assert_eq!(http_status(599), OTHER);
    }

    #[test]
    fn every_status_the_server_answers_with_is_its_own_label() {
        for code in proto::rest::ErrorCode::ALL {
            let status = code.http_status();
            assert_eq!(http_status(status), status.to_string(), "{code:?}");
        }
        for status in [200, 201, 204, CLIENT_GONE] {
            assert_eq!(http_status(status), status.to_string());
        }
    }

    #[test]
    fn only_methods_the_server_answered_are_named() {
        let methods = GrpcMethods::default();
        let label = |p, c| match methods.label(p, c).0 {
            Value::String(s) => s.as_str().to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(label("/x.Y/Z", tonic::Code::Unimplemented), OTHER);
        assert_eq!(
            label("/raftkv.v1.KV/Get", tonic::Code::NotFound),
            "/raftkv.v1.KV/Get"
        );
        assert_eq!(methods.0.read().unwrap().len(), 1);
    }
}
