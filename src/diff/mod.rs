//! What each partner's host will change between two revisions of the manifest repo: the
//! review a pull request needs. [`revision`] writes a revision out of git, [`state`]
//! resolves it per partner, and [`diff`] compares two resolved states, purely.

pub mod revision;
mod state;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::container::ContainerSpec;

pub use state::state;

/// One script as a partner would run it at a revision.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptState {
    /// `version@digest` as resolved, or why it could not be.
    pub resolved: Result<(String, String), String>,
    pub spec: ContainerSpec,
}

/// One partner at a revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PartnerState {
    /// Time zone, windows and blackouts, as a person reads them.
    pub schedule: String,
    /// The idle gate, as a person reads it; empty when there is none.
    pub idle: String,
    pub scripts: BTreeMap<String, ScriptState>,
}

/// Every partner at a revision.
pub type State = BTreeMap<String, PartnerState>;

/// One change a partner's host will see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    PartnerAdded,
    PartnerRemoved,
    ScriptAdded {
        script: String,
        to: String,
    },
    ScriptRemoved {
        script: String,
        from: String,
    },
    Version {
        script: String,
        from: String,
        to: String,
    },
    Digest {
        script: String,
        version: String,
        from: String,
        to: String,
    },
    Spec {
        script: String,
        fields: Vec<String>,
    },
    Unresolved {
        script: String,
        detail: String,
    },
    Schedule {
        from: String,
        to: String,
    },
    Idle {
        from: String,
        to: String,
    },
}

impl Change {
    /// One line for a person.
    pub fn describe(&self) -> String {
        match self {
            Change::PartnerAdded => "new partner".into(),
            Change::PartnerRemoved => "partner removed: berth stops managing this host".into(),
            Change::ScriptAdded { script, to } => format!("+ {script} {to}"),
            Change::ScriptRemoved { script, from } => format!("- {script} {from}"),
            Change::Version { script, from, to } => format!("~ {script} {from} -> {to}"),
            Change::Digest {
                script,
                version,
                from,
                to,
            } => format!(
                "~ {script} {version}: image rebuilt ({} -> {})",
                crate::image::short(from),
                crate::image::short(to)
            ),
            Change::Spec { script, fields } => {
                format!(
                    "~ {script}: container {} changed (replaced)",
                    fields.join(", ")
                )
            }
            Change::Unresolved { script, detail } => {
                format!("? {script}: cannot resolve: {detail}")
            }
            Change::Schedule { from, to } => format!("~ windows: {from} -> {to}"),
            Change::Idle { from, to } => format!("~ idle gate: {from} -> {to}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerDiff {
    pub partner: String,
    pub changes: Vec<Change>,
}

fn shown(r: &Result<(String, String), String>) -> String {
    match r {
        Ok((v, _)) => v.clone(),
        Err(_) => "?".into(),
    }
}

/// The names of the spec fields that differ.
fn spec_fields(a: &ContainerSpec, b: &ContainerSpec) -> Vec<String> {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (
        serde_json::to_value(a).expect("spec serializes"),
        serde_json::to_value(b).expect("spec serializes"),
    ) else {
        return Vec::new();
    };
    // A field left out when empty (the secrets) may be on one side only.
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn script_changes(
    name: &str,
    base: Option<&ScriptState>,
    head: Option<&ScriptState>,
) -> Vec<Change> {
    let script = name.to_owned();
    let mut out = Vec::new();
    match (base, head) {
        (None, Some(h)) => out.push(Change::ScriptAdded {
            script: script.clone(),
            to: shown(&h.resolved),
        }),
        (Some(b), None) => out.push(Change::ScriptRemoved {
            script: script.clone(),
            from: shown(&b.resolved),
        }),
        (Some(b), Some(h)) => {
            if let (Ok((bv, bd)), Ok((hv, hd))) = (&b.resolved, &h.resolved) {
                if bv != hv {
                    out.push(Change::Version {
                        script: script.clone(),
                        from: bv.clone(),
                        to: hv.clone(),
                    });
                } else if bd != hd {
                    out.push(Change::Digest {
                        script: script.clone(),
                        version: hv.clone(),
                        from: bd.clone(),
                        to: hd.clone(),
                    });
                }
            }
            let fields = spec_fields(&b.spec, &h.spec);
            if !fields.is_empty() {
                out.push(Change::Spec {
                    script: script.clone(),
                    fields,
                });
            }
        }
        (None, None) => {}
    }
    if let Some(ScriptState {
        resolved: Err(detail),
        ..
    }) = head
    {
        out.push(Change::Unresolved {
            script,
            detail: detail.clone(),
        });
    }
    out
}

/// Per partner, what changes from `base` to `head`; partners without changes are left out.
pub fn diff(base: &State, head: &State) -> Vec<PartnerDiff> {
    let names: BTreeSet<&String> = base.keys().chain(head.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let mut changes = Vec::new();
        let empty = PartnerState::default();
        let (b, h) = (base.get(name), head.get(name));
        match (b, h) {
            (None, Some(_)) => changes.push(Change::PartnerAdded),
            (Some(_), None) => changes.push(Change::PartnerRemoved),
            _ => {}
        }
        let (b, h) = (b.unwrap_or(&empty), h.unwrap_or(&empty));
        if base.contains_key(name) && head.contains_key(name) {
            if b.schedule != h.schedule {
                changes.push(Change::Schedule {
                    from: b.schedule.clone(),
                    to: h.schedule.clone(),
                });
            }
            if b.idle != h.idle {
                changes.push(Change::Idle {
                    from: if b.idle.is_empty() {
                        "none".into()
                    } else {
                        b.idle.clone()
                    },
                    to: if h.idle.is_empty() {
                        "none".into()
                    } else {
                        h.idle.clone()
                    },
                });
            }
        }
        let scripts: BTreeSet<&String> = b.scripts.keys().chain(h.scripts.keys()).collect();
        for s in scripts {
            changes.extend(script_changes(s, b.scripts.get(s), h.scripts.get(s)));
        }
        if !changes.is_empty() {
            out.push(PartnerDiff {
                partner: name.clone(),
                changes,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(memory: Option<i64>) -> ContainerSpec {
        ContainerSpec {
            memory,
            ..ContainerSpec::minimal()
        }
    }

    fn script(v: &str, d: &str, memory: Option<i64>) -> ScriptState {
        ScriptState {
            resolved: Ok((v.into(), d.into())),
            spec: spec(memory),
        }
    }

    fn partner(scripts: Vec<(&str, ScriptState)>) -> PartnerState {
        PartnerState {
            schedule: "UTC sat 01:00-05:00".into(),
            idle: String::new(),
            scripts: scripts
                .into_iter()
                .map(|(n, s)| (n.to_owned(), s))
                .collect(),
        }
    }

    #[test]
    fn names_every_kind_of_change() {
        let base: State = [
            (
                "p".to_owned(),
                partner(vec![
                    ("a", script("1.0.0", "d1", None)),
                    ("b", script("1.0.0", "d1", None)),
                    ("gone", script("2.0.0", "d", None)),
                ]),
            ),
            ("old".to_owned(), partner(vec![])),
        ]
        .into();
        let mut p = partner(vec![
            ("a", script("1.1.0", "d2", None)),
            ("b", script("1.0.0", "d9", Some(1 << 30))),
            ("new", script("3.0.0", "d", None)),
        ]);
        p.schedule = "UTC sun 01:00-05:00".into();
        p.idle = "http://x/status /state == idle".into();
        let head: State = [("p".to_owned(), p), ("fresh".to_owned(), partner(vec![]))].into();
        let lines: Vec<(String, Vec<String>)> = diff(&base, &head)
            .into_iter()
            .map(|d| (d.partner, d.changes.iter().map(Change::describe).collect()))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("fresh".to_owned(), vec!["new partner".to_owned()]),
                (
                    "old".to_owned(),
                    vec!["partner removed: berth stops managing this host".to_owned()]
                ),
                (
                    "p".to_owned(),
                    vec![
                        "~ windows: UTC sat 01:00-05:00 -> UTC sun 01:00-05:00".to_owned(),
                        "~ idle gate: none -> http://x/status /state == idle".to_owned(),
                        "~ a 1.0.0 -> 1.1.0".to_owned(),
                        "~ b 1.0.0: image rebuilt (d1 -> d9)".to_owned(),
                        "~ b: container memory changed (replaced)".to_owned(),
                        "- gone 2.0.0".to_owned(),
                        "+ new 3.0.0".to_owned(),
                    ]
                ),
            ]
        );
        assert!(diff(&head, &head).is_empty());
    }
}
