//! Which images berth removes after a pass, decided as a pure function ([`decide`]) over
//! what the state dir recorded and what the engine and the plan show.
//!
//! berth only ever removes an image it pulled itself ([`Pulled`], recorded when a pull
//! succeeds), and removes it by the one reference it made (`registry/repository@digest`),
//! so a tag someone else put on the same image keeps it. Per script, and per component of
//! a multi-component script, it keeps the image that runs and the rollback image: the one
//! that ran before it. That predecessor is not something the engine remembers (the old
//! container is gone once an update is verified), so each pass records what every managed
//! container runs at its end ([`ran`]): when a part's digest differs from the one recorded,
//! the recorded one becomes its `previous`. This follows what actually ran, not the order
//! of pulls, which a pre-pull for a later window or a version that failed health would
//! confuse. An image that failed its health check is not kept: it is held, will not run
//! again, and a careful operator wants the running image and its predecessor, not it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::container::ObservedContainer;
use crate::plan::{Deferral, Gate, Plan};

/// An image berth pulled, recorded when the pull succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulled {
    /// `registry/repository@digest`: the reference berth made, and the one it removes.
    pub reference: String,
    pub digest: String,
    /// The engine's id for it, to tell whether any container uses it.
    pub id: String,
    /// The script (and component) it was pulled for, for the reason a removal gives.
    pub script: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

impl Pulled {
    fn part(&self) -> Part<'_> {
        (self.script.as_str(), self.component.as_deref())
    }
}

/// What one managed container of a partner ran at the end of the passes that saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ran {
    pub script: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The digest it runs.
    pub running: String,
    /// The digest it ran before: what a rollback goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl Ran {
    fn part(&self) -> Part<'_> {
        (self.script.as_str(), self.component.as_deref())
    }
}

/// A partner's record in the state dir: the images berth pulled for it, in pull order, and
/// what each of its containers ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerImages {
    #[serde(default)]
    pub pulled: Vec<Pulled>,
    #[serde(default)]
    pub ran: Vec<Ran>,
}

/// A script, and its component if it has several.
type Part<'a> = (&'a str, Option<&'a str>);

fn label((script, component): Part<'_>) -> String {
    match component {
        Some(c) => format!("{script}/{c}"),
        None => script.to_owned(),
    }
}

/// What each part runs after a pass, from the containers under their managed names (a
/// container left under an update's temporary name says nothing about what runs). A part
/// whose digest changed keeps the one before as `previous`; a part with no container
/// keeps its record while the plan still wants it (a create that waits), and is dropped
/// otherwise (its script was removed from the partner).
pub fn ran(partner: &str, before: &[Ran], observed: &[ObservedContainer], plan: &Plan) -> Vec<Ran> {
    let mut out: Vec<Ran> = Vec::new();
    for o in observed {
        let part = (o.script.as_str(), o.component.as_deref());
        if o.name != crate::container::part_name(partner, part.0, part.1)
            || out.iter().any(|r| r.part() == part)
        {
            continue;
        }
        let now = match before.iter().find(|r| r.part() == part) {
            Some(r) if r.running == o.digest => r.clone(),
            Some(r) => Ran {
                previous: Some(r.running.clone()),
                running: o.digest.clone(),
                ..r.clone()
            },
            None => Ran {
                script: o.script.clone(),
                component: o.component.clone(),
                running: o.digest.clone(),
                previous: None,
            },
        };
        out.push(now);
    }
    for r in before {
        let wanted = plan.steps.iter().any(|s| {
            s.desired().is_some() && (s.script.as_str(), s.component.as_deref()) == r.part()
        });
        if wanted && !out.iter().any(|o| o.part() == r.part()) {
            out.push(r.clone());
        }
    }
    out.sort_by(|a, b| a.part().cmp(&b.part()));
    out
}

/// Why an image is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Its part runs a newer image, and another one is its rollback image.
    Superseded { part: String },
    /// It failed its health check and is held: it will not run again.
    FailedHealth { part: String },
    /// No container of its part runs on this host any more, nor will one.
    Gone { part: String },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Superseded { part } => {
                write!(f, "{part}: neither the running nor the rollback image")
            }
            Why::FailedHealth { part } => write!(f, "{part}: failed its health check"),
            Why::Gone { part } => write!(f, "{part}: no longer runs here"),
        }
    }
}

/// An image to remove, by the reference berth pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prune {
    pub reference: String,
    pub why: Why,
}

/// What the decision looks at besides the partner's own record.
pub struct Host<'a> {
    /// The image id of every container on the engine: managed or not, running or not.
    pub in_use: &'a BTreeSet<String>,
    /// The digests other partners' containers run or would roll back to.
    pub kept_by_others: &'a BTreeSet<String>,
}

/// The images berth pulled for a partner that it removes now, in pull order. Kept: a
/// digest a part of the partner runs or would roll back to (`ran`, as [`ran`] left it), or
/// that another partner's does; an image any container uses; one a step of the plan will
/// run (pre-pulled for a later window, say), unless that step is held after failing health
/// or refused by the policy (neither runs whatever the time); every image of a script
/// that could not be resolved, whose wish is unknown.
pub fn decide(images: &PartnerImages, host: &Host<'_>, plan: &Plan) -> Vec<Prune> {
    let kept: BTreeSet<&str> = images
        .ran
        .iter()
        .flat_map(|r| std::iter::once(&r.running).chain(r.previous.as_ref()))
        .map(String::as_str)
        .chain(host.kept_by_others.iter().map(String::as_str))
        .collect();
    let will_run: BTreeSet<&str> = plan
        .steps
        .iter()
        .filter(|s| {
            !matches!(
                s.gate,
                Gate::Deferred(Deferral::FailedHealth | Deferral::Refused { .. })
            )
        })
        .filter_map(|s| s.desired())
        .map(|d| d.digest.as_str())
        .collect();
    let unresolved: BTreeSet<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.gate, Gate::Deferred(Deferral::Unresolved { .. })))
        .map(|s| s.script.as_str())
        .collect();
    let held = |p: &Pulled| {
        plan.steps.iter().any(|s| {
            matches!(s.gate, Gate::Deferred(Deferral::FailedHealth))
                && s.desired().is_some_and(|d| d.digest == p.digest)
        })
    };
    let live = |p: &Pulled| images.ran.iter().any(|r| r.part() == p.part());
    images
        .pulled
        .iter()
        .filter(|p| {
            !kept.contains(p.digest.as_str())
                && !host.in_use.contains(&p.id)
                && !will_run.contains(p.digest.as_str())
                && !unresolved.contains(p.script.as_str())
        })
        .map(|p| {
            let part = label(p.part());
            Prune {
                reference: p.reference.clone(),
                why: if held(p) {
                    Why::FailedHealth { part }
                } else if live(p) {
                    Why::Superseded { part }
                } else {
                    Why::Gone { part }
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ContainerSpec, container_name};
    use crate::plan::{Change, Step};
    use crate::resolve::DesiredContainer;

    fn digest(v: &str) -> String {
        format!("sha256:{v}")
    }

    fn pulled(script: &str, component: Option<&str>, v: &str) -> Pulled {
        Pulled {
            reference: format!("127.0.0.1:5000/svc@{}", digest(v)),
            digest: digest(v),
            id: format!("id-{v}"),
            script: script.into(),
            component: component.map(str::to_owned),
        }
    }

    fn ran_(script: &str, component: Option<&str>, running: &str, previous: Option<&str>) -> Ran {
        Ran {
            script: script.into(),
            component: component.map(str::to_owned),
            running: digest(running),
            previous: previous.map(digest),
        }
    }

    fn want(script: &str, v: &str) -> DesiredContainer {
        let image = format!("127.0.0.1:5000/svc@{}", digest(v));
        DesiredContainer {
            digest: digest(v),
            ..DesiredContainer::example(script, v, image, ContainerSpec::minimal())
        }
    }

    fn container(script: &str, component: Option<&str>, name: &str, v: &str) -> ObservedContainer {
        ObservedContainer {
            id: format!("c-{name}"),
            name: name.into(),
            script: script.into(),
            component: component.map(str::to_owned),
            version: v.into(),
            digest: digest(v),
            spec_hash: String::new(),
            revision: "r".into(),
            running: true,
            secrets: Default::default(),
            secrets_dir: None,
            tasks: None,
        }
    }

    fn step(script: &str, component: Option<&str>, change: Change, gate: Gate) -> Step {
        Step {
            script: script.into(),
            component: component.map(str::to_owned),
            change,
            reason: String::new(),
            gate,
        }
    }

    fn keep(script: &str, v: &str) -> Step {
        step(
            script,
            None,
            Change::Keep {
                current: None,
                to: Some(want(script, v)),
            },
            Gate::Allowed,
        )
    }

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            partner: "p".into(),
            revision: "r".into(),
            now: "2026-11-21T02:00:00Z".parse().unwrap(),
            steps,
            policy: crate::plan::gate::saturday_mornings(),
            networks_to_remove: vec![],
        }
    }

    fn decide_on(
        images: &PartnerImages,
        in_use: &[&str],
        others: &[&str],
        plan: &Plan,
    ) -> Vec<(String, Why)> {
        let in_use = in_use.iter().map(|s| (*s).to_owned()).collect();
        let kept_by_others = others.iter().map(|v| digest(v)).collect();
        let host = Host {
            in_use: &in_use,
            kept_by_others: &kept_by_others,
        };
        decide(images, &host, plan)
            .into_iter()
            .map(|p| (p.reference, p.why))
            .collect()
    }

    fn reference(v: &str) -> String {
        pulled("s", None, v).reference
    }

    fn superseded(part: &str) -> Why {
        Why::Superseded { part: part.into() }
    }

    #[test]
    fn the_running_and_the_rollback_image_stay_and_the_older_ones_go() {
        let images = PartnerImages {
            pulled: ["1.0.0", "1.1.0", "1.2.0"]
                .iter()
                .map(|v| pulled("s", None, v))
                .collect(),
            ran: vec![ran_("s", None, "1.2.0", Some("1.1.0"))],
        };
        assert_eq!(
            decide_on(&images, &[], &[], &plan(vec![keep("s", "1.2.0")])),
            vec![(reference("1.0.0"), superseded("s"))]
        );
    }

    #[test]
    fn each_component_keeps_its_own_running_and_rollback_image() {
        let images = PartnerImages {
            pulled: vec![
                pulled("s", Some("api"), "a1"),
                pulled("s", Some("api"), "a2"),
                pulled("s", Some("api"), "a3"),
                pulled("s", Some("worker"), "w1"),
                pulled("s", Some("worker"), "w2"),
            ],
            ran: vec![
                ran_("s", Some("api"), "a3", Some("a2")),
                ran_("s", Some("worker"), "w2", Some("w1")),
            ],
        };
        assert_eq!(
            decide_on(&images, &[], &[], &plan(vec![])),
            vec![(reference("a1"), superseded("s/api"))]
        );
    }

    #[test]
    fn an_image_any_container_uses_stays() {
        let images = PartnerImages {
            pulled: vec![pulled("s", None, "1.0.0")],
            ran: vec![ran_("s", None, "1.2.0", Some("1.1.0"))],
        };
        assert!(decide_on(&images, &["id-1.0.0"], &[], &plan(vec![])).is_empty());
        assert_eq!(
            decide_on(&images, &["id-other"], &[], &plan(vec![])).len(),
            1
        );
    }

    #[test]
    fn an_image_another_partner_runs_or_rolls_back_to_stays() {
        let images = PartnerImages {
            pulled: vec![pulled("s", None, "1.0.0")],
            ran: vec![ran_("s", None, "1.2.0", Some("1.1.0"))],
        };
        assert!(decide_on(&images, &[], &["1.0.0"], &plan(vec![])).is_empty());
    }

    #[test]
    fn an_image_pulled_for_a_step_that_waits_stays_unless_it_is_held_or_refused() {
        let images = PartnerImages {
            pulled: vec![pulled("s", None, "1.0.0"), pulled("s", None, "2.0.0")],
            ran: vec![ran_("s", None, "1.1.0", Some("1.0.0"))],
        };
        let replace = |gate: Gate| {
            plan(vec![step(
                "s",
                None,
                Change::Replace {
                    from: container("s", None, &container_name("p", "s"), "1.1.0"),
                    to: want("s", "2.0.0"),
                },
                gate,
            )])
        };
        let window = Gate::Deferred(Deferral::Window { opens: None });
        assert!(decide_on(&images, &[], &[], &replace(window)).is_empty());
        assert_eq!(
            decide_on(
                &images,
                &[],
                &[],
                &replace(Gate::Deferred(Deferral::FailedHealth))
            ),
            vec![(reference("2.0.0"), Why::FailedHealth { part: "s".into() })]
        );
        let refused = Gate::Deferred(Deferral::Refused { refusals: vec![] });
        assert_eq!(
            decide_on(&images, &[], &[], &replace(refused)),
            vec![(reference("2.0.0"), superseded("s"))]
        );
    }

    #[test]
    fn an_unresolved_script_keeps_every_image() {
        let images = PartnerImages {
            pulled: vec![pulled("s", None, "0.9.0"), pulled("t", None, "0.9.0")],
            ran: vec![
                ran_("s", None, "1.1.0", Some("1.0.0")),
                ran_("t", None, "1.1.0", Some("1.0.0")),
            ],
        };
        let unresolved = step(
            "s",
            None,
            Change::Keep {
                current: None,
                to: None,
            },
            Gate::Deferred(Deferral::Unresolved {
                detail: "registry down".into(),
            }),
        );
        let pruned = decide_on(&images, &[], &[], &plan(vec![unresolved]));
        assert_eq!(
            pruned,
            vec![(pulled("t", None, "0.9.0").reference, superseded("t"))]
        );
    }

    #[test]
    fn the_images_of_a_script_that_no_longer_runs_go() {
        let images = PartnerImages {
            pulled: vec![pulled("gone", None, "1.0.0")],
            ran: vec![],
        };
        assert_eq!(
            decide_on(&images, &[], &[], &plan(vec![])),
            vec![(
                reference("1.0.0"),
                Why::Gone {
                    part: "gone".into()
                }
            )]
        );
    }

    #[test]
    fn what_ran_before_becomes_the_rollback_image_when_the_digest_changes() {
        let name = container_name("p", "s");
        let first = ran(
            "p",
            &[],
            &[container("s", None, &name, "1.0.0")],
            &plan(vec![]),
        );
        assert_eq!(first, vec![ran_("s", None, "1.0.0", None)]);
        let same = ran(
            "p",
            &first,
            &[container("s", None, &name, "1.0.0")],
            &plan(vec![]),
        );
        assert_eq!(same, first, "an unchanged container changes nothing");
        let second = ran(
            "p",
            &same,
            &[container("s", None, &name, "1.1.0")],
            &plan(vec![]),
        );
        assert_eq!(second, vec![ran_("s", None, "1.1.0", Some("1.0.0"))]);
        let third = ran(
            "p",
            &second,
            &[container("s", None, &name, "1.2.0")],
            &plan(vec![]),
        );
        assert_eq!(third, vec![ran_("s", None, "1.2.0", Some("1.1.0"))]);
    }

    #[test]
    fn a_container_under_a_temporary_name_says_nothing_about_what_runs() {
        let before = vec![ran_("s", None, "1.0.0", None)];
        let observed = [
            container("s", None, &container_name("p", "s"), "1.0.0"),
            container("s", None, "berth-p-s.next-1", "2.0.0"),
        ];
        assert_eq!(ran("p", &before, &observed, &plan(vec![])), before);
    }

    #[test]
    fn a_part_without_a_container_is_remembered_only_while_the_plan_wants_it() {
        let before = vec![ran_("s", None, "1.1.0", Some("1.0.0"))];
        assert_eq!(
            ran("p", &before, &[], &plan(vec![keep("s", "1.1.0")])),
            before
        );
        assert!(ran("p", &before, &[], &plan(vec![])).is_empty());
    }

    #[test]
    fn components_are_followed_one_by_one() {
        let before = vec![
            ran_("s", Some("api"), "a1", None),
            ran_("s", Some("db"), "d1", None),
        ];
        let observed = [
            container("s", Some("api"), "berth-p-s-api", "a2"),
            container("s", Some("db"), "berth-p-s-db", "d1"),
        ];
        assert_eq!(
            ran("p", &before, &observed, &plan(vec![])),
            vec![
                ran_("s", Some("api"), "a2", Some("a1")),
                ran_("s", Some("db"), "d1", None),
            ]
        );
    }
}
