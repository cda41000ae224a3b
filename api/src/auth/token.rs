//! Login tokens: JSON Web Tokens signed with HMAC under one algorithm fixed by configuration
//! (`auth.jwt_algorithm`), with the key `auth.jwt_secret` or, when none is configured, the
//! cluster's own signing key (kept in the replicated access records, so every node holds it).
//!
//! A token names its user (`sub`) and the log index at which the user's password was set
//! (`gen`): a password change, or the user removed and made again, moves that index and every
//! older token stops verifying. Verification refuses any other algorithm (`none` included), a
//! bad signature, a token that is expired or not yet valid (beyond [`CLOCK_LEEWAY`]), and a
//! wrong issuer or audience.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use proto::rest::ErrorCode;
use replica::auth::AuthState;
use serde::{Deserialize, Serialize};

use crate::config::AuthSection;
use crate::service::ApiError;

/// How far apart two nodes' clocks may be for a token's times to still hold.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(5);
/// The longest token accepted, in bytes (ours are a few hundred); longer ones are refused
/// before they are parsed.
pub const TOKEN_BYTES_MAX: usize = 4096;

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The issuer (`auth.jwt_issuer`).
    pub iss: String,
    /// The audience (`auth.jwt_audience`).
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// The log index at which the user's password was set.
    pub generation: u64,
}

/// Issues and verifies tokens.
pub struct Tokens {
    algorithm: Algorithm,
    issuer: String,
    audience: String,
    ttl: Duration,
    configured_secret: Option<Vec<u8>>,
    validation: Validation,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unauthenticated(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unauthenticated,
        format!("the token is refused: {why}"),
    )
}

impl Tokens {
    /// Tokens as configured (`Config::validate` checked the algorithm's name).
    pub fn new(config: &AuthSection) -> Tokens {
        let algorithm = match config.jwt_algorithm.as_str() {
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            _ => Algorithm::HS256,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = CLOCK_LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Tokens {
            algorithm,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            ttl: config.token_ttl,
            configured_secret: config.jwt_secret.as_ref().map(|s| s.0.as_bytes().to_vec()),
            validation,
        }
    }

    /// How long a token lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn secret<'a>(&'a self, state: &'a AuthState) -> Result<&'a [u8], ApiError> {
        match (&self.configured_secret, &state.signing_key) {
            (Some(secret), _) => Ok(secret),
            (None, Some(key)) => Ok(key),
            (None, None) => Err(ApiError::new(
                ErrorCode::NotReady,
                "the cluster has no signing key yet: authentication was never enabled, and auth.jwt_secret is not set",
            )),
        }
    }

    /// A token for `user` whose password was set at `generation`, and when it expires.
    pub fn issue(
        &self,
        state: &AuthState,
        user: &str,
        generation: u64,
    ) -> Result<(String, u64), ApiError> {
        let now = now();
        let claims = Claims {
            sub: user.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            generation,
        };
        let token = jsonwebtoken::encode(
            &Header::new(self.algorithm),
            &claims,
            &EncodingKey::from_secret(self.secret(state)?),
        )
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("signing a token failed: {e}")))?;
        Ok((token, claims.exp))
    }

    /// The claims of a token this cluster signed and that holds now; the user's existence and
    /// generation are the caller's to check.
    pub fn verify(&self, state: &AuthState, token: &str) -> Result<Claims, ApiError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(unauthenticated(format!(
                "it is longer than {TOKEN_BYTES_MAX} bytes"
            )));
        }
        let key = DecodingKey::from_secret(self.secret(state)?);
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                unauthenticated(match e.kind() {
                    ErrorKind::ExpiredSignature => "it has expired; log in again".to_string(),
                    ErrorKind::ImmatureSignature => "it is not valid yet".to_string(),
                    ErrorKind::InvalidSignature => "its signature does not verify".to_string(),
                    ErrorKind::InvalidAlgorithm => format!(
                        "it is not signed with {:?}, the one algorithm this cluster uses",
                        self.algorithm
                    ),
                    ErrorKind::InvalidIssuer => "it was issued by someone else".to_string(),
                    ErrorKind::InvalidAudience => "it is meant for another audience".to_string(),
                    ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
                    _ => "it is not a valid token of this cluster".to_string(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use bytes::Bytes;

    fn state() -> AuthState {
        AuthState {
            signing_key: Some(Bytes::from(vec![9; 32])),
            ..AuthState::default()
        }
    }

    fn tokens() -> Tokens {
        Tokens::new(&crate::config::Config::default().auth)
    }

    fn sign(header: &str, claims: &serde_json::Value, key: &[u8]) -> String {
        use sha2::Sha256;
        let head = URL_SAFE_NO_PAD.encode(header);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{head}.{body}");
        let mac = hmac_sha256::<Sha256>(key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// HMAC (RFC 2104), written out so the test forges tokens without the library under test.
    fn hmac_sha256<D: sha2::Digest>(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut block = [0u8; 64];
        block[..key.len()].copy_from_slice(key);
        let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner = D::new()
            .chain_update(&inner_pad)
            .chain_update(message)
            .finalize();
        D::new()
            .chain_update(&outer_pad)
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    fn claims(exp_from_now: i64, nbf_from_now: i64) -> serde_json::Value {
        let now = now() as i64;
        serde_json::json!({"sub": "alice", "iss": "raftkv", "aud": "raftkv", "iat": now,
            "nbf": now + nbf_from_now, "exp": now + exp_from_now, "generation": 3})
    }

    #[test]
    fn an_issued_token_verifies_and_names_its_user() {
        let (token, exp) = tokens().issue(&state(), "alice", 3).expect("issued");
        let claims = tokens().verify(&state(), &token).expect("verifies");
        assert_eq!((claims.sub.as_str(), claims.generation), ("alice", 3));
        assert_eq!(claims.exp, exp);
        // The forging helper agrees with the library on a good token.
        let forged = sign(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &self::claims(600, 0),
            &[9; 32],
        );
        assert!(tokens().verify(&state(), &forged).is_ok());
    }

    #[test]
    fn every_kind_of_bad_token_is_refused() {
        let key = [9u8; 32];
        let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
        let cases = [
            ("alg none", {
                let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
                let body = URL_SAFE_NO_PAD.encode(claims(600, 0).to_string());
                format!("{head}.{body}.")
            }),
            (
                "another HMAC algorithm",
                sign(r#"{"alg":"HS512","typ":"JWT"}"#, &claims(600, 0), &key),
            ),
            (
                "RS256 header (algorithm confusion)",
                sign(r#"{"alg":"RS256","typ":"JWT"}"#, &claims(600, 0), &key),
            ),
            ("wrong key", sign(hs, &claims(600, 0), &[8; 32])),
            ("expired", sign(hs, &claims(-60, -120), &key)),
            ("not yet valid", sign(hs, &claims(600, 300), &key)),
            ("wrong issuer", {
                let mut c = claims(600, 0);
                c["iss"] = "someone-else".into();
                sign(hs, &c, &key)
            }),
            ("wrong audience", {
                let mut c = claims(600, 0);
                c["aud"] = "other".into();
                sign(hs, &c, &key)
            }),
            ("no expiry", {
                let mut c = claims(600, 0);
                c.as_object_mut().expect("an object").remove("exp");
                sign(hs, &c, &key)
            }),
            ("garbage", "not.a.token".to_string()),
            ("too long", "a".repeat(TOKEN_BYTES_MAX + 1)),
        ];
        for (what, token) in cases {
            let refused = tokens().verify(&state(), &token).expect_err(what);
            assert_eq!(refused.code(), ErrorCode::Unauthenticated, "{what}");
        }
    }

    #[test]
    fn a_configured_secret_signs_instead_of_the_clusters_key() {
        let mut config = crate::config::Config::default().auth;
        config.jwt_secret = Some(crate::config::Secret("s".repeat(40)));
        let configured = Tokens::new(&config);
        let (token, _) = configured.issue(&state(), "alice", 1).expect("issued");
        assert!(configured.verify(&state(), &token).is_ok());
        assert!(tokens().verify(&state(), &token).is_err());
        assert!(configured.verify(&AuthState::default(), &token).is_ok());
    }
}
