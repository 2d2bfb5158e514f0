//! The planner: a pure function from what a partner's host should run, what it runs, the
//! partner's gates and the time, to the steps that converge it, each with a reason and a
//! gate. It decides what to do and whether it may happen now; how a step is carried out,
//! and rolled back when it fails, is the executor's ([`crate::execute`]), which asks
//! [`gate::decide`] again right before each step.

pub mod gate;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use crate::container::{Network, ObservedContainer, container_name, part_name};
use crate::image::short;
use crate::resolve::{Desired, DesiredContainer};

pub use gate::{Deferral, Gate, Overrides, Policy};

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

/// What a script's required services (`requires:`) answered, the first unmet one named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Met,
    /// Outside the range, unreachable, slow or malformed, with the reason.
    Unmet {
        url: String,
        detail: String,
    },
}

/// The host as observed at the start of a pass.
#[derive(Debug, Clone)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    pub held: Vec<Held>,
    /// Scripts with a replace in flight (a journal record): another run is carrying it
    /// out, or the next one recovers it; their containers are not leftovers.
    pub in_flight: BTreeSet<String>,
    pub idle: Idleness,
    /// Per script, what its required services answered; a script not asked is absent.
    pub requires: BTreeMap<String, Readiness>,
    /// Per script and component, why a later rollout wave keeps what it runs
    /// ([`Deferral::Wave`] or [`Deferral::Halted`]); absent when it may take the new digest.
    pub rollout: BTreeMap<(String, Option<String>), Deferral>,
    /// Per script and component, why a later rollout wave takes an older, baked version
    /// than the newest: added to its step's reason.
    pub rollout_notes: BTreeMap<(String, Option<String>), String>,
}

impl Observed {
    /// The rollout's deferral of a change that brings a digest the host does not run yet.
    fn rollout_gate(&self, change: &Change) -> Option<&Deferral> {
        let to = match change {
            Change::Create { to } => to,
            Change::Replace { from, to } if from.digest != to.digest => to,
            _ => return None,
        };
        self.rollout
            .get(&(to.script.clone(), to.component_name().map(str::to_owned)))
    }
}

/// What a step does, as people and the JSON formats name it.
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

/// A step's change, carrying exactly what the executor needs to carry it out.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Declared, no container.
    Create { to: DesiredContainer },
    /// Version, digest or spec differs: the new container takes over from `from`.
    Replace {
        from: ObservedContainer,
        to: DesiredContainer,
    },
    /// In sync but not running.
    Start {
        current: ObservedContainer,
        to: DesiredContainer,
    },
    /// Managed by this partner but no longer declared, or a leftover of an interrupted
    /// update.
    Remove { from: ObservedContainer },
    /// Nothing to do (in sync), or nothing may be done (unresolved).
    Keep {
        current: Option<ObservedContainer>,
        to: Option<DesiredContainer>,
    },
}

impl Change {
    pub fn action(&self) -> Action {
        match self {
            Change::Create { .. } => Action::Create,
            Change::Replace { .. } => Action::Replace,
            Change::Start { .. } => Action::Start,
            Change::Remove { .. } => Action::Remove,
            Change::Keep { .. } => Action::Keep,
        }
    }

    /// What the host will run after the step, if anything.
    pub fn desired(&self) -> Option<&DesiredContainer> {
        match self {
            Change::Create { to } | Change::Replace { to, .. } | Change::Start { to, .. } => {
                Some(to)
            }
            Change::Keep { to, .. } => to.as_ref(),
            Change::Remove { .. } => None,
        }
    }

    /// The container the step finds on the host, if any.
    pub fn observed(&self) -> Option<&ObservedContainer> {
        match self {
            Change::Replace { from, .. } | Change::Remove { from } => Some(from),
            Change::Start { current, .. } => Some(current),
            Change::Keep { current, .. } => current.as_ref(),
            Change::Create { .. } => None,
        }
    }

    /// Whether the step stops a container that is running now.
    pub fn stops_running(&self) -> bool {
        match self {
            Change::Replace { from, .. } | Change::Remove { from } => from.running,
            _ => false,
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub script: String,
    /// The component it changes, for a multi-component script.
    pub component: Option<String>,
    pub change: Change,
    pub reason: String,
    pub gate: Gate,
}

impl Step {
    /// A step of `script`, named after the component its change is about.
    pub fn new(script: &str, change: Change, reason: String, gate: Gate) -> Step {
        Step {
            script: script.to_owned(),
            component: change
                .desired()
                .and_then(|d| d.component_name().map(str::to_owned))
                .or_else(|| change.observed().and_then(|o| o.component.clone())),
            change,
            reason,
            gate,
        }
    }

    pub fn action(&self) -> Action {
        self.change.action()
    }

    pub fn desired(&self) -> Option<&DesiredContainer> {
        self.change.desired()
    }

    pub fn observed(&self) -> Option<&ObservedContainer> {
        self.change.observed()
    }

    pub fn is_change(&self) -> bool {
        self.action() != Action::Keep
    }

    /// A removal of what an interrupted update left under a temporary name (a managed
    /// name ends in `-<script>` or `-<script>-<component>`; a temporary one does not).
    pub fn is_leftover(&self) -> bool {
        match &self.change {
            Change::Remove { from } => {
                let managed = match &from.component {
                    Some(c) => format!("-{}-{c}", from.script),
                    None => format!("-{}", from.script),
                };
                !from.name.ends_with(&managed)
            }
            _ => false,
        }
    }

    /// `script`, or `script/component`: how people and reports name what it changes.
    pub fn label(&self) -> String {
        match &self.component {
            Some(c) => format!("{}/{c}", self.script),
            None => self.script.clone(),
        }
    }

    /// The new image comes from a registry and is fetched before the gates are checked, so
    /// a window holds only the cut-over. Held, unresolved and refused steps fetch nothing:
    /// they will not run whatever the time.
    pub fn pre_pull(&self) -> bool {
        matches!(self.change, Change::Create { .. } | Change::Replace { .. })
            && self.desired().is_some_and(|d| d.pull_from.is_some())
            && !matches!(
                self.gate,
                Gate::Deferred(
                    Deferral::FailedHealth | Deferral::Unresolved { .. } | Deferral::Refused { .. }
                )
            )
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub partner: String,
    pub revision: String,
    pub now: Timestamp,
    pub steps: Vec<Step>,
    /// The gates the plan was decided under, for the executor to ask again.
    pub policy: Policy,
    /// Networks of multi-component scripts that go once their containers are removed.
    pub networks_to_remove: Vec<Network>,
}

impl Plan {
    /// Steps that would change the host, allowed or not.
    pub fn changes(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.is_change())
    }

    /// Whether a step that needs the idle gate could run if the service were idle.
    pub fn wants_idle_probe(&self) -> bool {
        self.steps
            .iter()
            .any(|s| self.policy.idle_gated(&s.change) && s.gate == Gate::Allowed)
    }

    /// The scripts whose required services must be asked: a step brings a new version that
    /// could run now if they answered in range.
    pub fn wants_requires(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter(|s| s.gate == Gate::Allowed)
            .filter_map(|s| self.policy.requires_gated(&s.change))
            .collect()
    }
}

/// Plans one pass for one partner. Pure: the same inputs always give the same plan, sorted
/// by script, with a script's leftovers before its own steps (one may hold its port), a
/// multi-component script's components in dependency order and its removed components
/// last. A multi-component script's changes are one unit: one gate decides them all.
pub fn plan(desired: &Desired, observed: &Observed, policy: &Policy, now: Timestamp) -> Plan {
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
    let mut wanted: BTreeMap<&str, Vec<&DesiredContainer>> = BTreeMap::new();
    for d in &desired.containers {
        wanted.entry(d.script.as_str()).or_default().push(d);
    }
    let found = |script: &str| by_script.get(script).map_or(&[][..], Vec::as_slice);

    let mut steps = Vec::new();
    for script in &observed.in_flight {
        let parts = wanted.get(script.as_str()).map_or(&[][..], Vec::as_slice);
        let keep = |d: Option<&DesiredContainer>, name: String| {
            let current = found(script)
                .iter()
                .find(|c| c.name == name)
                .map(|c| (*c).clone());
            Step::new(
                script,
                Change::Keep {
                    current,
                    to: d.cloned(),
                },
                "a replace is in flight".into(),
                Gate::Deferred(Deferral::InFlight),
            )
        };
        if parts.is_empty() {
            steps.push(keep(None, container_name(&desired.partner, script)));
        }
        for d in parts {
            steps.push(keep(Some(d), d.name(&desired.partner)));
        }
    }
    for (script, parts) in wanted
        .iter()
        .filter(|(s, _)| !observed.in_flight.contains(**s))
    {
        let multi = parts.iter().any(|d| d.component.is_some());
        let mut unit = declared(&desired.partner, parts, found(script));
        for s in &mut unit {
            s.gate = judge(&s.change, &s.script, policy, &held, now, observed);
            let key = (s.script.clone(), s.component.clone());
            if let Some(note) = observed
                .rollout_notes
                .get(&key)
                .filter(|_| s.is_change() && !s.is_leftover())
            {
                s.reason = format!("{}; {note}", s.reason);
            }
        }
        if multi {
            gate_unit(&mut unit, policy, &held, now, observed);
        }
        steps.extend(unit);
    }
    let left = |script: &String, deferral: Deferral| {
        let current = found(script).first().map(|c| (*c).clone());
        Step::new(
            script,
            Change::Keep { current, to: None },
            "left as it is".into(),
            Gate::Deferred(deferral),
        )
    };
    let not_in_flight = |s: &&String| !observed.in_flight.contains(*s);
    for (script, why) in desired.unresolved.iter().filter(|(s, _)| not_in_flight(s)) {
        steps.push(left(
            script,
            Deferral::Unresolved {
                detail: why.clone(),
            },
        ));
    }
    for (script, refusals) in desired.refused.iter().filter(|(s, _)| not_in_flight(s)) {
        steps.push(left(
            script,
            Deferral::Refused {
                refusals: refusals.clone(),
            },
        ));
    }
    let declared: BTreeSet<&str> = wanted
        .keys()
        .copied()
        .chain(desired.unresolved.keys().map(String::as_str))
        .chain(desired.refused.keys().map(String::as_str))
        .chain(observed.in_flight.iter().map(String::as_str))
        .collect();
    let mut networks = Vec::new();
    for (script, containers) in by_script.iter().filter(|(s, _)| !declared.contains(*s)) {
        let mut unit: Vec<Step> = containers
            .iter()
            .map(|o| {
                let change = Change::Remove { from: (*o).clone() };
                let gate = judge(&change, script, policy, &held, now, observed);
                Step::new(
                    script,
                    change,
                    "no longer declared for this partner".into(),
                    gate,
                )
            })
            .collect();
        if containers.iter().any(|c| c.component.is_some()) {
            gate_unit(&mut unit, policy, &held, now, observed);
            networks.push(Network::new(&desired.partner, script));
        }
        steps.extend(unit);
    }
    // A script that went from components back to one container leaves its network too.
    for (script, parts) in &wanted {
        if !observed.in_flight.contains(*script)
            && parts.iter().all(|d| d.component.is_none())
            && found(script).iter().any(|c| c.component.is_some())
        {
            networks.push(Network::new(&desired.partner, script));
        }
    }

    steps.sort_by(|a, b| a.script.cmp(&b.script));
    Plan {
        partner: desired.partner.clone(),
        revision: desired.revision.clone(),
        now,
        steps,
        policy: policy.clone(),
        networks_to_remove: networks,
    }
}

/// One step's own gate: the floor and the policy, a held digest, then the window, the
/// required services and the idle answer.
fn judge(
    change: &Change,
    script: &str,
    policy: &Policy,
    held: &BTreeSet<(&str, &str, &str)>,
    now: Timestamp,
    observed: &Observed,
) -> Gate {
    let is_held = matches!(change, Change::Create { .. } | Change::Replace { .. })
        && change
            .desired()
            .is_some_and(|d| held.contains(&(script, d.digest.as_str(), d.spec_hash.as_str())));
    // A container in sync is judged too: a policy tightened since it was created refuses
    // it (it keeps running; the refusal is reported until the manifests or policy agree).
    let refusals = match change {
        Change::Create { to }
        | Change::Replace { to, .. }
        | Change::Start { to, .. }
        | Change::Keep {
            to: Some(to),
            current: Some(_),
        } => policy.rules.refusals(&to.candidate()),
        Change::Remove { .. } | Change::Keep { .. } => vec![],
    };
    if !refusals.is_empty() {
        Gate::Deferred(Deferral::Refused { refusals })
    } else if is_held {
        Gate::Deferred(Deferral::FailedHealth)
    } else if let Some(wave) = observed.rollout_gate(change) {
        Gate::Deferred(wave.clone())
    } else {
        gate::decide_all(policy, &[change], now, &observed.idle, &observed.requires)
    }
}

/// The gate of a multi-component script's update, given to each of its changes: a refused
/// component refuses the unit, a held set of digests holds it, and the window must fit
/// every changed component's stop, health and job time together. Leftovers of an
/// interrupted update keep their own gates.
fn gate_unit(
    unit: &mut [Step],
    policy: &Policy,
    held: &BTreeSet<(&str, &str, &str)>,
    now: Timestamp,
    observed: &Observed,
) {
    let members = |s: &&Step| !s.is_leftover();
    let refusals: Vec<_> = unit
        .iter()
        .filter(members)
        .filter_map(|s| match &s.gate {
            Gate::Deferred(Deferral::Refused { refusals }) => Some(refusals.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let changes: Vec<&Change> = unit
        .iter()
        .filter(members)
        .filter(|s| s.is_change())
        .map(|s| &s.change)
        .collect();
    let script = unit.first().map(|s| s.script.clone()).unwrap_or_default();
    let fingerprint = unit_fingerprint(&changes);
    let wave = changes.iter().find_map(|c| observed.rollout_gate(c));
    let gate = if !refusals.is_empty() {
        Gate::Deferred(Deferral::Refused { refusals })
    } else if held.contains(&(script.as_str(), fingerprint.as_str(), "")) {
        Gate::Deferred(Deferral::FailedHealth)
    } else if let Some(wave) = wave {
        Gate::Deferred(wave.clone())
    } else {
        gate::decide_all(policy, &changes, now, &observed.idle, &observed.requires)
    };
    for s in unit
        .iter_mut()
        .filter(|s| s.is_change() && !s.is_leftover())
    {
        s.gate = gate.clone();
    }
}

/// What a failed update of a multi-component script holds: every changed component's
/// digest and spec, as one value, so that changing any of them lets the update try again.
pub fn unit_fingerprint(changes: &[&Change]) -> String {
    use sha2::Digest;
    let mut parts: Vec<String> = changes
        .iter()
        .filter_map(|c| c.desired())
        .map(|d| {
            format!(
                "{} {} {}",
                d.component_name().unwrap_or_default(),
                d.digest,
                d.spec_hash
            )
        })
        .collect();
    parts.sort();
    let digest = sha2::Sha256::digest(parts.join("\n").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("unit:{hex}")
}

/// The steps for one declared script, given the partner's containers of that script:
/// leftovers of interrupted updates first, then each part's change in dependency order,
/// then components no longer declared. Gates are decided by the caller.
fn declared(partner: &str, parts: &[&DesiredContainer], found: &[&ObservedContainer]) -> Vec<Step> {
    let names: BTreeSet<String> = parts.iter().map(|d| d.name(partner)).collect();
    let components: BTreeSet<&str> = parts.iter().filter_map(|d| d.component_name()).collect();
    let script = parts.first().map(|d| d.script.clone()).unwrap_or_default();
    let step = |change: Change, reason: String| Step::new(&script, change, reason, Gate::Allowed);
    // A container of a component still declared, under another name than its managed one,
    // is what an interrupted update left behind; one of a component no longer declared (or
    // the single container of a script that now has components) is removed last.
    let (gone, leftovers): (Vec<&&ObservedContainer>, Vec<&&ObservedContainer>) = found
        .iter()
        .filter(|c| !names.contains(&c.name))
        .partition(|c| {
            let managed = part_name(partner, &c.script, c.component.as_deref());
            c.name == managed
                && c.component
                    .as_deref()
                    .is_none_or(|comp| !components.contains(comp))
                && (c.component.is_some() || !components.is_empty())
        });
    let mut out: Vec<Step> = leftovers
        .into_iter()
        .map(|leftover| {
            step(
                Change::Remove {
                    from: (*leftover).clone(),
                },
                format!(
                    "leftover container {} from an interrupted update",
                    leftover.name
                ),
            )
        })
        .collect();
    for d in parts {
        let name = d.name(partner);
        let Some(o) = found.iter().find(|c| c.name == name) else {
            out.push(step(
                Change::Create { to: (*d).clone() },
                format!("declared at {}, no container", d.version),
            ));
            continue;
        };
        let changed = differences(o, d);
        let is_job = d.component.as_ref().is_some_and(|c| c.job.is_some());
        out.push(if !changed.is_empty() {
            step(
                Change::Replace {
                    from: (*o).clone(),
                    to: (*d).clone(),
                },
                changed.join(", "),
            )
        } else if !o.running && !is_job {
            step(
                Change::Start {
                    current: (*o).clone(),
                    to: (*d).clone(),
                },
                "container exists but is not running".into(),
            )
        } else {
            step(
                Change::Keep {
                    current: Some((*o).clone()),
                    to: Some((*d).clone()),
                },
                if is_job {
                    format!("completed at {}", d.version)
                } else if o.tasks.as_ref().is_some_and(|t| t.running < t.desired) {
                    // Swarm places the missing tasks when a node can take them; berth
                    // has nothing to change, so it only says so.
                    format!("in sync at {}, degraded", d.version)
                } else {
                    format!("in sync at {}", d.version)
                },
            )
        });
    }
    for o in gone {
        let what = o
            .component
            .as_deref()
            .map_or("the single container".to_owned(), |c| {
                format!("component {c}")
            });
        out.push(step(
            Change::Remove { from: (*o).clone() },
            format!("{what} is no longer declared"),
        ));
    }
    out
}

/// What differs between a running container and what should run, as a replace's reason.
fn differences(o: &ObservedContainer, d: &DesiredContainer) -> Vec<String> {
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
        changed.extend(secret_changes(o, d));
    }
    changed
}

/// A spec change named: each secret whose content changed (by name, from the keyed hashes
/// on the container), and `container spec changed` unless the secrets explain it all.
fn secret_changes(o: &ObservedContainer, d: &DesiredContainer) -> Vec<String> {
    let mut out = Vec::new();
    for (name, hash) in &d.spec.secrets {
        match o.secrets.get(name) {
            Some(old) if old != hash => out.push(format!("secret {name} changed")),
            Some(_) => {}
            None => out.push(format!("secret {name} added")),
        }
    }
    for name in o
        .secrets
        .keys()
        .filter(|n| !d.spec.secrets.contains_key(*n))
    {
        out.push(format!("secret {name} removed"));
    }
    let with_old_secrets = crate::container::ContainerSpec {
        secrets: o.secrets.clone(),
        ..d.spec.clone()
    };
    if out.is_empty() || with_old_secrets.hash() != o.spec_hash {
        out.push("container spec changed".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::ContainerSpec;

    const NOW_OPEN: &str = "2026-11-21T02:00:00Z"; // Saturday, inside the window
    const NOW_CLOSED: &str = "2026-11-21T12:00:00Z";

    fn spec(env: &str) -> ContainerSpec {
        ContainerSpec {
            env: [("MODE".to_owned(), env.to_owned())].into(),
            network: Some("host".into()),
            ..ContainerSpec::minimal()
        }
    }

    fn want(script: &str, version: &str, env: &str) -> DesiredContainer {
        let image = format!("sha256:{script}{version}");
        DesiredContainer::example(script, version, image, spec(env))
    }

    fn running(d: &DesiredContainer) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{}", d.script),
            name: container_name("p", &d.script),
            script: d.script.clone(),
            component: None,
            version: d.version.clone(),
            digest: d.digest.clone(),
            spec_hash: d.spec_hash.clone(),
            revision: "r1".into(),
            running: true,
            secrets: d.spec.secrets.clone(),
            secrets_dir: None,
            tasks: None,
        }
    }

    fn desired(containers: Vec<DesiredContainer>) -> Desired {
        Desired {
            partner: "p".into(),
            revision: "r2".into(),
            containers,
            unresolved: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    fn policy() -> Policy {
        gate::saturday_mornings()
    }

    fn observed(containers: Vec<ObservedContainer>) -> Observed {
        Observed {
            containers,
            held: vec![],
            in_flight: BTreeSet::new(),
            idle: Idleness::Unknown,
            requires: Default::default(),
            rollout: Default::default(),
            rollout_notes: Default::default(),
        }
    }

    fn run(d: &Desired, o: &Observed, now: &str) -> Vec<(String, Action, Gate)> {
        run_under(d, o, &policy(), now)
    }

    fn run_under(
        d: &Desired,
        o: &Observed,
        pol: &Policy,
        now: &str,
    ) -> Vec<(String, Action, Gate)> {
        plan(d, o, pol, now.parse().unwrap())
            .steps
            .into_iter()
            .map(|s| (s.script.clone(), s.action(), s.gate))
            .collect()
    }

    fn at(d: &Desired, o: &Observed, now: &str) -> Plan {
        plan(d, o, &policy(), now.parse().unwrap())
    }

    #[test]
    fn creates_what_is_missing() {
        let d = desired(vec![want("a", "1.0.0", "x")]);
        let p = at(&d, &observed(vec![]), NOW_OPEN);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].action(), Action::Create);
        assert_eq!(p.steps[0].gate, Gate::Allowed);
        assert!(
            !p.policy.idle_gated(&p.steps[0].change),
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
            at(&d, &observed(vec![running(&a)]), NOW_OPEN)
                .changes()
                .count(),
            0
        );
    }

    #[test]
    fn a_later_wave_keeps_what_runs_until_the_new_digest_bakes() {
        let (old, new) = (want("a", "1.0.0", "x"), want("a", "1.1.0", "x"));
        let fresh = want("b", "1.1.0", "x");
        let respec = want("c", "1.0.0", "y");
        let mut o = observed(vec![running(&old), running(&want("c", "1.0.0", "x"))]);
        let wave = Deferral::Wave {
            wave: "rest".into(),
            detail: "1.1.0 waits for wave canary".into(),
            until: None,
        };
        let halted = Deferral::Halted {
            wave: "rest".into(),
            detail: "1.1.0 is halted".into(),
        };
        o.rollout.insert(("a".into(), None), wave.clone());
        o.rollout.insert(("b".into(), None), halted.clone());
        o.rollout.insert(("c".into(), None), wave.clone());
        o.rollout_notes
            .insert(("c".into(), None), "baked in the earlier wave".into());
        let d = desired(vec![new, fresh, respec]);
        let p = at(&d, &o, NOW_OPEN);
        assert_eq!(
            p.steps[2].reason,
            "container spec changed; baked in the earlier wave"
        );
        let steps = run(&d, &o, NOW_OPEN);
        assert_eq!(
            steps,
            vec![
                ("a".into(), Action::Replace, Gate::Deferred(wave.clone())),
                ("b".into(), Action::Create, Gate::Deferred(halted.clone())),
                ("c".into(), Action::Replace, Gate::Allowed),
            ],
            "a spec change of the digest it runs is not the rollout's"
        );
        assert_eq!(wave.label(), "deferred(wave)");
        assert_eq!(halted.label(), "halted(wave)");
        // Outside the window the wave is still what is named: it is what the host waits for.
        let closed = run(&d, &o, NOW_CLOSED);
        assert_eq!(closed[0].2, Gate::Deferred(wave));
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
            let p = at(
                &desired(vec![new]),
                &observed(vec![running(&old)]),
                NOW_OPEN,
            );
            assert_eq!(p.steps[0].action(), Action::Replace);
            assert!(
                p.steps[0].reason.starts_with(reason),
                "{} vs {reason}",
                p.steps[0].reason
            );
            assert!(p.policy.idle_gated(&p.steps[0].change));
        }
    }

    #[test]
    fn starts_a_stopped_container() {
        let a = want("a", "1.0.0", "x");
        let mut o = running(&a);
        o.running = false;
        let p = at(&desired(vec![a]), &observed(vec![o]), NOW_OPEN);
        assert_eq!(p.steps[0].action(), Action::Start);
        assert!(!p.policy.idle_gated(&p.steps[0].change));
    }

    fn service(d: &DesiredContainer, scaled: bool, running: u32) -> ObservedContainer {
        ObservedContainer {
            running: scaled,
            tasks: Some(crate::container::Tasks {
                running,
                desired: 2,
                nodes: Vec::new(),
            }),
            ..self::running(d)
        }
    }

    #[test]
    fn a_service_at_its_scale_with_tasks_missing_is_kept_and_reported_degraded() {
        let a = want("a", "1.0.0", "x");
        for tasks in [0, 1] {
            let p = at(
                &desired(vec![a.clone()]),
                &observed(vec![service(&a, true, tasks)]),
                NOW_OPEN,
            );
            assert_eq!(p.steps[0].action(), Action::Keep, "{tasks}/2 tasks");
            assert_eq!(p.steps[0].reason, "in sync at 1.0.0, degraded");
        }
        let p = at(
            &desired(vec![a.clone()]),
            &observed(vec![service(&a, true, 2)]),
            NOW_OPEN,
        );
        assert_eq!(p.steps[0].reason, "in sync at 1.0.0");
    }

    #[test]
    fn a_service_scaled_by_hand_is_started_even_with_its_tasks_running() {
        let a = want("a", "1.0.0", "x");
        let p = at(
            &desired(vec![a.clone()]),
            &observed(vec![service(&a, false, 2)]),
            NOW_OPEN,
        );
        assert_eq!(p.steps[0].action(), Action::Start);
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
        let p = at(
            &desired(vec![a.clone()]),
            &observed(vec![running(&a), leftover]),
            NOW_OPEN,
        );
        let actions: Vec<_> = p.steps.iter().map(|s| s.action()).collect();
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
        let p = at(&d, &o, NOW_CLOSED);
        assert_eq!(p.steps.len(), 4);
        for s in &p.steps {
            assert_eq!(
                s.gate,
                Gate::Deferred(Deferral::Window {
                    opens: Some("2026-11-28T01:00:00Z".into())
                }),
                "{:?}",
                s.action()
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
        let mut ignoring = policy();
        ignoring.overrides.ignore_window = true;
        assert_eq!(
            run_under(&d, &o, &ignoring, "2026-11-21T04:59:30Z")[0].2,
            Gate::Allowed
        );
    }

    #[test]
    fn blackout_defers() {
        let d = desired(vec![want("a", "1.0.0", "x")]);
        let mut pol = policy();
        pol.schedule.blackouts =
            vec![("2026-11-21".parse().unwrap(), "2026-11-21".parse().unwrap())];
        let steps = run_under(&d, &observed(vec![]), &pol, NOW_OPEN);
        assert_eq!(
            steps[0].2,
            Gate::Deferred(Deferral::Blackout {
                until: "2026-11-21".into()
            })
        );
    }

    #[test]
    fn ignore_window_overrides_window_and_blackout() {
        let d = desired(vec![want("a", "1.0.0", "x")]);
        let mut pol = policy();
        pol.schedule.blackouts =
            vec![("2026-11-21".parse().unwrap(), "2026-11-21".parse().unwrap())];
        pol.overrides.ignore_window = true;
        assert_eq!(
            run_under(&d, &observed(vec![]), &pol, NOW_CLOSED)[0].2,
            Gate::Allowed
        );
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
        let mut ignoring = policy();
        ignoring.overrides.ignore_idle = true;
        assert!(
            run_under(&d, &o, &ignoring, NOW_OPEN)
                .iter()
                .all(|s| s.2 == Gate::Allowed)
        );
        let mut no_gate = policy();
        no_gate.has_idle_gate = false;
        assert!(
            run_under(&d, &o, &no_gate, NOW_OPEN)
                .iter()
                .all(|s| s.2 == Gate::Allowed)
        );
    }

    /// The policy with scripts `a` and `b` requiring the central service.
    fn requiring() -> Policy {
        let mut pol = policy();
        let central: crate::manifest::Requirement = crate::manifest::parse(
            "url: https://central/api/version\npointer: /version\nversions: \">=2.0.0\"\n",
        )
        .unwrap();
        pol.requires = [
            ("a".into(), vec![central.clone()]),
            ("b".into(), vec![central]),
        ]
        .into();
        pol
    }

    fn not_ready() -> Readiness {
        Readiness::Unmet {
            url: "https://central/api/version".into(),
            detail: "https://central/api/version answered 1.9.0 at /version, not in >=2.0.0".into(),
        }
    }

    #[test]
    fn only_a_new_version_or_digest_waits_for_required_services() {
        let pol = requiring();
        let old = want("a", "1.0.0", "x");
        let new = want("a", "2.0.0", "x");
        let gated = |c: Change| pol.requires_gated(&c).map(str::to_owned);
        assert_eq!(gated(Change::Create { to: new.clone() }), Some("a".into()));
        assert_eq!(
            gated(Change::Replace {
                from: running(&old),
                to: new.clone()
            }),
            Some("a".into())
        );
        let mut same_version_new_digest = old.clone();
        same_version_new_digest.digest = "sha256:rebuilt".into();
        assert_eq!(
            gated(Change::Replace {
                from: running(&old),
                to: same_version_new_digest
            }),
            Some("a".into())
        );
        // Only the spec changed: the running version already works with the service.
        assert_eq!(
            gated(Change::Replace {
                from: running(&old),
                to: want("a", "1.0.0", "y")
            }),
            None
        );
        assert_eq!(
            gated(Change::Start {
                current: running(&old),
                to: old.clone()
            }),
            None
        );
        assert_eq!(
            gated(Change::Remove {
                from: running(&old)
            }),
            None
        );
        assert_eq!(
            gated(Change::Keep {
                current: Some(running(&old)),
                to: Some(old.clone())
            }),
            None
        );
        assert_eq!(
            gated(Change::Create {
                to: want("c", "2.0.0", "x")
            }),
            None
        );
    }

    #[test]
    fn a_new_version_waits_while_its_required_service_is_out_of_range() {
        let pol = requiring();
        let old_a = want("a", "1.0.0", "x");
        let d = desired(vec![
            want("a", "2.0.0", "x"),
            want("b", "2.0.0", "x"),
            want("c", "1.0.0", "x"),
        ]);
        let mut o = observed(vec![running(&old_a)]);
        let p = plan(&d, &o, &pol, NOW_OPEN.parse().unwrap());
        assert!(
            p.steps.iter().all(|s| s.gate == Gate::Allowed),
            "not asked yet"
        );
        assert_eq!(p.wants_requires(), ["a", "b"].into());

        o.requires = [("a".into(), not_ready()), ("b".into(), not_ready())].into();
        let requires = Gate::Deferred(Deferral::Requires {
            url: "https://central/api/version".into(),
            detail: "https://central/api/version answered 1.9.0 at /version, not in >=2.0.0".into(),
        });
        assert_eq!(
            run_under(&d, &o, &pol, NOW_OPEN),
            vec![
                ("a".into(), Action::Replace, requires.clone()),
                ("b".into(), Action::Create, requires.clone()),
                ("c".into(), Action::Create, Gate::Allowed),
            ]
        );
        let Gate::Deferred(deferral) = requires else {
            unreachable!()
        };
        assert_eq!(deferral.name(), "requires");
        assert_eq!(
            deferral.describe(),
            "required service not ready: https://central/api/version answered 1.9.0 at /version, not in >=2.0.0"
        );

        o.requires = [("a".into(), Readiness::Met), ("b".into(), Readiness::Met)].into();
        assert!(
            run_under(&d, &o, &pol, NOW_OPEN)
                .iter()
                .all(|s| s.2 == Gate::Allowed)
        );
    }

    #[test]
    fn the_window_is_named_before_required_services_and_they_before_busy() {
        let pol = requiring();
        let old_a = want("a", "1.0.0", "x");
        let d = desired(vec![want("a", "2.0.0", "x")]);
        let mut o = observed(vec![running(&old_a)]);
        o.requires = [("a".into(), not_ready())].into();
        o.idle = Idleness::NotIdle("busy".into());
        let closed = plan(&d, &o, &pol, NOW_CLOSED.parse().unwrap());
        assert!(matches!(
            closed.steps[0].gate,
            Gate::Deferred(Deferral::Window { .. })
        ));
        assert!(
            closed.wants_requires().is_empty(),
            "nothing asked outside the window"
        );
        assert!(matches!(
            run_under(&d, &o, &pol, NOW_OPEN)[0].2,
            Gate::Deferred(Deferral::Requires { .. })
        ));
        o.requires = [("a".into(), Readiness::Met)].into();
        assert!(matches!(
            run_under(&d, &o, &pol, NOW_OPEN)[0].2,
            Gate::Deferred(Deferral::Busy { .. })
        ));
    }

    #[test]
    fn a_restart_or_spec_change_does_not_wait_for_required_services() {
        let pol = requiring();
        let a = want("a", "1.0.0", "x");
        let mut stopped = running(&a);
        stopped.running = false;
        let d = desired(vec![a.clone(), want("b", "1.0.0", "y")]);
        let mut o = observed(vec![stopped, running(&want("b", "1.0.0", "x"))]);
        o.requires = [("a".into(), not_ready()), ("b".into(), not_ready())].into();
        assert_eq!(
            run_under(&d, &o, &pol, NOW_OPEN),
            vec![
                ("a".into(), Action::Start, Gate::Allowed),
                ("b".into(), Action::Replace, Gate::Allowed),
            ]
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
        let p = at(&d, &observed(vec![running(&a)]), NOW_OPEN);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].action(), Action::Keep);
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

    #[test]
    fn a_replace_in_flight_is_not_mistaken_for_leftovers() {
        let old = want("a", "1.0.0", "x");
        let mut parked = running(&old);
        parked.name = format!("{}.old", parked.name);
        parked.running = false;
        let mut next = running(&want("a", "2.0.0", "x"));
        next.name = container_name("p", "a");
        next.id = "id-next".into();
        let mut o = observed(vec![parked, next]);
        o.in_flight.insert("a".into());
        let p = at(&desired(vec![want("a", "2.0.0", "x")]), &o, NOW_OPEN);
        assert_eq!(p.steps.len(), 1, "{:?}", p.steps);
        assert_eq!(p.steps[0].action(), Action::Keep);
        assert_eq!(p.steps[0].gate, Gate::Deferred(Deferral::InFlight));
        assert_eq!(
            p.steps[0].observed().map(|c| c.id.as_str()),
            Some("id-next")
        );
    }

    #[test]
    fn a_step_that_breaks_the_floor_is_refused_and_the_others_run() {
        use crate::container::Bind;
        let mut bad = want("a", "1.0.0", "x");
        bad.spec.volumes = vec!["/var/run/docker.sock:/s".into()];
        bad.binds = vec![Bind {
            entry: 0,
            source: "/var/run/docker.sock".into(),
            real: "/run/docker.sock".into(),
            read_only: false,
            socket: true,
        }];
        bad.origin.volumes = vec![crate::diag::Loc {
            path: "scripts/a.yaml".into(),
            pos: crate::diag::Pos { line: 9, col: 14 },
        }];
        let steps = run_under(
            &desired(vec![bad, want("b", "1.0.0", "x")]),
            &observed(vec![]),
            &policy(),
            NOW_CLOSED,
        );
        let Gate::Deferred(Deferral::Refused { refusals }) = &steps[0].2 else {
            panic!("refused whatever the window: {:?}", steps[0]);
        };
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].rule, "floor");
        assert_eq!(refusals[0].value, "volume /var/run/docker.sock:/s");
        assert_eq!(refusals[0].value_at.to_string(), "scripts/a.yaml:9:14");
        assert!(refusals[0].why.contains("a socket"), "{}", refusals[0].why);
        assert!(matches!(
            steps[1].2,
            Gate::Deferred(Deferral::Window { .. })
        ));
    }

    /// A policy that allows nothing but `bridge` and `none`, with its rule at line 3.
    fn networks_policy() -> Policy {
        let mut pol = policy();
        pol.rules.host = Some(crate::policy::tests::allowing_networks(&[
            "private", "bridge", "none",
        ]));
        pol
    }

    #[test]
    fn a_policy_refuses_creating_replacing_and_starting_and_reports_a_kept_container() {
        let mut host_net = want("a", "2.0.0", "x");
        host_net.spec.network = Some("host".into());
        let mut fine = want("b", "2.0.0", "x");
        fine.spec.network = Some("bridge".into());
        let pol = networks_policy();
        let refused = |g: &Gate| matches!(g, Gate::Deferred(Deferral::Refused { refusals }) if refusals[0].rule == "networks");
        let create = run_under(
            &desired(vec![host_net.clone(), fine.clone()]),
            &observed(vec![]),
            &pol,
            NOW_OPEN,
        );
        assert_eq!(create[0].1, Action::Create);
        assert!(refused(&create[0].2), "{create:?}");
        assert_eq!(create[1], ("b".into(), Action::Create, Gate::Allowed));
        let mut old = running(&want("a", "1.0.0", "x"));
        let replace = run_under(
            &desired(vec![host_net.clone()]),
            &observed(vec![old.clone()]),
            &pol,
            NOW_OPEN,
        );
        assert!(
            refused(&replace[0].2) && replace[0].1 == Action::Replace,
            "{replace:?}"
        );
        old = running(&host_net);
        let kept = run_under(
            &desired(vec![host_net.clone()]),
            &observed(vec![old.clone()]),
            &pol,
            NOW_OPEN,
        );
        assert!(refused(&kept[0].2) && kept[0].1 == Action::Keep, "{kept:?}");
        old.running = false;
        let start = run_under(
            &desired(vec![host_net]),
            &observed(vec![old]),
            &pol,
            NOW_OPEN,
        );
        assert!(
            refused(&start[0].2) && start[0].1 == Action::Start,
            "{start:?}"
        );
        let removal = run_under(
            &desired(vec![]),
            &observed(vec![running(&want("a", "1.0.0", "x"))]),
            &pol,
            NOW_OPEN,
        );
        assert_eq!(removal[0].1, Action::Remove);
        assert!(
            !refused(&removal[0].2),
            "removing is never refused: {removal:?}"
        );
    }

    #[test]
    fn a_rotated_secret_is_named_never_shown() {
        let with = |secrets: &[(&str, &str)], env: &str| {
            let mut d = want("a", "1.0.0", env);
            d.spec.secrets = secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            d.spec_hash = d.spec.hash();
            d
        };
        let old = with(&[("db.env", "h1"), ("tls.key", "h2")], "x");
        let reason = |new: DesiredContainer| {
            let p = at(
                &desired(vec![new]),
                &observed(vec![running(&old)]),
                NOW_OPEN,
            );
            (p.steps[0].action(), p.steps[0].reason.clone())
        };
        assert_eq!(
            reason(with(&[("db.env", "h9"), ("tls.key", "h2")], "x")),
            (Action::Replace, "secret db.env changed".into())
        );
        assert_eq!(
            reason(with(&[("db.env", "h9"), ("tls.key", "h2")], "y")),
            (
                Action::Replace,
                "secret db.env changed, container spec changed".into()
            )
        );
        assert_eq!(
            reason(with(&[("tls.key", "h2"), ("new.env", "h3")], "x")),
            (
                Action::Replace,
                "secret new.env added, secret db.env removed".into()
            )
        );
        assert_eq!(reason(old.clone()).0, Action::Keep);
    }

    /// A component `name` of script `m` at `version`, depending on `deps`.
    fn component(name: &str, version: &str, deps: &[&str]) -> DesiredContainer {
        let mut d = want("m", version, name);
        d.component = Some(crate::resolve::ComponentOf {
            name: name.into(),
            stateful: false,
            job: None,
            depends_on: deps
                .iter()
                .map(|d| ((*d).to_owned(), crate::manifest::Condition::Started))
                .collect(),
            volumes: vec![],
            network: Some(Network::new("p", "m")),
        });
        d.spec.network = Some("berth-p-m".into());
        d.spec.network_alias = Some(name.into());
        d.spec_hash = d.spec.hash();
        d
    }

    fn running_component(d: &DesiredContainer) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{}", d.name("p")),
            name: d.name("p"),
            component: d.component_name().map(str::to_owned),
            ..running(d)
        }
    }

    fn labels(p: &Plan) -> Vec<(String, Action)> {
        p.steps.iter().map(|s| (s.label(), s.action())).collect()
    }

    #[test]
    fn a_unit_changes_only_its_changed_components_and_removes_dropped_ones_last() {
        let (db, api1, old) = (
            component("db", "1.0.0", &[]),
            component("api", "1.0.0", &["db"]),
            component("old", "1.0.0", &[]),
        );
        let o = observed(vec![
            running_component(&old),
            running_component(&api1),
            running_component(&db),
        ]);
        let d = desired(vec![db.clone(), component("api", "2.0.0", &["db"])]);
        let p = at(&d, &o, NOW_OPEN);
        assert_eq!(
            labels(&p),
            vec![
                ("m/db".into(), Action::Keep),
                ("m/api".into(), Action::Replace),
                ("m/old".into(), Action::Remove),
            ]
        );
        assert_eq!(p.steps[2].reason, "component old is no longer declared");
        assert_eq!(p.steps[0].observed().unwrap().name, "berth-p-m-db");
        assert!(p.networks_to_remove.is_empty());
        // Dropping the script removes every component, and its network after them.
        let p = at(&desired(vec![]), &o, NOW_OPEN);
        assert_eq!(p.steps.len(), 3);
        assert!(p.steps.iter().all(|s| s.action() == Action::Remove));
        assert_eq!(p.networks_to_remove, vec![Network::new("p", "m")]);
    }

    #[test]
    fn a_unit_is_gated_as_one_its_changes_must_all_fit_the_window() {
        // Each replace needs 10 s stop + 5 s health; two of them and the 30 s margin need
        // 60 s, which 04:59:10 no longer leaves, though one alone would fit.
        let o = observed(vec![
            running_component(&component("a", "1.0.0", &[])),
            running_component(&component("b", "1.0.0", &[])),
        ]);
        let d = desired(vec![
            component("a", "2.0.0", &[]),
            component("b", "2.0.0", &[]),
        ]);
        let gates: Vec<Gate> = run(&d, &o, "2026-11-21T04:59:10Z")
            .into_iter()
            .map(|s| s.2)
            .collect();
        let ending = Gate::Deferred(Deferral::WindowEnding {
            closes: "2026-11-21T05:00:00Z".into(),
            opens: Some("2026-11-28T01:00:00Z".into()),
        });
        assert_eq!(gates, vec![ending.clone(), ending]);
        let one = desired(vec![
            component("a", "2.0.0", &[]),
            component("b", "1.0.0", &[]),
        ]);
        assert_eq!(run(&one, &o, "2026-11-21T04:59:10Z")[0].2, Gate::Allowed);
        // Busy defers the whole unit, not only the part that stops something.
        let mut busy = o.clone();
        busy.idle = Idleness::NotIdle("busy".into());
        assert!(
            run(&d, &busy, NOW_OPEN)
                .iter()
                .all(|s| matches!(s.2, Gate::Deferred(Deferral::Busy { .. })))
        );
    }

    #[test]
    fn a_unit_with_a_new_version_waits_for_its_required_services_as_one() {
        let mut pol = requiring();
        pol.requires.insert("m".into(), pol.requires["a"].clone());
        let db = component("db", "1.0.0", &[]);
        let mut o = observed(vec![
            running_component(&db),
            running_component(&component("api", "1.0.0", &["db"])),
        ]);
        o.requires = [("m".into(), not_ready())].into();
        // The api's new version and a new cache component wait together; db stays in sync.
        let d = desired(vec![
            db.clone(),
            component("api", "2.0.0", &["db"]),
            component("cache", "2.0.0", &[]),
        ]);
        let p = plan(&d, &o, &pol, NOW_OPEN.parse().unwrap());
        let gates: Vec<(String, Action, bool)> = p
            .steps
            .iter()
            .map(|s| {
                let waits = matches!(s.gate, Gate::Deferred(Deferral::Requires { .. }));
                (s.label(), s.action(), waits)
            })
            .collect();
        assert_eq!(
            gates,
            vec![
                ("m/db".into(), Action::Keep, false),
                ("m/api".into(), Action::Replace, true),
                ("m/cache".into(), Action::Create, true),
            ]
        );
        // A unit whose changes bring no new version does not wait.
        let mut api_env = component("api", "1.0.0", &["db"]);
        api_env.spec.env.insert("MODE".into(), "y".into());
        api_env.spec_hash = api_env.spec.hash();
        let p = plan(
            &desired(vec![db, api_env]),
            &o,
            &pol,
            NOW_OPEN.parse().unwrap(),
        );
        assert!(
            p.steps.iter().all(|s| s.gate == Gate::Allowed),
            "{:?}",
            p.steps
        );
    }

    #[test]
    fn a_held_unit_is_retried_once_any_of_its_changes_differs() {
        let o = observed(vec![
            running_component(&component("a", "1.0.0", &[])),
            running_component(&component("b", "1.0.0", &[])),
        ]);
        let d = desired(vec![
            component("a", "2.0.0", &[]),
            component("b", "2.0.0", &[]),
        ]);
        let p = at(&d, &o, NOW_OPEN);
        let changes: Vec<&Change> = p.steps.iter().map(|s| &s.change).collect();
        let mut held = o.clone();
        held.held = vec![Held {
            partner: "p".into(),
            script: "m".into(),
            digest: unit_fingerprint(&changes),
            spec_hash: String::new(),
        }];
        assert!(
            run(&d, &held, NOW_OPEN)
                .iter()
                .all(|s| s.2 == Gate::Deferred(Deferral::FailedHealth))
        );
        let fixed = desired(vec![
            component("a", "2.0.1", &[]),
            component("b", "2.0.0", &[]),
        ]);
        assert!(
            run(&fixed, &held, NOW_OPEN)
                .iter()
                .all(|s| s.2 == Gate::Allowed)
        );
    }

    #[test]
    fn a_refused_component_refuses_the_whole_unit() {
        let o = observed(vec![
            running_component(&component("a", "1.0.0", &[])),
            running_component(&component("b", "1.0.0", &[])),
        ]);
        let mut a = component("a", "2.0.0", &[]);
        a.spec.network = Some("host".into());
        a.spec.network_alias = None;
        a.spec_hash = a.spec.hash();
        let d = desired(vec![a, component("b", "2.0.0", &[])]);
        let gates = run_under(&d, &o, &networks_policy(), NOW_OPEN);
        assert!(
            gates
                .iter()
                .all(|s| matches!(&s.2, Gate::Deferred(Deferral::Refused { refusals }) if refusals.len() == 1)),
            "{gates:?}"
        );
    }
}
