//! Webhooks on transitions (docs/operations.md, "Notifications"): after each agent pass,
//! the events between the last status record and the new one are queued per hook in the
//! state dir's outbox and posted, retried with backoff for at most [`BOUND`]. A delivery
//! never changes a pass's outcome; what is not delivered waits for the next pass, until it
//! is [`MAX_AGE`] old, so a receiver that stays down is not sent to forever.

pub mod config;
pub mod event;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};

pub use config::{Format, Hook, Notify};
pub use event::{Event, Kind, between};

use crate::exit::chain;
use crate::report::{Pin, Record};

/// How long a pass waits for its deliveries, at most.
pub const BOUND: Duration = Duration::from_secs(10);
/// How old an undelivered event may get before it is dropped.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How many undelivered events a hook keeps; the oldest go first.
pub const MAX_QUEUED: usize = 100;
/// One request's limit, so a receiver that hangs leaves time to try again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// The outbox in the state dir.
const OUTBOX: &str = "outbox.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Outbox {
    pending: Vec<Entry>,
}

/// An event waiting for one hook.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    url: String,
    event: Event,
    /// The passes whose delivery of it failed.
    tries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// Why a post did not get through.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("cannot post to {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
}

impl SendError {
    /// A 4xx answer (but for a timeout or rate limit) will not change within seconds.
    fn retry_now(&self) -> bool {
        match self {
            SendError::Request { .. } => true,
            SendError::Status { status, .. } => {
                !(400..500).contains(status) || *status == 408 || *status == 429
            }
        }
    }
}

/// Queues the events between `previous` and `record` for each hook that wants them and
/// delivers whatever is queued, within [`BOUND`]; the outbox keeps the rest. Problems are
/// logged, never returned: a pass's outcome does not depend on its receivers.
pub async fn after_pass(
    notify: &Notify,
    state_dir: &Path,
    previous: Option<&Record>,
    record: &Record,
    stopping: &AtomicBool,
) {
    let path = state_dir.join(OUTBOX);
    let mut outbox = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the notification outbox is unreadable; starting a new one");
            Outbox::default()
        }),
        Err(_) => Outbox::default(),
    };
    let events = between(previous, record, notify.deferred_long);
    if outbox.pending.is_empty() && (events.is_empty() || notify.hooks.is_empty()) {
        return;
    }
    for hook in &notify.hooks {
        for event in events.iter().filter(|e| hook.events.contains(&e.event)) {
            outbox.pending.push(Entry {
                url: hook.url.clone(),
                event: event.clone(),
                tries: 0,
                last_error: None,
            });
        }
    }
    let queues: Vec<(&Hook, Vec<Entry>)> = notify
        .hooks
        .iter()
        .map(|hook| (hook, queue(hook, &mut outbox, record)))
        .collect();
    for gone in std::mem::take(&mut outbox.pending) {
        tracing::info!(url = %shown(&gone.url), event = %gone.event.id, "dropping a notification for a hook no longer configured");
    }
    save(
        &path,
        &Outbox {
            pending: queues.iter().flat_map(|(_, q)| q.clone()).collect(),
        },
    );
    if queues.iter().all(|(_, queue)| queue.is_empty()) {
        return;
    }
    let deadline = Instant::now() + BOUND;
    let left = futures_util::future::join_all(
        queues
            .into_iter()
            .map(|(hook, queue)| deliver(hook, queue, deadline, stopping)),
    )
    .await;
    save(
        &path,
        &Outbox {
            pending: left.into_iter().flatten().collect(),
        },
    );
}

/// Takes `hook`'s entries out of the outbox, dropping those too old or too many.
fn queue(hook: &Hook, outbox: &mut Outbox, record: &Record) -> Vec<Entry> {
    let (mine, rest) = std::mem::take(&mut outbox.pending)
        .into_iter()
        .partition(|e| e.url == hook.url);
    outbox.pending = rest;
    let mut kept: Vec<Entry> = Vec::new();
    for entry in mine {
        let age = record.at.duration_since(entry.event.at);
        if Duration::try_from(age).is_ok_and(|age| age > MAX_AGE) {
            tracing::warn!(url = %shown(&hook.url), event = %entry.event.id, tries = entry.tries, last_error = entry.last_error.as_deref().unwrap_or(""), "dropping a notification not delivered within 24 h");
        } else {
            kept.push(entry);
        }
    }
    if kept.len() > MAX_QUEUED {
        for entry in kept.drain(..kept.len() - MAX_QUEUED) {
            tracing::warn!(url = %shown(&hook.url), event = %entry.event.id, "dropping a notification: too many are waiting for this hook");
        }
    }
    kept
}

fn save(path: &Path, outbox: &Outbox) {
    let bytes = serde_json::to_vec_pretty(outbox).expect("the outbox serializes");
    if let Err(e) = crate::durable::write(path, &bytes) {
        tracing::error!(error = %e, path = %path.display(), "cannot write the notification outbox");
    }
}

/// Posts `queue` in order until one fails; returns what is left.
async fn deliver(
    hook: &Hook,
    queue: Vec<Entry>,
    deadline: Instant,
    stopping: &AtomicBool,
) -> Vec<Entry> {
    let mut left = Vec::new();
    for mut entry in queue {
        let blocked =
            !left.is_empty() || Instant::now() >= deadline || stopping.load(Ordering::SeqCst);
        if blocked {
            left.push(entry);
            continue;
        }
        match send(hook, &entry.event, deadline, stopping).await {
            Ok(()) => {
                tracing::info!(url = %shown(&hook.url), event = %entry.event.event, script = %entry.event.script, "notified");
            }
            Err(e) => {
                entry.tries += 1;
                entry.last_error = Some(chain(&e));
                tracing::warn!(url = %shown(&hook.url), error = %chain(&e), tries = entry.tries, "a notification was not delivered; it is kept for the next pass");
                left.push(entry);
            }
        }
    }
    left
}

/// Posts one event, trying again with backoff until `deadline`.
async fn send(
    hook: &Hook,
    event: &Event,
    deadline: Instant,
    stopping: &AtomicBool,
) -> Result<(), SendError> {
    let body = body(hook.format, event);
    let signature = hook.secret.as_ref().map(|s| sign(s.expose(), &body));
    let mut backoff = FIRST_BACKOFF;
    loop {
        let time_left = deadline.saturating_duration_since(Instant::now());
        let mut request = crate::http::client()
            .post(&hook.url)
            .timeout(time_left.clamp(Duration::from_millis(1), REQUEST_TIMEOUT))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(signature) = &signature {
            request = request.header("X-Berth-Signature", signature);
        }
        let error = match request.send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => SendError::Status {
                url: shown(&hook.url),
                status: answer.status().as_u16(),
            },
            Err(source) => SendError::Request {
                url: shown(&hook.url),
                source: source.without_url(),
            },
        };
        let wait = jittered(backoff);
        if !error.retry_now()
            || stopping.load(Ordering::SeqCst)
            || Instant::now() + wait >= deadline
        {
            return Err(error);
        }
        tracing::debug!(url = %shown(&hook.url), error = %chain(&error), "posting again");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A hook's URL as logs and errors show it: scheme, host and port only, since a chat
/// service's webhook URL is itself the credential.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() == "/" && u.query().is_none() {
                ""
            } else {
                "/…"
            };
            format!(
                "{}://{}{port}{rest}",
                u.scheme(),
                u.host_str().unwrap_or_default()
            )
        }
        Err(_) => "(invalid url)".into(),
    }
}

/// Half the backoff plus up to half again, so hooks failing together do not retry in step.
/// The clock's nanoseconds are random enough for that.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let half = backoff / 2;
    half + half.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// The body a hook is sent.
pub fn body(format: Format, event: &Event) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(event),
        Format::Slack => serde_json::to_vec(&serde_json::json!({ "text": slack_line(event) })),
    }
    .expect("an event serializes")
}

/// `X-Berth-Signature`: `sha256=` and the lowercase hex HMAC-SHA256 of the body.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// One line a person reads in a chat channel.
fn slack_line(e: &Event) -> String {
    fn version(p: &Option<Pin>) -> &str {
        p.as_ref().map_or("nothing", |p| p.version.as_str())
    }
    let target = match &e.component {
        Some(c) => format!("{}/{c}", e.script),
        None => e.script.clone(),
    };
    let mut line = format!(
        "berth {}: {target} {}, {} → {}",
        e.partner,
        e.event,
        version(&e.from),
        version(&e.to)
    );
    if !e.detail.is_empty() {
        line.push_str(": ");
        line.push_str(&e.detail);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::State;

    fn event() -> Event {
        Event {
            id: "lab/svc/rolled-back@2027-01-15T08:00:00Z".into(),
            event: Kind::RolledBack,
            partner: "lab".into(),
            script: "svc".into(),
            component: None,
            from: Some(Pin {
                version: "1.0.0".into(),
                digest: "sha256:aa".into(),
            }),
            to: Some(Pin {
                version: "9.0.0".into(),
                digest: "sha256:bb".into(),
            }),
            state: State::RolledBack,
            detail: "health check failed".into(),
            revision: Some("abc".into()),
            since: "2027-01-15T08:00:00Z".parse().unwrap(),
            at: "2027-01-15T08:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_json_body_is_the_event() {
        let body: serde_json::Value =
            serde_json::from_slice(&body(Format::Json, &event())).unwrap();
        assert_eq!(body["event"], "rolled-back");
        assert_eq!(body["from"]["version"], "1.0.0");
        assert_eq!(body["to"]["digest"], "sha256:bb");
        assert_eq!(body["state"], "rolled-back");
        assert_eq!(body["at"], "2027-01-15T08:00:00Z");
        assert!(body.get("component").is_none());
    }

    #[test]
    fn a_slack_body_is_one_line_of_text() {
        let body: serde_json::Value =
            serde_json::from_slice(&body(Format::Slack, &event())).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"text": "berth lab: svc rolled-back, 1.0.0 → 9.0.0: health check failed"})
        );
    }

    #[test]
    fn logs_show_no_path_of_a_hook_url() {
        assert_eq!(
            shown("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(shown("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(shown("http://h/?token=x"), "http://h/…");
    }

    #[test]
    fn client_errors_are_not_retried_at_once() {
        let status = |status| SendError::Status {
            url: "u".into(),
            status,
        };
        assert!(status(500).retry_now());
        assert!(status(429).retry_now());
        assert!(!status(400).retry_now());
        assert!(!status(404).retry_now());
    }

    #[test]
    fn jitter_stays_within_the_backoff() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(2));
            assert!(
                j >= Duration::from_secs(1) && j <= Duration::from_secs(2),
                "{j:?}"
            );
        }
    }
}
