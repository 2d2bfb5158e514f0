//! What a partner's last record says against what its manifests ask: the marks `berth
//! fleet` puts on a partner, decided without I/O.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::exit::Exit;
use crate::report::{Record, State};

/// A record younger than this plus the agent's interval is current: the agent reports at
/// least daily, and after every pass whose outcome changed.
pub const REPORT_EVERY: SignedDuration = SignedDuration::from_hours(24);

/// What the manifests ask of one partner.
#[derive(Debug, Clone, Serialize)]
pub struct Expected {
    /// The manifest commit the partner should be at; `None` when the manifests are a plain
    /// directory, which has no revision to compare.
    pub revision: Option<String>,
    pub scripts: Vec<Wanted>,
}

/// One opted-in script and what it may run.
#[derive(Debug, Clone, Serialize)]
pub struct Wanted {
    pub script: String,
    /// The semver range the partner's opt-in and the script allow (`*` when neither narrows).
    pub versions: String,
    /// The version `berth.lock` pins for this partner, when the repo has a lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<String>,
}

/// What the status repo holds for a partner.
#[derive(Debug, Clone)]
pub enum Reported {
    Missing,
    /// The file is there but is not a record this berth reads; why, in words.
    Unreadable(String),
    Record(Box<Record>),
}

/// A mark on a partner, from the most to the least serious.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mark {
    /// A script failed or was rolled back in the last pass.
    Failed,
    /// A version is held after failing its health check, or the host refused it.
    Held,
    /// The record cannot be read.
    Unreadable,
    /// The partner declares a `report_key` and the record's commit is not signed with it.
    Unverified,
    /// No record at all.
    Missing,
    /// The record is older than a day plus the agent's interval.
    Stale,
    /// The host is not at what the manifests ask.
    Behind,
    /// Changes wait for a window or for the service to be idle.
    Pending,
}

impl Mark {
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Failed => "failed",
            Mark::Held => "held",
            Mark::Unreadable => "unreadable",
            Mark::Unverified => "unverified",
            Mark::Missing => "missing",
            Mark::Stale => "stale",
            Mark::Behind => "behind",
            Mark::Pending => "pending",
        }
    }

    /// What the mark makes `--exit-code` say: wrong for what someone must fix, pending for
    /// a host that is not (known to be) where the manifests ask.
    pub fn exit(self) -> Exit {
        match self {
            Mark::Failed | Mark::Held | Mark::Unreadable | Mark::Unverified => Exit::Wrong,
            Mark::Missing | Mark::Stale | Mark::Behind => Exit::Pending,
            Mark::Pending => Exit::Ok,
        }
    }
}

/// The judgement on one partner.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub marks: Vec<Mark>,
    /// How old the record is at `now`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_secs: Option<i64>,
    /// When the record turns (or turned) stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_at: Option<Timestamp>,
    /// Why the host is behind, one line each.
    pub behind: Vec<String>,
    /// Changes the host knows of and waits to apply.
    pub pending: Vec<String>,
    /// Versions the host will not apply on its own.
    pub held: Vec<String>,
    /// Failures of the last pass.
    pub failed: Vec<String>,
}

/// `script` or `script/component`.
fn entry_name(s: &crate::report::ScriptRecord) -> String {
    match &s.component {
        Some(c) => format!("{}/{c}", s.script),
        None => s.script.clone(),
    }
}

fn version(pin: Option<&crate::report::Pin>) -> &str {
    pin.map_or("none", |p| p.version.as_str())
}

/// Judges a partner's record against its manifests at `now`.
pub fn judge(expected: &Expected, reported: &Reported, now: Timestamp) -> Verdict {
    let mut v = Verdict::default();
    let record = match reported {
        Reported::Missing => {
            v.marks.push(Mark::Missing);
            return v;
        }
        Reported::Unreadable(_) => {
            v.marks.push(Mark::Unreadable);
            return v;
        }
        Reported::Record(r) => r,
    };
    let age = now.duration_since(record.at);
    v.age_secs = Some(age.as_secs());
    let interval = SignedDuration::from_secs(i64::try_from(record.interval_secs).unwrap_or(0));
    let stale_at = record
        .at
        .checked_add(REPORT_EVERY)
        .and_then(|t| t.checked_add(interval))
        .unwrap_or(Timestamp::MAX);
    v.stale_at = Some(stale_at);
    if now > stale_at {
        v.marks.push(Mark::Stale);
    }
    match (&expected.revision, &record.revision) {
        (Some(want), Some(got)) if want != got => v.behind.push(format!(
            "at manifest revision {}, not {}",
            short(got),
            short(want)
        )),
        (Some(want), None) => v.behind.push(format!(
            "could not read its manifests (should be at {})",
            short(want)
        )),
        _ => {}
    }
    if let Some(why) = &record.source {
        v.behind.push(format!("held back: {why}"));
    }
    for want in &expected.scripts {
        let entries: Vec<_> = record
            .scripts
            .iter()
            .filter(|s| s.script == want.script)
            .collect();
        if entries.is_empty() {
            v.behind
                .push(format!("{} is not in the record", want.script));
            continue;
        }
        if let Some(locked) = &want.locked
            && let Some(e) = entries.iter().find(|e| {
                e.component.is_none() && e.desired.as_ref().is_some_and(|d| &d.version != locked)
            })
        {
            v.behind.push(format!(
                "{}: the host resolved {}, berth.lock pins {locked}",
                want.script,
                version(e.desired.as_ref())
            ));
        }
    }
    for s in &record.scripts {
        let name = entry_name(s);
        if !expected.scripts.iter().any(|w| w.script == s.script) {
            v.behind.push(format!(
                "{name} still runs {} (no longer opted in)",
                version(s.running.as_ref())
            ));
        }
        let change = format!(
            "{name} {} -> {}",
            version(s.running.as_ref()),
            version(s.desired.as_ref())
        );
        let detail = |what: &str| {
            if s.detail.is_empty() {
                what.to_owned()
            } else {
                format!("{what}: {}", s.detail)
            }
        };
        match &s.state {
            State::InSync => {}
            // A halted wave waits for the earlier wave's fix: pending here, failed there.
            State::Deferred(_) | State::Halted => {
                if s.desired != s.running {
                    v.behind.push(format!("{change} waits"));
                }
                v.pending
                    .push(format!("{change} ({})", detail(&s.state.to_string())));
            }
            State::Held => v.held.push(format!("{change} ({})", detail("held"))),
            State::Refused => v.held.push(format!("{change} ({})", detail("refused"))),
            State::Failed => v.failed.push(format!("{change} ({})", detail("failed"))),
            State::RolledBack => v
                .failed
                .push(format!("{change} ({})", detail("rolled back"))),
        }
    }
    if !v.failed.is_empty() {
        v.marks.push(Mark::Failed);
    }
    if !v.held.is_empty() {
        v.marks.push(Mark::Held);
    }
    if !v.behind.is_empty() {
        v.marks.push(Mark::Behind);
    }
    if !v.pending.is_empty() {
        v.marks.push(Mark::Pending);
    }
    v.marks.sort();
    v
}

/// The first 12 characters of a commit id, as the record's readers show it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Pin, ScriptRecord, WindowRecord};

    const REV: &str = "1111111111111111111111111111111111111111";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pin(v: &str) -> Option<Pin> {
        Some(Pin {
            version: v.into(),
            digest: format!("sha256:{v}"),
        })
    }

    fn entry(script: &str, desired: &str, running: &str, state: State) -> ScriptRecord {
        ScriptRecord {
            script: script.into(),
            component: None,
            desired: pin(desired),
            running: pin(running),
            state,
            detail: String::new(),
            since: at("2026-12-01T00:00:00Z"),
        }
    }

    fn record(scripts: Vec<ScriptRecord>) -> Reported {
        Reported::Record(Box::new(Record {
            schema: 1,
            partner: "alpha".into(),
            berth: "0.1.0".into(),
            revision: Some(REV.into()),
            source: None,
            exit: 0,
            interval_secs: 3600,
            at: at("2026-12-01T00:00:00Z"),
            window: WindowRecord::default(),
            scripts,
        }))
    }

    fn expected(scripts: &[&str]) -> Expected {
        Expected {
            revision: Some(REV.into()),
            scripts: scripts
                .iter()
                .map(|s| Wanted {
                    script: (*s).into(),
                    versions: "*".into(),
                    locked: None,
                })
                .collect(),
        }
    }

    fn marks(v: &Verdict) -> Vec<&'static str> {
        v.marks.iter().map(|m| m.as_str()).collect()
    }

    #[test]
    fn a_host_in_sync_with_a_fresh_record_has_no_mark() {
        let v = judge(
            &expected(&["a"]),
            &record(vec![entry("a", "1.0.0", "1.0.0", State::InSync)]),
            at("2026-12-01T12:00:00Z"),
        );
        assert_eq!(marks(&v), Vec::<&str>::new());
        assert_eq!(v.age_secs, Some(12 * 3600));
    }

    #[test]
    fn a_record_is_stale_after_a_day_plus_the_interval() {
        let reported = record(vec![entry("a", "1.0.0", "1.0.0", State::InSync)]);
        let e = expected(&["a"]);
        assert_eq!(
            marks(&judge(&e, &reported, at("2026-12-02T01:00:00Z"))),
            Vec::<&str>::new()
        );
        assert_eq!(
            marks(&judge(&e, &reported, at("2026-12-02T01:00:01Z"))),
            ["stale"]
        );
    }

    #[test]
    fn behind_on_revision_on_a_missing_script_on_a_removed_one_and_on_the_lock() {
        let mut e = expected(&["a", "b"]);
        e.revision = Some("2".repeat(40));
        e.scripts[0].locked = Some("1.1.0".into());
        let v = judge(
            &e,
            &record(vec![
                entry("a", "1.0.0", "1.0.0", State::InSync),
                entry("c", "1.0.0", "1.0.0", State::InSync),
            ]),
            at("2026-12-01T01:00:00Z"),
        );
        assert_eq!(marks(&v), ["behind"]);
        assert_eq!(
            v.behind,
            [
                "at manifest revision 111111111111, not 222222222222",
                "a: the host resolved 1.0.0, berth.lock pins 1.1.0",
                "b is not in the record",
                "c still runs 1.0.0 (no longer opted in)",
            ]
        );
    }

    #[test]
    fn a_deferred_change_is_pending_and_behind_a_deferral_without_change_only_pending() {
        let v = judge(
            &expected(&["a", "b"]),
            &record(vec![
                entry("a", "1.1.0", "1.0.0", State::Deferred("window".into())),
                entry("b", "1.0.0", "1.0.0", State::Deferred("busy".into())),
            ]),
            at("2026-12-01T01:00:00Z"),
        );
        assert_eq!(marks(&v), ["behind", "pending"]);
        assert_eq!(v.behind, ["a 1.0.0 -> 1.1.0 waits"]);
        assert_eq!(
            v.pending,
            [
                "a 1.0.0 -> 1.1.0 (deferred(window))",
                "b 1.0.0 -> 1.0.0 (deferred(busy))"
            ]
        );
    }

    #[test]
    fn failed_rolled_back_held_and_refused_are_marked_and_exit_wrong() {
        let mut rolled = entry("a", "1.1.0", "1.0.0", State::RolledBack);
        rolled.detail = "health check failed".into();
        let v = judge(
            &expected(&["a", "b", "c"]),
            &record(vec![
                rolled,
                entry("b", "2.0.0", "1.0.0", State::Held),
                entry("c", "2.0.0", "1.0.0", State::Refused),
            ]),
            at("2026-12-01T01:00:00Z"),
        );
        assert_eq!(marks(&v), ["failed", "held"]);
        assert_eq!(
            v.failed,
            ["a 1.0.0 -> 1.1.0 (rolled back: health check failed)"]
        );
        assert_eq!(v.held.len(), 2);
        assert_eq!(
            v.marks.iter().map(|m| m.exit()).fold(Exit::Ok, Exit::worst),
            Exit::Wrong
        );
    }

    #[test]
    fn missing_and_unreadable_records() {
        let e = expected(&["a"]);
        let now = at("2026-12-01T01:00:00Z");
        assert_eq!(marks(&judge(&e, &Reported::Missing, now)), ["missing"]);
        assert_eq!(Mark::Missing.exit(), Exit::Pending);
        assert_eq!(
            marks(&judge(&e, &Reported::Unreadable("bad".into()), now)),
            ["unreadable"]
        );
    }
}
