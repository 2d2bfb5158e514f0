//! The status record (`partners/<partner>.json` in the status repo): what one pass left on a
//! partner's host, per script and component. Its JSON is a stable interface read by
//! `berth fleet`, by the rollout of later waves and by whatever the fleet team builds: fields
//! are only ever added, readers ignore the ones they do not know, and `schema` changes when
//! a field's meaning does.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::execute::{Outcome, StepReport};
use crate::plan::{Action, Plan};

/// The record format's version.
pub const SCHEMA: u32 = 1;

/// One partner host's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub partner: String,
    /// berth's version and commit, as `berth --version` prints them.
    pub berth: String,
    /// The manifest revision the pass ran on; `None` when the manifests could not be read.
    pub revision: Option<String>,
    /// Why the host is not at the manifest repo's head, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The pass's exit code (docs/operations.md, exit codes).
    pub exit: u8,
    /// The agent's interval: with the daily report, how old a record may get before
    /// `berth fleet` calls it stale.
    pub interval_secs: u64,
    /// When the pass ended.
    pub at: Timestamp,
    pub window: WindowRecord,
    pub scripts: Vec<ScriptRecord>,
}

/// The partner's update window as the pass saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRecord {
    /// When the window that is open now closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closes: Option<Timestamp>,
    /// When a window next opens; `None` when none ever does (or one is open now and the
    /// next after it is beyond berth's horizon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens: Option<Timestamp>,
}

/// One script's (or one component's) state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRecord {
    pub script: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// What the manifests resolve to; `None` when it could not be resolved or the script
    /// is being removed.
    pub desired: Option<Pin>,
    /// What runs after the pass.
    pub running: Option<Pin>,
    pub state: State,
    /// Why, in words: the deferral's figures, the failure, the refusal.
    pub detail: String,
    /// Since when the state, desired and running pins have been what they are.
    pub since: Timestamp,
}

/// A version and the digest it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub version: String,
    pub digest: String,
}

/// A script's state, as the record spells it: `in-sync`, `deferred(<reason>)`, `held`,
/// `rolled-back`, `failed`, `refused`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum State {
    InSync,
    /// A change waits for a gate: `window`, `blackout`, `busy`, `unresolved`, `disk`, ….
    Deferred(String),
    /// A digest that failed its health check is not retried until the manifests change.
    Held,
    /// The new version failed in this pass and the old one serves again.
    RolledBack,
    /// A change failed (the image could not be pulled, the engine failed).
    Failed,
    /// The host's floor or policy refused the change; nothing was touched.
    Refused,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::InSync => f.write_str("in-sync"),
            State::Deferred(reason) => write!(f, "deferred({reason})"),
            State::Held => f.write_str("held"),
            State::RolledBack => f.write_str("rolled-back"),
            State::Failed => f.write_str("failed"),
            State::Refused => f.write_str("refused"),
        }
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<State, String> {
        Ok(match s {
            "in-sync" => State::InSync,
            "held" => State::Held,
            "rolled-back" => State::RolledBack,
            "failed" => State::Failed,
            "refused" => State::Refused,
            _ => match s
                .strip_prefix("deferred(")
                .and_then(|r| r.strip_suffix(')'))
            {
                Some(reason) if !reason.is_empty() => State::Deferred(reason.to_owned()),
                _ => return Err(format!("unknown state `{s}`")),
            },
        })
    }
}

impl From<State> for String {
    fn from(state: State) -> String {
        state.to_string()
    }
}

impl TryFrom<String> for State {
    type Error = String;

    fn try_from(s: String) -> Result<State, String> {
        s.parse()
    }
}

/// What a pass knows besides its plan and step reports.
#[derive(Debug, Clone)]
pub struct Head {
    pub partner: String,
    pub revision: Option<String>,
    pub source: Option<String>,
    pub exit: u8,
    pub interval_secs: u64,
    pub at: Timestamp,
    pub window: WindowRecord,
}

/// The version and commit of this berth, as in every record.
pub fn berth_version() -> String {
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("BERTH_COMMIT"), ")").to_owned()
}

impl Record {
    /// The file the record is kept in, in the status repo.
    pub fn path_in_repo(partner: &str) -> String {
        format!("partners/{partner}.json")
    }

    /// The record of a pass: one entry per step (removed scripts leave no entry), each
    /// keeping the `since` of `previous` while its state and pins stay the same.
    pub fn build(
        head: Head,
        plan: &Plan,
        reports: &[StepReport],
        previous: Option<&Record>,
    ) -> Record {
        let scripts = plan
            .steps
            .iter()
            .zip(reports)
            .filter_map(|(step, report)| {
                let desired = step.desired().map(|d| Pin {
                    version: d.version.clone(),
                    digest: d.digest.clone(),
                });
                let observed = step.observed().map(|o| Pin {
                    version: o.version.clone(),
                    digest: o.digest.clone(),
                });
                let (state, running, detail) = match &report.outcome {
                    Outcome::Done if step.action() == Action::Remove => return None,
                    Outcome::Done => (State::InSync, desired.clone(), String::new()),
                    Outcome::Unchanged => (State::InSync, observed, String::new()),
                    Outcome::Deferred { reason, detail } if reason == "failed-health" => {
                        (State::Held, observed, detail.clone())
                    }
                    Outcome::Deferred { reason, detail } => {
                        (State::Deferred(reason.clone()), observed, detail.clone())
                    }
                    Outcome::Refused { detail } => (State::Refused, observed, detail.clone()),
                    Outcome::NotPulled { error } | Outcome::Failed { error, .. } => {
                        (State::Failed, observed, error.clone())
                    }
                    Outcome::RolledBack { error, .. } => {
                        (State::RolledBack, observed, error.clone())
                    }
                };
                let since = previous
                    .and_then(|p| {
                        p.scripts.iter().find(|s| {
                            s.script == step.script
                                && s.component == step.component
                                && s.state == state
                                && s.desired == desired
                                && s.running == running
                        })
                    })
                    .map_or(head.at, |s| s.since);
                Some(ScriptRecord {
                    script: step.script.clone(),
                    component: step.component.clone(),
                    desired,
                    running,
                    state,
                    detail,
                    since,
                })
            })
            .collect();
        Record {
            schema: SCHEMA,
            partner: head.partner,
            berth: berth_version(),
            revision: head.revision,
            source: head.source,
            exit: head.exit,
            interval_secs: head.interval_secs,
            at: head.at,
            window: head.window,
            scripts,
        }
    }

    /// The record of a pass that made no plan and so changed nothing: the scripts of the
    /// last record, if any, under the new head.
    pub fn carried(head: Head, previous: Option<&Record>) -> Record {
        Record {
            schema: SCHEMA,
            partner: head.partner,
            berth: berth_version(),
            revision: head.revision,
            source: head.source,
            exit: head.exit,
            interval_secs: head.interval_secs,
            at: head.at,
            window: head.window,
            scripts: previous.map(|p| p.scripts.clone()).unwrap_or_default(),
        }
    }

    /// Whether two records tell the same outcome: the same record but for its times (the
    /// pass's own, and the window's, which move on by themselves).
    pub fn same_outcome(&self, other: &Record) -> bool {
        let untimed = |r: &Record| {
            let mut r = r.clone();
            r.at = Timestamp::UNIX_EPOCH;
            r.window = WindowRecord::default();
            for s in &mut r.scripts {
                s.since = Timestamp::UNIX_EPOCH;
            }
            r
        };
        untimed(self) == untimed(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_as_written() {
        for state in [
            State::InSync,
            State::Deferred("window".into()),
            State::Held,
            State::RolledBack,
            State::Failed,
            State::Refused,
        ] {
            let text = serde_json::to_string(&state).unwrap();
            assert_eq!(
                serde_json::from_str::<State>(&text).unwrap(),
                state,
                "{text}"
            );
        }
        assert_eq!(
            serde_json::to_string(&State::Deferred("busy".into())).unwrap(),
            "\"deferred(busy)\""
        );
        assert!("deferred()".parse::<State>().is_err());
        assert!("running".parse::<State>().is_err());
    }
}
