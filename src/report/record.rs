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
    /// The file the record is kept in, in the status repo: a namespace's agents (a staging
    /// agent beside production) report under `namespaces/<ns>/`, so they never overwrite
    /// the record `berth fleet` reads for the partner.
    pub fn path_in_repo(partner: &str, namespace: Option<&str>) -> String {
        match namespace {
            None => format!("partners/{partner}.json"),
            Some(ns) => format!("namespaces/{ns}/partners/{partner}.json"),
        }
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
        Record::of(head, scripts)
    }

    /// The record of a pass that made no plan and so changed nothing: the scripts of the
    /// last record, if any, under the new head.
    pub fn carried(head: Head, previous: Option<&Record>) -> Record {
        Record::of(
            head,
            previous.map(|p| p.scripts.clone()).unwrap_or_default(),
        )
    }

    fn of(head: Head, scripts: Vec<ScriptRecord>) -> Record {
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

    /// The record as the state dir and the status repo keep it: pretty JSON and a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("the record serializes");
        json.push(b'\n');
        json
    }

    /// The subject of the commit that carries the record: the partner, the revision and
    /// how many scripts are in each state, e.g. `lab: 2 in-sync, 1 deferred(window) at
    /// 1a2b3c4d5e6f (exit 0)`.
    pub fn summary(&self) -> String {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for s in &self.scripts {
            *counts.entry(s.state.to_string()).or_default() += 1;
        }
        let states = if counts.is_empty() {
            "no scripts".to_owned()
        } else {
            counts
                .iter()
                .map(|(state, n)| format!("{n} {state}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let revision = self
            .revision
            .as_deref()
            .map_or("no revision", |r| &r[..r.len().min(12)]);
        format!(
            "{}: {states} at {revision} (exit {})",
            self.partner, self.exit
        )
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
    use crate::container::{ContainerSpec, ObservedContainer};
    use crate::plan::gate::{Gate, saturday_mornings};
    use crate::plan::{Change, Step};
    use crate::resolve::DesiredContainer;

    fn want(script: &str, version: &str) -> DesiredContainer {
        let image = format!("sha256:{script}{version}");
        DesiredContainer::example(script, version, image, ContainerSpec::minimal())
    }

    fn running(script: &str, version: &str) -> ObservedContainer {
        let d = want(script, version);
        ObservedContainer {
            id: format!("id-{script}"),
            name: format!("berth-lab-{script}"),
            script: script.into(),
            component: None,
            version: version.into(),
            digest: d.digest,
            spec_hash: d.spec_hash,
            revision: "r1".into(),
            running: true,
            secrets: Default::default(),
            secrets_dir: None,
            tasks: None,
        }
    }

    fn pin(script: &str, version: &str) -> Option<Pin> {
        Some(Pin {
            version: version.into(),
            digest: format!("sha256:{script}{version}"),
        })
    }

    fn head(at: &str) -> Head {
        Head {
            partner: "lab".into(),
            revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
            source: None,
            exit: 0,
            interval_secs: 300,
            at: at.parse().unwrap(),
            window: WindowRecord::default(),
        }
    }

    /// A pass over these steps with these outcomes.
    fn pass(at: &str, steps: Vec<(Change, Outcome)>, previous: Option<&Record>) -> Record {
        let (steps, outcomes): (Vec<Step>, Vec<Outcome>) = steps
            .into_iter()
            .map(|(change, outcome)| {
                let script = change
                    .desired()
                    .map(|d| d.script.clone())
                    .or_else(|| change.observed().map(|o| o.script.clone()))
                    .unwrap();
                (
                    Step::new(&script, change, "test".into(), Gate::Allowed),
                    outcome,
                )
            })
            .unzip();
        let reports: Vec<StepReport> = steps
            .iter()
            .zip(outcomes)
            .map(|(step, outcome)| StepReport {
                script: step.script.clone(),
                component: step.component.clone(),
                action: step.action(),
                reason: step.reason.clone(),
                outcome,
                millis: 0,
            })
            .collect();
        let plan = Plan {
            partner: "lab".into(),
            revision: "r2".into(),
            now: at.parse().unwrap(),
            steps,
            policy: saturday_mornings(),
            networks_to_remove: vec![],
        };
        Record::build(head(at), &plan, &reports, previous)
    }

    #[test]
    fn build_tells_each_scripts_state_and_pins() {
        let record = pass(
            "2026-12-01T10:00:00Z",
            vec![
                (
                    Change::Keep {
                        current: Some(running("api", "1.0.0")),
                        to: Some(want("api", "1.0.0")),
                    },
                    Outcome::Unchanged,
                ),
                (
                    Change::Replace {
                        from: running("web", "1.0.0"),
                        to: want("web", "1.1.0"),
                    },
                    Outcome::Done,
                ),
                (
                    Change::Replace {
                        from: running("db", "1.0.0"),
                        to: want("db", "2.0.0"),
                    },
                    Outcome::Deferred {
                        reason: "window".into(),
                        detail: "opens at 02:00".into(),
                    },
                ),
                (
                    Change::Replace {
                        from: running("jobs", "1.0.0"),
                        to: want("jobs", "9.0.0"),
                    },
                    Outcome::Deferred {
                        reason: "failed-health".into(),
                        detail: "9.0.0 failed its health check".into(),
                    },
                ),
                (
                    Change::Replace {
                        from: running("mail", "1.0.0"),
                        to: want("mail", "1.1.0"),
                    },
                    Outcome::RolledBack {
                        error: "unhealthy".into(),
                        could_not_run: false,
                    },
                ),
                (
                    Change::Create {
                        to: want("cache", "1.0.0"),
                    },
                    Outcome::NotPulled {
                        error: "no such image".into(),
                    },
                ),
                (
                    Change::Remove {
                        from: running("old", "1.0.0"),
                    },
                    Outcome::Done,
                ),
            ],
            None,
        );
        type Row<'a> = (&'a str, Option<Pin>, Option<Pin>, String, &'a str);
        let got: Vec<Row<'_>> = record
            .scripts
            .iter()
            .map(|s| {
                (
                    s.script.as_str(),
                    s.desired.clone(),
                    s.running.clone(),
                    s.state.to_string(),
                    s.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "api",
                    pin("api", "1.0.0"),
                    pin("api", "1.0.0"),
                    "in-sync".into(),
                    ""
                ),
                (
                    "web",
                    pin("web", "1.1.0"),
                    pin("web", "1.1.0"),
                    "in-sync".into(),
                    ""
                ),
                (
                    "db",
                    pin("db", "2.0.0"),
                    pin("db", "1.0.0"),
                    "deferred(window)".into(),
                    "opens at 02:00"
                ),
                (
                    "jobs",
                    pin("jobs", "9.0.0"),
                    pin("jobs", "1.0.0"),
                    "held".into(),
                    "9.0.0 failed its health check"
                ),
                (
                    "mail",
                    pin("mail", "1.1.0"),
                    pin("mail", "1.0.0"),
                    "rolled-back".into(),
                    "unhealthy"
                ),
                (
                    "cache",
                    pin("cache", "1.0.0"),
                    None,
                    "failed".into(),
                    "no such image"
                ),
            ],
            "a removed script leaves no entry"
        );
        assert_eq!(record.schema, SCHEMA);
        assert_eq!(record.partner, "lab");
        assert_eq!(record.berth, berth_version());
        assert!(record.scripts.iter().all(|s| s.since == record.at));
        assert_eq!(
            record.summary(),
            "lab: 1 deferred(window), 1 failed, 1 held, 2 in-sync, 1 rolled-back at 0123456789ab (exit 0)"
        );
    }

    #[test]
    fn build_keeps_since_while_nothing_changes() {
        let keep = |version: &str| {
            (
                Change::Keep {
                    current: Some(running("api", version)),
                    to: Some(want("api", version)),
                },
                Outcome::Unchanged,
            )
        };
        let first = pass("2026-12-01T10:00:00Z", vec![keep("1.0.0")], None);
        let second = pass("2026-12-01T10:05:00Z", vec![keep("1.0.0")], Some(&first));
        assert_eq!(second.scripts[0].since, first.at, "unchanged: since stays");
        assert!(second.same_outcome(&first));
        assert_ne!(second, first);
        let deferred = pass(
            "2026-12-01T10:10:00Z",
            vec![(
                Change::Replace {
                    from: running("api", "1.0.0"),
                    to: want("api", "1.1.0"),
                },
                Outcome::Deferred {
                    reason: "window".into(),
                    detail: String::new(),
                },
            )],
            Some(&second),
        );
        assert_eq!(
            deferred.scripts[0].since, deferred.at,
            "a new state starts anew"
        );
        assert!(!deferred.same_outcome(&second));
    }

    #[test]
    fn carried_keeps_the_last_scripts_under_the_new_head() {
        let first = pass(
            "2026-12-01T10:00:00Z",
            vec![(
                Change::Keep {
                    current: Some(running("api", "1.0.0")),
                    to: Some(want("api", "1.0.0")),
                },
                Outcome::Unchanged,
            )],
            None,
        );
        let mut h = head("2026-12-01T10:05:00Z");
        h.exit = 3;
        let carried = Record::carried(h, Some(&first));
        assert_eq!(carried.scripts, first.scripts);
        assert_eq!(carried.exit, 3);
        assert!(
            Record::carried(head("2026-12-01T10:05:00Z"), None)
                .scripts
                .is_empty()
        );
    }

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
