//! HTTP probes: the new container's health check and the partner's idle gate, behind the
//! [`Probe`] trait berth owns.

use std::time::Duration;

use crate::manifest::{Idle, syntax};
use crate::plan::Idleness;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("no answer from {0} in time")]
    Timeout(String),
    #[error(transparent)]
    Body(crate::http::BodyError),
}

/// What berth reads of a probe's answer: an idle state is a small JSON document, and a
/// health check needs only the status. The health endpoint is the managed container
/// itself, so this also bounds what any image can make the agent hold.
pub const MAX_ANSWER: usize = 64 << 10;

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

/// The real network, over HTTP or HTTPS, through the process's one client.
pub struct Http {
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: crate::http::client().clone(),
        }
    }
}

impl Probe for Http {
    async fn get(&self, url: &str, timeout: Duration) -> Result<Answer, ProbeError> {
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                ProbeError::Timeout(url.to_owned())
            } else {
                ProbeError::Connect {
                    url: url.to_owned(),
                    source: e,
                }
            }
        };
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        let body = crate::http::body(response, MAX_ANSWER, url, "its answer")
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ProbeError::Timeout(url.to_owned())
                } else {
                    ProbeError::Body(e)
                }
            })?;
        Ok(Answer { status, body })
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
        Err(e) => return Idleness::NotIdle(crate::exit::chain(&e)),
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
