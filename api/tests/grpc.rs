//! The gRPC API (`raftkv.v1`) against real `raftkv` processes: the twins of the REST tests
//! (keys, compare-and-swap, sessions, stale reads, forwarding, cluster operations, errors,
//! a 100,000-key listing), bad input (oversized and malformed messages, unknown fields, a
//! client that never reads its stream), the standard health and reflection services, and
//! agreement between the REST and gRPC answers for one state.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Proc, http, leader_of, ready, runtime, three_nodes, wait_until};
use proto::metadata;
use proto::pb::{
    self, cluster_client::ClusterClient, kv_client::KvClient, maintenance_client::MaintenanceClient,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

async fn channel(p: &Proc) -> Channel {
    Channel::from_shared(format!("http://{}", p.grpc))
        .expect("a valid URI")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {}'s gRPC at {}: {e}", p.name, p.grpc))
}

async fn kv(p: &Proc) -> KvClient<Channel> {
    KvClient::new(channel(p).await)
}

/// The REST code a status carries in its `ErrorInfo`, and the info's metadata.
fn reason(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, metadata::ERROR_DOMAIN);
    (info.reason, info.metadata)
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        condition: None,
        session: None,
    }
}

fn get(key: &str, consistency: pb::Consistency) -> pb::GetRequest {
    pb::GetRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        consistency: consistency as i32,
    }
}

#[test]
fn keys_compare_and_swap_and_errors_over_grpc_on_one_node() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        let mut kv = kv(&node).await;
        // Given a key written twice,
        kv.put(put("k", "v1")).await.expect("put");
        let second = kv.put(put("k", "v2")).await.expect("put").into_inner();
        assert_eq!(second.version, 2);
        // when it is read, then it has its value, its version and its revisions.
        let got = kv
            .get(get("k", pb::Consistency::Linearizable))
            .await
            .expect("get")
            .into_inner();
        let found = got.kv.expect("a key value");
        assert_eq!(
            (found.value.as_ref(), found.version, found.mod_revision),
            (&b"v2"[..], 2, second.revision)
        );
        assert!(got.stale.is_none(), "a linearizable read is not stale");

        // A compare-and-swap on the right version succeeds; on a wrong one it is
        // FAILED_PRECONDITION with the current version in the details.
        let mut cas = put("k", "v3");
        cas.condition = Some(pb::put_request::Condition::PrevVersion(2));
        assert_eq!(
            kv.put(cas.clone()).await.expect("cas").into_inner().version,
            3
        );
        let refused = kv.put(cas).await.expect_err("a stale version");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        let (code, extra) = reason(&refused);
        assert_eq!(code, "cas_failed");
        assert_eq!(extra.get("current_version").map(String::as_str), Some("3"));
        // prev_version 0: the key must not exist; prev_value: the value must match.
        let mut create = put("fresh", "x");
        create.condition = Some(pb::put_request::Condition::PrevVersion(0));
        assert_eq!(
            kv.put(create.clone())
                .await
                .expect("create")
                .into_inner()
                .version,
            1
        );
        assert_eq!(
            kv.put(create).await.expect_err("exists").code(),
            Code::FailedPrecondition
        );
        let mut swap = put("fresh", "y");
        swap.condition = Some(pb::put_request::Condition::PrevValue(Bytes::from_static(
            b"x",
        )));
        kv.put(swap.clone()).await.expect("value matches");
        assert_eq!(
            kv.put(swap).await.expect_err("value moved on").code(),
            Code::FailedPrecondition
        );

        // A delete, then the key is NOT_FOUND.
        let deleted = kv
            .delete(pb::DeleteRequest {
                key: Bytes::from_static(b"k"),
                session: None,
            })
            .await
            .expect("delete")
            .into_inner();
        assert_eq!(deleted.deleted, 1);
        let missing = kv
            .get(get("k", pb::Consistency::Linearizable))
            .await
            .expect_err("deleted");
        assert_eq!(
            (missing.code(), reason(&missing).0.as_str()),
            (Code::NotFound, "not_found")
        );

        // Bad input: each a clear status with the REST code, nothing applied.
        let empty = kv.put(put("", "v")).await.expect_err("empty key");
        assert_eq!(
            (empty.code(), reason(&empty).0.as_str()),
            (Code::InvalidArgument, "bad_request")
        );
        let long_key = "k".repeat(kv::KEY_BYTES_MAX + 1);
        let refused = kv.put(put(&long_key, "v")).await.expect_err("key too long");
        assert_eq!(
            (refused.code(), reason(&refused).0.as_str()),
            (Code::ResourceExhausted, "too_large")
        );
        let mut big = put("big", "");
        big.value = Bytes::from(vec![b'v'; kv::VALUE_BYTES_MAX + 1]);
        let refused = kv.put(big).await.expect_err("value too large");
        assert_eq!(
            (refused.code(), reason(&refused).0.as_str()),
            (Code::ResourceExhausted, "too_large")
        );
        let prefix = kv
            .delete_prefix(pb::DeletePrefixRequest {
                prefix: Bytes::new(),
                all: false,
                session: None,
            })
            .await
            .expect_err("an empty prefix");
        assert_eq!(
            (prefix.code(), reason(&prefix).0.as_str()),
            (Code::InvalidArgument, "empty_prefix")
        );
        let mut odd = get("fresh", pb::Consistency::Linearizable);
        odd.consistency = 7;
        assert_eq!(
            kv.get(odd).await.expect_err("no such consistency").code(),
            Code::InvalidArgument
        );
        let found = kv
            .get(get("fresh", pb::Consistency::Linearizable))
            .await
            .expect("still there")
            .into_inner();
        assert_eq!(found.kv.expect("kv").value.as_ref(), b"y");
    });
}

#[test]
fn sessions_make_a_retried_grpc_write_apply_once() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        let mut kv = kv(&node).await;
        let client_id = kv
            .register_session(pb::RegisterSessionRequest {})
            .await
            .expect("register")
            .into_inner()
            .client_id;
        let session = Some(pb::Session {
            client_id,
            sequence: 1,
        });
        // Given a session write,
        let mut write = put("counter", "1");
        write.session = session;
        let first = kv.put(write.clone()).await.expect("first").into_inner();
        // when it is sent again (a retry after a lost answer), then it gets the first answer
        // and is not applied twice;
        let again = kv.put(write.clone()).await.expect("retry").into_inner();
        assert_eq!(again, first);
        let read = kv
            .get(get("counter", pb::Consistency::Linearizable))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(read.kv.expect("kv").version, 1);
        // and the same sequence for another write is refused.
        write.value = Bytes::from_static(b"2");
        let reused = kv.put(write).await.expect_err("sequence reused");
        assert_eq!(
            (reused.code(), reason(&reused).0.as_str()),
            (Code::FailedPrecondition, "sequence_reused")
        );
        let mut zero = put("counter", "3");
        zero.session = Some(pb::Session {
            client_id,
            sequence: 0,
        });
        let bad = kv.put(zero).await.expect_err("sequence 0");
        assert_eq!(
            (bad.code(), reason(&bad).0.as_str()),
            (Code::InvalidArgument, "bad_session")
        );
    });
}

/// A prost message with a field the node's message does not have, or with bytes where the
/// node's message has a string: what a client built from another version of the .proto (or a
/// broken one) may send.
#[derive(Clone, PartialEq, prost::Message)]
struct Odd {
    #[prost(bytes = "vec", tag = "1")]
    first: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    second: Vec<u8>,
    #[prost(string, tag = "99")]
    unknown: String,
}

async fn raw_call<R: prost::Message + Default + Send + 'static>(
    channel: Channel,
    path: &'static str,
    message: Odd,
) -> Result<R, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Odd, R>::default();
    grpc.unary(
        Request::new(message),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[test]
fn bad_grpc_input_gets_a_clear_status_and_the_node_keeps_serving() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        let ch = channel(&node).await;
        // An unknown field is skipped, as proto3 says: the put is served.
        let put_with_unknown = Odd {
            first: b"k".to_vec(),
            second: b"v".to_vec(),
            unknown: "from a newer client".into(),
        };
        let served: pb::PutResponse = raw_call(ch.clone(), "/raftkv.v1.KV/Put", put_with_unknown)
            .await
            .expect("an unknown field is ignored");
        assert_eq!(served.version, 1);
        // Invalid UTF-8 where the node takes a string is INVALID_ARGUMENT, not INTERNAL.
        let not_utf8 = Odd {
            first: vec![0xff, 0xfe],
            ..Odd::default()
        };
        let refused =
            raw_call::<pb::RemoveResponse>(ch.clone(), "/raftkv.v1.Cluster/Remove", not_utf8)
                .await
                .expect_err("invalid UTF-8");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        // A message over the size limit is refused from its length, RESOURCE_EXHAUSTED.
        let mut huge = pb::PutRequest {
            key: Bytes::from_static(b"huge"),
            value: Bytes::from(vec![0u8; api::grpc::MESSAGE_BYTES_MAX + 1]),
            condition: None,
            session: None,
        };
        let mut client = KvClient::new(ch.clone()).max_encoding_message_size(usize::MAX);
        let refused = client.put(huge.clone()).await.expect_err("too large");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        // A stream its client never reads holds nothing the node needs: other calls go on.
        for i in 0..200 {
            client
                .put(put(&format!("list/{i:04}"), &"x".repeat(1000)))
                .await
                .expect("put");
        }
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let stream = KvClient::new(channel(&node).await)
                .list(pb::ListRequest {
                    prefix: Bytes::from_static(b"list/"),
                    ..Default::default()
                })
                .await
                .expect("a list starts");
            stalled.push(stream);
        }
        huge.value = Bytes::from_static(b"small");
        client.put(huge).await.expect("the node still serves");
        let health = node.get("/health").0;
        assert_eq!(health, 200);
        drop(stalled);
    });
}

#[test]
fn a_grpc_listing_streams_100000_keys_in_order() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    const KEYS: usize = 100_000;
    const WRITERS: usize = 64;
    runtime().block_on(async {
        let ch = channel(&node).await;
        // Given 100,000 keys, written by 64 concurrent clients,
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let mut kv = KvClient::new(ch.clone());
            writers.push(tokio::spawn(async move {
                for i in (w..KEYS).step_by(WRITERS) {
                    kv.put(put(&format!("big/{i:06}"), "v")).await.expect("put");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        // when they are listed in one call, then every key comes once, in order, in pages.
        let mut stream = KvClient::new(ch.clone())
            .list(pb::ListRequest {
                prefix: Bytes::from_static(b"big/"),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let (mut seen, mut pages, mut last_more) = (0usize, 0usize, true);
        while let Some(page) = stream.message().await.expect("a page") {
            assert!(last_more, "a page after one that said no more followed");
            for kv in &page.kvs {
                assert_eq!(kv.key.as_ref(), format!("big/{seen:06}").as_bytes());
                seen += 1;
            }
            pages += 1;
            last_more = page.more;
        }
        assert_eq!((seen, last_more), (KEYS, false));
        assert!(
            pages >= KEYS / api::grpc::kv::LIST_PAGE_KEYS,
            "{pages} pages"
        );
        // A limit ends the stream after that many keys.
        let mut stream = KvClient::new(ch)
            .list(pb::ListRequest {
                prefix: Bytes::from_static(b"big/"),
                after: Bytes::from_static(b"big/000009"),
                limit: 2500,
                consistency: pb::Consistency::Stale as i32,
            })
            .await
            .expect("list")
            .into_inner();
        let (mut keys, mut more) = (Vec::new(), false);
        while let Some(page) = stream.message().await.expect("a page") {
            assert!(page.stale.is_some(), "a stale page says how stale");
            keys.extend(page.kvs.into_iter().map(|kv| kv.key));
            more = page.more;
        }
        assert_eq!(keys.len(), 2500);
        assert!(
            more,
            "the limit ended the stream before the keys did, and it says so"
        );
        assert_eq!(keys[0].as_ref(), b"big/000010");
    });
}

#[test]
fn any_node_serves_grpc_and_the_cluster_is_run_over_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let (n1, n2, n3) = three_nodes(root.path(), &[]);
    let nodes = [&n1, &n2, &n3];
    let leader = leader_of(&nodes).expect("a leader");
    let follower = nodes[(leader + 1) % 3];
    let leading = nodes[leader];
    runtime().block_on(async {
        // Given a write sent to a follower, it is forwarded and applied;
        let mut on_follower = kv(follower).await;
        let put_answer = on_follower
            .put(put("fwd", "1"))
            .await
            .expect("forwarded")
            .into_inner();
        assert_eq!(put_answer.version, 1);
        // a linearizable read on the follower sees it, and a stale one says how stale.
        let read = on_follower
            .get(get("fwd", pb::Consistency::Linearizable))
            .await
            .expect("read")
            .into_inner();
        assert_eq!(read.kv.expect("kv").value.as_ref(), b"1");
        let stale = on_follower
            .get(get("fwd", pb::Consistency::Stale))
            .await
            .expect("stale read")
            .into_inner();
        let bound = stale.stale.expect("staleness");
        assert!(bound.applied_index <= bound.commit_index);
        // Asked not to be forwarded, the follower names the leader, UNAVAILABLE.
        let mut no_forward = Request::new(put("fwd", "2"));
        no_forward
            .metadata_mut()
            .insert(metadata::NO_FORWARD, "1".parse().expect("ascii"));
        let refused = on_follower
            .put(no_forward)
            .await
            .expect_err("not forwarded");
        assert_eq!(
            (refused.code(), reason(&refused).0.as_str()),
            (Code::Unavailable, "not_leader")
        );
        let meta = refused.metadata();
        assert_eq!(
            meta.get(metadata::LEADER).and_then(|v| v.to_str().ok()),
            Some(leading.name.as_str())
        );
        assert_eq!(
            meta.get(metadata::LEADER_GRPC)
                .and_then(|v| v.to_str().ok()),
            Some(leading.grpc.as_str())
        );
        assert_eq!(
            meta.get(metadata::LEADER_HTTP)
                .and_then(|v| v.to_str().ok()),
            Some(leading.http.as_str())
        );
        // Sessions and prefix deletes are forwarded too.
        let client_id = on_follower
            .register_session(pb::RegisterSessionRequest {})
            .await
            .expect("session")
            .into_inner()
            .client_id;
        assert!(client_id > 0);
        let gone = on_follower
            .delete_prefix(pb::DeletePrefixRequest {
                prefix: Bytes::from_static(b"fw"),
                all: false,
                session: None,
            })
            .await
            .expect("prefix delete")
            .into_inner();
        assert_eq!(gone.deleted, 1);

        // The members, with every address; the leader, with its gRPC address.
        let mut cluster = ClusterClient::new(channel(follower).await);
        let members = cluster
            .nodes(pb::NodesRequest {})
            .await
            .expect("nodes")
            .into_inner()
            .nodes;
        assert_eq!(members.len(), 3);
        for p in nodes {
            let m = members.iter().find(|m| m.id == p.name).expect("a member");
            assert_eq!(
                (m.grpc_addr.as_str(), m.http_addr.as_str()),
                (p.grpc.as_str(), p.http.as_str())
            );
        }
        let said = cluster
            .leader(pb::LeaderRequest {})
            .await
            .expect("leader")
            .into_inner();
        assert_eq!(
            (said.id.as_str(), said.grpc_addr.as_str()),
            (leading.name.as_str(), leading.grpc.as_str())
        );
        // Status and snapshots.
        let mut maintenance = MaintenanceClient::new(channel(follower).await);
        let status = maintenance
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(
            (
                status.node_id.as_str(),
                status.role.as_str(),
                status.leader.as_str()
            ),
            (follower.name.as_str(), "follower", leading.name.as_str())
        );
        let snap = maintenance
            .snapshot(pb::SnapshotRequest {})
            .await
            .expect("snapshot")
            .into_inner();
        assert!(snap.index > 0);

        // Errors of cluster operations have the REST codes.
        let unknown = cluster
            .remove(pb::RemoveRequest {
                node_id: "nobody".into(),
            })
            .await
            .expect_err("not a member");
        assert_eq!(
            (unknown.code(), reason(&unknown).0.as_str()),
            (Code::NotFound, "unknown_member")
        );
        // Leadership moves to the follower when it is asked (through the follower itself),
        let moved = cluster
            .transfer_leader(pb::TransferLeaderRequest {
                node_id: follower.name.clone(),
            })
            .await
            .expect("transfer")
            .into_inner();
        assert_eq!(moved.leader, follower.name);
        // and a member is removed through a node that no longer leads.
        let third = nodes
            .iter()
            .find(|p| p.name != follower.name && p.name != leading.name)
            .expect("a third");
        let mut on_old_leader = ClusterClient::new(channel(leading).await);
        let removed = on_old_leader
            .remove(pb::RemoveRequest {
                node_id: third.name.clone(),
            })
            .await
            .expect("remove")
            .into_inner();
        assert_eq!(removed.removed, third.name);
    });
}

#[test]
fn health_and_reflection_are_served_for_grpcurl_and_load_balancers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        let ch = channel(&node).await;
        // A ready node is SERVING (health follows readiness within a poll interval).
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        let mut serving = false;
        for _ in 0..40 {
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "raftkv.v1.KV".into(),
                })
                .await
                .expect("health")
                .into_inner();
            if answer.status == ServingStatus::Serving as i32 {
                serving = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(serving, "a ready node reports SERVING");
        // Reflection names the three services without the .proto.
        let mut reflection = ServerReflectionClient::new(ch);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let answer = answers.message().await.expect("an answer").expect("one");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for service in [
            "raftkv.v1.KV",
            "raftkv.v1.KVCalls",
            "raftkv.v1.Cluster",
            "raftkv.v1.Maintenance",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == service),
                "{service} not in {names:?}"
            );
        }
    });
}

#[test]
fn rest_and_grpc_answer_alike_for_one_state() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        let mut kv = kv(&node).await;
        for (k, v) in [("a/1", "x"), ("a/2", "y"), ("a/2", "z"), ("b", "w")] {
            kv.put(put(k, v)).await.expect("put");
        }
        // The same key read both ways: the same value, versions and revisions.
        let g = kv
            .get(get("a/2", pb::Consistency::Linearizable))
            .await
            .expect("get")
            .into_inner();
        let (status, body) = common::http_with(
            &node.http,
            "GET",
            "/keys/a%2F2",
            "Accept: application/json\r\n",
            b"",
        );
        assert_eq!(status, 200, "{body}");
        let rest: proto::rest::KeyValue = serde_json::from_str(&body).expect("a key value");
        let grpc = g.kv.expect("kv");
        assert_eq!(
            (
                rest.value.as_ref(),
                rest.version,
                rest.create_revision,
                rest.mod_revision,
                rest.revision
            ),
            (
                grpc.value.as_ref(),
                grpc.version,
                grpc.create_revision,
                grpc.mod_revision,
                g.revision
            )
        );
        // The same listing: the same keys, values and revision.
        let (_, body) = http(&node.http, "GET", "/keys?prefix=a%2F", b"");
        let page: proto::rest::ListResult = serde_json::from_str(&body).expect("a page");
        let mut stream = kv
            .list(pb::ListRequest {
                prefix: Bytes::from_static(b"a/"),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let first = stream.message().await.expect("a page").expect("one");
        let rest_keys: Vec<_> = page
            .kvs
            .iter()
            .map(|k| (k.key.clone(), k.value.clone(), k.version))
            .collect();
        let grpc_keys: Vec<_> = first
            .kvs
            .iter()
            .map(|k| (k.key.clone(), k.value.clone(), k.version))
            .collect();
        assert_eq!((rest_keys, page.revision), (grpc_keys, first.revision));
        // The same status, and the same members.
        let (_, body) = http(&node.http, "GET", "/status", b"");
        let rest: proto::rest::NodeStatus = serde_json::from_str(&body).expect("a status");
        let grpc = MaintenanceClient::new(channel(&node).await)
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(
            (
                rest.node_id.0.as_str(),
                rest.cluster_id.as_str(),
                rest.role.as_str(),
                rest.term,
                rest.leader.map(|l| l.0).unwrap_or_default()
            ),
            (
                grpc.node_id.as_str(),
                grpc.cluster_id.as_str(),
                grpc.role.as_str(),
                grpc.term,
                grpc.leader
            )
        );
        let (_, body) = http(&node.http, "GET", "/cluster/nodes", b"");
        let rest: proto::rest::Nodes = serde_json::from_str(&body).expect("members");
        let grpc = ClusterClient::new(channel(&node).await)
            .nodes(pb::NodesRequest {})
            .await
            .expect("nodes")
            .into_inner();
        let rest: Vec<_> = rest
            .nodes
            .into_iter()
            .map(|n| (n.id.0, n.grpc_addr.unwrap_or_default(), n.role))
            .collect();
        let grpc: Vec<_> = grpc
            .nodes
            .into_iter()
            .map(|n| (n.id, n.grpc_addr, n.role))
            .collect();
        assert_eq!(rest, grpc);
        // The same refusal: a failed compare-and-swap, code and current version alike.
        let (status, body) = http(&node.http, "PUT", "/keys/b?prev_version=7", b"q");
        let rest: proto::rest::ErrorBody = serde_json::from_str(&body).expect("an error");
        let mut cas = put("b", "q");
        cas.condition = Some(pb::put_request::Condition::PrevVersion(7));
        let refused = kv.put(cas).await.expect_err("cas fails");
        let (code, extra) = reason(&refused);
        assert_eq!(status, 409);
        assert_eq!(rest.code, code);
        assert_eq!(
            rest.extra.get("current_version").map(|v| v.to_string()),
            extra.get("current_version").cloned()
        );
    });
}

#[test]
fn a_connection_over_the_cap_is_told_so_and_a_stalled_listing_ends_with_an_error() {
    let root = tempfile::tempdir().expect("temp dir");
    // Given a node that serves two client connections and gives up on a second of silence,
    let node = Proc::new(
        "solo",
        root.path(),
        None,
        &[
            "--set",
            "server.max_connections=2",
            "--set",
            "server.idle_timeout=1s",
        ],
    );
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        // 20 MB of keys: far more than HTTP/2 flow control lets through to a client that does
        // not read (a 2 MB stream window) and the pages the node prepares ahead.
        let mut kv = kv(&node).await;
        let mut writers = Vec::new();
        for w in 0..16 {
            let mut kv = kv.clone();
            writers.push(tokio::spawn(async move {
                let value = "v".repeat(2000);
                for i in (w..STALL_KEYS).step_by(16) {
                    kv.put(put(&format!("s/{i:05}"), &value))
                        .await
                        .expect("put");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        // when a listing is opened and not read while the same connection stays busy,
        let mut stream = kv
            .list(pb::ListRequest {
                prefix: Bytes::from_static(b"s/"),
                ..Default::default()
            })
            .await
            .expect("a list starts")
            .into_inner();
        for _ in 0..15 {
            kv.get(get("s/00000", pb::Consistency::Stale))
                .await
                .expect("the connection stays in use");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // then it ends, after the pages queued, with DEADLINE_EXCEEDED, never as if complete;
        let mut keys = 0;
        let ended = loop {
            match stream.message().await {
                Ok(Some(page)) => keys += page.kvs.len(),
                Ok(None) => panic!("a stalled listing ended as if complete after {keys} keys"),
                Err(status) => break status,
            }
        };
        assert!(keys < STALL_KEYS, "{keys} keys");
        assert_eq!(
            (ended.code(), reason(&ended).0.as_str()),
            (Code::DeadlineExceeded, "timeout"),
            "{ended:?}"
        );
        // and with two connections open (this one and another), a third is refused at each
        // call with the REST code, so a client knows nothing was applied.
        let _second = kv_client_on_new_connection(&node).await;
        let mut third = KvClient::new(
            Channel::from_shared(format!("http://{}", node.grpc))
                .expect("a valid URI")
                .connect_lazy(),
        );
        let refused = third.put(put("over", "1")).await.expect_err("over the cap");
        assert_eq!(
            (refused.code(), reason(&refused).0.as_str()),
            (Code::Unavailable, "too_many_connections"),
            "{refused:?}"
        );
    });
}

/// The keys of the stalled listing.
const STALL_KEYS: usize = 10_000;

/// A client on a connection of its own, connected and used once.
async fn kv_client_on_new_connection(p: &Proc) -> KvClient<Channel> {
    let mut client = kv(p).await;
    client
        .get(get("s/00000", pb::Consistency::Stale))
        .await
        .expect("a second connection is served");
    client
}

/// How many segments carrying data the socket `fd` has received (`tcpi_data_segs_in`, Linux
/// 4.6 on): on loopback, one for each write of the peer's (up to 64 KiB).
#[cfg(target_os = "linux")]
fn data_segments_in(fd: std::os::fd::RawFd) -> u32 {
    // SAFETY: `tcp_info` is plain integers, for which all zero bytes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>())
        .expect("tcp_info's size fits a socklen_t");
    // SAFETY: `info` is writable for `len` bytes, which is all getsockopt writes; `fd` is an
    // open TCP socket (the caller's connection is alive).
    let done = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(done, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    let reaches = std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_in) + size_of::<u32>();
    assert!(
        usize::try_from(len).is_ok_and(|len| len >= reaches),
        "this kernel's TCP_INFO ({len} bytes) has no tcpi_data_segs_in"
    );
    info.tcpi_data_segs_in
}

/// One raw gRPC call on `client`: its request is queued in h2, not yet written.
#[cfg(target_os = "linux")]
fn queue_call(
    client: &mut h2::client::SendRequest<Bytes>,
    path: &'static str,
    message: &impl prost::Message,
    authority: &str,
) -> h2::client::ResponseFuture {
    let request = tonic::codegen::http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request head");
    let (answer, mut body) = client.send_request(request, false).expect("a stream");
    body.send_data(proto::codec::frame(message), true)
        .expect("the request's message");
    answer
}

/// The message of a successful unary answer, without its 5-byte prefix.
#[cfg(target_os = "linux")]
async fn answer_message(answer: h2::client::ResponseFuture) -> Bytes {
    let mut body = answer.await.expect("an answer").into_body();
    let mut message = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.expect("the answer's data");
        let _ = body.flow_control().release_capacity(data.len());
        message.extend_from_slice(&data);
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    Bytes::from(message).slice(proto::codec::PREFIX_BYTES..)
}

#[test]
#[cfg(target_os = "linux")]
fn stale_reads_that_arrive_together_are_answered_together() {
    // Given a node with a key, and one HTTP/2 connection to it, its handshake done. One thread
    // runs the client, so that nothing is written while the calls below are queued.
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    assert_eq!(node.put("k", "v").0, 200);
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    client_runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&node.grpc)
            .await
            .expect("connect");
        let socket = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let (mut client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let stale = get("k", pb::Consistency::Stale);
        let first = queue_call(&mut client, "/raftkv.v1.KV/Get", &stale, &node.grpc);
        answer_message(first).await;

        // When 32 stale reads reach it in one write,
        const CALLS: usize = 32;
        let before = data_segments_in(socket);
        let answers: Vec<_> = (0..CALLS)
            .map(|_| queue_call(&mut client, "/raftkv.v1.KV/Get", &stale, &node.grpc))
            .collect();
        for answer in answers {
            let got = <pb::GetResponse as prost::Message>::decode(answer_message(answer).await)
                .expect("a GetResponse");
            assert_eq!(got.kv.expect("the key").value.as_ref(), b"v");
        }
        let writes = data_segments_in(socket) - before;

        // then every one is answered, and their answers leave in a few writes, not one each
        // (a call answered as soon as it is polled used to be written out alone).
        assert!(
            (1..=4).contains(&writes),
            "{CALLS} stale reads that came together took {writes} writes to answer"
        );
    });
}
