//! HTTP probes: the new container's health check and the partner's idle gate, behind the
//! [`Probe`] trait berth owns. A minimal HTTP/1.1 client suffices: probes go to services on
//! the host itself.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::manifest::{Idle, syntax};
use crate::plan::Idleness;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}: only http:// probes are supported")]
    Scheme(String),
    #[error("cannot reach {url}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {0} in time")]
    Timeout(String),
    #[error("{0} answered something that is not HTTP")]
    Malformed(String),
}

/// An HTTP answer's status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Asks services on the host over HTTP.
#[allow(async_fn_in_trait)] // driven on berth's own single-threaded runtime
pub trait Probe {
    async fn get(&self, url: &str, timeout: Duration) -> Result<Answer, ProbeError>;
}

/// The real network.
pub struct Http;

impl Probe for Http {
    async fn get(&self, url: &str, timeout: Duration) -> Result<Answer, ProbeError> {
        tokio::time::timeout(timeout, get(url))
            .await
            .map_err(|_| ProbeError::Timeout(url.to_owned()))?
    }
}

async fn get(url: &str) -> Result<Answer, ProbeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProbeError::Scheme(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let connect = |source| ProbeError::Connect {
        url: url.to_owned(),
        source,
    };
    let mut stream = TcpStream::connect(&addr).await.map_err(connect)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: berth\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(connect)?;
    let mut raw = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut raw)
        .await
        .map_err(connect)?;
    parse_response(&raw).ok_or_else(|| ProbeError::Malformed(url.to_owned()))
}

/// Parses an HTTP/1.x response read to its end, de-chunking the body if needed.
fn parse_response(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some(Answer { status, body })
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Asks the partner's service whether it is idle. Busy, unreachable, slow and malformed
/// answers all count as not idle, with the reason.
pub async fn idleness(probe: &impl Probe, idle: &Idle) -> Idleness {
    let timeout = idle
        .timeout
        .as_ref()
        .and_then(|t| syntax::parse_duration(t).ok())
        .unwrap_or(Duration::from_secs(2));
    let answer = match probe.get(&idle.url, timeout).await {
        Ok(a) => a,
        Err(e) => return Idleness::NotIdle(crate::cli::chain(&e)),
    };
    if !(200..300).contains(&answer.status) {
        return Idleness::NotIdle(format!(
            "{} answered HTTP {}",
            idle.url.value, answer.status
        ));
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&answer.body) else {
        return Idleness::NotIdle(format!("{} did not answer JSON", idle.url.value));
    };
    let Some(value) = json.pointer(&idle.pointer) else {
        return Idleness::NotIdle(format!("{} has no {}", idle.url.value, idle.pointer.value));
    };
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text == idle.equals.value {
        Idleness::Idle
    } else {
        Idleness::NotIdle(format!(
            "{} is `{text}`, not `{}`",
            idle.pointer.value, idle.equals.value
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain).unwrap().body, b"ok");
        let chunked =
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        let a = parse_response(chunked).unwrap();
        assert_eq!((a.status, a.body.as_slice()), (503, b"abc".as_slice()));
        assert!(parse_response(b"garbage").is_none());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_none());
    }
}
