//! The `KVCalls.Calls` stream, served on the connection's task (see [`super::connection`]):
//! Get, Put and Delete calls multiplexed on one HTTP/2 stream, each served as its unary twin
//! in `KV` is (the same handlers, with the stream's metadata; its own request id, metrics and
//! deadline), and answered by id as it finishes.
//!
//! Why it exists: a unary call costs HTTP/2 a stream of its own and headers both ways, and with
//! one call at a time (one client writing) that work, cold between two fsyncs, was what made
//! gRPC slower than REST. Calls on one stream carry none of it (docs/performance.md).
//!
//! Invariants:
//! - every call the node has taken off the stream is answered before the stream ends with its
//!   trailers, so a client that sees the trailers knows its unanswered calls were never
//!   processed (the SDK sends them again);
//! - a stream holds at most [`CALLS_PER_STREAM_MAX`] calls in flight or answered but waiting
//!   for the client's flow-control window; at that count it takes no more, so a client that
//!   does not read its answers is held back by its own window, as a unary client is;
//! - answers go to h2 only as the client's window takes them, so h2 buffers none beyond it;
//! - at most [`CALL_STREAMS_PER_CONNECTION_MAX`] such streams are open on a connection.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::RecvStream;
use h2::server::SendResponse;
use proto::pb::{self, call, call_answer, kv_server::Kv};
use proto::rest::ErrorCode;
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::http::{self, HeaderMap, HeaderValue, Uri, header::CONTENT_TYPE};
use tonic::metadata::{KeyAndValueRef, MetadataMap};

use super::Api;
use super::connection::{encoding_refusal, malformed, message_length, within};
use super::observe::Observation;
use crate::request_id;
use proto::codec::PREFIX_BYTES;

/// The stream's path.
pub const PATH: &str = "/raftkv.v1.KVCalls/Calls";

/// The calls one stream holds at once, in flight or answered and waiting for the client's
/// window: as many as the unary calls of one connection (its stream limit).
pub const CALLS_PER_STREAM_MAX: usize = super::STREAMS_PER_CONNECTION_MAX as usize;

/// The `KVCalls` streams one connection may have open at once (the SDK opens one); a stream
/// over it is refused `UNAVAILABLE` `too_many_connections`.
pub const CALL_STREAMS_PER_CONNECTION_MAX: usize = 4;

/// The send room a stream keeps asked for while it has calls, so that an answer usually goes
/// out at once rather than after asking h2 for room (a lock and a pass of its flow control per
/// answer): small beside a connection's window, which other streams share.
pub const ANSWER_ROOM_BYTES: usize = 16 * 1024;

/// The unary methods the calls are counted as (their metrics and log lines).
static METHODS: LazyLock<[Uri; 3]> = LazyLock::new(|| {
    [
        Uri::from_static("/raftkv.v1.KV/Get"),
        Uri::from_static("/raftkv.v1.KV/Put"),
        Uri::from_static("/raftkv.v1.KV/Delete"),
    ]
});

/// One of a connection's open `KVCalls` streams, counted in `open` while it lives.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one `KVCalls.Calls` stream until it ends (see the module); `open` counts the
/// connection's streams, `stop` is the server's stop signal.
pub(super) async fn serve(
    api: &Api,
    parts: http::request::Parts,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    mut stop: watch::Receiver<bool>,
    open: &AtomicUsize,
) {
    // The stream is observed as a call whose answer is its head; each call on it, as its own.
    let (observation, _) = Observation::begin(&api.server, &parts.headers, &parts.uri);
    let _slot = Slot(open);
    let refused = if open.fetch_add(1, Ordering::Relaxed) >= CALL_STREAMS_PER_CONNECTION_MAX {
        Some(proto::codec::refusal(
            tonic::Code::from_i32(ErrorCode::TooManyConnections.grpc() as i32),
            format!(
                "a connection may have {CALL_STREAMS_PER_CONNECTION_MAX} call streams open at once"
            ),
            ErrorCode::TooManyConnections,
        ))
    } else {
        encoding_refusal(&parts.headers).err()
    };
    if let Some(status) = refused {
        let mut head = status.into_http::<()>();
        observation.answered(head.headers_mut());
        let _ = respond.send_response(head, true);
        return;
    }
    let mut head = http::Response::new(());
    head.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    observation.answered(head.headers_mut());
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    let (headers, extensions) = (parts.headers, parts.extensions);
    let mut stopping = *stop.borrow();
    let mut stop_asked = pin!(stop.changed());
    let mut buffer = BytesMut::new();
    let mut calls = FuturesUnordered::new();
    let mut waiting: VecDeque<Bytes> = VecDeque::new();
    let mut waiting_bytes = 0;
    // Whether calls are still taken off the stream, and whether the client's side is open.
    let mut taking = true;
    let mut client_open = true;
    // Why the stream ends, when not because its client ended it.
    let mut failure: Option<Status> = None;
    if stopping {
        taking = false;
        failure = Some(stopping_status());
    }
    // Whether the stream holds send room asked for (only while it has calls: room held by an
    // idle stream would be taken from the connection's window, which its other streams share).
    let mut reserved = false;
    let finished = poll_fn(|cx| {
        // The client reset the stream: every call on it is dropped (counted `CANCELLED`).
        if send.poll_reset(cx).is_ready() {
            return Poll::Ready(false);
        }
        loop {
            if !stopping && stop_asked.as_mut().poll(cx).is_ready() {
                stopping = true;
                if taking {
                    taking = false;
                    failure = Some(stopping_status());
                }
            }
            while let Poll::Ready(Some(answer)) = calls.poll_next_unpin(cx) {
                let answer: Bytes = answer;
                waiting_bytes += answer.len();
                waiting.push_back(answer);
            }
            // Answers go out as the client's window takes them, split where it must.
            if !waiting.is_empty() {
                let mut room = send.capacity();
                while room > 0 && !waiting.is_empty() {
                    let chunk = next_chunk(&mut waiting, room);
                    room -= chunk.len();
                    waiting_bytes -= chunk.len();
                    if send.send_data(chunk, false).is_err() {
                        return Poll::Ready(false);
                    }
                }
                if !waiting.is_empty() {
                    send.reserve_capacity(waiting_bytes.max(ANSWER_ROOM_BYTES));
                    match send.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => continue,
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(false),
                        Poll::Pending => {}
                    }
                } else if reserved && room < ANSWER_ROOM_BYTES / 2 {
                    send.reserve_capacity(ANSWER_ROOM_BYTES);
                }
            }
            // The calls already read, while the stream has room for them. A call pushed is
            // polled only by the next poll of the set: the loop goes round again for it.
            let mut took = false;
            while taking && calls.len() + waiting.len() < CALLS_PER_STREAM_MAX {
                match next_message(&mut buffer) {
                    Ok(Some(message)) => match proto::codec::decode_message::<pb::Call>(message) {
                        Ok(call) => {
                            took = true;
                            calls.push(serve_call(api, headers.clone(), extensions.clone(), call));
                        }
                        Err(status) => {
                            taking = false;
                            failure = Some(status);
                        }
                    },
                    Ok(None) => break,
                    Err(status) => {
                        taking = false;
                        failure = Some(status);
                    }
                }
            }
            if took {
                if !reserved {
                    send.reserve_capacity(ANSWER_ROOM_BYTES);
                    reserved = true;
                }
                continue;
            }
            let room = calls.len() + waiting.len() < CALLS_PER_STREAM_MAX;
            if taking && room && client_open {
                match body.poll_data(cx) {
                    Poll::Ready(Some(Ok(data))) => {
                        let _ = body.flow_control().release_capacity(data.len());
                        buffer.extend_from_slice(&data);
                        continue;
                    }
                    // The stream broke under its calls.
                    Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                    Poll::Ready(None) => {
                        client_open = false;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if taking && room && !client_open {
                // The client ended its side and every call it sent is taken.
                taking = false;
                if !buffer.is_empty() {
                    failure = Some(malformed("the stream ended inside a message"));
                }
            }
            if !taking && calls.is_empty() && waiting.is_empty() {
                return Poll::Ready(true);
            }
            if reserved && calls.is_empty() && waiting.is_empty() {
                send.reserve_capacity(0);
                reserved = false;
            }
            return Poll::Pending;
        }
    })
    .await;
    if finished {
        let status = failure.unwrap_or_else(|| Status::ok(""));
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers.insert(proto::codec::GRPC_STATUS, HeaderValue::from_static("13"));
        }
        let _ = send.send_trailers(trailers);
    }
}

/// What goes out in the next DATA frame, at most `room` bytes: the answers waiting that fit,
/// whole and joined (a client's h2 counts every small frame against a budget of its memory,
/// and each frame costs both sides), or the front answer's first `room` bytes.
fn next_chunk(waiting: &mut VecDeque<Bytes>, room: usize) -> Bytes {
    let front = waiting
        .front_mut()
        .expect("invariant: called with an answer waiting");
    if front.len() > room {
        return front.split_to(room);
    }
    let first = waiting.pop_front().expect("checked: an answer waits");
    if waiting
        .front()
        .is_none_or(|next| first.len() + next.len() > room)
    {
        return first;
    }
    let mut joined = BytesMut::from(&first[..]);
    while let Some(next) = waiting.front()
        && joined.len() + next.len() <= room
    {
        let next = waiting.pop_front().expect("checked: an answer waits");
        joined.extend_from_slice(&next);
    }
    joined.freeze()
}

/// Why a stream ends when the node stops (its status in the trailers).
fn stopping_status() -> Status {
    proto::codec::refusal(
        tonic::Code::from_i32(ErrorCode::ShuttingDown.grpc() as i32),
        "the node is stopping: the calls it did not answer on this stream were not processed; \
         send them again"
            .to_owned(),
        ErrorCode::ShuttingDown,
    )
}

/// The next whole message in `buffer`, without its prefix, taken out of it.
fn next_message(buffer: &mut BytesMut) -> Result<Option<Bytes>, Status> {
    let Some(length) = message_length(buffer)? else {
        return Ok(None);
    };
    if buffer.len() < PREFIX_BYTES + length {
        return Ok(None);
    }
    let mut message = buffer.split_to(PREFIX_BYTES + length);
    let _ = message.split_to(PREFIX_BYTES);
    Ok(Some(message.freeze()))
}

/// Serves one call, giving its framed answer.
async fn serve_call(
    api: &Api,
    headers: HeaderMap,
    extensions: http::Extensions,
    call: pb::Call,
) -> Bytes {
    let method = match &call.request {
        Some(call::Request::Get(_)) => &METHODS[0],
        Some(call::Request::Put(_)) | None => &METHODS[1],
        Some(call::Request::Delete(_)) => &METHODS[2],
    };
    let (observation, serving) = Observation::begin_call(&api.server, &call.request_id, method);
    let request_id = observation.id().to_owned();
    let limit = (call.timeout_ms > 0).then(|| Duration::from_millis(call.timeout_ms));
    let metadata = MetadataMap::from_headers(headers);
    let answering = AssertUnwindSafe(answer(api, metadata, extensions, call.request))
        .catch_unwind()
        .map(|answered| {
            answered.unwrap_or_else(|_| Err(Status::internal("the call's handler panicked")))
        });
    // Counted inside the call's request scope, so that its log line carries the request id.
    let answered = request_id::scope(
        serving,
        within(limit, answering).map(move |answered| {
            observation.finish(match &answered {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            });
            answered
        }),
    )
    .await;
    let answer = match answered {
        Ok(answer) => answer,
        Err(status) => call_answer::Answer::Failure(failure(status)),
    };
    proto::codec::frame(&pb::CallAnswer {
        id: call.id,
        request_id,
        answer: Some(answer),
    })
}

/// Runs the handler of the call's request.
async fn answer(
    api: &Api,
    metadata: MetadataMap,
    extensions: http::Extensions,
    request: Option<call::Request>,
) -> Result<call_answer::Answer, Status> {
    use tonic::Request;
    Ok(match request {
        Some(call::Request::Get(get)) => call_answer::Answer::Get(
            api.get(Request::from_parts(metadata, extensions, get))
                .await?
                .into_inner(),
        ),
        Some(call::Request::Put(put)) => call_answer::Answer::Put(
            api.put(Request::from_parts(metadata, extensions, put))
                .await?
                .into_inner(),
        ),
        Some(call::Request::Delete(delete)) => call_answer::Answer::Delete(
            api.delete(Request::from_parts(metadata, extensions, delete))
                .await?
                .into_inner(),
        ),
        None => return Err(malformed("a call without a request (get, put or delete)")),
    })
}

/// A call's failure as its unary twin's status would carry it.
fn failure(status: Status) -> pb::CallFailure {
    let metadata = status
        .metadata()
        .iter()
        .filter_map(|entry| match entry {
            KeyAndValueRef::Ascii(key, value) => value
                .to_str()
                .ok()
                .map(|value| (key.as_str().to_owned(), value.to_owned())),
            KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    pb::CallFailure {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Bytes::copy_from_slice(status.details()),
        metadata,
    }
}
