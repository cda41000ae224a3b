//! The SDK's `KVCalls.Calls` stream on one connection: Get, Put and Delete calls multiplexed
//! on one HTTP/2 stream (see the service in raftkv.proto), which spares each call the stream
//! and headers of a unary call. Callers write their calls on the stream; one reader task per
//! stream hands each answer to its caller by id.
//!
//! Invariants:
//! - a call gets exactly one outcome: its answer, or the stream's end;
//! - when the node ends the stream normally (its trailers), it has answered every call it took
//!   (the service's rule), so the calls left are reported [`super::channel::NotSent`] and may be
//!   sent again; when the stream breaks, their outcome is unknown;
//! - once the stream is closed no call is added to it (the closing and the adding hold the same
//!   lock), so none waits for an answer that cannot come;
//! - at most [`CALLS_MAX`] calls are out on a stream at once (the node's own limit), so a call
//!   sent is taken at once rather than queued behind others, as a unary call waits for a free
//!   stream; a call whose caller gave up is then not applied long after;
//! - the reader holds only the waiters: when the last handle on the stream goes, its side is
//!   ended, the node answers what it took and ends the stream, and the connection can close.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use prost::Message;
use proto::codec::PREFIX_BYTES;
use proto::pb::{self, call, call_answer};
use tokio::sync::oneshot;
use tonic::Status;
use tonic::metadata::{MetadataKey, MetadataValue};

use super::channel::{InFlight, lost, not_sent};
use crate::types::Credential;

/// The stream's path.
pub(super) const PATH: &str = "/raftkv.v1.KVCalls/Calls";

/// What a caller waits on: its call's answer, or why it has none.
type Outcome = Result<call_answer::Answer, Status>;

/// The calls out on a stream at once: the node's limit per stream
/// (`api::grpc::calls::CALLS_PER_STREAM_MAX`).
pub(super) const CALLS_MAX: usize = 256;

/// The calls waiting for their answers, and whether the stream has closed.
#[derive(Default)]
struct Waiters {
    closed: bool,
    by_id: HashMap<u64, oneshot::Sender<Outcome>>,
}

/// What a call finds on a stream that closed before it could be sent: another stream may take
/// it.
pub(super) struct Closed;

/// One open `KVCalls.Calls` stream.
pub(super) struct CallStream {
    /// The credential the stream was opened with: its calls are made with it.
    credential: Credential,
    send: std::sync::Mutex<SendStream<Bytes>>,
    /// Shared with the reader task.
    waiters: Arc<std::sync::Mutex<Waiters>>,
    /// One permit per call out ([`CALLS_MAX`]).
    room: tokio::sync::Semaphore,
    next_id: AtomicU64,
    /// The connection's count of calls in flight (its driver batches writes by it).
    in_flight: Arc<AtomicUsize>,
}

impl Drop for CallStream {
    /// Ends the client's side: the node answers the calls it took, then ends the stream.
    fn drop(&mut self) {
        if let Ok(send) = self.send.get_mut() {
            let _ = send.send_data(Bytes::new(), true);
        }
    }
}

const SEND_LOCK: &str = "invariant: no code panics while holding a call stream's sender";
const WAITERS_LOCK: &str = "invariant: no code panics while holding a call stream's waiters";

impl CallStream {
    /// A stream whose request half is `send` and whose answers come on `answers` (its head
    /// taken); its reader task is started here. An answer over `max_bytes` breaks the stream.
    pub(super) fn start(
        credential: Credential,
        answers: RecvStream,
        send: SendStream<Bytes>,
        in_flight: Arc<AtomicUsize>,
        max_bytes: usize,
    ) -> Arc<CallStream> {
        let waiters = Arc::new(std::sync::Mutex::new(Waiters::default()));
        let reader = Arc::clone(&waiters);
        tokio::spawn(async move {
            let ended = read_answers(answers, &reader, max_bytes).await;
            close(&reader, &ended);
        });
        Arc::new(CallStream {
            credential,
            send: std::sync::Mutex::new(send),
            waiters,
            room: tokio::sync::Semaphore::new(CALLS_MAX),
            next_id: AtomicU64::new(0),
            in_flight,
        })
    }

    /// The credential its calls are made with.
    pub(super) fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Whether the stream has ended: a new one is needed.
    pub(super) fn is_closed(&self) -> bool {
        self.waiters.lock().expect(WAITERS_LOCK).closed
    }

    /// One call: its answer, or the status of its failure (the node's, or the stream's end);
    /// [`Closed`] when the stream had closed before the call could be sent.
    pub(super) async fn call(&self, request: call::Request) -> Result<Outcome, Closed> {
        let Ok(_permit) = self.room.acquire().await else {
            unreachable!("invariant: a call stream's semaphore is never closed");
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answered, answer) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock().expect(WAITERS_LOCK);
            if waiters.closed {
                return Err(Closed);
            }
            waiters.by_id.insert(id, answered);
        }
        // A caller that gives up (its timeout) takes its waiter out; the node's answer, if it
        // comes, is then dropped.
        let mut waiting = Waiting {
            stream: self,
            id,
            waits: true,
        };
        let _in_flight = InFlight::new(&self.in_flight);
        let call = pb::Call {
            id,
            timeout_ms: 0,
            request_id: String::new(),
            request: Some(request),
        };
        if let Err(e) = self
            .send
            .lock()
            .expect(SEND_LOCK)
            .send_data(proto::codec::frame(&call), false)
        {
            // h2 took none of it: the call never left.
            return Ok(Err(not_sent(format!("the call stream is gone: {e}"))));
        }
        let outcome = answer.await;
        // Whoever sent the outcome took the waiter out.
        waiting.waits = false;
        Ok(match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(Status::internal(
                "invariant broken: a call stream dropped a call without its outcome",
            )),
        })
    }
}

/// Closes a stream: every call still waiting gets `ended`, and no call is added after.
fn close(waiters: &std::sync::Mutex<Waiters>, ended: &Status) {
    let waiting = {
        let mut waiters = waiters.lock().expect(WAITERS_LOCK);
        waiters.closed = true;
        std::mem::take(&mut waiters.by_id)
    };
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(ended.clone()));
    }
}

fn answered(waiters: &std::sync::Mutex<Waiters>, answer: pb::CallAnswer) {
    let waiter = waiters.lock().expect(WAITERS_LOCK).by_id.remove(&answer.id);
    if let Some(waiter) = waiter {
        let _ = waiter.send(match answer.answer {
            Some(call_answer::Answer::Failure(failure)) => Err(status_of(failure)),
            Some(answer) => Ok(answer),
            None => Err(Status::internal("a call's answer without its outcome")),
        });
    }
}

/// A call waiting for its answer; dropped while it `waits`, it no longer does.
struct Waiting<'a> {
    stream: &'a CallStream,
    id: u64,
    waits: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.waits {
            return;
        }
        self.stream
            .waiters
            .lock()
            .expect(WAITERS_LOCK)
            .by_id
            .remove(&self.id);
    }
}

/// Reads the stream's answers until it ends; gives what the calls still waiting are told.
async fn read_answers(
    mut body: RecvStream,
    waiters: &std::sync::Mutex<Waiters>,
    max_bytes: usize,
) -> Status {
    let mut buffer = BytesMut::new();
    loop {
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                buffer.extend_from_slice(&data);
                loop {
                    match next_answer(&mut buffer, max_bytes) {
                        Ok(Some(answer)) => answered(waiters, answer),
                        Ok(None) => break,
                        Err(why) => {
                            return Status::unavailable(format!("the call stream broke: {why}"));
                        }
                    }
                }
            }
            Some(Err(e)) => return lost(e),
            None => break,
        }
    }
    // Ended by the node with its status, after answering every call it took: only that
    // status says so; trailers without one leave the calls' outcome unknown.
    match body.trailers().await {
        Ok(Some(trailers)) => match Status::from_header_map(&trailers) {
            Some(status) => not_sent(format!(
                "the node ended the call stream before it took the call: {}",
                status.message()
            )),
            None => Status::unavailable("the call stream ended without a status"),
        },
        Ok(None) => Status::unavailable("the call stream ended without its trailers"),
        Err(e) => lost(e),
    }
}

/// The next whole answer in `buffer`, taken out of it; an error for a broken stream.
fn next_answer(buffer: &mut BytesMut, max_bytes: usize) -> Result<Option<pb::CallAnswer>, String> {
    if buffer.len() < PREFIX_BYTES {
        return Ok(None);
    }
    if buffer[0] != 0 {
        return Err("a compressed answer".into());
    }
    let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if length > max_bytes {
        return Err(format!(
            "an answer over the client's limit of {max_bytes} bytes"
        ));
    }
    if buffer.len() < PREFIX_BYTES + length {
        return Ok(None);
    }
    let mut message = buffer.split_to(PREFIX_BYTES + length).freeze();
    message.advance(PREFIX_BYTES);
    pb::CallAnswer::decode(message)
        .map(Some)
        .map_err(|e| format!("an undecodable answer: {e}"))
}

/// A failure as the status its unary twin would have given.
fn status_of(failure: pb::CallFailure) -> Status {
    let mut status = Status::with_details(
        tonic::Code::from_i32(failure.code),
        failure.message,
        failure.details,
    );
    for (key, value) in failure.metadata {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            status.metadata_mut().insert(key, value);
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::header::{CONTENT_TYPE, HeaderValue};
    use proto::codec::GRPC_STATUS;

    use super::*;
    use crate::client::channel::{Channel, NotSent};

    /// How a fake node ends its call stream after answering the first call.
    #[derive(Clone, Copy)]
    enum End {
        /// With its trailers once the next call's bytes came, without taking the call: as a
        /// stopping node does.
        Trailers,
        /// With a reset, after reading the next call: that call's outcome is unknown.
        ResetAfterTaking,
    }

    /// A fake node serving `KVCalls` streams: it answers the first call with a get's answer,
    /// then ends the stream as `end` says.
    async fn node(end: End) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut connection = h2::server::handshake(tcp).await.expect("h2 handshake");
                // The connection is polled by its own loop; each stream is served beside it.
                tokio::spawn(async move {
                    while let Some(Ok((request, respond))) = connection.accept().await {
                        tokio::spawn(serve(request, respond, end));
                    }
                });
            }
        });
        addr
    }

    async fn serve(
        request: hyper::Request<RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        end: End,
    ) {
        assert_eq!(request.uri().path(), PATH);
        let mut head = hyper::Response::new(());
        head.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        let mut send = respond.send_response(head, false).expect("head");
        let mut body = request.into_body();
        let first = next_call(&mut body).await;
        let answer = pb::CallAnswer {
            id: first.id,
            request_id: String::new(),
            answer: Some(call_answer::Answer::Get(pb::GetResponse::default())),
        };
        send.send_data(proto::codec::frame(&answer), false)
            .expect("the answer");
        match end {
            End::Trailers => {
                // Once the client's next call has come, without taking it.
                let _ = body.data().await;
                let mut trailers = hyper::HeaderMap::new();
                trailers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
                send.send_trailers(trailers).expect("trailers");
            }
            End::ResetAfterTaking => {
                next_call(&mut body).await;
                send.send_reset(h2::Reason::INTERNAL_ERROR);
            }
        }
    }

    async fn next_call(body: &mut h2::RecvStream) -> pb::Call {
        let mut buffer = BytesMut::new();
        loop {
            if buffer.len() >= PREFIX_BYTES {
                let length =
                    u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if buffer.len() >= PREFIX_BYTES + length {
                    let message = buffer.split_to(PREFIX_BYTES + length);
                    return pb::Call::decode(&message[PREFIX_BYTES..]).expect("a call");
                }
            }
            let data = body.data().await.expect("more").expect("data");
            let _ = body.flow_control().release_capacity(data.len());
            buffer.extend_from_slice(&data);
        }
    }

    fn get() -> call::Request {
        call::Request::Get(pb::GetRequest {
            key: Bytes::from_static(b"k"),
            consistency: 0,
        })
    }

    fn not_sent(status: &Status) -> bool {
        std::error::Error::source(status).is_some_and(|s| s.downcast_ref::<NotSent>().is_some())
    }

    #[tokio::test]
    async fn given_a_stream_the_node_ended_then_the_calls_it_did_not_take_were_not_sent() {
        let addr = node(End::Trailers).await;
        let channel =
            Channel::new(&addr.to_string(), None, Duration::from_secs(2)).expect("a channel");
        // Given a call answered on the stream,
        let answer = channel
            .call(&Credential::None, get(), 1024)
            .await
            .expect("answered");
        assert!(matches!(answer, call_answer::Answer::Get(_)));
        // when the node ends the stream before taking the next call,
        let refused = channel
            .call(&Credential::None, get(), 1024)
            .await
            .expect_err("the stream ended");
        // then that call is reported as never sent (it may be sent again).
        assert!(not_sent(&refused), "{refused:?}");
    }

    #[tokio::test]
    async fn given_a_stream_that_broke_after_taking_a_call_then_its_outcome_is_unknown() {
        let addr = node(End::ResetAfterTaking).await;
        let channel =
            Channel::new(&addr.to_string(), None, Duration::from_secs(2)).expect("a channel");
        channel
            .call(&Credential::None, get(), 1024)
            .await
            .expect("answered");
        let lost = channel
            .call(&Credential::None, get(), 1024)
            .await
            .expect_err("the stream broke");
        assert!(
            !not_sent(&lost),
            "a call the node took may have applied: {lost:?}"
        );
        assert_eq!(lost.code(), tonic::Code::Unavailable, "{lost:?}");
    }
}
