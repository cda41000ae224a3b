//! The retry engine: sends a [`Call`] to one endpoint after another, for
//! [`ClientOptions::passes`](crate::ClientOptions::passes) passes with exponential backoff, all
//! within [`ClientOptions::call_timeout`](crate::ClientOptions::call_timeout); finds the leader
//! for [`Routing::Leader`]; and decides, per the rules in the [`client`](super) documentation,
//! what may be retried. Invariants: a `4xx` answer is final; a call that may have reached a
//! server is retried only when [`Replay::Safe`]; every attempt is bounded in time and every
//! answer body in size ([`RESPONSE_BYTES_MAX`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};

use super::api::parse_json;
use super::call::{Answer, Call, Op, Replay, Route};
use super::endpoint::{Endpoint, Protocol, authority_of};
use super::{
    Client, LEADER_LOOKUP_INTERVAL_MIN, LEADER_LOOKUP_TIMEOUT_MAX, NO_LEADER, RESPONSE_BYTES_MAX,
};
use crate::error::{EndpointFailure, Error, Result, from_response, one_line};
use crate::types::{LeaderInfo, Routing};

/// What one attempt on one endpoint came to.
pub(super) enum Attempt {
    /// The server answered.
    Answer(Answer),
    /// The request certainly did not reach the server.
    NotSent(String),
    /// The request may have reached the server; no answer came.
    Lost(String),
}

/// One line from an error and its causes.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    // hyper-util's own layer ("client error (Connect)") says nothing its causes do not.
    let (mut text, mut source) = match error.source() {
        Some(cause) if error.to_string().starts_with("client error (") => {
            (cause.to_string(), cause.source())
        }
        _ => (error.to_string(), error.source()),
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

impl Client {
    /// [`Client::execute`], with error answers turned into [`Error`]s.
    pub(super) async fn execute_ok(&self, call: Call<'_>) -> Result<Answer> {
        let key = call.key;
        let (_, answer) = self.execute(call).await?;
        if (200..300).contains(&answer.status) {
            Ok(answer)
        } else {
            Err(from_response(answer.status, &answer.body, key))
        }
    }

    /// Sends `call` until an endpoint gives a final answer, per the retry rules in the module
    /// documentation. Returns the answering endpoint and its answer.
    pub(super) async fn execute(&self, call: Call<'_>) -> Result<(String, Answer)> {
        let inner = &*self.inner;
        let n = inner.endpoints.len();
        let mut failures: Vec<Option<String>> = vec![None; n];
        let mut backoff = inner.options.backoff_initial;
        // The whole call, retries included, ends by this: without a quorum every attempt
        // waits out the server's own no-leader timeout, and passes × endpoints of those
        // would add up to far more than the caller asked to wait.
        let deadline = tokio::time::Instant::now() + inner.options.call_timeout;
        'passes: for pass in 0..inner.options.passes {
            if pass > 0 {
                if tokio::time::Instant::now() + backoff >= deadline {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(inner.options.backoff_max);
            }
            let start = self.start_index(call.route, deadline).await;
            for step in 0..n {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break 'passes;
                }
                let index = (start + step) % n;
                let endpoint = &inner.endpoints[index];
                let timeout = left.min(inner.options.request_timeout);
                let failure = match self.attempt(endpoint, &call, timeout).await? {
                    Attempt::Answer(answer) => {
                        let retry = match (answer.status, call.route) {
                            (_, Route::NodeLocal) => false,
                            // `not_leader`: that node would not forward it (the hop count is
                            // spent, or over gRPC the leader's address is not on record yet);
                            // nothing was applied, so another endpoint may take it.
                            (307 | 503, Route::Cluster) => true,
                            (504, Route::Cluster) => call.replay == Replay::Safe,
                            _ => false,
                        };
                        if !retry {
                            return Ok((endpoint.base.clone(), answer));
                        }
                        from_response(answer.status, &answer.body, None).to_string()
                    }
                    Attempt::NotSent(reason) => reason,
                    Attempt::Lost(reason) => {
                        if call.replay == Replay::Unsafe {
                            return Err(Error::Timeout(format!(
                                "{}: {reason}; the request may or may not have been applied",
                                endpoint.base
                            )));
                        }
                        // An attempt cut short by the call's deadline says less than what
                        // this endpoint answered before (typically the server's "no leader").
                        match failures[index].take() {
                            Some(earlier) if timeout < inner.options.request_timeout => format!(
                                "{earlier}; then no answer before the call's {} ms ran out",
                                inner.options.call_timeout.as_millis()
                            ),
                            _ => reason,
                        }
                    }
                };
                // Whatever failed here is no longer a leader we should prefer.
                let _ = inner.leader.compare_exchange(
                    index,
                    NO_LEADER,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                failures[index] = Some(failure);
            }
        }
        Err(Error::Unavailable(
            inner
                .endpoints
                .iter()
                .zip(failures)
                .filter_map(|(endpoint, failure)| {
                    failure.map(|reason| EndpointFailure {
                        endpoint: endpoint.base.clone(),
                        reason,
                    })
                })
                .collect(),
        ))
    }

    /// Where a pass over the endpoints starts.
    async fn start_index(&self, route: Route, deadline: tokio::time::Instant) -> usize {
        let inner = &*self.inner;
        let n = inner.endpoints.len();
        match (route, inner.options.routing) {
            (Route::NodeLocal, _) => 0,
            (Route::Cluster, Routing::Spread) => inner.rotation.fetch_add(1, Ordering::Relaxed) % n,
            (Route::Cluster, Routing::Leader) => {
                let known = inner.leader.load(Ordering::Relaxed);
                if known < n {
                    return known;
                }
                // Boxed: a rare path (no leader known) that would otherwise make every
                // call's future larger.
                if let Some(found) = Box::pin(self.look_up_leader(deadline)).await {
                    return found;
                }
                inner.rotation.fetch_add(1, Ordering::Relaxed) % n
            }
        }
    }

    /// Asks the endpoints for the leader, at most once per [`LEADER_LOOKUP_INTERVAL_MIN`];
    /// remembers and returns its index when it is one of the endpoints.
    async fn look_up_leader(&self, deadline: tokio::time::Instant) -> Option<usize> {
        let inner = &*self.inner;
        {
            let mut last = inner
                .last_lookup
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| at.elapsed() < LEADER_LOOKUP_INTERVAL_MIN) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let call = Call::new(
            Op::Leader,
            Method::GET,
            "/cluster/leader".to_owned(),
            Replay::Safe,
        );
        for endpoint in &inner.endpoints {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let timeout = left.min(LEADER_LOOKUP_TIMEOUT_MAX);
            let answer = match self.attempt(endpoint, &call, timeout).await {
                Ok(Attempt::Answer(answer)) if answer.status == 200 => answer,
                _ => continue,
            };
            let Ok(leader) = parse_json::<LeaderInfo>(&answer, "leader") else {
                continue;
            };
            // Each endpoint is matched against the leader's address for its own protocol.
            let found = inner.endpoints.iter().position(|e| {
                let addr = match e.protocol {
                    Protocol::Http => Some(leader.http_addr.as_str()),
                    Protocol::Grpc => leader.grpc_addr.as_deref(),
                };
                addr.map(authority_of) == Some(e.authority.as_str())
            });
            if let Some(index) = found {
                inner.leader.store(index, Ordering::Relaxed);
            }
            // A leader outside the endpoint list is reached through forwarding.
            return found;
        }
        None
    }

    /// One attempt of `call` on `endpoint`, bounded by `timeout` (what is left of the call's).
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        call: &Call<'_>,
        timeout: Duration,
    ) -> Result<Attempt> {
        let credential = self.credential();
        if endpoint.protocol == Protocol::Grpc {
            let exchange = super::grpc::attempt(endpoint, call, &credential);
            return Ok(match tokio::time::timeout(timeout, exchange).await {
                Ok(attempt) => attempt,
                Err(_) => Attempt::Lost(format!("no answer within {timeout:?}")),
            });
        }
        let uri = format!("{}{}", endpoint.base, call.path_and_query);
        let mut builder = Request::builder().method(call.method.clone()).uri(&uri);
        for (name, value) in &call.headers {
            builder = builder.header(name, value);
        }
        if let Some((name, value)) = credential.header() {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(call.body.clone()))
            .map_err(|e| Error::BadRequest(format!("cannot form a request for {uri}: {e}")))?;
        let exchange = async {
            let response = match self.inner.http.request(request).await {
                Ok(response) => response,
                Err(e) if e.is_connect() => return Ok(Attempt::NotSent(error_chain(&e))),
                Err(e) => return Ok(Attempt::Lost(error_chain(&e))),
            };
            let (parts, body) = response.into_parts();
            match Limited::new(body, RESPONSE_BYTES_MAX).collect().await {
                Ok(collected) => Ok(Attempt::Answer(Answer {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: collected.to_bytes(),
                    typed: None,
                })),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    Err(Error::Protocol(format!(
                        "{}: answer larger than {RESPONSE_BYTES_MAX} bytes",
                        endpoint.base
                    )))
                }
                Err(e) => Ok(Attempt::Lost(error_chain(&*e))),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Ok(Attempt::Lost(format!("no answer within {timeout:?}"))),
        }
    }
}
