//! The `KVCalls.Calls` stream against real `raftkv` processes: calls answered by id as their
//! unary twins are, a malformed message ending the stream after the calls before it are
//! answered, a client that never reads its answers held back by its own window while the node
//! keeps serving, and a stopping node ending its streams rather than waiting on them.

mod common;

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use common::{Proc, ready, runtime, wait_until};
use prost::Message;
use proto::pb::{self, call, call_answer, kv_calls_client::KvCallsClient, kv_client::KvClient};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

const CALLS_PATH: &str = "/raftkv.v1.KVCalls/Calls";

async fn channel(p: &Proc) -> Channel {
    Channel::from_shared(format!("http://{}", p.grpc))
        .expect("a valid URI")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {}'s gRPC at {}: {e}", p.name, p.grpc))
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        condition: None,
        session: None,
    }
}

fn call_of(id: u64, request: Option<call::Request>) -> pb::Call {
    pb::Call {
        id,
        timeout_ms: 0,
        request_id: String::new(),
        request,
    }
}

/// A failure as the status its unary twin gives.
fn status_of(failure: pb::CallFailure) -> Status {
    Status::with_details(
        Code::from_i32(failure.code),
        failure.message,
        failure.details,
    )
}

/// The REST code a status carries in its `ErrorInfo`.
fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
        .reason
}

#[test]
fn calls_on_one_stream_are_answered_by_id_as_their_unary_twins() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        let mut unary = KvClient::new(channel(&node).await);
        unary.put(put("k", "v1")).await.expect("put");
        // Given calls of every kind on one stream, some of which fail,
        let cas = pb::PutRequest {
            condition: Some(pb::put_request::Condition::PrevVersion(7)),
            ..put("k", "v2")
        };
        let get_missing = pb::GetRequest {
            key: Bytes::from_static(b"missing"),
            consistency: pb::Consistency::Linearizable as i32,
        };
        let empty_key = put("", "v");
        let mut named = call_of(6, Some(call::Request::Put(put("n", "v"))));
        named.request_id = "my-request-7".into();
        let calls = vec![
            call_of(1, Some(call::Request::Put(put("a", "1")))),
            call_of(2, Some(call::Request::Put(cas.clone()))),
            call_of(3, Some(call::Request::Get(get_missing.clone()))),
            call_of(4, None),
            call_of(5, Some(call::Request::Put(empty_key.clone()))),
            named,
            call_of(
                7,
                Some(call::Request::Delete(pb::DeleteRequest {
                    key: Bytes::from_static(b"a"),
                    session: None,
                })),
            ),
        ];
        // when they are sent (through the generated client) and the client ends its side,
        let mut client = KvCallsClient::new(channel(&node).await);
        let mut answers = client
            .calls(tokio_stream::iter(calls))
            .await
            .expect("the stream is taken")
            .into_inner();
        let mut by_id = std::collections::HashMap::new();
        while let Some(answer) = answers.message().await.expect("the stream ends well") {
            assert!(
                by_id.insert(answer.id, answer).is_none(),
                "one answer per call"
            );
        }
        // then every call has one answer, under its id,
        assert_eq!(by_id.len(), 7, "{by_id:?}");
        // and is counted as the unary method it names (read before any unary twin runs).
        let (_, metrics) = common::http(&node.http, "GET", "/metrics", b"");
        assert!(
            metrics.contains(r#"code="FAILED_PRECONDITION",method="/raftkv.v1.KV/Put""#),
            "{metrics}"
        );
        let answer = |id: u64| by_id[&id].answer.clone().expect("an outcome");
        let failure = |id: u64| match answer(id) {
            call_answer::Answer::Failure(failure) => status_of(failure),
            other => panic!("call {id} should have failed: {other:?}"),
        };
        assert!(matches!(answer(1), call_answer::Answer::Put(p) if p.version == 1));
        // and each failure is its unary twin's: code, reason and message.
        let twins = [
            (2, unary.put(cas).await.expect_err("a failed CAS")),
            (3, unary.get(get_missing).await.expect_err("no such key")),
            (5, unary.put(empty_key).await.expect_err("an empty key")),
        ];
        for (id, twin) in twins {
            let on_stream = failure(id);
            assert_eq!(
                (on_stream.code(), reason(&on_stream), on_stream.message()),
                (twin.code(), reason(&twin), twin.message()),
                "call {id}"
            );
        }
        assert_eq!(failure(2).code(), Code::FailedPrecondition);
        let info = failure(2).get_details_error_info().expect("ErrorInfo");
        assert_eq!(
            info.metadata.get("current_version").map(String::as_str),
            Some("1")
        );
        assert_eq!(failure(3).code(), Code::NotFound);
        assert_eq!(failure(4).code(), Code::InvalidArgument);
        assert!(matches!(answer(7), call_answer::Answer::Delete(d) if d.deleted == 1));
        // A call keeps the request id it gave; the others get one each.
        assert_eq!(by_id[&6].request_id, "my-request-7");
        assert_eq!(by_id[&1].request_id.len(), 16);
        assert_ne!(by_id[&1].request_id, by_id[&3].request_id);
    });
}

/// A raw HTTP/2 connection to `p` (its driver spawned) with `window` bytes of stream window,
/// and a `KVCalls.Calls` stream opened on it.
async fn raw_stream(p: &Proc, window: u32) -> (h2::SendStream<Bytes>, h2::client::ResponseFuture) {
    let tcp = tokio::net::TcpStream::connect(&p.grpc)
        .await
        .expect("connect");
    // The connection's window is the SDK's; each stream's is `window`.
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(8 << 20)
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let request = tonic::codegen::http::Request::post(format!("http://{}{CALLS_PATH}", p.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request head");
    let (answer, send) = client.send_request(request, false).expect("a stream");
    // The connection lives while the stream does.
    tokio::spawn(async move {
        let _client = client;
        std::future::pending::<()>().await
    });
    (send, answer)
}

/// Reads a stream's answers to its end: the answers, and the status in its trailers.
async fn read_to_end(answer: h2::client::ResponseFuture) -> (Vec<pb::CallAnswer>, Status) {
    let mut body = answer.await.expect("the stream's head").into_body();
    let mut buffer = BytesMut::new();
    let mut answers = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.expect("the stream's data");
        let _ = body.flow_control().release_capacity(data.len());
        buffer.extend_from_slice(&data);
        while buffer.len() >= 5 {
            let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer.len() < 5 + length {
                break;
            }
            let mut message = buffer.split_to(5 + length).freeze();
            message.advance(5);
            answers.push(pb::CallAnswer::decode(message).expect("an answer"));
        }
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    let status = Status::from_header_map(&trailers).expect("a status in the trailers");
    (answers, status)
}

#[test]
fn a_malformed_message_ends_the_stream_after_the_calls_before_it_are_answered() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        let (mut send, answer) = raw_stream(&node, 1 << 20).await;
        // Given a call, then bytes that are no Call (a string field of invalid UTF-8),
        let good = call_of(1, Some(call::Request::Put(put("g", "v"))));
        send.send_data(proto::codec::frame(&good), false)
            .expect("the call");
        let mut bad = vec![0u8, 0, 0, 0, 3];
        bad.extend_from_slice(&[0x1a, 0x01, 0xff]);
        send.send_data(Bytes::from(bad), false)
            .expect("the bad bytes");
        // then the call before it is answered, and the stream ends INVALID_ARGUMENT,
        let (answers, status) = read_to_end(answer).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert!(matches!(
            answers[0].answer,
            Some(call_answer::Answer::Put(_))
        ));
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        // and the node keeps serving.
        let mut unary = KvClient::new(channel(&node).await);
        unary.put(put("after", "v")).await.expect("served");
    });
}

/// How many `KV.Put` calls the node has answered `OK` (unary, or on a stream).
fn puts_answered(node: &Proc) -> u64 {
    let (_, metrics) = common::http(&node.http, "GET", "/metrics", b"");
    metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"raftkv_grpc_requests_total{code="OK",method="/raftkv.v1.KV/Put"}"#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_that_never_reads_its_answers_is_held_back_and_the_node_keeps_serving() {
    const CALLS: u64 = 5_000;
    let root = tempfile::tempdir().expect("temp dir");
    let node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    runtime().block_on(async {
        // Given a client whose window takes about 30 answers, that sends many calls and reads
        // none of their answers,
        let (mut send, answer) = raw_stream(&node, 1024).await;
        let mut calls = BytesMut::new();
        for id in 0..CALLS {
            let call = call_of(
                id,
                Some(call::Request::Put(put(&format!("held/{id:05}"), "v"))),
            );
            calls.extend_from_slice(&proto::codec::frame(&call));
        }
        send.send_data(calls.freeze(), false).expect("the calls");
        // when the node has done what it will,
        let mut last = u64::MAX;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = puts_answered(&node);
            if now == last {
                break;
            }
            last = now;
        }
        // then it has taken only as many calls as the stream holds (256 in flight or waiting,
        // and the thirty or so answers the client's window took), not all of them,
        let taken = puts_answered(&node);
        assert!(
            (1..=400).contains(&taken),
            "{taken} of {CALLS} calls were served for a client that reads nothing"
        );
        // it keeps serving others,
        let mut unary = KvClient::new(channel(&node).await);
        unary.put(put("other", "v")).await.expect("served");
        // and once the client reads, every call is answered, once.
        send.send_data(Bytes::new(), true)
            .expect("the end of the calls");
        let (answers, status) = read_to_end(answer).await;
        assert_eq!(status.code(), Code::Ok, "{status:?}");
        let mut ids: Vec<u64> = answers.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..CALLS).collect::<Vec<_>>());
        assert!(
            answers
                .iter()
                .all(|a| matches!(a.answer, Some(call_answer::Answer::Put(_))))
        );
    });
}

#[test]
fn a_stopping_node_answers_the_calls_it_took_and_ends_its_streams() {
    // Enough that the stop comes while many are in flight (a few hundred a second per stream
    // on this kind of machine would take a minute; the stop comes within about 50 ms).
    const CALLS: u64 = 20_000;
    let root = tempfile::tempdir().expect("temp dir");
    let mut node = Proc::new("solo", root.path(), None, &[]);
    wait_until("solo leads", || ready(&node));
    let rt = runtime();
    // Given a stream with many puts on their way and the client's side left open,
    let (send, answers) = rt.block_on(async {
        let (mut send, answer) = raw_stream(&node, 1 << 20).await;
        let reading = tokio::spawn(read_to_end(answer));
        let mut calls = BytesMut::new();
        for id in 0..CALLS {
            let call = call_of(
                id,
                Some(call::Request::Put(put(&format!("s/{id:05}"), "v"))),
            );
            calls.extend_from_slice(&proto::codec::frame(&call));
        }
        send.send_data(calls.freeze(), false).expect("the calls");
        (send, reading)
    });
    wait_until("some calls are answered", || puts_answered(&node) > 0);
    // when the node is asked to stop while calls are in flight,
    let pid = node.child.as_ref().expect("the node runs").id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    // then it ends the stream rather than waiting on it, and exits;
    assert_eq!(node.wait_exit(), Some(true), "{}", node.log_text());
    let (answers, status) = rt.block_on(answers).expect("the reader");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "shutting_down");
    drop(send);
    // every call it answered is applied, and none it did not answer is (it never took them).
    let answered: std::collections::HashSet<u64> = answers
        .iter()
        .map(|a| {
            assert!(
                matches!(a.answer, Some(call_answer::Answer::Put(_))),
                "{a:?}"
            );
            a.id
        })
        .collect();
    node.start();
    wait_until("solo leads again", || ready(&node));
    let mut stored = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let from = if after.is_empty() {
            String::new()
        } else {
            format!("&after={after}")
        };
        let (code, body) = node.get(&format!("/keys?prefix=s/&limit=10000{from}"));
        assert_eq!(code, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).expect("a listing");
        for kv in page["kvs"].as_array().expect("kvs") {
            let key = kv["key"].as_str().expect("a UTF-8 key");
            stored.insert(key[2..].parse::<u64>().expect("s/<id>"));
        }
        match page["next"].as_str() {
            Some(next) if page["more"] == true => after = next.replace('/', "%2F"),
            _ => break,
        }
    }
    assert_eq!(
        stored, answered,
        "the puts applied are exactly the puts answered"
    );
    assert!(
        !answered.is_empty() && answered.len() < CALLS as usize,
        "the stop came with calls in flight: {} of {CALLS} answered",
        answered.len()
    );
}
