//! One client connection of the gRPC API, served on `h2` directly.
//!
//! Why not hyper's server under tonic: on this API's hot calls it spent about a third of the
//! node's CPU around the handler (a task spawned for every HTTP/2 stream, tonic's router,
//! codec and body pump), and the hand-off to that task and back added to every call's
//! latency. Here the connection's own task serves `KV.Get`, `KV.Put` and `KV.Delete` in
//! place: each call is a future polled beside the connection, by the same task; so are the
//! `KVCalls.Calls` streams that carry those calls multiplexed ([`super::calls`]). Every other
//! call (the listing stream, the other services, health, reflection) goes to tonic's services
//! on a task of its own, with its answer streamed back under HTTP/2 flow control, as hyper did.
//!
//! The rules around a call are the same on both paths:
//! - its request id and metrics ([`super::observe`]);
//! - the message size limit ([`MESSAGE_BYTES_MAX`]: refused from the length prefix,
//!   `RESOURCE_EXHAUSTED` `too_large`);
//! - strict decoding (`INVALID_ARGUMENT`, [`proto::codec::decode_message`]);
//! - the client's `grpc-timeout` (`CANCELLED` when it passes, as tonic answers);
//! - a call whose client resets its stream is dropped (counted `CANCELLED`);
//! - the handlers themselves: the `Kv` methods of [`super::Api`].
//!
//! Invariant: the connection's task ends only when h2 says the connection is over, and after a
//! stop is asked it first lets the calls in flight finish (HTTP/2 graceful shutdown).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::future::Either;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http_body_util::BodyExt;
use hyper::body::Body;
use prost::Message;
use proto::pb::{self, kv_server::Kv};
use proto::rest::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::http::{self, HeaderMap, HeaderValue, header::CONTENT_TYPE};
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpConnectInfo;
use tracing::{debug, warn};

use proto::codec::PREFIX_BYTES;

use super::observe::Observation;
use super::{Api, MESSAGE_BYTES_MAX, STREAMS_PER_CONNECTION_MAX};
use crate::repoll::Repoll;
use crate::request_id;

/// The receive window of each stream: hyper's server default, kept.
pub const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// The receive window of the whole connection: hyper's server default, kept.
pub const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// The largest header block a client may send: hyper's server default, kept.
pub const HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;
/// The most bytes a stream may have queued to send: hyper's server default, kept.
pub const SEND_BUFFER_BYTES_MAX: usize = 400 * 1024;

/// Every call not served in place: tonic's services behind the observe and size layers.
pub type Routes = tower::util::BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Infallible,
>;

/// The calls served in place.
#[derive(Clone, Copy)]
enum InPlace {
    Unary(Unary),
    /// A `KVCalls.Calls` stream ([`super::calls`]).
    Calls,
}

/// The unary calls served in place.
#[derive(Clone, Copy)]
enum Unary {
    Get,
    Put,
    Delete,
}

impl InPlace {
    fn of(path: &str) -> Option<InPlace> {
        match path {
            "/raftkv.v1.KV/Get" => Some(InPlace::Unary(Unary::Get)),
            "/raftkv.v1.KV/Put" => Some(InPlace::Unary(Unary::Put)),
            "/raftkv.v1.KV/Delete" => Some(InPlace::Unary(Unary::Delete)),
            super::calls::PATH => Some(InPlace::Calls),
            _ => None,
        }
    }
}

/// Serves the connection `io` (from `remote`) until it closes; when `stop` turns true, it
/// refuses new calls (GOAWAY) and ends once the calls in flight are answered.
pub async fn serve<T>(
    io: T,
    remote: TcpConnectInfo,
    api: &Api,
    routes: Routes,
    stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // The connection and its in-place calls wake this task from within its own polls (see
    // `Repoll`): those wakes are taken in place, not through the scheduler.
    Repoll::new(drive(io, remote, api, routes, stop)).await
}

async fn drive<T>(
    io: T,
    remote: TcpConnectInfo,
    api: &Api,
    routes: Routes,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .max_header_list_size(HEADER_LIST_BYTES_MAX)
        .max_send_buffer_size(SEND_BUFFER_BYTES_MAX)
        .handshake::<_, Bytes>(io);
    let mut connection = match handshake.await {
        Ok(connection) => connection,
        Err(e) => {
            debug!(error = %e, "a gRPC connection ended before its HTTP/2 handshake");
            return;
        }
    };
    let mut stopping = *stop.borrow_and_update();
    if stopping {
        connection.graceful_shutdown();
    }
    // The call streams end on their own once a stop is asked (see `super::calls`).
    let calls_stop = stop.clone();
    let open_call_streams = AtomicUsize::new(0);
    let call_streams = &open_call_streams;
    let mut stop_asked = pin!(stop.changed());
    let mut in_place = FuturesUnordered::new();
    // Each turn polls the calls before the connection, and the connection until it has no new
    // call, without polling the new calls in between. Two reasons, both about writes:
    // - The calls answered since the last wake-up are buffered in h2 before the connection is
    //   polled, and its first poll writes them all out in one write rather than one write per
    //   answer (measured on the leader of three nodes, 64 clients putting over four
    //   connections: 0.65 writes per put before, 0.10 after).
    // - h2 writes what is buffered on every poll of the connection, and hands over one new call
    //   per poll. A call answered at once (a stale read) was polled as soon as it came, so the
    //   next poll wrote its answer alone. Taking every new call first, then polling them, puts
    //   their answers into one write (measured on the leader of three nodes, 64 clients reading
    //   stale over four connections: 1.00 writes per read before, 0.12 after).
    // Neither can starve the other: the calls run out after at most as many polls as there are
    // calls, and the connection's turn ends when h2's socket reads do, which tokio's
    // cooperative budget ends under a flood (see `Repoll`).
    poll_fn(move |cx| {
        loop {
            poll_calls(&mut in_place, cx);
            if !stopping && stop_asked.as_mut().poll(cx).is_ready() {
                // A stop (or the sender gone, which is the server ending) closes gracefully.
                stopping = true;
                connection.graceful_shutdown();
            }
            let mut accepted = false;
            loop {
                match connection.poll_accept(cx) {
                    Poll::Ready(Some(Ok((request, respond)))) => {
                        accepted = true;
                        let (mut parts, body) = request.into_parts();
                        parts.extensions.insert(remote.clone());
                        match InPlace::of(parts.uri.path()) {
                            // A panic in a handler ends its own call (its stream is reset),
                            // not the connection and every call on it: as when each call had
                            // a task.
                            Some(InPlace::Calls) => in_place.push(
                                AssertUnwindSafe(Either::Left(super::calls::serve(
                                    api,
                                    parts,
                                    body,
                                    respond,
                                    calls_stop.clone(),
                                    call_streams,
                                )))
                                .catch_unwind(),
                            ),
                            Some(InPlace::Unary(method)) => in_place.push(
                                AssertUnwindSafe(Either::Right(serve_in_place(
                                    api, method, parts, body, respond,
                                )))
                                .catch_unwind(),
                            ),
                            None => {
                                tokio::spawn(serve_routed(parts, body, respond, routes.clone()));
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        debug!(error = %e, "a gRPC connection failed");
                        return Poll::Ready(());
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            // Nothing new: every call, the connection and the stop signal have their wakers.
            if !accepted {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Polls every call of the connection that can go on, each answer buffered in h2 as its call
/// ends.
fn poll_calls<F>(calls: &mut FuturesUnordered<F>, cx: &mut Context<'_>)
where
    F: Future<Output = std::thread::Result<()>>,
{
    while let Poll::Ready(Some(served)) = calls.poll_next_unpin(cx) {
        if served.is_err() {
            warn!("a gRPC call's handler panicked; its stream was reset");
        }
    }
}

/// The deadline a client gives its call (`grpc-timeout`: up to 8 digits and a unit of H, M,
/// S, m, u or n), read as tonic's server reads it (which also takes a leading `+`): a
/// malformed one is ignored.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 60 * 60),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// What a call whose deadline passed is answered: tonic's answer.
fn timed_out() -> Status {
    Status::cancelled("Timeout expired")
}

/// `answering`, bounded by `limit` when the client gave one. Not an `async fn`, which would
/// hold `answering` twice (see `request_id::scope`).
pub(super) fn within<F: Future<Output = Result<A, Status>>, A>(
    limit: Option<Duration>,
    answering: F,
) -> impl Future<Output = Result<A, Status>> {
    match limit {
        Some(limit) => Either::Left(
            tokio::time::timeout(limit, answering).map(|r| r.unwrap_or_else(|_| Err(timed_out()))),
        ),
        None => Either::Right(answering),
    }
}

/// The refusal of a message over [`MESSAGE_BYTES_MAX`], as the routed calls' size layer
/// answers it (`super::size_refusal_is_too_large`).
pub(super) fn too_large() -> Status {
    proto::codec::refusal(
        tonic::Code::ResourceExhausted,
        format!("the message is larger than the limit of {MESSAGE_BYTES_MAX} bytes"),
        ErrorCode::TooLarge,
    )
}

pub(super) fn malformed(what: &str) -> Status {
    proto::codec::refusal(
        tonic::Code::InvalidArgument,
        what.to_owned(),
        ErrorCode::BadRequest,
    )
}

/// A call whose messages are compressed, which this server does not take (as tonic answers).
pub(super) fn encoding_refusal(headers: &HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding") {
        Some(encoding) if encoding.as_bytes() != b"identity" => {
            Err(Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(encoding.as_bytes())
            )))
        }
        _ => Ok(()),
    }
}

/// The length a message's prefix declares, once `message` holds the prefix: a compressed
/// message, or one over [`MESSAGE_BYTES_MAX`], is refused from the prefix alone.
pub(super) fn message_length(message: &[u8]) -> Result<Option<usize>, Status> {
    if message.len() < PREFIX_BYTES {
        return Ok(None);
    }
    if message[0] != 0 {
        return Err(Status::internal(
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        ));
    }
    let declared = u32::from_be_bytes([message[1], message[2], message[3], message[4]]);
    let declared = usize::try_from(declared).unwrap_or(usize::MAX);
    if declared > MESSAGE_BYTES_MAX {
        return Err(too_large());
    }
    Ok(Some(declared))
}

/// The one message of a unary call's request body, without its prefix. A message over the
/// limit is refused as soon as its prefix is in, before the rest is read.
async fn read_message(headers: &HeaderMap, mut body: RecvStream) -> Result<Bytes, Status> {
    encoding_refusal(headers)?;
    let mut message = BytesMut::new();
    let mut length = None;
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| Status::cancelled(format!("the request broke off: {e}")))?;
        let _ = body.flow_control().release_capacity(data.len());
        message.extend_from_slice(&data);
        if length.is_none() {
            length = message_length(&message)?;
        }
        if let Some(length) = length
            && message.len() > PREFIX_BYTES + length
        {
            return Err(malformed("a unary call carries one message"));
        }
    }
    match length {
        Some(length) if message.len() == PREFIX_BYTES + length => {
            let mut message = message.freeze();
            message.advance(PREFIX_BYTES);
            Ok(message)
        }
        Some(_) => Err(malformed("the message is cut short")),
        None => Err(malformed("the call carries no message")),
    }
}

/// Runs one `Kv` method on the call's message, giving the answer's metadata and framed message.
async fn answer<Q, A, F>(
    parts: http::request::Parts,
    message: Bytes,
    method: impl FnOnce(tonic::Request<Q>) -> F,
) -> Result<(MetadataMap, Bytes), Status>
where
    Q: Message + Default,
    A: Message,
    F: Future<Output = Result<tonic::Response<A>, Status>>,
{
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        proto::codec::decode_message::<Q>(message)?,
    );
    let (metadata, answer, _) = method(request).await?.into_parts();
    Ok((metadata, proto::codec::frame(&answer)))
}

/// Serves one of the [`Unary`] calls, on the connection's task.
async fn serve_in_place(
    api: &Api,
    method: Unary,
    parts: http::request::Parts,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
) {
    let (observation, serving) = Observation::begin(&api.server, &parts.headers, &parts.uri);
    let limit = grpc_timeout(&parts.headers);
    // The answer's head is made inside the call's request scope, so that what the observation
    // logs carries the request id.
    let answering = request_id::scope(serving, async move {
        let answered = within(limit, async move {
            let message = read_message(&parts.headers, body).await?;
            match method {
                Unary::Get => {
                    answer(parts, message, |r: tonic::Request<pb::GetRequest>| {
                        api.get(r)
                    })
                    .await
                }
                Unary::Put => {
                    answer(parts, message, |r: tonic::Request<pb::PutRequest>| {
                        api.put(r)
                    })
                    .await
                }
                Unary::Delete => {
                    answer(parts, message, |r: tonic::Request<pb::DeleteRequest>| {
                        api.delete(r)
                    })
                    .await
                }
            }
        })
        .await;
        let (mut head, message) = match answered {
            Ok((metadata, message)) => {
                let mut head = http::Response::new(());
                *head.headers_mut() = metadata.into_headers();
                head.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                (head, Some(message))
            }
            // Trailers only.
            Err(status) => (status.into_http::<()>(), None),
        };
        observation.answered(head.headers_mut());
        (head, message)
    });
    let (head, message) = tokio::select! {
        answered = answering => answered,
        // The client reset the stream: the call is dropped, and counted `CANCELLED`.
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let Some(message) = message else {
        let _ = respond.send_response(head, true);
        return;
    };
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    let mut trailers = HeaderMap::new();
    trailers.insert(proto::codec::GRPC_STATUS, HeaderValue::from_static("0"));
    if send.send_data(message, false).is_ok() {
        let _ = send.send_trailers(trailers);
    }
}

/// Serves a call through tonic's services, on a task of its own.
async fn serve_routed(
    parts: http::request::Parts,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
    routes: Routes,
) {
    let limit = grpc_timeout(&parts.headers);
    let request = http::Request::from_parts(
        parts,
        tonic::body::Body::new(proto::h2body::RecvBody::new(body)),
    );
    let answering = async {
        let Ok(response) = tower::ServiceExt::oneshot(routes, request).await;
        Ok::<_, Status>(response)
    };
    let response = tokio::select! {
        answered = within(limit, answering) => {
            answered.unwrap_or_else(|status| status.into_http::<tonic::body::Body>())
        }
        // The client reset the stream: the call is dropped (the observe layer counts it).
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let (head, body) = response.into_parts();
    let ends = body.is_end_stream();
    let Ok(send) = respond.send_response(http::Response::from_parts(head, ()), ends) else {
        return;
    };
    if !ends {
        pipe(body, send).await;
    }
}

/// Waits until the stream may send at least a byte; `false` when it never will (the client
/// reset it, or the connection is gone).
async fn room(send: &mut SendStream<Bytes>) -> bool {
    send.reserve_capacity(1);
    poll_fn(|cx| {
        loop {
            if send.poll_reset(cx).is_ready() {
                return Poll::Ready(false);
            }
            if send.capacity() > 0 {
                return Poll::Ready(true);
            }
            match send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(false),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// Streams an answer's body out under flow control: the next frame is taken from the body only
/// once the client's window has room, so a client that stops reading stops the body too (a
/// listing then gives up on it, `api::grpc::kv`).
async fn pipe(mut body: tonic::body::Body, mut send: SendStream<Bytes>) {
    loop {
        if !room(&mut send).await {
            return;
        }
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        match frame {
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                debug!(error = %e, "a gRPC answer failed part-way");
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if send.send_data(data, false).is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = send.send_trailers(trailers);
                    }
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &'static str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_static(value));
        grpc_timeout(&headers)
    }

    #[test]
    fn a_clients_deadline_is_read_as_tonic_reads_it() {
        assert_eq!(timeout_of("3S"), Some(Duration::from_secs(3)));
        assert_eq!(timeout_of("2M"), Some(Duration::from_secs(120)));
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout_of("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout_of("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(
            timeout_of("+5S"),
            Some(Duration::from_secs(5)),
            "as tonic reads it"
        );
        // Malformed ones are ignored: no digits, too many, a minus, an unknown unit.
        for bad in ["S", "", "123456789S", "5x", "5", "-1S"] {
            assert_eq!(timeout_of(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
