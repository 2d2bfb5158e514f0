//! Which events a pass raises: derived from the last pass's status record and this one's
//! alone, so a state that persists raises nothing again, and a restart or a crash between
//! passes neither loses nor repeats a transition that a record shows.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::report::{Pin, Record, ScriptRecord, State};

/// What happened to a script (or a component).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// It runs a new digest, in sync.
    Updated,
    /// The new version failed its health check in this pass; the old one serves again.
    RolledBack,
    /// A digest that failed its health check is held until the manifests change.
    Held,
    /// A change failed (a pull, the engine).
    Failed,
    /// The floor or the host policy refused a change.
    Refused,
    /// A change has been deferred for longer than `deferred_long`.
    DeferredLong,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Updated,
        Kind::RolledBack,
        Kind::Held,
        Kind::Failed,
        Kind::Refused,
        Kind::DeferredLong,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Updated => "updated",
            Kind::RolledBack => "rolled-back",
            Kind::Held => "held",
            Kind::Failed => "failed",
            Kind::Refused => "refused",
            Kind::DeferredLong => "deferred-long",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind a record state raises when a script enters it.
    fn entered(state: &State) -> Option<Kind> {
        match state {
            State::RolledBack => Some(Kind::RolledBack),
            State::Held => Some(Kind::Held),
            State::Failed => Some(Kind::Failed),
            State::Refused => Some(Kind::Refused),
            // A halt is the earlier wave's rollback, reported there.
            State::InSync | State::Deferred(_) | State::Halted => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One event, as a JSON hook receives it (docs/operations.md, "Notifications").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Stable across re-sends of the same event, so a receiver can drop duplicates.
    pub id: String,
    pub event: Kind,
    pub partner: String,
    pub script: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// What ran before (`updated`) or runs now (the others).
    pub from: Option<Pin>,
    /// What runs now (`updated`) or what the change was to (the others).
    pub to: Option<Pin>,
    /// The record's state after the pass.
    pub state: State,
    pub detail: String,
    pub revision: Option<String>,
    /// Since when the state has been what it is.
    pub since: Timestamp,
    /// When the pass that raised it ended.
    pub at: Timestamp,
}

/// The events between the last pass's record and this one's.
///
/// - `updated`: the running digest changed and the script is in sync. Without a previous
///   record nothing is known to have changed, so a first pass raises no `updated`; a
///   script new to an existing record raises one with no `from`.
/// - `rolled-back`, `held`, `failed`, `refused`: the script entered that state, or stays
///   in it for another desired version (a new change that ended the same way). Without a
///   previous record, every script in one of them raises it.
/// - `deferred-long`: a deferred script whose `since` is older than `deferred_long` now
///   and was not at the previous pass: once per `since`.
pub fn between(previous: Option<&Record>, record: &Record, deferred_long: Duration) -> Vec<Event> {
    let long = |since: Timestamp, at: Timestamp| {
        at.duration_since(since)
            .try_into()
            .is_ok_and(|age: Duration| age >= deferred_long)
    };
    record
        .scripts
        .iter()
        .filter_map(|s| {
            let before = previous.and_then(|p| {
                p.scripts
                    .iter()
                    .find(|b| b.script == s.script && b.component == s.component)
            });
            let digest = |r: &ScriptRecord| r.running.as_ref().map(|p| p.digest.clone());
            let (kind, from, to) = match &s.state {
                State::InSync => {
                    let changed = previous.is_some()
                        && s.running.is_some()
                        && before.map(digest) != Some(digest(s));
                    if !changed {
                        return None;
                    }
                    (
                        Kind::Updated,
                        before.and_then(|b| b.running.clone()),
                        s.running.clone(),
                    )
                }
                State::Deferred(_) => {
                    let already = previous.is_some_and(|p| {
                        before.is_some_and(|b| b.since == s.since && long(b.since, p.at))
                    });
                    if already || !long(s.since, record.at) {
                        return None;
                    }
                    (Kind::DeferredLong, s.running.clone(), s.desired.clone())
                }
                state => {
                    let kind = Kind::entered(state)?;
                    if before.is_some_and(|b| b.state == s.state && b.desired == s.desired) {
                        return None;
                    }
                    (kind, s.running.clone(), s.desired.clone())
                }
            };
            let target = match &s.component {
                Some(c) => format!("{}/{c}", s.script),
                None => s.script.clone(),
            };
            Some(Event {
                id: format!("{}/{target}/{kind}@{}", record.partner, s.since),
                event: kind,
                partner: record.partner.clone(),
                script: s.script.clone(),
                component: s.component.clone(),
                from,
                to,
                state: s.state.clone(),
                detail: s.detail.clone(),
                revision: record.revision.clone(),
                since: s.since,
                at: record.at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::WindowRecord;

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn pin(v: &str) -> Option<Pin> {
        Some(Pin {
            version: v.into(),
            digest: format!("sha256:{v}"),
        })
    }

    fn script(name: &str, state: State, desired: &str, running: &str, since: i64) -> ScriptRecord {
        ScriptRecord {
            script: name.into(),
            component: None,
            desired: pin(desired),
            running: pin(running),
            state,
            detail: String::new(),
            since: t(since),
        }
    }

    fn record(at: i64, scripts: Vec<ScriptRecord>) -> Record {
        Record {
            schema: 1,
            partner: "lab".into(),
            berth: "test".into(),
            revision: Some("abc".into()),
            source: None,
            exit: 0,
            interval_secs: 300,
            at: t(at),
            window: WindowRecord::default(),
            scripts,
        }
    }

    fn kinds(events: &[Event]) -> Vec<(String, Kind)> {
        events.iter().map(|e| (e.script.clone(), e.event)).collect()
    }

    #[test]
    fn an_update_raises_updated_with_both_pins() {
        let before = record(0, vec![script("svc", State::InSync, "1.0.0", "1.0.0", 0)]);
        let after = record(60, vec![script("svc", State::InSync, "1.1.0", "1.1.0", 60)]);
        let events = between(Some(&before), &after, WEEK);
        assert_eq!(kinds(&events), [("svc".into(), Kind::Updated)]);
        let e = &events[0];
        assert_eq!(e.from, pin("1.0.0"));
        assert_eq!(e.to, pin("1.1.0"));
        assert_eq!(e.partner, "lab");
        assert_eq!(e.revision.as_deref(), Some("abc"));
        assert_eq!(e.at, t(60));
        assert_eq!(e.id, format!("lab/svc/updated@{}", t(60)));
    }

    #[test]
    fn an_unchanged_pass_raises_nothing() {
        let before = record(0, vec![script("svc", State::InSync, "1.0.0", "1.0.0", 0)]);
        let after = record(60, vec![script("svc", State::InSync, "1.0.0", "1.0.0", 0)]);
        assert!(between(Some(&before), &after, WEEK).is_empty());
    }

    #[test]
    fn a_first_record_raises_no_update_but_does_raise_trouble() {
        let after = record(
            0,
            vec![
                script("a", State::InSync, "1.0.0", "1.0.0", 0),
                script("b", State::Failed, "2.0.0", "1.0.0", 0),
                script("c", State::Held, "9.0.0", "1.0.0", 0),
                script("d", State::Deferred("window".into()), "2.0.0", "1.0.0", 0),
            ],
        );
        assert_eq!(
            kinds(&between(None, &after, WEEK)),
            [("b".into(), Kind::Failed), ("c".into(), Kind::Held)]
        );
    }

    #[test]
    fn a_script_new_to_the_record_is_updated_from_nothing() {
        let before = record(0, vec![]);
        let after = record(60, vec![script("svc", State::InSync, "1.0.0", "1.0.0", 60)]);
        let events = between(Some(&before), &after, WEEK);
        assert_eq!(kinds(&events), [("svc".into(), Kind::Updated)]);
        assert_eq!(events[0].from, None);
    }

    #[test]
    fn a_rollback_then_a_hold_raise_one_event_each() {
        let ok = record(0, vec![script("svc", State::InSync, "1.0.0", "1.0.0", 0)]);
        let rolled = record(
            60,
            vec![script("svc", State::RolledBack, "9.0.0", "1.0.0", 60)],
        );
        let held = record(120, vec![script("svc", State::Held, "9.0.0", "1.0.0", 120)]);
        let still = record(180, vec![script("svc", State::Held, "9.0.0", "1.0.0", 120)]);
        let events = between(Some(&ok), &rolled, WEEK);
        assert_eq!(kinds(&events), [("svc".into(), Kind::RolledBack)]);
        assert_eq!(events[0].from, pin("1.0.0"), "what serves again");
        assert_eq!(events[0].to, pin("9.0.0"), "what failed");
        assert_eq!(
            kinds(&between(Some(&rolled), &held, WEEK)),
            [("svc".into(), Kind::Held)]
        );
        assert!(between(Some(&held), &still, WEEK).is_empty());
    }

    #[test]
    fn a_persisting_failure_is_raised_once_and_again_for_a_new_version() {
        let ok = record(0, vec![script("svc", State::InSync, "1.0.0", "1.0.0", 0)]);
        let failed = record(60, vec![script("svc", State::Failed, "1.1.0", "1.0.0", 60)]);
        let again = record(
            120,
            vec![script("svc", State::Failed, "1.1.0", "1.0.0", 60)],
        );
        let newer = record(
            180,
            vec![script("svc", State::Failed, "1.2.0", "1.0.0", 180)],
        );
        assert_eq!(
            kinds(&between(Some(&ok), &failed, WEEK)),
            [("svc".into(), Kind::Failed)]
        );
        assert!(between(Some(&failed), &again, WEEK).is_empty());
        assert_eq!(
            kinds(&between(Some(&again), &newer, WEEK)),
            [("svc".into(), Kind::Failed)]
        );
    }

    #[test]
    fn refused_is_raised_on_entry() {
        let ok = record(0, vec![script("svc", State::InSync, "1.0.0", "1.0.0", 0)]);
        let refused = record(
            60,
            vec![script("svc", State::Refused, "1.1.0", "1.0.0", 60)],
        );
        assert_eq!(
            kinds(&between(Some(&ok), &refused, WEEK)),
            [("svc".into(), Kind::Refused)]
        );
    }

    #[test]
    fn recovering_from_a_failure_in_place_is_not_an_update() {
        let failed = record(0, vec![script("svc", State::Failed, "1.1.0", "1.0.0", 0)]);
        let back = record(60, vec![script("svc", State::InSync, "1.0.0", "1.0.0", 60)]);
        assert!(between(Some(&failed), &back, WEEK).is_empty());
    }

    #[test]
    fn a_long_deferral_is_raised_once_when_it_crosses_the_threshold() {
        let deferred = |at| {
            record(
                at,
                vec![script(
                    "svc",
                    State::Deferred("window".into()),
                    "1.1.0",
                    "1.0.0",
                    0,
                )],
            )
        };
        let week = 7 * 24 * 3600;
        assert!(between(Some(&deferred(0)), &deferred(week - 1), WEEK).is_empty());
        let crossed = between(Some(&deferred(week - 1)), &deferred(week), WEEK);
        assert_eq!(kinds(&crossed), [("svc".into(), Kind::DeferredLong)]);
        assert_eq!(crossed[0].from, pin("1.0.0"));
        assert_eq!(crossed[0].to, pin("1.1.0"));
        assert!(between(Some(&deferred(week)), &deferred(week + 60), WEEK).is_empty());
        // Without the previous record the crossing cannot be placed: raised, once more.
        assert_eq!(
            kinds(&between(None, &deferred(week + 60), WEEK)),
            [("svc".into(), Kind::DeferredLong)]
        );
        // A new deferral (a new since) that is long again is raised again.
        let mut renewed = deferred(3 * week);
        renewed.scripts[0].since = t(week + 120);
        assert_eq!(
            kinds(&between(Some(&deferred(week + 60)), &renewed, WEEK)),
            [("svc".into(), Kind::DeferredLong)]
        );
    }

    #[test]
    fn components_are_told_apart() {
        let part = |c: &str, state, running: &str| ScriptRecord {
            component: Some(c.into()),
            ..script("app", state, "2.0.0", running, 0)
        };
        let before = record(
            0,
            vec![
                part("web", State::InSync, "1.0.0"),
                part("cache", State::InSync, "1.0.0"),
            ],
        );
        let after = record(
            60,
            vec![
                part("web", State::InSync, "2.0.0"),
                part("cache", State::InSync, "1.0.0"),
            ],
        );
        let events = between(Some(&before), &after, WEEK);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].component.as_deref(), Some("web"));
        assert!(events[0].id.starts_with("lab/app/web/updated@"));
    }

    #[test]
    fn kinds_read_back_by_name() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.name())
            );
        }
        assert_eq!(Kind::parse("deferred"), None);
    }
}
