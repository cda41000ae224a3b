//! Request ids: every HTTP request and gRPC call gets one, taken from its `X-Request-Id`
//! (`x-request-id` metadata) or made here, returned on its answer, passed on when it is
//! forwarded to the leader, and written on every log line emitted while it is served
//! (`logging` reads it from here).
//!
//! The id lives in a tokio task-local for the time the request is served, so that recording
//! it costs a request no tracing span: only the rare log line looks it up.
//! Invariant: an id is 1..=[`REQUEST_ID_BYTES_MAX`] visible ASCII bytes, so it is always a
//! valid header value and a safe log field.

use std::future::Future;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub use proto::rest::headers::{REQUEST_ID, REQUEST_ID_BYTES_MAX};
use tokio::task::futures::TaskLocalFuture;
use util::splitmix::SplitMix64;

tokio::task_local! {
    static CURRENT: Request;
}

/// The request being served: its id, and what it is (for a log line's `op` and `key`).
#[derive(Clone, Debug)]
pub struct Request {
    /// Its id.
    pub id: Arc<str>,
    what: What,
}

#[derive(Clone, Debug)]
enum What {
    Http(hyper::Method, hyper::Uri),
    Grpc(hyper::Uri),
}

/// The longest key a log line shows of a request; a longer one is cut (and says so).
pub const LOGGED_KEY_CHARS_MAX: usize = 128;

impl Request {
    /// An HTTP request.
    pub fn http(id: Arc<str>, method: hyper::Method, uri: hyper::Uri) -> Request {
        Request {
            id,
            what: What::Http(method, uri),
        }
    }

    /// A gRPC call.
    pub fn grpc(id: Arc<str>, uri: hyper::Uri) -> Request {
        Request {
            id,
            what: What::Grpc(uri),
        }
    }

    /// What the request does: `get`, `put`, `delete`, `list`, `delete_prefix` for the key
    /// routes, else the method and route template (`POST /cluster/join`), or the gRPC method
    /// (`/raftkv.v1.KV/Put`).
    pub fn op(&self) -> String {
        match &self.what {
            What::Http(method, uri) => {
                let template = crate::metrics::labels::route_template(uri.path());
                match (method.as_str(), template) {
                    ("GET", "/keys/{key}") => "get".into(),
                    ("PUT", "/keys/{key}") => "put".into(),
                    ("DELETE", "/keys/{key}") => "delete".into(),
                    ("GET", "/keys") => "list".into(),
                    ("DELETE", "/keys") => "delete_prefix".into(),
                    (method, template) => format!("{method} {template}"),
                }
            }
            What::Grpc(uri) => uri.path().to_string(),
        }
    }

    /// The key of a request on one key, as its path spells it (percent-encoded), cut to
    /// [`LOGGED_KEY_CHARS_MAX`] characters.
    pub fn key(&self) -> Option<String> {
        let What::Http(_, uri) = &self.what else {
            return None;
        };
        let key = uri.path().strip_prefix("/keys/")?;
        Some(match key.char_indices().nth(LOGGED_KEY_CHARS_MAX) {
            Some((cut, _)) => format!("{}...", &key[..cut]),
            None => key.to_string(),
        })
    }
}

/// The client's id when it is a usable one (see the module's invariant).
pub fn from_header(value: Option<&hyper::header::HeaderValue>) -> Option<Arc<str>> {
    from_bytes(value?.as_bytes())
}

/// The id a client gave as text (a call on a `KVCalls` stream), under the same rules as
/// [`from_header`].
pub fn from_text(text: &str) -> Option<Arc<str>> {
    from_bytes(text.as_bytes())
}

fn from_bytes(bytes: &[u8]) -> Option<Arc<str>> {
    let usable = (1..=REQUEST_ID_BYTES_MAX).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_graphic());
    usable.then(|| Arc::from(std::str::from_utf8(bytes).expect("checked: ASCII")))
}

/// A new id: 16 hex digits, distinct within this process (a bijection of a counter that
/// starts at a random point, so that two nodes' ids do not collide either).
pub fn generate() -> Arc<str> {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let mut seed = [0u8; 8];
        // Without the OS's randomness the ids stay distinct within the process, which is
        // what they are for; only their spread across nodes suffers.
        let _ = getrandom::fill(&mut seed);
        AtomicU64::new(u64::from_le_bytes(seed))
    });
    let n = SplitMix64::new(next.fetch_add(1, Ordering::Relaxed)).next_u64();
    let digits = hex16(n);
    Arc::from(std::str::from_utf8(&digits).expect("invariant: hex digits are ASCII"))
}

/// `n` as 16 lowercase hex digits, as `format!("{n:016x}")` writes it. By hand because it runs
/// on every request: `format!` went through the formatting machinery and a String copied into
/// the id's Arc (0.7% of a node's CPU under 64 gRPC writers).
fn hex16(n: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    digits
}

/// The id of `value`, or a new one.
pub fn take_or_make(value: Option<&hyper::header::HeaderValue>) -> Arc<str> {
    from_header(value).unwrap_or_else(generate)
}

/// `id` as a header value, marked sensitive: over HTTP/2 it is then sent as a literal that is
/// never indexed. An id is new on every answer, so indexing it in HPACK's dynamic table only
/// evicted the entries that do repeat (`content-type`), made the node search its table and
/// the client insert (gRPC stale reads, 64 clients: 1.8% of the node's CPU comparing header
/// values). HTTP/1.1 ignores the mark. Its one cost: `Debug` prints `Sensitive`, not the id.
pub fn header_value(id: &str) -> hyper::header::HeaderValue {
    let mut value = hyper::header::HeaderValue::from_str(id)
        .expect("invariant: a request id is visible ASCII, a valid header value");
    value.set_sensitive(true);
    value
}

/// Serves `fut` as `request`: log lines emitted while it runs carry the request's id.
///
/// A plain function rather than an `async fn`: an `async fn` would hold `fut` twice (as its
/// argument and as what it awaits), doubling the size of every request's future, which is
/// copied as it is made and moved.
pub fn scope<F: Future>(request: Request, fut: F) -> TaskLocalFuture<Request, F> {
    CURRENT.scope(request, fut)
}

/// Spawns `fut` on a task of its own that serves the same request as this one: its log lines
/// carry the request's id (a task-local is not inherited by spawned tasks).
pub fn spawn_serving<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match with_current(Clone::clone) {
        Some(request) => tokio::spawn(scope(request, fut)),
        None => tokio::spawn(fut),
    }
}

/// Reads the request being served on this task, if any.
pub fn with_current<R>(read: impl FnOnce(&Request) -> R) -> Option<R> {
    CURRENT.try_with(read).ok()
}

/// The id of the request being served on this task, if any.
pub fn current_id() -> Option<Arc<str>> {
    with_current(|r| Arc::clone(&r.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_spawned_while_serving_a_request_logs_under_its_id() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let request = Request::http(Arc::from("req-7"), hyper::Method::GET, "/".parse().unwrap());
        // Given a request being served, a task it spawns serves it too;
        let seen = runtime.block_on(scope(request, async {
            spawn_serving(async { current_id() })
                .await
                .expect("the task ran")
        }));
        assert_eq!(seen.as_deref(), Some("req-7"));
        // and one spawned outside any request serves none.
        let seen = runtime.block_on(async {
            spawn_serving(async { current_id() })
                .await
                .expect("the task ran")
        });
        assert_eq!(seen, None);
    }

    #[test]
    fn a_client_id_is_kept_only_when_it_is_a_safe_header_and_log_value() {
        let value = |s: &str| hyper::header::HeaderValue::from_str(s).unwrap();
        assert_eq!(
            from_header(Some(&value("req-42:abc"))).as_deref(),
            Some("req-42:abc")
        );
        assert_eq!(from_header(Some(&value(""))), None);
        assert_eq!(from_header(Some(&value("two words"))), None);
        assert_eq!(from_header(Some(&value(&"x".repeat(129)))), None);
        assert!(from_header(Some(&value(&"x".repeat(128)))).is_some());
        let made = take_or_make(Some(&value("a b")));
        assert_eq!(made.len(), 16);
        assert_ne!(generate(), generate());
    }

    #[test]
    fn a_new_id_is_its_number_in_sixteen_lowercase_hex_digits() {
        for n in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX, 1 << 63] {
            assert_eq!(&hex16(n), format!("{n:016x}").as_bytes(), "{n:#x}");
        }
        let id = generate();
        assert!(
            id.len() == 16
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn a_long_key_is_cut_in_log_lines() {
        let uri: hyper::Uri = format!("/keys/{}", "k".repeat(300)).parse().unwrap();
        let request = Request::http(generate(), hyper::Method::PUT, uri);
        assert_eq!(request.op(), "put");
        let key = request.key().unwrap();
        assert_eq!(key.len(), LOGGED_KEY_CHARS_MAX + 3);
        let cluster = Request::http(
            generate(),
            hyper::Method::POST,
            "/cluster/join".parse().unwrap(),
        );
        assert_eq!(cluster.op(), "POST /cluster/join");
        assert_eq!(cluster.key(), None);
    }
}
