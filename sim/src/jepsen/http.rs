//! A minimal HTTP/1.1 client with one connection per request, for the workload and the
//! cluster control calls.
//!
//! Why not `cli::Client`: that client retries (a refused connect or a `503` on the next
//! endpoint), which hides from the history *whether a request was sent at all*. The runner must
//! know that exactly: a request whose connection was never established certainly did not take
//! effect (`fail`), one that was sent and got no answer may have (`info`). Here every request is
//! one attempt on one node, and the error says which of the two happened.
//!
//! Invariants: every request is bounded in time (connect and whole exchange) and in answer
//! size; an answer that does not parse is [`HttpError::Malformed`], never a panic.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for a TCP connection. On loopback a live process accepts at once (even a
/// SIGSTOPped one: the kernel completes the handshake), so this only bounds odd cases.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest answer read: the workload's values and the control answers are tiny.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The API's stable error token (`code` of the JSON error body), if there is one.
    pub fn error_code(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value.get("code")?.as_str().map(str::to_string)
    }

    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Why a request got no answer.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HttpError {
    /// No connection was made: the request was certainly not sent.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The request may have been sent (all or part of it), but no complete answer came back.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// An answer came back that is not HTTP/1.1 as expected.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl HttpError {
    /// True when the request certainly never reached the server.
    pub fn certainly_not_sent(&self) -> bool {
        matches!(self, HttpError::NotSent(_))
    }
}

/// Sends one request to `addr` (`host:port`) and reads the whole answer, within `timeout` for
/// the exchange after connecting.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(HttpError::NotSent(format!("{addr}: {e}"))),
        Err(_) => {
            return Err(HttpError::NotSent(format!(
                "{addr}: no connection within {CONNECT_TIMEOUT:?}"
            )));
        }
    };
    let exchange = async {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        stream
            .write_all(&out)
            .await
            .map_err(|e| HttpError::NoAnswer(format!("{addr}: sending: {e}")))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| HttpError::NoAnswer(format!("{addr}: reading: {e}")))?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > RESPONSE_BYTES_MAX {
                return Err(HttpError::Malformed(format!(
                    "{addr}: answer over {RESPONSE_BYTES_MAX} bytes"
                )));
            }
        }
        parse_response(&raw).map_err(|why| {
            if raw.is_empty() {
                HttpError::NoAnswer(format!("{addr}: connection closed without an answer"))
            } else {
                HttpError::Malformed(format!("{addr}: {why}"))
            }
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::NoAnswer(format!(
            "{addr}: no answer within {timeout:?}"
        ))),
    }
}

/// Parses a whole HTTP/1.1 answer read until the server closed the connection.
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(length) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() < length {
            return Err(format!("body of {} bytes, {length} announced", body.len()));
        }
        body.truncate(length);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_parses_into_status_headers_and_body() {
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"code\":\"not_found\"}";
        let r = parse_response(raw);
        // The announced length is shorter than what came: the body is cut to it.
        let r = r.expect("parses");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body.len(), 17);
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\n\r\n{\"code\":\"not_found\"}";
        assert_eq!(
            parse_response(raw).expect("parses").error_code().as_deref(),
            Some("not_found")
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
