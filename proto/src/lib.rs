//! RaftKV's wire contract, written once for the server, the client and the tests.
//!
//! - [`pb`]: the gRPC API, package `raftkv.v1`, generated from `proto/raftkv.proto` (messages,
//!   `KV`, `Cluster` and `Maintenance` servers and clients), with its codec ([`codec`]: a
//!   malformed message is `INVALID_ARGUMENT`) and metadata keys ([`metadata`]).
//! - [`rest`]: the REST API (docs/api.md) as Rust types: the answers' JSON bodies, the header
//!   names, the query values, and the byte encodings that carry any key through a URL and
//!   through JSON.
//!
//! Invariant: no JSON shape, header name or encoding of either API is spelled outside this
//! crate; the server builds its answers from these types and the client parses them into the
//! same ones, so the two cannot drift apart.

#![warn(missing_docs)]

/// The gRPC API, generated from `proto/raftkv.proto` (see its comments for each field).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("raftkv.v1");

    /// The encoded descriptor set of `raftkv.proto`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/raftkv_descriptor.bin"));
}

pub mod codec;
pub mod h2body;
pub mod metadata;
pub mod rest;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::pb;

    #[test]
    fn a_put_with_a_condition_round_trips_through_the_wire_format() {
        // Given a compare-and-swap put on a binary key, with a session,
        let put = pb::PutRequest {
            key: bytes::Bytes::from_static(b"k\xff"),
            value: bytes::Bytes::from_static(b"v"),
            condition: Some(pb::put_request::Condition::PrevVersion(0)),
            session: Some(pb::Session {
                client_id: 7,
                sequence: 1,
            }),
        };
        // when it is encoded and decoded, then it is the same request: a condition of
        // version 0 ("must not exist") survives, distinct from no condition at all.
        let decoded = pb::PutRequest::decode(put.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, put);
        let plain = pb::PutRequest {
            condition: None,
            ..put
        };
        let decoded = pb::PutRequest::decode(plain.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.condition, None);
    }

    #[test]
    fn the_descriptor_set_names_the_five_services_for_reflection() {
        // Given the descriptor set kept for server reflection,
        let set = service_names(pb::FILE_DESCRIPTOR_SET);
        // then it describes package raftkv.v1 with its KVCalls, KV, Cluster, Maintenance and
        // Auth services.
        assert_eq!(set, ["KVCalls", "KV", "Cluster", "Maintenance", "Auth"]);
    }

    /// The service names in an encoded `FileDescriptorSet`, read with prost's own decoder
    /// over the descriptor's field numbers (file = 1; in a file: package = 2, service = 6;
    /// in a service: name = 1), so the test needs no descriptor types.
    fn service_names(encoded: &[u8]) -> Vec<String> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Set {
            #[prost(message, repeated, tag = "1")]
            file: Vec<File>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct File {
            #[prost(string, tag = "2")]
            package: String,
            #[prost(message, repeated, tag = "6")]
            service: Vec<Service>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Service {
            #[prost(string, tag = "1")]
            name: String,
        }
        let set = Set::decode(encoded).expect("the build wrote a valid descriptor set");
        set.file
            .into_iter()
            .filter(|f| f.package == "raftkv.v1")
            .flat_map(|f| f.service.into_iter().map(|s| s.name))
            .collect()
    }
}
