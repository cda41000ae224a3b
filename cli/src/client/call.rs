//! One API call before it is sent anywhere ([`Call`]): what it asks ([`Op`], from which the
//! gRPC request is built), its REST form (method, path, body, headers), whether sending it
//! twice is harmless ([`Replay`]) and where it goes first ([`Route`]); and the final
//! [`Answer`] an endpoint gave, in the REST form whichever protocol carried it. Invariant: only
//! a call marked [`Replay::Safe`] is ever sent again after it may have reached a server.

use bytes::Bytes;
use hyper::Method;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use proto::rest::{Consistency, DeleteResult, JoinRequest, KeyValue, Precondition, PutResult};

/// What a call asks, typed: the gRPC transport builds its request from this, the REST
/// transport sends the call's REST form.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Get {
        key: Bytes,
        consistency: Consistency,
        /// The answer as the JSON body (`Accept: application/json`) rather than the raw value.
        json: bool,
    },
    List {
        prefix: Bytes,
        after: Option<Bytes>,
        limit: Option<u32>,
    },
    Put {
        key: Bytes,
        value: Bytes,
        condition: Option<Precondition>,
    },
    Delete {
        key: Bytes,
    },
    /// `None`: every key.
    DeletePrefix {
        prefix: Option<Bytes>,
    },
    RegisterSession,
    Nodes,
    Leader,
    Join(JoinRequest),
    Remove(String),
    Transfer(String),
    Snapshot,
    Health,
    Ready,
    Auth(super::auth::AuthOp),
}

/// Whether sending a request twice is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Reads and session writes: retried after any failure.
    Safe,
    /// Plain writes: retried only when the request certainly was not applied.
    Unsafe,
}

/// Which endpoints a request goes to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Per [`ClientOptions::routing`](crate::ClientOptions::routing).
    Cluster,
    /// The endpoints in the order given; only transport failures move on.
    NodeLocal,
}

/// One API call, before it is sent anywhere.
pub(super) struct Call<'a> {
    pub(super) op: Op,
    pub(super) method: Method,
    pub(super) path_and_query: String,
    pub(super) body: Bytes,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) replay: Replay,
    pub(super) route: Route,
    /// The exactly-once session `(client_id, sequence)` of a write, if any.
    pub(super) session: Option<(u64, u64)>,
}

impl<'a> Call<'a> {
    pub(super) fn new(op: Op, method: Method, path_and_query: String, replay: Replay) -> Self {
        Call {
            op,
            method,
            path_and_query,
            body: Bytes::new(),
            headers: Vec::new(),
            key: None,
            replay,
            route: Route::Cluster,
            session: None,
        }
    }

    pub(super) fn json_body(mut self, body: &impl serde::Serialize) -> Self {
        self.body = Bytes::from(
            serde_json::to_vec(body)
                .expect("invariant: the contract's request bodies serialise to JSON"),
        );
        self.headers
            .push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        self
    }

    pub(super) fn accept_json(mut self) -> Self {
        self.headers
            .push((ACCEPT, HeaderValue::from_static("application/json")));
        self
    }
}

/// A final answer: its status, headers and body.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// A success the transport already holds in the SDK's types (the gRPC transport's hot
    /// calls): the caller takes it as it is, and `headers` and `body` are empty.
    pub(super) typed: Option<Typed>,
}

impl Answer {
    /// A `200` whose content is `typed`.
    pub(super) fn typed(typed: Typed) -> Self {
        Answer {
            status: 200,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            typed: Some(typed),
        }
    }
}

/// The content of a successful answer, typed. Over gRPC the node's answer is a typed message;
/// putting it into the REST form (headers or a JSON body) only for the caller to parse it back
/// cost the load generator about 3% of its CPU per call.
pub(super) enum Typed {
    /// A key read in the raw form (`Op::Get` without `json`); boxed, as it is three times the
    /// size of the others and every attempt's answer moves.
    Read(Box<KeyValue>),
    Put(PutResult),
    Delete(DeleteResult),
}
