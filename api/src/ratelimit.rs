//! Request rate limits, for both APIs: each client's request rate (`performance.enable_rate_limit`:
//! per principal when authenticated, per address otherwise), and failed logins, limited per user
//! and per address whether or not request rates are, so that guessing passwords is slow.
//!
//! Each limit is a token bucket per client: `rate` tokens a second up to `burst`; a request (or
//! a login attempt, given back when it succeeds) takes one, and finds the bucket empty when the
//! client went over. The buckets
//! live in a bounded cache ([`CLIENTS_MAX`] each) that drops a bucket once it has been idle long
//! enough to have refilled, so dropping it changes nothing and memory stays bounded whatever the
//! number of clients.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::rest::ErrorCode;
use serde_json::Value;

use crate::config::Config;
use crate::service::ApiError;

/// The most clients whose buckets one limit keeps (the least recently used go first).
pub const CLIENTS_MAX: u64 = 100_000;

/// A window of failed logins: the per-user and per-address limits are counts per this long.
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Refused credentials checked again after a read index (`service::auth::admit`), per client
/// address per second: each costs a round to the leader, so an address sending made-up
/// credentials gets no more than this many.
pub const RECHECKS_PER_ADDRESS_PER_SECOND: f64 = 10.0;
/// The burst of [`RECHECKS_PER_ADDRESS_PER_SECOND`].
pub const RECHECKS_BURST: f64 = 20.0;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One token-bucket limit over many clients.
pub struct Limit {
    rate: f64,
    burst: f64,
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

impl Limit {
    /// `rate` tokens a second, up to `burst` (both at least 1).
    pub fn new(rate: f64, burst: f64) -> Limit {
        let (rate, burst) = (rate.max(f64::MIN_POSITIVE), burst.max(1.0));
        // Idle this long, a bucket is full again: forgetting it is the same as keeping it.
        let refill = Duration::from_secs_f64((burst / rate).min(86_400.0)) + Duration::from_secs(1);
        Limit {
            rate,
            burst,
            buckets: moka::sync::Cache::builder()
                .max_capacity(CLIENTS_MAX)
                .time_to_idle(refill)
                .build(),
        }
    }

    fn bucket(&self, client: &str) -> Arc<Mutex<Bucket>> {
        self.buckets.get_with_by_ref(client, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                at: Instant::now(),
            }))
        })
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let earned = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + earned).min(self.burst);
        bucket.at = now;
    }

    /// Takes a token for `client`, or says how long until one is there.
    pub fn take(&self, client: &str) -> Result<(), Duration> {
        let bucket = self.bucket(client);
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut b, Instant::now());
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Gives back a token taken for `client` (an attempt that turned out not to count).
    pub fn give_back(&self, client: &str) {
        if let Some(bucket) = self.buckets.get(client) {
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.tokens = (b.tokens + 1.0).min(self.burst);
        }
    }
}

/// The node's rate limits.
pub struct RateLimits {
    requests: Option<Limit>,
    failed_logins_by_user: Limit,
    failed_logins_by_address: Limit,
    rechecks: Limit,
}

/// The `429 rate_limited` refusal, saying when to come back (whole seconds, at least 1).
pub fn refusal(what: &str, retry_after: Duration) -> ApiError {
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        ErrorCode::RateLimited,
        format!("{what}; retry in {seconds} s"),
    )
    .with("retry_after_seconds", Value::from(seconds))
}

/// Whose bucket a request draws from: the principal's when authenticated, else the address's.
pub fn client_key(principal: Option<&str>, peer: Option<IpAddr>) -> Option<String> {
    match (principal, peer) {
        (Some(name), _) => Some(format!("principal:{name}")),
        (None, Some(ip)) => Some(format!("address:{ip}")),
        (None, None) => None,
    }
}

impl RateLimits {
    /// The limits `config` asks for.
    pub fn new(config: &Config) -> RateLimits {
        let p = &config.performance;
        let per_window = |n: u32| f64::from(n) / FAILED_LOGIN_WINDOW.as_secs_f64();
        let a = &config.auth;
        RateLimits {
            requests: p.enable_rate_limit.then(|| {
                Limit::new(
                    f64::from(p.rate_limit_per_second),
                    f64::from(p.rate_limit_burst),
                )
            }),
            failed_logins_by_user: Limit::new(
                per_window(a.failed_logins_per_user),
                f64::from(a.failed_logins_per_user),
            ),
            failed_logins_by_address: Limit::new(
                per_window(a.failed_logins_per_address),
                f64::from(a.failed_logins_per_address),
            ),
            rechecks: Limit::new(RECHECKS_PER_ADDRESS_PER_SECOND, RECHECKS_BURST),
        }
    }

    /// Counts a request of `principal` (when authenticated) or else from `peer` (their bucket:
    /// [`client_key`]); `429 rate_limited` over its rate. With no request limit set, nothing is
    /// counted and no key is made: this runs on every request.
    pub fn request(&self, principal: Option<&str>, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(limit) = &self.requests else {
            return Ok(());
        };
        let Some(client) = client_key(principal, peer) else {
            return Ok(());
        };
        limit.take(&client).map_err(|wait| {
            refusal(
                "this client is over its request rate (performance.rate_limit_per_second)",
                wait,
            )
        })
    }

    /// Whether a refused credential from `peer` may be checked again after a read index
    /// (see [`RECHECKS_PER_ADDRESS_PER_SECOND`]).
    pub fn may_recheck(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.rechecks.take(&ip.to_string()).is_ok())
    }

    /// Takes a login attempt for `user` from `peer` from their allowances of failures, before
    /// the password is checked, so that attempts sent at once cannot all slip through; refused
    /// while either allowance is spent. A login that succeeds gives its tokens back
    /// ([`RateLimits::login_succeeded`]).
    pub fn try_login(&self, user: &str, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let too_many = |wait| refusal("too many failed logins", wait);
        self.failed_logins_by_user.take(user).map_err(too_many)?;
        if let Some(ip) = peer
            && let Err(wait) = self.failed_logins_by_address.take(&ip.to_string())
        {
            self.failed_logins_by_user.give_back(user);
            return Err(too_many(wait));
        }
        Ok(())
    }

    /// Gives back what a login that succeeded took ([`RateLimits::try_login`]).
    pub fn login_succeeded(&self, user: &str, peer: Option<IpAddr>) {
        self.failed_logins_by_user.give_back(user);
        if let Some(ip) = peer {
            self.failed_logins_by_address.give_back(&ip.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limit = Limit::new(10.0, 3.0);
        for _ in 0..3 {
            assert!(limit.take("a").is_ok());
        }
        let wait = limit.take("a").expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another client has its own bucket.
        assert!(limit.take("b").is_ok());
        std::thread::sleep(Duration::from_millis(120));
        assert!(limit.take("a").is_ok(), "a token came back");
    }

    #[test]
    fn a_token_given_back_can_be_taken_again() {
        let limit = Limit::new(1.0 / 60.0, 2.0);
        assert!(limit.take("u").is_ok() && limit.take("u").is_ok());
        let wait = limit.take("u").expect_err("two attempts spent it");
        assert!(wait > Duration::from_secs(50), "{wait:?}");
        limit.give_back("u");
        assert!(limit.take("u").is_ok());
        assert!(limit.take("v").is_ok());
    }

    #[test]
    fn the_refusal_says_when_to_come_back() {
        let e = refusal("over", Duration::from_millis(1500));
        assert_eq!(e.code(), ErrorCode::RateLimited);
        assert!(e.message().ends_with("retry in 2 s"), "{}", e.message());
    }
}
