//! The `notify:` block and `deferred_long` of agent.yaml, checked: every problem is a
//! diagnostic at its `path:line:col`, and a hook's secret is read from the environment at
//! load, so a missing variable stops the agent at start rather than at the first event.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::Kind;
use crate::diag::{Diagnostic, Diagnostics};
use crate::manifest::{Sp, syntax};

/// How long a change may stay deferred before `deferred-long` is raised, by default.
pub const DEFAULT_DEFERRED_LONG: Duration = Duration::from_secs(7 * 24 * 3600);

/// One hook as agent.yaml spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookFile {
    url: Sp<String>,
    #[serde(default)]
    events: Option<Sp<Vec<Sp<String>>>>,
    #[serde(default)]
    secret_env: Option<Sp<String>>,
    #[serde(default)]
    format: Option<Sp<String>>,
}

/// What a hook's body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The event itself, signed.
    Json,
    /// `{"text": "…"}`, one readable line, as Slack's (and Mattermost's, Rocket.Chat's)
    /// incoming webhooks take it.
    Slack,
}

/// The key a hook's bodies are signed with; never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A checked hook.
#[derive(Debug, Clone)]
pub struct Hook {
    pub url: String,
    pub events: Vec<Kind>,
    pub secret: Option<Secret>,
    pub format: Format,
}

/// Where and when to notify.
#[derive(Debug, Clone)]
pub struct Notify {
    pub hooks: Vec<Hook>,
    pub deferred_long: Duration,
}

impl Default for Notify {
    fn default() -> Notify {
        Notify {
            hooks: Vec::new(),
            deferred_long: DEFAULT_DEFERRED_LONG,
        }
    }
}

/// Checks the hooks and `deferred_long` of the config file `path`.
pub fn check(
    path: &str,
    hooks: Vec<HookFile>,
    deferred_long: Option<&Sp<String>>,
    diags: &mut Diagnostics,
) -> Notify {
    let deferred_long = match deferred_long {
        None => DEFAULT_DEFERRED_LONG,
        Some(d) => match duration(d) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                diags.push(Diagnostic::error(
                    path,
                    d.pos,
                    "deferred_long must be longer than 0",
                ));
                DEFAULT_DEFERRED_LONG
            }
            Err(m) => {
                diags.push(Diagnostic::error(path, d.pos, m));
                DEFAULT_DEFERRED_LONG
            }
        },
    };
    let mut seen: Vec<String> = Vec::new();
    let hooks = hooks
        .into_iter()
        .map(|h| {
            let mut error =
                |pos, message: String| diags.push(Diagnostic::error(path, pos, message));
            let url = h.url.value.trim().to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || reqwest::Url::parse(&url).is_err()
            {
                error(
                    h.url.pos,
                    format!("invalid hook url `{url}`: expected http://… or https://…"),
                );
            } else if seen.contains(&url) {
                error(h.url.pos, format!("hook url `{url}` is given twice"));
            }
            seen.push(url.clone());
            let format = match h.format.as_ref().map(|f| f.value.as_str()) {
                None | Some("json") => Format::Json,
                Some("slack") => Format::Slack,
                Some(other) => {
                    let pos = h.format.as_ref().map(|f| f.pos).unwrap_or_default();
                    error(
                        pos,
                        format!("unknown format `{other}`: expected json or slack"),
                    );
                    Format::Json
                }
            };
            let events = match &h.events {
                None => Kind::ALL.to_vec(),
                Some(list) if list.is_empty() => {
                    error(
                        list.pos,
                        "events lists no event: omit it for all of them".into(),
                    );
                    Vec::new()
                }
                Some(list) => list
                    .iter()
                    .filter_map(|e| {
                        let kind = Kind::parse(e);
                        if kind.is_none() {
                            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                            error(
                                e.pos,
                                format!(
                                    "unknown event `{}`: expected one of {}",
                                    e.value,
                                    known.join(", ")
                                ),
                            );
                        }
                        kind
                    })
                    .collect(),
            };
            let secret = match &h.secret_env {
                None => {
                    if format == Format::Json {
                        error(
                            h.url.pos,
                            "a json hook needs secret_env: its bodies are signed with that \
                             variable's value (X-Berth-Signature)"
                                .into(),
                        );
                    }
                    None
                }
                Some(var) => match std::env::var(&var.value) {
                    Ok(v) if !v.is_empty() => Some(Secret(Zeroizing::new(v))),
                    _ => {
                        error(
                            var.pos,
                            format!(
                                "secret_env `{}` is not set (or empty) in the agent's environment",
                                var.value
                            ),
                        );
                        None
                    }
                },
            };
            Hook {
                url,
                events,
                secret,
                format,
            }
        })
        .collect();
    Notify {
        hooks,
        deferred_long,
    }
}

/// A duration as berth spells them, plus whole days (`7d`), which a deferral is counted in.
fn duration(s: &str) -> Result<Duration, String> {
    match s.strip_suffix('d').map(str::parse::<u64>) {
        Some(Ok(days)) => days
            .checked_mul(24 * 3600)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("invalid duration `{s}`: too long")),
        _ => syntax::parse_duration(s).map_err(|m| format!("{m}, or whole days like `7d`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// agent.yaml with these lines after a minimal head; PATH stands in for a secret
    /// (it is always set).
    fn load(extra: &str) -> Result<Notify, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            format!("partner: lab\nrepo:\n  url: /srv/manifests\n{extra}"),
        )
        .unwrap();
        crate::agent::config::load(&path)
            .map(|c| c.notify)
            .map_err(|d| d.render_text(Path::new("")))
    }

    #[test]
    fn a_hook_takes_every_event_as_json_by_default() {
        let n = load("notify:\n  - url: https://hooks.example.org/berth\n    secret_env: PATH\n")
            .unwrap();
        assert_eq!(n.deferred_long, DEFAULT_DEFERRED_LONG);
        let [hook] = &n.hooks[..] else {
            panic!("{n:?}")
        };
        assert_eq!(hook.url, "https://hooks.example.org/berth");
        assert_eq!(hook.events, Kind::ALL);
        assert_eq!(hook.format, Format::Json);
        assert_eq!(
            hook.secret.as_ref().unwrap().expose(),
            std::env::var("PATH").unwrap().as_bytes()
        );
        assert!(!format!("{hook:?}").contains(&std::env::var("PATH").unwrap()));
    }

    #[test]
    fn a_slack_hook_may_go_unsigned_and_pick_its_events() {
        let n = load(
            "deferred_long: 36h\nnotify:\n  - url: http://127.0.0.1:9/x\n    format: slack\n    events: [held, deferred-long]\n",
        )
        .unwrap();
        assert_eq!(n.deferred_long, Duration::from_secs(36 * 3600));
        assert_eq!(n.hooks[0].format, Format::Slack);
        assert_eq!(n.hooks[0].events, [Kind::Held, Kind::DeferredLong]);
        assert!(n.hooks[0].secret.is_none());
    }

    #[test]
    fn mistakes_are_errors_at_their_position() {
        let cases = [
            (
                "notify:\n  - url: http://h/x\n    secret_env: PATH\n    events: [updated, exploded]\n",
                "agent.yaml:7:23: error: unknown event `exploded`: expected one of updated, rolled-back, held, failed, refused, deferred-long",
            ),
            (
                "notify:\n  - url: http://h/x\n",
                "agent.yaml:5:10: error: a json hook needs secret_env",
            ),
            (
                "notify:\n  - url: http://h/x\n    secret_env: BERTH_TEST_NEVER_SET\n",
                "agent.yaml:6:17: error: secret_env `BERTH_TEST_NEVER_SET` is not set",
            ),
            (
                "notify:\n  - url: ftp://h/x\n    format: slack\n",
                "agent.yaml:5:10: error: invalid hook url `ftp://h/x`",
            ),
            (
                "notify:\n  - url: http://h/x\n    format: teams\n",
                "agent.yaml:6:13: error: unknown format `teams`: expected json or slack",
            ),
            (
                "notify:\n  - url: http://h/x\n    format: slack\n    events: []\n",
                "agent.yaml:7:13: error: events lists no event",
            ),
            (
                "notify:\n  - url: http://h/x\n    format: slack\n  - url: http://h/x\n    format: slack\n",
                "agent.yaml:7:10: error: hook url `http://h/x` is given twice",
            ),
            (
                "deferred_long: 1w\n",
                "agent.yaml:4:16: error: invalid duration `1w`",
            ),
            (
                "notify:\n  - url: http://h/x\n    format: slack\n    retries: 3\n",
                "agent.yaml:7:5: error: unknown field `retries`",
            ),
        ];
        for (extra, expected) in cases {
            let text = load(extra).unwrap_err();
            assert!(text.contains(expected), "{extra}\n{text}");
        }
    }

    #[test]
    fn durations_take_days() {
        assert_eq!(duration("7d"), Ok(DEFAULT_DEFERRED_LONG));
        assert_eq!(duration("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert!(duration("d").is_err());
        assert!(duration("1w").unwrap_err().contains("whole days"));
    }
}
