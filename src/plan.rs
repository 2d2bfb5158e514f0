//! The planner: a pure function from what a partner's host should run, what it runs, and
//! the time, to the steps that converge it, each with a reason and a gate. Everything berth
//! decides is decided here, so it is all tested here without an engine.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::window::{Schedule, WindowState};

/// How the container runs; every field counts towards `berth.spec-hash`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Host paths of the env files; their contents are in `env` on the host.
    pub env_files: Vec<String>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub network: Option<String>,
    pub init: bool,
    pub stop_timeout_secs: u64,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub read_only: bool,
    pub user: Option<String>,
}

impl ContainerSpec {
    /// `sha256` of the spec's canonical JSON, as the `berth.spec-hash` label carries it.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("spec serializes");
        let digest = sha2::Sha256::digest(&json);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// When a new container counts as working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub http: Option<String>,
    pub timeout: Duration,
}

/// One script as it should run on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredContainer {
    pub script: String,
    /// The version as the registry's tag spells it.
    pub version: String,
    /// What the container runs and `berth.digest` records.
    pub digest: String,
    /// The reference the engine creates the container from (pinned, never a mutable tag).
    pub image: String,
    /// The registry repository to pull `image` from; `None` for the engine's own images.
    pub pull_from: Option<crate::resolve::ImageRepo>,
    pub spec: ContainerSpec,
    pub spec_hash: String,
    pub health: HealthCheck,
}

/// Policy switches an operator may give on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub ignore_window: bool,
    pub ignore_idle: bool,
}

/// Everything a partner's manifests say its host should run, resolved to digests.
#[derive(Debug, Clone)]
pub struct Desired {
    pub partner: String,
    pub revision: String,
    pub schedule: Schedule,
    pub containers: Vec<DesiredContainer>,
    /// Scripts whose version could not be resolved: their containers are left as they are.
    pub unresolved: BTreeMap<String, String>,
    /// Whether the partner declares an idle gate.
    pub has_idle_gate: bool,
    pub overrides: Overrides,
}

/// A managed container as the engine reports it, read from its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    pub script: String,
    pub version: String,
    pub digest: String,
    pub spec_hash: String,
    pub revision: String,
    pub running: bool,
}

/// A digest that failed its health check, remembered so it is not retried.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, Serialize)]
pub struct Held {
    pub partner: String,
    pub script: String,
    pub digest: String,
    pub spec_hash: String,
}

/// What the partner's service said when asked whether it is idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idleness {
    /// Not asked (no step needed it yet).
    Unknown,
    Idle,
    /// Busy, unreachable, slow or malformed, with the reason.
    NotIdle(String),
}

/// The host as observed at the start of a pass.
#[derive(Debug, Clone)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    pub held: Vec<Held>,
    pub idle: Idleness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Replace,
    Start,
    Remove,
    Keep,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Start => "start",
            Action::Remove => "remove",
            Action::Keep => "keep",
        }
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
}

impl Deferral {
    pub fn name(&self) -> &'static str {
        match self {
            Deferral::Window { .. } | Deferral::WindowEnding { .. } => "window",
            Deferral::Blackout { .. } => "blackout",
            Deferral::Busy { .. } => "busy",
            Deferral::FailedHealth => "failed-health",
            Deferral::Unresolved { .. } => "unresolved",
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Gate {
    Allowed,
    Deferred(Deferral),
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub script: String,
    pub action: Action,
    pub reason: String,
    pub gate: Gate,
    /// Stopping a running container: the idle gate must hold right before the cut-over.
    pub needs_idle: bool,
    /// The new image comes from a registry and is fetched before the gates are checked,
    /// so a window holds only the cut-over.
    pub pre_pull: bool,
    #[serde(skip)]
    pub desired: Option<DesiredContainer>,
    #[serde(skip)]
    pub observed: Option<ObservedContainer>,
}

impl Step {
    pub fn is_change(&self) -> bool {
        self.action != Action::Keep
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub partner: String,
    pub revision: String,
    #[serde(serialize_with = "ser_display")]
    pub now: Timestamp,
    pub steps: Vec<Step>,
}

fn ser_display<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

impl Plan {
    /// Steps that would change the host, allowed or not.
    pub fn changes(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.is_change())
    }

    /// Whether a step that needs the idle gate could run if the service were idle.
    pub fn wants_idle_probe(&self) -> bool {
        self.steps.iter().any(|s| {
            s.needs_idle
                && matches!(
                    &s.gate,
                    Gate::Allowed | Gate::Deferred(Deferral::Busy { .. })
                )
        })
    }
}

/// Safety margin on top of the stop and health timeouts when fitting a step in a window.
pub const WINDOW_MARGIN: Duration = Duration::from_secs(30);

/// The longest a step can take: the old container's stop, the new one's health check and
/// a margin. A step is only started if this fits before the window closes.
fn cut_over_time(action: Action, d: &DesiredContainer) -> jiff::SignedDuration {
    let stop = match action {
        Action::Replace => Duration::from_secs(d.spec.stop_timeout_secs),
        _ => Duration::ZERO,
    };
    let total = stop + d.health.timeout + WINDOW_MARGIN;
    jiff::SignedDuration::try_from(total).unwrap_or(jiff::SignedDuration::MAX)
}

/// The managed container name of a partner's script.
pub fn container_name(partner: &str, script: &str) -> String {
    format!("berth-{partner}-{script}")
}

/// Plans one pass for one partner. Pure: the same inputs always give the same plan.
pub fn plan(desired: &Desired, observed: &Observed, now: Timestamp) -> Plan {
    let window = if desired.overrides.ignore_window {
        WindowState::Open { closes: now }
    } else {
        desired.schedule.state(now)
    };
    let window_gate = match &window {
        WindowState::Open { .. } => None,
        WindowState::Closed { opens } => Some(Deferral::Window {
            opens: opens.map(|t| t.to_string()),
        }),
        WindowState::Blackout { until } => Some(Deferral::Blackout {
            until: until.to_string(),
        }),
    };
    let held: BTreeSet<(&str, &str, &str)> = observed
        .held
        .iter()
        .filter(|h| h.partner == desired.partner)
        .map(|h| (h.script.as_str(), h.digest.as_str(), h.spec_hash.as_str()))
        .collect();

    let mut by_script: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for c in &observed.containers {
        by_script.entry(c.script.as_str()).or_default().push(c);
    }

    let mut steps = Vec::new();
    let step = |script: &str,
                action: Action,
                reason: String,
                desired_c: Option<&DesiredContainer>,
                observed_c: Option<&ObservedContainer>|
     -> Step {
        let needs_idle = matches!(action, Action::Replace | Action::Remove)
            && observed_c.is_some_and(|o| o.running);
        let is_held = desired_c.is_some_and(|d| {
            matches!(action, Action::Create | Action::Replace)
                && held.contains(&(script, d.digest.as_str(), d.spec_hash.as_str()))
        });
        let gate = if action == Action::Keep {
            Gate::Allowed
        } else if is_held {
            Gate::Deferred(Deferral::FailedHealth)
        } else if let Some(g) = &window_gate {
            Gate::Deferred(g.clone())
        } else if let (WindowState::Open { closes }, Some(d)) = (&window, desired_c)
            && !desired.overrides.ignore_window
            && now + cut_over_time(action, d) > *closes
        {
            Gate::Deferred(Deferral::WindowEnding {
                closes: closes.to_string(),
                opens: desired.schedule.next_open(*closes).map(|t| t.to_string()),
            })
        } else if needs_idle && desired.has_idle_gate && !desired.overrides.ignore_idle {
            match &observed.idle {
                Idleness::Idle | Idleness::Unknown => Gate::Allowed,
                Idleness::NotIdle(why) => Gate::Deferred(Deferral::Busy {
                    detail: why.clone(),
                }),
            }
        } else {
            Gate::Allowed
        };
        let pre_pull = matches!(action, Action::Create | Action::Replace)
            && desired_c.is_some_and(|d| d.pull_from.is_some())
            && !matches!(
                gate,
                Gate::Deferred(Deferral::FailedHealth | Deferral::Unresolved { .. })
            );
        Step {
            script: script.to_owned(),
            action,
            reason,
            pre_pull,
            gate,
            needs_idle: needs_idle && desired.has_idle_gate && !desired.overrides.ignore_idle,
            desired: desired_c.cloned(),
            observed: observed_c.cloned(),
        }
    };

    let declared: BTreeSet<&str> = desired
        .containers
        .iter()
        .map(|d| d.script.as_str())
        .chain(desired.unresolved.keys().map(String::as_str))
        .collect();

    for d in &desired.containers {
        let name = container_name(&desired.partner, &d.script);
        let found = by_script.get(d.script.as_str());
        // Leftovers go first: one may hold the service's port.
        for leftover in found.into_iter().flatten().filter(|c| c.name != name) {
            steps.push(step(
                &d.script,
                Action::Remove,
                format!(
                    "leftover container {} from an interrupted update",
                    leftover.name
                ),
                None,
                Some(leftover),
            ));
        }
        let current = found
            .and_then(|v| v.iter().find(|c| c.name == name))
            .copied();
        match current {
            None => steps.push(step(
                &d.script,
                Action::Create,
                format!("declared at {}, no container", d.version),
                Some(d),
                None,
            )),
            Some(o) => {
                let mut changed = Vec::new();
                if o.version != d.version {
                    changed.push(format!("version {} -> {}", o.version, d.version));
                }
                if o.digest != d.digest {
                    changed.push(format!(
                        "digest {} -> {}",
                        short(&o.digest),
                        short(&d.digest)
                    ));
                }
                if o.spec_hash != d.spec_hash {
                    changed.push("container spec changed".to_owned());
                }
                if !changed.is_empty() {
                    steps.push(step(
                        &d.script,
                        Action::Replace,
                        changed.join(", "),
                        Some(d),
                        Some(o),
                    ));
                } else if !o.running {
                    steps.push(step(
                        &d.script,
                        Action::Start,
                        "container exists but is not running".into(),
                        Some(d),
                        Some(o),
                    ));
                } else {
                    steps.push(step(
                        &d.script,
                        Action::Keep,
                        format!("in sync at {}", d.version),
                        Some(d),
                        Some(o),
                    ));
                }
            }
        }
    }

    for (script, why) in &desired.unresolved {
        steps.push(Step {
            script: script.clone(),
            action: Action::Keep,
            reason: "left as it is".into(),
            gate: Gate::Deferred(Deferral::Unresolved {
                detail: why.clone(),
            }),
            needs_idle: false,
            pre_pull: false,
            desired: None,
            observed: by_script
                .get(script.as_str())
                .and_then(|v| v.first())
                .map(|c| (*c).clone()),
        });
    }

    for (script, containers) in &by_script {
        if declared.contains(script) {
            continue;
        }
        for o in containers {
            steps.push(step(
                script,
                Action::Remove,
                "no longer declared for this partner".into(),
                None,
                Some(o),
            ));
        }
    }

    steps.sort_by(|a, b| a.script.cmp(&b.script));
    Plan {
        partner: desired.partner.clone(),
        revision: desired.revision.clone(),
        now,
        steps,
    }
}

/// The first 12 hex digits of a digest, as people read them.
pub fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Weekly;
    use jiff::civil::Weekday;

    const NOW_OPEN: &str = "2026-11-21T02:00:00Z"; // Saturday, inside the window
    const NOW_CLOSED: &str = "2026-11-21T12:00:00Z";

    fn spec(env: &str) -> ContainerSpec {
        ContainerSpec {
            command: None,
            env: [("MODE".to_owned(), env.to_owned())].into(),
            env_files: vec![],
            ports: vec![],
            volumes: vec![],
            network: Some("host".into()),
            init: true,
            stop_timeout_secs: 10,
            memory: None,
            nano_cpus: None,
            read_only: false,
            user: None,
        }
    }

    fn want(script: &str, version: &str, env: &str) -> DesiredContainer {
        let spec = spec(env);
        DesiredContainer {
            script: script.into(),
            version: version.into(),
            digest: format!("sha256:{script}{version}"),
            image: format!("sha256:{script}{version}"),
            pull_from: None,
            spec_hash: spec.hash(),
            spec,
            health: HealthCheck {
                http: None,
                timeout: Duration::from_secs(5),
            },
        }
    }

    fn running(d: &DesiredContainer) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{}", d.script),
            name: container_name("p", &d.script),
            script: d.script.clone(),
            version: d.version.clone(),
            digest: d.digest.clone(),
            spec_hash: d.spec_hash.clone(),
            revision: "r1".into(),
            running: true,
        }
    }

    fn desired(containers: Vec<DesiredContainer>) -> Desired {
        Desired {
            partner: "p".into(),
            revision: "r2".into(),
            schedule: Schedule {
                tz: jiff::tz::TimeZone::UTC,
                windows: vec![Weekly {
                    days: vec![Weekday::Saturday],
                    start: 60,
                    end: 300,
                }],
                blackouts: vec![],
            },
            containers,
            unresolved: BTreeMap::new(),
            has_idle_gate: true,
            overrides: Overrides::default(),
        }
    }

    fn observed(containers: Vec<ObservedContainer>) -> Observed {
        Observed {
            containers,
            held: vec![],
            idle: Idleness::Unknown,
        }
    }

    fn run(d: &Desired, o: &Observed, now: &str) -> Vec<(String, Action, Gate)> {
        plan(d, o, now.parse().unwrap())
            .steps
            .into_iter()
            .map(|s| (s.script, s.action, s.gate))
            .collect()
    }

    #[test]
    fn creates_what_is_missing() {
        let d = desired(vec![want("a", "1.0.0", "x")]);
        let p = plan(&d, &observed(vec![]), NOW_OPEN.parse().unwrap());
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].action, Action::Create);
        assert_eq!(p.steps[0].gate, Gate::Allowed);
        assert!(
            !p.steps[0].needs_idle,
            "nothing runs yet, so nothing to interrupt"
        );
        assert_eq!(p.steps[0].reason, "declared at 1.0.0, no container");
    }

    #[test]
    fn keeps_what_is_in_sync() {
        let a = want("a", "1.0.0", "x");
        let d = desired(vec![a.clone()]);
        let steps = run(&d, &observed(vec![running(&a)]), NOW_CLOSED);
        assert_eq!(steps, vec![("a".into(), Action::Keep, Gate::Allowed)]);
        assert_eq!(
            plan(&d, &observed(vec![running(&a)]), NOW_OPEN.parse().unwrap())
                .changes()
                .count(),
            0
        );
    }

    #[test]
    fn replace_reason_names_what_changed() {
        let old = want("a", "1.0.0", "x");
        let cases = [
            (want("a", "1.1.0", "x"), "version 1.0.0 -> 1.1.0, digest"),
            (
                DesiredContainer {
                    digest: "sha256:other".into(),
                    ..old.clone()
                },
                "digest a1.0.0 -> other",
            ),
            (want("a", "1.0.0", "y"), "container spec changed"),
        ];
        for (new, reason) in cases {
            let p = plan(
                &desired(vec![new]),
                &observed(vec![running(&old)]),
                NOW_OPEN.parse().unwrap(),
            );
            assert_eq!(p.steps[0].action, Action::Replace);
            assert!(
                p.steps[0].reason.starts_with(reason),
                "{} vs {reason}",
                p.steps[0].reason
            );
            assert!(p.steps[0].needs_idle);
        }
    }

    #[test]
    fn starts_a_stopped_container() {
        let a = want("a", "1.0.0", "x");
        let mut o = running(&a);
        o.running = false;
        let p = plan(
            &desired(vec![a]),
            &observed(vec![o]),
            NOW_OPEN.parse().unwrap(),
        );
        assert_eq!(p.steps[0].action, Action::Start);
        assert!(!p.steps[0].needs_idle);
    }

    #[test]
    fn removes_what_is_no_longer_declared() {
        let a = want("a", "1.0.0", "x");
        let gone = running(&want("gone", "1.0.0", "x"));
        let steps = run(
            &desired(vec![a.clone()]),
            &observed(vec![running(&a), gone]),
            NOW_OPEN,
        );
        assert_eq!(
            steps,
            vec![
                ("a".into(), Action::Keep, Gate::Allowed),
                ("gone".into(), Action::Remove, Gate::Allowed)
            ]
        );
    }

    #[test]
    fn removes_leftovers_of_an_interrupted_update() {
        let a = want("a", "1.0.0", "x");
        let mut leftover = running(&a);
        leftover.name = format!("{}.next", leftover.name);
        leftover.running = false;
        let p = plan(
            &desired(vec![a.clone()]),
            &observed(vec![running(&a), leftover]),
            NOW_OPEN.parse().unwrap(),
        );
        let actions: Vec<_> = p.steps.iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            vec![Action::Remove, Action::Keep],
            "leftovers first"
        );
        assert!(p.steps[0].reason.contains("interrupted"));
    }

    #[test]
    fn every_change_waits_for_the_window() {
        let old = want("a", "1.0.0", "x");
        let mut stopped = running(&want("b", "1.0.0", "x"));
        stopped.running = false;
        let d = desired(vec![
            want("a", "2.0.0", "x"),
            want("b", "1.0.0", "x"),
            want("c", "1.0.0", "x"),
        ]);
        let o = observed(vec![
            running(&old),
            stopped,
            running(&want("z", "1.0.0", "x")),
        ]);
        let p = plan(&d, &o, NOW_CLOSED.parse().unwrap());
        assert_eq!(p.steps.len(), 4);
        for s in &p.steps {
            assert_eq!(
                s.gate,
                Gate::Deferred(Deferral::Window {
                    opens: Some("2026-11-28T01:00:00Z".into())
                }),
                "{:?}",
                s.action
            );
        }
    }

    #[test]
    fn a_step_that_cannot_finish_before_the_window_closes_waits() {
        // The window closes at 05:00; a replace needs 10s stop + 5s health + 30s margin.
        let old = want("a", "1.0.0", "x");
        let d = desired(vec![want("a", "2.0.0", "x")]);
        let o = observed(vec![running(&old)]);
        assert_eq!(
            run(&d, &o, "2026-11-21T04:59:00Z")[0].2,
            Gate::Allowed,
            "45s left of 60s"
        );
        assert_eq!(
            run(&d, &o, "2026-11-21T04:59:30Z")[0].2,
            Gate::Deferred(Deferral::WindowEnding {
                closes: "2026-11-21T05:00:00Z".into(),
                opens: Some("2026-11-28T01:00:00Z".into())
            })
        );
        let mut ignoring = d.clone();
        ignoring.overrides.ignore_window = true;
        assert_eq!(
            run(&ignoring, &o, "2026-11-21T04:59:30Z")[0].2,
            Gate::Allowed
        );
    }

    #[test]
    fn blackout_defers() {
        let mut d = desired(vec![want("a", "1.0.0", "x")]);
        d.schedule.blackouts = vec![("2026-11-21".parse().unwrap(), "2026-11-21".parse().unwrap())];
        let steps = run(&d, &observed(vec![]), NOW_OPEN);
        assert_eq!(
            steps[0].2,
            Gate::Deferred(Deferral::Blackout {
                until: "2026-11-21".into()
            })
        );
    }

    #[test]
    fn ignore_window_overrides_window_and_blackout() {
        let mut d = desired(vec![want("a", "1.0.0", "x")]);
        d.schedule.blackouts = vec![("2026-11-21".parse().unwrap(), "2026-11-21".parse().unwrap())];
        d.overrides.ignore_window = true;
        assert_eq!(run(&d, &observed(vec![]), NOW_CLOSED)[0].2, Gate::Allowed);
    }

    #[test]
    fn busy_defers_only_steps_that_stop_a_running_container() {
        let old_a = want("a", "1.0.0", "x");
        let mut stopped_b = running(&want("b", "1.0.0", "x"));
        stopped_b.running = false;
        let d = desired(vec![
            want("a", "2.0.0", "x"),
            want("b", "2.0.0", "x"),
            want("c", "1.0.0", "x"),
        ]);
        let mut o = observed(vec![
            running(&old_a),
            stopped_b,
            running(&want("z", "1.0.0", "x")),
        ]);
        o.idle = Idleness::NotIdle("state is busy".into());
        let busy = Gate::Deferred(Deferral::Busy {
            detail: "state is busy".into(),
        });
        assert_eq!(
            run(&d, &o, NOW_OPEN),
            vec![
                ("a".into(), Action::Replace, busy.clone()),
                ("b".into(), Action::Replace, Gate::Allowed),
                ("c".into(), Action::Create, Gate::Allowed),
                ("z".into(), Action::Remove, busy),
            ]
        );
        let mut ignoring = d.clone();
        ignoring.overrides.ignore_idle = true;
        assert!(
            run(&ignoring, &o, NOW_OPEN)
                .iter()
                .all(|s| s.2 == Gate::Allowed)
        );
        let mut no_gate = d;
        no_gate.has_idle_gate = false;
        assert!(
            run(&no_gate, &o, NOW_OPEN)
                .iter()
                .all(|s| s.2 == Gate::Allowed)
        );
    }

    #[test]
    fn held_digest_is_not_retried_until_it_or_the_spec_changes() {
        let old = want("a", "1.0.0", "x");
        let new = want("a", "2.0.0", "x");
        let mut o = observed(vec![running(&old)]);
        o.held = vec![Held {
            partner: "p".into(),
            script: "a".into(),
            digest: new.digest.clone(),
            spec_hash: new.spec_hash.clone(),
        }];
        assert_eq!(
            run(&desired(vec![new]), &o, NOW_OPEN)[0].2,
            Gate::Deferred(Deferral::FailedHealth)
        );
        assert_eq!(
            run(&desired(vec![want("a", "2.0.0", "y")]), &o, NOW_OPEN)[0].2,
            Gate::Allowed
        );
        assert_eq!(
            run(&desired(vec![want("a", "2.0.1", "x")]), &o, NOW_OPEN)[0].2,
            Gate::Allowed
        );
    }

    #[test]
    fn unresolved_script_is_left_alone() {
        let a = want("a", "1.0.0", "x");
        let mut d = desired(vec![]);
        d.unresolved.insert("a".into(), "registry down".into());
        let p = plan(&d, &observed(vec![running(&a)]), NOW_OPEN.parse().unwrap());
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].action, Action::Keep);
        assert_eq!(
            p.steps[0].gate,
            Gate::Deferred(Deferral::Unresolved {
                detail: "registry down".into()
            })
        );
    }

    #[test]
    fn plan_is_deterministic_and_sorted() {
        let d = desired(vec![want("b", "1.0.0", "x"), want("a", "1.0.0", "x")]);
        let o = observed(vec![running(&want("c", "1.0.0", "x"))]);
        let first = run(&d, &o, NOW_OPEN);
        assert_eq!(first, run(&d, &o, NOW_OPEN));
        let scripts: Vec<_> = first.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(scripts, vec!["a", "b", "c"]);
    }

    #[test]
    fn spec_hash_tracks_every_field() {
        let base = spec("x");
        let variants = [
            ContainerSpec {
                command: Some(vec!["/x".into()]),
                ..base.clone()
            },
            ContainerSpec {
                ports: vec!["1:1".into()],
                ..base.clone()
            },
            ContainerSpec {
                volumes: vec!["/a:/b".into()],
                ..base.clone()
            },
            ContainerSpec {
                network: None,
                ..base.clone()
            },
            ContainerSpec {
                init: false,
                ..base.clone()
            },
            ContainerSpec {
                stop_timeout_secs: 3,
                ..base.clone()
            },
            ContainerSpec {
                memory: Some(1 << 30),
                ..base.clone()
            },
            ContainerSpec {
                nano_cpus: Some(5),
                ..base.clone()
            },
            ContainerSpec {
                read_only: true,
                ..base.clone()
            },
            ContainerSpec {
                user: Some("1".into()),
                ..base.clone()
            },
            spec("y"),
        ];
        let mut hashes: BTreeSet<String> = variants.iter().map(ContainerSpec::hash).collect();
        hashes.insert(base.hash());
        assert_eq!(hashes.len(), variants.len() + 1);
        assert_eq!(base.hash(), spec("x").hash());
    }
}
