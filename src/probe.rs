//! HTTP probes: the new container's health check and the partner's idle gate, behind the
//! [`Probe`] trait berth owns.

use std::time::Duration;

use crate::manifest::{Idle, Requirement, syntax};
use crate::plan::{Idleness, Readiness};

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

/// How long a required service has to answer when its `requires:` entry does not say.
pub const REQUIRES_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks each service a script requires for its version, in order, and names the first
/// that is not in range. Like the idle probe, an unreachable, slow or malformed answer is
/// not ready: the version waits rather than run against a service it may not work with.
pub async fn readiness(probe: &impl Probe, requires: &[Requirement]) -> Readiness {
    for r in requires {
        if let Err(detail) = requirement(probe, r).await {
            return Readiness::Unmet {
                url: r.url.value.clone(),
                detail,
            };
        }
    }
    Readiness::Met
}

/// One required service's answer: `Err` says why it is not (yet) what the script needs.
async fn requirement(probe: &impl Probe, r: &Requirement) -> Result<(), String> {
    let url = &r.url.value;
    let timeout = r
        .timeout
        .as_ref()
        .and_then(|t| syntax::parse_duration(t).ok())
        .unwrap_or(REQUIRES_TIMEOUT);
    let answer = match probe.get(url, timeout).await {
        Ok(a) => a,
        Err(ProbeError::Timeout(_)) => {
            return Err(format!(
                "{url} did not answer within {}",
                jiff::SignedDuration::try_from(timeout)
                    .map(|d| format!("{d:#}"))
                    .unwrap_or_else(|_| format!("{timeout:?}"))
            ));
        }
        Err(e) => return Err(crate::exit::chain(&e)),
    };
    if !(200..300).contains(&answer.status) {
        return Err(format!("{url} answered HTTP {}", answer.status));
    }
    let json = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .map_err(|_| format!("{url} did not answer JSON"))?;
    let pointer = &r.pointer.value;
    let value = json
        .pointer(pointer)
        .ok_or_else(|| format!("{url} has no value at {pointer}"))?;
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let version = semver::Version::parse(text.strip_prefix('v').unwrap_or(&text))
        .map_err(|_| format!("{url} answered `{text}` at {pointer}, not a semver"))?;
    let range = semver::VersionReq::parse(&r.versions)
        .map_err(|e| format!("the range `{}` is invalid: {e}", r.versions.value))?;
    if range.matches(&version) {
        Ok(())
    } else {
        Err(format!(
            "{url} answered {version} at {pointer}, not in {}",
            r.versions.value
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that gives one answer, or times out.
    struct Fixed(Option<(u16, &'static str)>);

    impl Probe for Fixed {
        async fn get(&self, url: &str, _: Duration) -> Result<Answer, ProbeError> {
            match self.0 {
                Some((status, body)) => Ok(Answer {
                    status,
                    body: body.as_bytes().to_vec(),
                }),
                None => Err(ProbeError::Timeout(url.to_owned())),
            }
        }
    }

    const URL: &str = "https://central.example/api/version";

    fn requirement(extra: &str) -> Requirement {
        crate::manifest::parse(&format!(
            "url: {URL}\npointer: /version\nversions: \">=2.0.0\"\n{extra}"
        ))
        .unwrap()
    }

    fn ask(answer: Option<(u16, &'static str)>, extra: &str) -> Readiness {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(readiness(&Fixed(answer), &[requirement(extra)]))
    }

    fn unmet(detail: &str) -> Readiness {
        Readiness::Unmet {
            url: URL.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn a_version_in_range_is_ready() {
        assert_eq!(
            ask(Some((200, r#"{"version":"2.0.0"}"#)), ""),
            Readiness::Met
        );
        assert_eq!(
            ask(Some((200, r#"{"version":"v2.3.1"}"#)), ""),
            Readiness::Met
        );
    }

    #[test]
    fn a_version_out_of_range_names_the_figure() {
        assert_eq!(
            ask(Some((200, r#"{"version":"1.9.0"}"#)), ""),
            unmet(&format!("{URL} answered 1.9.0 at /version, not in >=2.0.0"))
        );
    }

    #[test]
    fn malformed_missing_and_failing_answers_are_not_ready() {
        assert_eq!(
            ask(Some((200, "<html>")), ""),
            unmet(&format!("{URL} did not answer JSON"))
        );
        assert_eq!(
            ask(Some((200, r#"{"build":"2.0.0"}"#)), ""),
            unmet(&format!("{URL} has no value at /version"))
        );
        assert_eq!(
            ask(Some((200, r#"{"version":"two"}"#)), ""),
            unmet(&format!("{URL} answered `two` at /version, not a semver"))
        );
        assert_eq!(
            ask(Some((503, r#"{"version":"2.0.0"}"#)), ""),
            unmet(&format!("{URL} answered HTTP 503"))
        );
    }

    #[test]
    fn a_slow_service_is_not_ready_and_the_wait_is_named() {
        assert_eq!(
            ask(None, ""),
            unmet(&format!("{URL} did not answer within 5s"))
        );
        assert_eq!(
            ask(None, "timeout: 2s\n"),
            unmet(&format!("{URL} did not answer within 2s"))
        );
    }

    #[test]
    fn the_first_unmet_requirement_is_named() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let other: Requirement =
            crate::manifest::parse("url: http://127.0.0.1:1/v\npointer: /v\nversions: \"^1\"\n")
                .unwrap();
        let got = rt.block_on(readiness(
            &Fixed(Some((200, r#"{"version":"2.0.0","v":"3.0.0"}"#))),
            &[requirement(""), other],
        ));
        assert_eq!(
            got,
            Readiness::Unmet {
                url: "http://127.0.0.1:1/v".into(),
                detail: "http://127.0.0.1:1/v answered 3.0.0 at /v, not in ^1".into()
            }
        );
    }
}
