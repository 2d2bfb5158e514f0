//! The agenda `berth windows` shows: each partner's update windows over a period (joined
//! stretches for people, one instance per window and day for calendars), its blackouts, its
//! scripts, and the changes pending on this host sorted by the window that will apply them.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::civil::Date;

use crate::manifest::{Partner, Repo};
use crate::plan::{Deferral, Gate, Plan, Policy, Step};
use crate::window::{Opening, Schedule};

/// The period asked about: `[now, until)`.
pub struct Period {
    pub now: Timestamp,
    pub until: Timestamp,
    pub days: u32,
}

/// One partner's schedule over the period, and what waits for it.
pub struct View {
    pub name: String,
    pub tz_name: String,
    pub schedule: Schedule,
    pub has_windows: bool,
    pub stretches: Vec<Opening>,
    pub occurrences: Vec<Opening>,
    /// Blackouts that touch the period, as inclusive local dates.
    pub blackouts: Vec<(Date, Date)>,
    /// When a window next opens after the period, if none does within it.
    pub opens_later: Option<Timestamp>,
    /// Each opted-in script as a person reads it: `case-counts ~1.4 (locked at 1.4.2)`.
    pub scripts: Vec<String>,
    pub pending: Option<Pending>,
}

impl View {
    pub fn new(repo: &Repo, partner: &Partner, period: &Period) -> View {
        let tz_name = repo.timezone(partner).to_owned();
        let windows = repo.windows(partner);
        let schedule = Schedule::from_manifest(&tz_name, windows, &partner.blackouts);
        let stretches = schedule.stretches(period.now, period.until);
        let occurrences = schedule.occurrences(period.now, period.until);
        let first = period.now.to_zoned(schedule.tz.clone()).date();
        let last = period.until.to_zoned(schedule.tz.clone()).date();
        let mut blackouts: Vec<(Date, Date)> = schedule
            .blackouts
            .iter()
            .filter(|(from, to)| *to >= first && *from <= last)
            .copied()
            .collect();
        blackouts.sort();
        let opens_later = if stretches.is_empty() {
            schedule.next_open(period.until)
        } else {
            None
        };
        let scripts = partner
            .scripts
            .iter()
            .map(|opt| {
                let name = &opt.script.value;
                let range =
                    opt.versions.as_ref().map(|v| v.value.clone()).or_else(|| {
                        Some(repo.scripts.get(name)?.doc.versions.as_ref()?.value.clone())
                    });
                let mut s = name.clone();
                if let Some(r) = range {
                    let _ = write!(s, " {r}");
                }
                if let Some(pin) = repo
                    .lock
                    .as_ref()
                    .and_then(|l| l.doc.pin(&partner.name, name))
                {
                    let _ = write!(s, " (locked at {})", pin.version);
                }
                s
            })
            .collect();
        View {
            name: partner.name.value.clone(),
            tz_name,
            has_windows: !schedule.windows.iter().all(|w| w.days.is_empty()),
            schedule,
            stretches,
            occurrences,
            blackouts,
            opens_later,
            scripts,
            pending: None,
        }
    }

    /// The stretch open at `now`, if any.
    pub fn current(&self, now: Timestamp) -> Option<&Opening> {
        self.stretches
            .iter()
            .find(|s| s.start <= now && now < s.end)
    }

    /// The first stretch that opens after `now`.
    pub fn next(&self, now: Timestamp) -> Option<&Opening> {
        self.stretches.iter().find(|s| s.start > now)
    }

    /// The instant whose window a bucket of pending changes waits for.
    pub fn anchor(&self, bucket: Bucket, now: Timestamp) -> Option<Timestamp> {
        match bucket {
            Bucket::Now => self.current(now).map(|_| now),
            Bucket::Next => self.next(now).map(|s| s.start),
        }
    }
}

/// The changes pending on this host for a partner, as far as they can be known.
pub enum Pending {
    Known {
        changes: Vec<(Bucket, String)>,
        /// Changes that no window will apply on its own (failed health, unresolved).
        held: Vec<String>,
        notes: Vec<String>,
    },
    Unknown(String),
}

/// When a pending change can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// In the window open now (at the next pass, or once the service is idle).
    Now,
    /// In the next window that opens.
    Next,
}

/// Sorts a plan's steps by the window that will apply them.
pub fn classify(plan: &Plan, notes: Vec<String>) -> Pending {
    let mut changes = Vec::new();
    let mut held = Vec::new();
    for step in plan.steps.iter() {
        match &step.gate {
            Gate::Deferred(
                d @ (Deferral::Unresolved { .. }
                | Deferral::InFlight
                | Deferral::Refused { .. }
                | Deferral::Disk { .. }
                | Deferral::DiskUnmeasured { .. }
                | Deferral::Requires { .. }
                | Deferral::Wave { .. }
                | Deferral::Halted { .. }),
            ) => {
                held.push(format!("{}: {}", step.script, d.describe()));
            }
            Gate::Deferred(d @ Deferral::FailedHealth) => {
                held.push(format!(
                    "{}: {}",
                    describe(step, &plan.policy),
                    d.describe()
                ));
            }
            _ if !step.is_change() => {}
            Gate::Allowed => changes.push((
                Bucket::Now,
                format!(
                    "{} (allowed now: the next pass applies it)",
                    describe(step, &plan.policy)
                ),
            )),
            Gate::Deferred(Deferral::Busy { detail }) => changes.push((
                Bucket::Now,
                format!(
                    "{} (once the service is idle; now: {detail})",
                    describe(step, &plan.policy)
                ),
            )),
            Gate::Deferred(
                Deferral::Window { .. } | Deferral::WindowEnding { .. } | Deferral::Blackout { .. },
            ) => changes.push((Bucket::Next, describe(step, &plan.policy))),
        }
    }
    Pending::Known {
        changes,
        held,
        notes,
    }
}

/// `replace svc: version 1.0.0 -> 1.1.0`.
pub fn describe(step: &Step, policy: &Policy) -> String {
    let mut s = format!(
        "{} {}: {}",
        step.action().as_str(),
        step.script,
        step.reason
    );
    if policy.idle_gated(&step.change) {
        s.push_str(" (if the service reports idle)");
    }
    s
}
