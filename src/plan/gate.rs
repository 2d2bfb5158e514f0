//! The gates: whether a step may run at an instant. Pure, and asked twice: by the planner
//! when it plans, and by the executor again right before each step that stops or starts a
//! container, with a fresh clock and a fresh idle answer, because a long pre-pull or an
//! earlier step's health wait may have carried the pass past the window's close.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::{Change, Idleness, Readiness};
use crate::window::{Schedule, WindowState};

/// Policy switches an operator may give on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub ignore_window: bool,
    pub ignore_idle: bool,
}

/// What the gates read besides the step and the time: the partner's windows, whether it
/// declares an idle probe, and the operator's overrides.
#[derive(Debug, Clone)]
pub struct Policy {
    pub schedule: Schedule,
    pub has_idle_gate: bool,
    pub overrides: Overrides,
    /// What no container may do on this host: the floor and the partner's host policy.
    pub rules: crate::policy::Rules,
    /// Per script, the services elsewhere its new versions wait for (`requires:`).
    pub requires: BTreeMap<String, Vec<crate::manifest::Requirement>>,
}

impl Policy {
    /// Whether the step must wait for the service to say it is idle: it stops a running
    /// container, and the partner has an idle probe that was not overridden. Creating or
    /// starting something not running is never gated: the probe is often the service itself.
    pub fn idle_gated(&self, change: &Change) -> bool {
        change.stops_running() && self.has_idle_gate && !self.overrides.ignore_idle
    }

    /// The script whose required services the change waits for: it brings a version or
    /// digest the host does not run yet (a first install too: the new version needs its
    /// service as much as an upgrade does), of a script with `requires:`. A restart, a
    /// spec-only change, a keep or a removal never waits.
    pub fn requires_gated<'c>(&self, change: &'c Change) -> Option<&'c str> {
        let new = match change {
            Change::Create { to } => Some(to),
            Change::Replace { from, to }
                if from.version != to.version || from.digest != to.digest =>
            {
                Some(to)
            }
            _ => None,
        }?;
        self.requires
            .get(&new.script)
            .is_some_and(|r| !r.is_empty())
            .then_some(new.script.as_str())
    }
}

/// Why a step waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Deferral {
    Window {
        #[serde(skip_serializing_if = "Option::is_none")]
        opens: Option<String>,
    },
    /// The window is open but closes before the step could finish.
    WindowEnding {
        closes: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        opens: Option<String>,
    },
    Blackout {
        until: String,
    },
    Busy {
        detail: String,
    },
    FailedHealth,
    Unresolved {
        detail: String,
    },
    /// A replace of the script is in flight: the run doing it, or the next one, finishes or
    /// rolls it back first.
    InFlight,
    /// The step breaks the host's floor or policy: it never runs, whatever the window.
    Refused {
        refusals: Vec<crate::policy::Refusal>,
    },
    /// Pulling the step's image would leave the engine's data root under `min_free`
    /// bytes: the pull never starts. Figures in bytes; `needed` is [`pull_estimate`].
    Disk {
        needed: u64,
        free: u64,
        min_free: u64,
        data_root: String,
    },
    /// The free space of the engine's data root could not be measured, so the pull waits
    /// rather than risk filling the disk; `min_free: 0` turns the guard off.
    DiskUnmeasured {
        detail: String,
    },
    /// A service the script's new version needs (`requires:`) does not answer a version in
    /// range yet: the host keeps what it runs.
    Requires {
        url: String,
        detail: String,
    },
    /// A later rollout wave: the new digest has not baked in the earlier wave yet, so the
    /// host keeps what it runs (`crate::rollout`).
    Wave {
        wave: String,
        detail: String,
        /// When the bake ends, if nothing else holds the wave back: the agent wakes then.
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// A later rollout wave: the new digest was rolled back or held in an earlier wave.
    Halted {
        wave: String,
        detail: String,
    },
}

impl Deferral {
    pub fn name(&self) -> &'static str {
        match self {
            Deferral::Window { .. } | Deferral::WindowEnding { .. } => "window",
            Deferral::Blackout { .. } => "blackout",
            Deferral::Busy { .. } => "busy",
            Deferral::FailedHealth => "failed-health",
            Deferral::Unresolved { .. } => "unresolved",
            Deferral::InFlight => "in-flight",
            Deferral::Refused { .. } => "policy",
            Deferral::Disk { .. } | Deferral::DiskUnmeasured { .. } => "disk",
            Deferral::Requires { .. } => "requires",
            Deferral::Wave { .. } => "wave",
            Deferral::Halted { .. } => "halted",
        }
    }

    /// How the plan, the pass and the status record spell the deferral: `deferred(<name>)`,
    /// but `halted(wave)` for a halt, which no window or bake ends.
    pub fn label(&self) -> String {
        label(self.name())
    }

    pub fn describe(&self) -> String {
        match self {
            Deferral::Window { opens: Some(at) } => format!("window closed; next opens {at}"),
            Deferral::Window { opens: None } => "no update window ever opens".into(),
            Deferral::WindowEnding { closes, opens } => format!(
                "the window closes at {closes}, before this step could finish; next opens {}",
                opens.as_deref().unwrap_or("never")
            ),
            Deferral::Blackout { until } => format!("blackout until {until}"),
            Deferral::Busy { detail } => format!("service not idle: {detail}"),
            Deferral::FailedHealth => {
                "this digest failed its health check; held until the manifest or digest changes"
                    .into()
            }
            Deferral::Unresolved { detail } => format!("version could not be resolved: {detail}"),
            Deferral::Refused { refusals } => refusals
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            Deferral::InFlight => {
                "a replace is under way or was interrupted; the next apply finishes or rolls it back first"
                    .into()
            }
            Deferral::Disk {
                needed,
                free,
                min_free,
                data_root,
            } => format!(
                "pulling {} would leave {} free on {data_root}, under min_free {}",
                bytes(*needed),
                bytes(free.saturating_sub(*needed)),
                bytes(*min_free)
            ),
            Deferral::DiskUnmeasured { detail } => format!(
                "cannot tell whether the pull fits ({detail}); give berth access to the engine's \
                 data root, or set min_free to 0 to pull without the disk guard"
            ),
            Deferral::Requires { detail, .. } => format!("required service not ready: {detail}"),
            Deferral::Wave { detail, .. } | Deferral::Halted { detail, .. } => detail.clone(),
        }
    }

    /// Whether the wait ends when the partner's next window opens.
    pub fn waits_for_window(&self) -> bool {
        matches!(
            self,
            Deferral::Window { .. } | Deferral::WindowEnding { .. } | Deferral::Blackout { .. }
        )
    }
}

/// [`Deferral::label`] from a deferral's name, as a step's outcome carries it.
pub fn label(name: &str) -> String {
    match name {
        "halted" => "halted(wave)".to_owned(),
        _ => format!("deferred({name})"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Gate {
    Allowed,
    Deferred(Deferral),
}

/// Safety margin on top of the stop and health timeouts when fitting a step in a window.
pub const WINDOW_MARGIN: Duration = Duration::from_secs(30);

/// The longest a change can take: the old container's stop, the new one's health check
/// (or a job's run), with nothing for a removal.
fn cut_over_time(change: &Change) -> Duration {
    let (stop, to) = match change {
        Change::Replace { to, .. } => (Duration::from_secs(to.spec.stop_timeout_secs), to),
        Change::Create { to } | Change::Start { to, .. } => (Duration::ZERO, to),
        Change::Remove { .. } | Change::Keep { .. } => return Duration::ZERO,
    };
    match to.component.as_ref().and_then(|c| c.job) {
        Some(job) => job,
        None => stop + to.health.timeout,
    }
}

/// Whether changes that run together (one step, or a multi-component script's whole
/// update) may run at `now`: the window (and blackouts), then whether they all fit before
/// the window closes, with a margin, then the idle answer if any stops a running
/// container. `Idleness::Unknown` lets them through: the executor asks the service before
/// it stops anything.
pub fn decide(policy: &Policy, changes: &[&Change], now: Timestamp, idle: &Idleness) -> Gate {
    let changes: Vec<&&Change> = changes
        .iter()
        .filter(|c| !matches!(c, Change::Keep { .. }))
        .collect();
    if changes.is_empty() {
        return Gate::Allowed;
    }
    if !policy.overrides.ignore_window {
        match policy.schedule.state(now) {
            WindowState::Closed { opens } => {
                return Gate::Deferred(Deferral::Window {
                    opens: opens.map(|t| t.to_string()),
                });
            }
            WindowState::Blackout { until } => {
                return Gate::Deferred(Deferral::Blackout {
                    until: until.to_string(),
                });
            }
            // A removal alone has nothing to fit: it only ends what is no longer declared.
            WindowState::Open { closes }
                if changes.iter().any(|c| !matches!(c, Change::Remove { .. })) =>
            {
                let total: Duration =
                    changes.iter().map(|c| cut_over_time(c)).sum::<Duration>() + WINDOW_MARGIN;
                let needed =
                    jiff::SignedDuration::try_from(total).unwrap_or(jiff::SignedDuration::MAX);
                if now + needed > closes {
                    return Gate::Deferred(Deferral::WindowEnding {
                        closes: closes.to_string(),
                        opens: policy.schedule.next_open(closes).map(|t| t.to_string()),
                    });
                }
            }
            WindowState::Open { .. } => {}
        }
    }
    match idle {
        Idleness::NotIdle(why) if changes.iter().any(|c| policy.idle_gated(c)) => {
            Gate::Deferred(Deferral::Busy {
                detail: why.clone(),
            })
        }
        _ => Gate::Allowed,
    }
}

/// [`decide`], with the required services' answers asked between the window and the idle
/// answer: a script whose new version waits for a service is `deferred(requires)` before
/// its own service is asked whether it is idle. A script not asked yet (absent from
/// `ready`) passes: the caller asks before the step runs.
pub fn decide_all(
    policy: &Policy,
    changes: &[&Change],
    now: Timestamp,
    idle: &Idleness,
    ready: &BTreeMap<String, Readiness>,
) -> Gate {
    if let Gate::Deferred(d) = decide(policy, changes, now, &Idleness::Unknown) {
        return Gate::Deferred(d);
    }
    let unmet = changes
        .iter()
        .filter_map(|c| policy.requires_gated(c))
        .find_map(|script| match ready.get(script) {
            Some(Readiness::Unmet { url, detail }) => Some(Deferral::Requires {
                url: url.clone(),
                detail: detail.clone(),
            }),
            _ => None,
        });
    match unmet {
        Some(d) => Gate::Deferred(d),
        None => decide(policy, changes, now, idle),
    }
}

/// `min_free` when agent.yaml or `--min-free` does not say: room for the host's own
/// services' logs and data to grow while images come and go.
pub const DEFAULT_MIN_FREE: u64 = 2 << 30;

/// What a pull is estimated to take on the engine's data root, from the compressed size
/// of its layers as the registry lists them: the download, kept while its layer is
/// unpacked beside it, plus the unpacked layer, which container layers (binaries,
/// libraries, text) make about twice the compressed size. Three times the compressed size
/// in all: the registry does not say the unpacked size, and `min_free` is the margin for
/// an image that unpacks to more.
pub fn pull_estimate(compressed: u64) -> u64 {
    compressed.saturating_mul(3)
}

/// The disk guard: whether a pull of `needed` bytes may start with `free` bytes free on
/// the engine's data root. It may when at least `min_free` bytes stay free; `min_free`
/// 0 is no guard at all.
pub fn disk(needed: u64, free: u64, min_free: u64, data_root: &str) -> Gate {
    if min_free == 0
        || free
            .checked_sub(needed)
            .is_some_and(|left| left >= min_free)
    {
        Gate::Allowed
    } else {
        Gate::Deferred(Deferral::Disk {
            needed,
            free,
            min_free,
            data_root: data_root.to_owned(),
        })
    }
}

/// A size as people read it: binary units, one decimal from GiB up (`812 MiB`,
/// `1.4 GiB`, `2 GiB`).
pub fn bytes(n: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match n {
        n if n >= GIB => {
            let gib = format!("{:.1}", n as f64 / GIB as f64);
            format!("{} GiB", gib.strip_suffix(".0").unwrap_or(&gib))
        }
        n if n >= MIB => format!("{} MiB", n / MIB),
        n if n >= KIB => format!("{} KiB", n / KIB),
        n => format!("{n} B"),
    }
}

/// The gates the planner's, the executor's and the pass's tests share: Saturdays
/// 01:00-05:00 UTC, with an idle probe.
#[cfg(test)]
pub fn saturday_mornings() -> Policy {
    Policy {
        schedule: Schedule {
            tz: jiff::tz::TimeZone::UTC,
            windows: vec![crate::window::Weekly {
                days: vec![jiff::civil::Weekday::Saturday],
                start: 60,
                end: 300,
            }],
            blackouts: vec![],
        },
        has_idle_gate: true,
        overrides: Overrides::default(),
        rules: crate::policy::Rules::default(),
        requires: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn a_pull_that_leaves_min_free_may_start() {
        assert_eq!(disk(812 * MIB, 3 * GIB, 2 * GIB, "/d"), Gate::Allowed);
        // Exactly min_free left is enough.
        assert_eq!(disk(GIB, 3 * GIB, 2 * GIB, "/d"), Gate::Allowed);
    }

    #[test]
    fn a_pull_that_would_cross_min_free_is_deferred_with_the_figures() {
        let gate = disk(812 * MIB, 2 * GIB + 200 * MIB, 2 * GIB, "/var/lib/docker");
        let Gate::Deferred(d) = gate else {
            panic!("{gate:?}")
        };
        assert_eq!(d.name(), "disk");
        assert_eq!(
            d.describe(),
            "pulling 812 MiB would leave 1.4 GiB free on /var/lib/docker, under min_free 2 GiB"
        );
    }

    #[test]
    fn a_pull_larger_than_the_free_space_is_deferred_and_leaves_nothing() {
        let gate = disk(5 * GIB, GIB, MIB, "/d");
        let Gate::Deferred(d) = gate else {
            panic!("{gate:?}")
        };
        assert_eq!(
            d.describe(),
            "pulling 5 GiB would leave 0 B free on /d, under min_free 1 MiB"
        );
    }

    #[test]
    fn min_free_zero_is_no_guard() {
        assert_eq!(disk(5 * GIB, GIB, 0, "/d"), Gate::Allowed);
    }

    #[test]
    fn the_estimate_counts_download_and_unpacked_layers() {
        assert_eq!(pull_estimate(100 * MIB), 300 * MIB);
        assert_eq!(pull_estimate(u64::MAX), u64::MAX);
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1 KiB");
        assert_eq!(bytes(812 * MIB), "812 MiB");
        assert_eq!(bytes(1536 * MIB), "1.5 GiB");
        assert_eq!(bytes(2 * GIB), "2 GiB");
    }
}
