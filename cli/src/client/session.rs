//! Sessions: exactly-once writes. [`Client::register_session`] asks the server for a client
//! id; each write through the [`Session`] carries it with the next sequence number, and the
//! server applies a write at most once per number. Invariants: a session sends numbers 1, 2,
//! 3, ... one write at a time (`&mut self`); the retries of one write reuse its number; the
//! number advances after every write whatever its outcome, so no later write reuses one.

use bytes::Bytes;
use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use proto::rest::SessionRegistered;

use super::api::{non_empty_prefix, parse_json};
use super::call::{Call, Op, Replay};
use super::{CLIENT_ID_HEADER, Client, SEQUENCE_HEADER};
use crate::error::Result;
use crate::types::{DeleteResult, Precondition, PutResult};

impl Call<'_> {
    /// Makes this write one of a session's (`(client_id, sequence)`), if it is: it carries the
    /// session's headers, and a retry of it is safe, since the server applies each sequence
    /// number at most once.
    pub(super) fn in_session(mut self, session: Option<(u64, u64)>) -> Self {
        if let Some((client_id, sequence)) = session {
            self.session = Some((client_id, sequence));
            self.headers = vec![
                (
                    HeaderName::from_static(CLIENT_ID_HEADER),
                    HeaderValue::from(client_id),
                ),
                (
                    HeaderName::from_static(SEQUENCE_HEADER),
                    HeaderValue::from(sequence),
                ),
            ];
            self.replay = Replay::Safe;
        }
        self
    }
}

impl Client {
    /// Registers a client session for exactly-once writes (`POST /sessions`).
    pub async fn register_session(&self) -> Result<Session> {
        let answer = self
            .execute_ok(Call::new(
                Op::RegisterSession,
                Method::POST,
                "/sessions".to_owned(),
                Replay::Unsafe,
            ))
            .await?;
        let registered: SessionRegistered = parse_json(&answer, "POST /sessions answer")?;
        Ok(Session {
            client: self.clone(),
            client_id: registered.client_id,
            next_sequence: 1,
        })
    }
}

/// A client session: writes through it are applied exactly once, even when retried on
/// another node after a connection loss, a timeout or a leader change.
///
/// Writes take `&mut self`: a session has one write in flight at a time, as the server
/// requires. Use one session per concurrent writer.
#[derive(Debug)]
pub struct Session {
    client: Client,
    client_id: u64,
    next_sequence: u64,
}

impl Session {
    /// The session's id, as the server assigned it.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The sequence number the next write will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The client the session writes through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Takes the next sequence number: every write consumes one, whatever its outcome.
    fn take_sequence(&mut self) -> (u64, u64) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        (self.client_id, sequence)
    }

    /// [`Client::put`], exactly once.
    pub async fn put(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<PutResult> {
        let session = self.take_sequence();
        self.client
            .put_call(key.as_ref(), value.into(), None, Some(session))
            .await
    }

    /// [`Client::put_if`], exactly once.
    pub async fn put_if(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        condition: Precondition,
    ) -> Result<PutResult> {
        let session = self.take_sequence();
        self.client
            .put_call(key.as_ref(), value.into(), Some(&condition), Some(session))
            .await
    }

    /// [`Client::delete`], exactly once.
    pub async fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<DeleteResult> {
        let session = self.take_sequence();
        self.client.delete_call(key.as_ref(), Some(session)).await
    }

    /// [`Client::delete_prefix`], exactly once.
    pub async fn delete_prefix(&mut self, prefix: impl AsRef<[u8]>) -> Result<DeleteResult> {
        let prefix = non_empty_prefix(prefix.as_ref())?;
        let session = self.take_sequence();
        self.client
            .delete_prefix_call(Some(prefix), Some(session))
            .await
    }

    /// [`Client::delete_all`], exactly once.
    pub async fn delete_all(&mut self) -> Result<DeleteResult> {
        let session = self.take_sequence();
        self.client.delete_prefix_call(None, Some(session)).await
    }
}
