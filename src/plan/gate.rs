//! The gates: whether a step may run at an instant. Pure, and asked twice: by the planner
//! when it plans, and by the executor again right before each step that stops or starts a
//! container, with a fresh clock and a fresh idle answer, because a long pre-pull or an
//! earlier step's health wait may have carried the pass past the window's close.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::{Change, Idleness};
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
}

impl Policy {
    /// Whether the step must wait for the service to say it is idle: it stops a running
    /// container, and the partner has an idle probe that was not overridden. Creating or
    /// starting something not running is never gated: the probe is often the service itself.
    pub fn idle_gated(&self, change: &Change) -> bool {
        change.stops_running() && self.has_idle_gate && !self.overrides.ignore_idle
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
        }
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
    }
}
