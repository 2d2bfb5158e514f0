//! Staged rollout (`rollout:` in fleet.yaml, docs/rollout.md): whether a partner of a later
//! wave may take a digest, from the status records of the partners of earlier waves. Pure:
//! the records arrive read ([`Report`], converted from the status records by `report`), and
//! the time is given. Each agent decides for itself; there is no server.
//!
//! The rules, per script and component (a unit):
//! - The first wave, a fleet without `rollout:`, and a wave with no earlier wave running the
//!   script (waves where no partner runs it are skipped) are never gated.
//! - A later wave takes the highest candidate whose digest every partner of the nearest
//!   earlier wave that runs the script reports serving (`in-sync` on it, or running it while
//!   a newer one waits for a gate of its own) for at least this wave's `bake`, counted from
//!   the record's `since`: the baked one. It never goes to an
//!   unbaked digest, never back below what it runs, and a fresh partner with nothing baked
//!   gets nothing yet.
//! - A digest that any earlier-wave partner's latest record shows `held` or `rolled-back`
//!   (as its desired pin) is halted for every later wave. It stays halted while that record
//!   says so: once the manifests change (a new digest or a fix), the partner's next pass
//!   drops the hold, its record changes, and the halt lifts.
//! - A member whose record is older than a day plus its interval, or missing, blocks the
//!   wave and is named; a member waiting for its own window is pending, not failed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::manifest::Repo;
use crate::manifest::syntax::parse_bake;
use crate::resolve::tag_version;
use crate::window::{Schedule, WindowState};

/// A record counts as current for a day (agents report at least daily) plus its interval.
pub const REPORT_EVERY: SignedDuration = SignedDuration::from_hours(24);

/// One wave, its members spelled out (the last wave's are everyone not listed earlier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    pub name: String,
    pub partners: Vec<String>,
    pub bake: Duration,
}

/// The waves of fleet.yaml, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waves {
    pub waves: Vec<Wave>,
}

impl Waves {
    /// The waves of a validated repo, or `None` when it has no `rollout:`.
    pub fn of(repo: &Repo) -> Option<Waves> {
        let rollout = repo.fleet.as_ref()?.doc.rollout.as_ref()?;
        let mut listed = BTreeSet::new();
        let mut waves = Vec::new();
        for w in rollout.waves.iter() {
            let partners: Vec<String> = match &w.partners {
                Some(p) => p.iter().map(|p| p.value.clone()).collect(),
                None => repo
                    .partners
                    .keys()
                    .filter(|p| !listed.contains(*p))
                    .cloned()
                    .collect(),
            };
            listed.extend(partners.iter().cloned());
            waves.push(Wave {
                name: w.name.value.clone(),
                partners,
                bake: w
                    .bake
                    .as_ref()
                    .and_then(|b| parse_bake(b).ok())
                    .unwrap_or_default(),
            });
        }
        Some(Waves { waves })
    }

    /// The index of the wave a partner is in.
    pub fn wave_of(&self, partner: &str) -> Option<usize> {
        self.waves
            .iter()
            .position(|w| w.partners.iter().any(|p| p == partner))
    }
}

/// A version and its digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pin {
    pub version: String,
    pub digest: String,
}

impl Pin {
    fn show(&self) -> String {
        format!("{} ({})", self.version, crate::image::short(&self.digest))
    }
}

/// A unit's state in a status record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    InSync,
    /// Waiting for a gate of its own (window, busy, …, or a wave): pending, not failed.
    Deferred(String),
    Halted,
    Held,
    RolledBack,
    Failed,
    Refused,
}

/// One script's (or component's) entry in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitReport {
    pub script: String,
    pub component: Option<String>,
    pub desired: Option<Pin>,
    pub running: Option<Pin>,
    pub status: Status,
    pub since: Timestamp,
}

/// What the status repo holds for one partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Missing,
    Unreadable(String),
    Seen {
        at: Timestamp,
        interval: Duration,
        units: Vec<UnitReport>,
    },
}

/// One script, or one component of a multi-component script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit<'a> {
    pub script: &'a str,
    pub component: Option<&'a str>,
}

impl Report {
    fn unit(&self, unit: Unit<'_>) -> Option<&UnitReport> {
        match self {
            Report::Seen { units, .. } => units
                .iter()
                .find(|u| u.script == unit.script && u.component.as_deref() == unit.component),
            _ => None,
        }
    }
}

/// Everything the decision reads about the fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub waves: Waves,
    /// Per partner, the scripts its manifests opt into.
    pub runs: BTreeMap<String, BTreeSet<String>>,
    /// Per partner, its record; `Err` when the status repo could not be read.
    pub reports: Result<BTreeMap<String, Report>, String>,
}

impl Fleet {
    /// The waves, which partner runs what, from the manifests; the records are added by
    /// whoever read the status repo.
    pub fn new(
        waves: Waves,
        repo: &Repo,
        reports: Result<BTreeMap<String, Report>, String>,
    ) -> Fleet {
        let runs = repo
            .partners
            .iter()
            .map(|(name, p)| {
                let scripts = p
                    .doc
                    .scripts
                    .iter()
                    .map(|o| o.script.value.clone())
                    .collect();
                (name.clone(), scripts)
            })
            .collect();
        Fleet {
            waves,
            runs,
            reports,
        }
    }

    /// Every version a partner reports running in sync for `unit`: the candidates besides
    /// the newest that a later wave may fall back to.
    pub fn running_versions(&self, unit: Unit<'_>) -> BTreeSet<String> {
        let Ok(reports) = &self.reports else {
            return BTreeSet::new();
        };
        reports
            .values()
            .filter_map(|r| r.unit(unit))
            .filter_map(|u| u.running.as_ref().filter(|p| serves(u, &p.digest)))
            .map(|p| p.version.clone())
            .collect()
    }

    fn runs(&self, partner: &str, script: &str) -> bool {
        self.runs.get(partner).is_some_and(|s| s.contains(script))
    }

    /// The members of wave `i` that run `script`.
    fn members<'s>(&'s self, i: usize, script: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.waves.waves[i]
            .partners
            .iter()
            .filter(move |p| self.runs(p, script))
            .map(String::as_str)
    }

    /// The nearest wave before `wave` with a member running `script`.
    fn previous(&self, wave: usize, script: &str) -> Option<usize> {
        (0..wave)
            .rev()
            .find(|i| self.members(*i, script).next().is_some())
    }
}

/// What a partner of some wave may do with one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not gated: take the newest candidate.
    Allowed,
    /// Take this older candidate, baked in the earlier wave; `waiting` says why the newer
    /// one waits.
    Baked { pin: Pin, waiting: String },
    /// Keep what runs: the newest is not baked yet (`deferred(wave)`); `until` is when its
    /// bake ends, when nothing but the bake holds it back.
    Wait {
        wave: String,
        detail: String,
        until: Option<Timestamp>,
    },
    /// Keep what runs: the newest was rolled back or held in an earlier wave
    /// (`halted(wave)`).
    Halted { wave: String, detail: String },
}

/// How one member of the earlier wave stands with one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Baked,
    Baking(Timestamp),
    Pending(String),
    Stale(Timestamp),
    Missing,
    Unreadable(String),
    Elsewhere(String),
}

fn member(
    report: Option<&Report>,
    unit: Unit<'_>,
    digest: &str,
    bake: Duration,
    now: Timestamp,
) -> Member {
    let (at, interval) = match report {
        None | Some(Report::Missing) => return Member::Missing,
        Some(Report::Unreadable(why)) => return Member::Unreadable(why.clone()),
        Some(Report::Seen { at, interval, .. }) => (*at, *interval),
    };
    if now > stale_at(at, interval) {
        return Member::Stale(at);
    }
    let Some(u) = report.and_then(|r| r.unit(unit)) else {
        return Member::Pending("has not reported it yet".into());
    };
    match &u.status {
        _ if serves(u, digest) => {
            let until = add(u.since, bake);
            if until <= now {
                Member::Baked
            } else {
                Member::Baking(until)
            }
        }
        Status::InSync => Member::Elsewhere(match &u.running {
            Some(r) => format!("in sync on {}", r.show()),
            None => "runs nothing".into(),
        }),
        Status::Deferred(reason) => Member::Pending(format!("deferred({reason})")),
        Status::Halted => Member::Pending("halted(wave)".into()),
        Status::Held => Member::Elsewhere("held".into()),
        Status::RolledBack => Member::Elsewhere("rolled-back".into()),
        Status::Failed => Member::Elsewhere("failed".into()),
        Status::Refused => Member::Elsewhere("refused".into()),
    }
}

/// Whether the unit serves `digest`: in sync on it, or running it while a newer digest
/// waits for a gate (a window, a wave). Its `since` then counts from when that state began,
/// never earlier than the digest started serving.
fn serves(u: &UnitReport, digest: &str) -> bool {
    u.running.as_ref().is_some_and(|r| r.digest == digest)
        && matches!(
            u.status,
            Status::InSync | Status::Deferred(_) | Status::Halted
        )
}

fn stale_at(at: Timestamp, interval: Duration) -> Timestamp {
    at.checked_add(REPORT_EVERY)
        .ok()
        .map_or(Timestamp::MAX, |t| add(t, interval))
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Every member's standing with `digest`, by name.
fn standing(
    fleet: &Fleet,
    reports: &BTreeMap<String, Report>,
    wave: usize,
    unit: Unit<'_>,
    digest: &str,
    bake: Duration,
    now: Timestamp,
) -> Vec<(String, Member)> {
    fleet
        .members(wave, unit.script)
        .map(|m| {
            (
                m.to_owned(),
                member(reports.get(m), unit, digest, bake, now),
            )
        })
        .collect()
}

/// Who holds a wave back, grouped, in words for `detail`.
fn blockers(members: &[(String, Member)]) -> String {
    let mut groups: BTreeMap<u8, (&str, Vec<String>)> = BTreeMap::new();
    for (name, m) in members {
        let (order, label, text) = match m {
            Member::Baked => continue,
            Member::Baking(until) => (0, "baking", format!("{name} until {until}")),
            Member::Pending(why) => (1, "pending", format!("{name} ({why})")),
            Member::Stale(at) => (2, "stale", format!("{name} (last report {at})")),
            Member::Missing => (3, "missing", format!("{name} (no status record)")),
            Member::Unreadable(why) => (3, "missing", format!("{name} (record unreadable: {why})")),
            Member::Elsewhere(what) => (4, "not on it", format!("{name} ({what})")),
        };
        groups.entry(order).or_insert((label, vec![])).1.push(text);
    }
    let mut out = String::new();
    for (label, names) in groups.values() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "{label}: {}", names.join(", "));
    }
    out
}

/// The candidates highest first: by semver precedence, then as given.
fn ordered(candidates: &[Pin]) -> Vec<&Pin> {
    let mut out: Vec<&Pin> = candidates.iter().collect();
    out.sort_by(
        |a, b| match (tag_version(&a.version), tag_version(&b.version)) {
            (Some(va), Some(vb)) => vb.cmp_precedence(&va),
            _ => std::cmp::Ordering::Equal,
        },
    );
    out
}

fn newer(a: &Pin, b: &Pin) -> bool {
    match (tag_version(&a.version), tag_version(&b.version)) {
        (Some(va), Some(vb)) => va.cmp_precedence(&vb).is_gt(),
        _ => false,
    }
}

/// What `partner` may do with `unit`, given the versions resolution found for it (the
/// newest and any older ones the earlier wave runs), what it runs now, and the time.
pub fn decide(
    fleet: &Fleet,
    partner: &str,
    unit: Unit<'_>,
    candidates: &[Pin],
    running: Option<&Pin>,
    now: Timestamp,
) -> Decision {
    let ordered = ordered(candidates);
    let Some(newest) = ordered.first().copied() else {
        return Decision::Allowed;
    };
    if running.is_some_and(|r| r.digest == newest.digest) {
        return Decision::Allowed;
    }
    let Some(wave) = fleet.waves.wave_of(partner) else {
        return Decision::Allowed;
    };
    let Some(prev) = fleet.previous(wave, unit.script) else {
        return Decision::Allowed;
    };
    let this = &fleet.waves.waves[wave];
    let earlier = &fleet.waves.waves[prev];
    let reports = match &fleet.reports {
        Ok(r) => r,
        Err(why) => {
            return Decision::Wait {
                wave: this.name.clone(),
                until: None,
                detail: format!(
                    "wave {} cannot see wave {}: the status repo cannot be read ({why}); keeps what runs",
                    this.name, earlier.name
                ),
            };
        }
    };
    let halted = halts(fleet, reports, wave, unit);
    let mut baked = None;
    for c in &ordered {
        if halted.contains_key(c.digest.as_str()) {
            continue;
        }
        let members = standing(fleet, reports, prev, unit, &c.digest, this.bake, now);
        if members.iter().all(|(_, m)| *m == Member::Baked) {
            baked = Some(*c);
            break;
        }
    }
    if baked.is_some_and(|b| b.digest == newest.digest) {
        return Decision::Allowed;
    }
    let (why_not, until) = match halted.get(newest.digest.as_str()) {
        Some(by) => (
            format!(
                "{} is halted: {by}; later waves never take it",
                newest.show()
            ),
            None,
        ),
        None => {
            let members = standing(fleet, reports, prev, unit, &newest.digest, this.bake, now);
            let until = members.iter().try_fold(now, |latest, (_, m)| match m {
                Member::Baked => Some(latest),
                Member::Baking(t) => Some(latest.max(*t)),
                _ => None,
            });
            let text = format!(
                "{} waits for wave {} (bake {}): {}",
                newest.show(),
                earlier.name,
                humantime(this.bake),
                blockers(&members)
            );
            (text, until)
        }
    };
    match baked {
        Some(b) if running.is_none_or(|r| b.digest != r.digest && newer(b, r)) => Decision::Baked {
            pin: b.clone(),
            waiting: why_not,
        },
        _ => {
            let keeps = match (running, baked) {
                (None, _) => {
                    "nothing has baked yet, so this partner gets nothing until it does".to_owned()
                }
                (Some(r), Some(b)) if b.digest != r.digest => {
                    format!("keeps {}, newer than {} that has baked", r.show(), b.show())
                }
                (Some(r), _) => format!("keeps {}", r.show()),
            };
            let detail = format!("{why_not}; {keeps}");
            if halted.contains_key(newest.digest.as_str()) {
                Decision::Halted {
                    wave: this.name.clone(),
                    detail,
                }
            } else {
                Decision::Wait {
                    wave: this.name.clone(),
                    detail,
                    until,
                }
            }
        }
    }
}

/// The digests halted for wave `wave`: held or rolled back by a member of any earlier wave,
/// with who and where in words.
fn halts<'r>(
    fleet: &Fleet,
    reports: &'r BTreeMap<String, Report>,
    wave: usize,
    unit: Unit<'_>,
) -> BTreeMap<&'r str, String> {
    let mut out = BTreeMap::new();
    for i in 0..wave {
        for m in fleet.members(i, unit.script) {
            let Some(u) = reports.get(m).and_then(|r| r.unit(unit)) else {
                continue;
            };
            let what = match u.status {
                Status::Held => "held",
                Status::RolledBack => "rolled back",
                _ => continue,
            };
            if let Some(d) = &u.desired {
                out.entry(d.digest.as_str()).or_insert_with(|| {
                    format!(
                        "{what} on {m} (wave {}) since {}",
                        fleet.waves.waves[i].name, u.since
                    )
                });
            }
        }
    }
    out
}

/// `48h`, `90m`, `30s`: a bake as people write it.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "none".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Where one digest of a unit stands in one wave, for the views.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reach {
    pub wave: String,
    /// Every member running the script reports it in sync.
    pub reached: bool,
    /// When it was reached (the last member's `since`), or the earliest it can be, given
    /// the bakes and each member's next window; `None`: never (halted, or a member has no
    /// window ahead, or the status repo cannot be read).
    pub at: Option<Timestamp>,
    /// Who rolled it back or holds it, when it is halted in an earlier wave or this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
}

/// The earliest instant at or after `t` when the partner's window lets a change run.
fn open_at(schedule: &Schedule, t: Timestamp) -> Option<Timestamp> {
    match schedule.state(t) {
        WindowState::Open { .. } => Some(t),
        WindowState::Closed { opens } => opens,
        WindowState::Blackout { .. } => schedule.next_open(t),
    }
}

/// Per wave running the unit's script, in order: whether `digest` has reached it, and else
/// the earliest time it can, chained wave by wave (a wave's gate opens when the previous
/// wave is all in sync plus this wave's bake; each member takes it at its next window
/// opening at or after that; the wave is there when its last member is). Members running
/// it already count from their `since`.
pub fn estimate(
    fleet: &Fleet,
    unit: Unit<'_>,
    digest: &str,
    schedules: &BTreeMap<String, Schedule>,
    now: Timestamp,
) -> Vec<Reach> {
    let empty = BTreeMap::new();
    let reports = fleet.reports.as_ref().unwrap_or(&empty);
    let mut out = Vec::new();
    // When the previous wave was (or will be) all in sync: `Some(None)` never.
    let mut gate: Option<Option<Timestamp>> = None;
    let mut halted: Option<String> = None;
    for (i, wave) in fleet.waves.waves.iter().enumerate() {
        let members: Vec<&str> = fleet.members(i, unit.script).collect();
        if members.is_empty() {
            continue;
        }
        let opens = match gate {
            None => Some(now),
            Some(at) => at.map(|t| add(t, wave.bake).max(now)),
        };
        let mut reached = true;
        let mut at = Some(Timestamp::MIN);
        for m in &members {
            let u = reports.get(*m).and_then(|r| r.unit(unit));
            let on_it = u.is_some_and(|u| serves(u, digest));
            if let Some(u) = u
                && matches!(u.status, Status::Held | Status::RolledBack)
                && u.desired.as_ref().is_some_and(|d| d.digest == digest)
                && halted.is_none()
            {
                halted = Some(format!("{m} (wave {})", wave.name));
            }
            let when = if on_it {
                u.map(|u| u.since)
            } else {
                reached = false;
                match (&halted, opens, schedules.get(*m)) {
                    (None, Some(t), Some(s)) => open_at(s, t),
                    _ => None,
                }
            };
            at = match (at, when) {
                (Some(a), Some(w)) => Some(a.max(w)),
                _ => None,
            };
        }
        if halted.is_some() && !reached {
            at = None;
        }
        out.push(Reach {
            wave: wave.name.clone(),
            reached,
            at,
            halted: halted.clone(),
        });
        gate = Some(at);
    }
    out
}

#[cfg(test)]
mod tests;
