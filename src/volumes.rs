//! The named volumes berth created for scripts, which it never deletes: what a pass records
//! as declared ([`declared`]), and `berth volumes`, which sets that record beside the
//! engine's volumes and marks the ones no script declares any more as orphaned ([`rows`]).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::container::Volume;
use crate::engine::{Engine, EngineError, FoundVolume};
use crate::resolve::Desired;
use crate::state::{DeclaredVolumes, StateError};

/// The volumes a partner's desired state declares, for the pass to record: each one a
/// component of a resolved script mounts.
///
/// A script that could not be resolved or was refused before its registry was asked has no
/// containers in `desired`, yet its manifest may still declare its volumes: resolution
/// failing (a registry down, an env file unreadable, a secret that will not open) says
/// nothing about them. For those scripts the `previous` record is kept as it was, so their
/// volumes do not flip to orphaned because of one failed pass. Only a script that resolved
/// without a volume, or is no longer opted in at all, leaves its volumes undeclared.
pub fn declared(desired: &Desired, previous: Option<&[Volume]>) -> Vec<Volume> {
    let kept: BTreeSet<&str> = desired
        .unresolved
        .keys()
        .chain(desired.refused.keys())
        .map(String::as_str)
        .collect();
    let resolved = desired
        .containers
        .iter()
        .filter_map(|d| d.component.as_ref())
        .flat_map(|c| c.volumes.iter().cloned());
    let carried = previous
        .into_iter()
        .flatten()
        .filter(|v| v.partner == desired.partner && kept.contains(v.script.as_str()))
        .cloned();
    resolved
        .chain(carried)
        .collect::<BTreeSet<Volume>>()
        .into_iter()
        .collect()
}

/// Whether a volume on the engine is still declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    /// A script of its partner declared it at the partner's last pass.
    Declared,
    /// Its partner's last pass declared no such volume: its script, its component or the
    /// opt-in was removed. berth keeps it; only a person deletes it.
    Orphaned,
    /// No pass of its partner was recorded in this state dir, so berth cannot tell.
    Unknown,
}

impl VolumeState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Declared => "declared",
            VolumeState::Orphaned => "orphaned",
            VolumeState::Unknown => "unknown",
        }
    }
}

/// One row of `berth volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeRow {
    pub name: String,
    pub partner: String,
    pub script: String,
    /// The name the script declares it by.
    pub volume: String,
    pub state: VolumeState,
}

/// Each volume the engine holds, with whether its partner's last recorded pass declared
/// it, sorted by partner then name. Pure: the record and the engine's list in, rows out.
pub fn rows(record: &DeclaredVolumes, found: &[FoundVolume]) -> Vec<VolumeRow> {
    let mut rows: Vec<VolumeRow> = found
        .iter()
        .map(|f| {
            let state = match record.of(&f.partner) {
                None => VolumeState::Unknown,
                Some(declared) => {
                    if declared
                        .iter()
                        .any(|v| v.name == f.name && v.script == f.script && v.volume == f.volume)
                    {
                        VolumeState::Declared
                    } else {
                        VolumeState::Orphaned
                    }
                }
            };
            VolumeRow {
                name: f.name.clone(),
                partner: f.partner.clone(),
                script: f.script.clone(),
                volume: f.volume.clone(),
                state,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.partner, &a.name).cmp(&(&b.partner, &b.name)));
    rows
}

#[derive(Debug, thiserror::Error)]
pub enum VolumesError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// `berth volumes`: the engine's managed volumes (of one partner, or all) against the
/// state dir's record, read without its lock so a pass in progress is not disturbed.
pub async fn list<E: Engine>(
    engine: &E,
    state_dir: &Path,
    partner: Option<&str>,
) -> Result<Vec<VolumeRow>, VolumesError> {
    let record = crate::state::read_volumes(state_dir)?;
    let found = engine.list_volumes(partner).await?;
    Ok(rows(&record, &found))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resolve::ComponentOf;

    fn found(partner: &str, script: &str, volume: &str) -> FoundVolume {
        let v = Volume::new(partner, script, volume);
        FoundVolume {
            name: v.name,
            partner: v.partner,
            script: v.script,
            volume: v.volume,
        }
    }

    fn record(partners: &[(&str, Vec<Volume>)]) -> DeclaredVolumes {
        DeclaredVolumes {
            partners: partners
                .iter()
                .map(|(p, v)| ((*p).to_owned(), v.clone()))
                .collect(),
        }
    }

    fn states(rows: &[VolumeRow]) -> Vec<(&str, VolumeState)> {
        rows.iter().map(|r| (r.name.as_str(), r.state)).collect()
    }

    #[test]
    fn a_volume_no_script_of_its_partner_declares_any_more_is_orphaned() {
        let rec = record(&[
            ("acme", vec![Volume::new("acme", "svc", "pgdata")]),
            ("zeta", vec![]),
        ]);
        let engine = [
            found("acme", "svc", "pgdata"),
            found("acme", "svc", "cache"),
            found("acme", "old", "pgdata"),
            found("zeta", "svc", "data"),
            found("nova", "svc", "data"),
        ];
        assert_eq!(
            states(&rows(&rec, &engine)),
            vec![
                ("berth-acme-old-pgdata", VolumeState::Orphaned),
                ("berth-acme-svc-cache", VolumeState::Orphaned),
                ("berth-acme-svc-pgdata", VolumeState::Declared),
                ("berth-nova-svc-data", VolumeState::Unknown),
                ("berth-zeta-svc-data", VolumeState::Orphaned),
            ]
        );
    }

    #[test]
    fn a_volume_declared_but_not_created_yet_is_not_listed() {
        let rec = record(&[("acme", vec![Volume::new("acme", "svc", "pgdata")])]);
        assert!(rows(&rec, &[]).is_empty());
    }

    #[test]
    fn a_volume_whose_labels_disagree_with_the_record_is_orphaned() {
        let rec = record(&[("acme", vec![Volume::new("acme", "svc", "pgdata")])]);
        let mut odd = found("acme", "svc", "pgdata");
        odd.volume = "other".into();
        assert_eq!(rows(&rec, &[odd])[0].state, VolumeState::Orphaned);
    }

    fn desired(with: &[(&str, &[&str])], unresolved: &[&str], refused: &[&str]) -> Desired {
        let spec = crate::container::ContainerSpec::minimal();
        let base = crate::resolve::DesiredContainer {
            script: String::new(),
            component: None,
            version: "1.0.0".into(),
            digest: "sha256:d".into(),
            image: "sha256:d".into(),
            pull_from: None,
            spec_hash: spec.hash(),
            spec,
            health: crate::resolve::HealthCheck {
                http: None,
                timeout: std::time::Duration::from_secs(5),
            },
            binds: vec![],
            env_files: vec![],
            origin: Default::default(),
        };
        Desired {
            partner: "acme".into(),
            revision: "r".into(),
            containers: with
                .iter()
                .map(|(script, vols)| {
                    let mut d = base.clone();
                    d.script = (*script).to_owned();
                    d.component = Some(ComponentOf {
                        name: "api".into(),
                        stateful: false,
                        job: None,
                        depends_on: BTreeMap::new(),
                        volumes: vols
                            .iter()
                            .map(|v| Volume::new("acme", script, v))
                            .collect(),
                        network: None,
                    });
                    d
                })
                .collect(),
            unresolved: unresolved
                .iter()
                .map(|s| ((*s).to_owned(), "registry down".to_owned()))
                .collect(),
            refused: refused.iter().map(|s| ((*s).to_owned(), vec![])).collect(),
        }
    }

    #[test]
    fn a_pass_records_what_resolved_and_keeps_the_record_of_scripts_it_could_not_resolve() {
        let previous = vec![
            Volume::new("acme", "svc", "old"),
            Volume::new("acme", "down", "data"),
            Volume::new("acme", "barred", "data"),
            Volume::new("acme", "gone", "data"),
        ];
        let d = desired(
            &[("svc", &["pgdata", "cache"]), ("svc", &["pgdata"])],
            &["down", "new"],
            &["barred"],
        );
        assert_eq!(
            declared(&d, Some(&previous)),
            vec![
                Volume::new("acme", "barred", "data"),
                Volume::new("acme", "down", "data"),
                Volume::new("acme", "svc", "cache"),
                Volume::new("acme", "svc", "pgdata"),
            ],
            "svc resolved without `old`; `gone` is no longer opted in; `new` had no record"
        );
        assert_eq!(
            declared(&d, None),
            vec![
                Volume::new("acme", "svc", "cache"),
                Volume::new("acme", "svc", "pgdata"),
            ]
        );
    }
}
