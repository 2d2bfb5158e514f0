//! The state directory: a lock so two runs never overlap, the journal that lets a run
//! interrupted at any moment be finished or rolled back, the digests that failed health, and
//! the named volumes each partner's scripts declared at its last pass.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container::Volume;
use crate::plan::Held;
use crate::prune::{PartnerImages, Pulled};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use state directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another berth run holds {0}")]
    Locked(PathBuf),
    #[error("state file {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// How far an update got; each phase is on disk before the step it guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// A new container is being created under its temporary name.
    Creating,
    /// Names and running states are being swapped; roll back if interrupted.
    CutOver,
    /// Every new container passed health; only removing the old ones remains.
    Verified,
}

/// One update in flight: a single-container script's replace, or a multi-component
/// script's whole update, which is finished or rolled back as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "OnDisk")]
pub struct Record {
    pub partner: String,
    pub script: String,
    pub phase: Phase,
    /// Each container the update replaces or adds, in the order it does so.
    pub parts: Vec<PartRecord>,
}

/// One container of an update in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The managed name the old and the new container take turns under.
    pub name: String,
    /// The new container's temporary name until it takes `name`.
    pub next_name: String,
    /// `None` for a component the update adds.
    pub old_id: Option<String>,
    pub new_id: Option<String>,
    /// A one-shot: neither the old nor the new one is started again.
    #[serde(default)]
    pub job: bool,
    /// Updated in place (a swarm service: `old_id` and `new_id` are the same service): the
    /// digest and spec hash a rollback puts it back to (`container::fingerprint`); nothing
    /// is removed when the update is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts_to: Option<String>,
}

/// A record as written by this berth, or by one that replaced one container per record
/// (read so that an upgrade mid-replace still finishes or rolls it back).
#[derive(Deserialize)]
#[serde(untagged)]
enum OnDisk {
    Unit {
        partner: String,
        script: String,
        phase: Phase,
        parts: Vec<PartRecord>,
    },
    Single {
        partner: String,
        script: String,
        name: String,
        next_name: String,
        old_id: String,
        new_id: Option<String>,
        phase: Phase,
    },
}

impl From<OnDisk> for Record {
    fn from(d: OnDisk) -> Record {
        match d {
            OnDisk::Unit {
                partner,
                script,
                phase,
                parts,
            } => Record {
                partner,
                script,
                phase,
                parts,
            },
            OnDisk::Single {
                partner,
                script,
                name,
                next_name,
                old_id,
                new_id,
                phase,
            } => Record {
                partner,
                script,
                phase,
                parts: vec![PartRecord {
                    name,
                    next_name,
                    old_id: Some(old_id),
                    new_id,
                    job: false,
                    reverts_to: None,
                }],
            },
        }
    }
}

/// Where a namespace keeps its journal, held digests, images.json, volumes.json and lock:
/// `<state_dir>/namespaces/<ns>`, so namespaces sharing a state dir never share state; no
/// namespace keeps the state dir itself, as before namespaces.
pub fn namespaced(state_dir: &Path, namespace: Option<&str>) -> PathBuf {
    match namespace {
        Some(ns) => state_dir.join("namespaces").join(ns),
        None => state_dir.to_owned(),
    }
}

/// An open, locked state directory.
pub struct StateDir {
    root: PathBuf,
    _lock: File,
}

/// How long a lock may stay held before [`StateDir::open`] gives up. A lock is also held,
/// for a moment, by any child a process forks (until the child execs), and by a run
/// that is ending: neither is another berth run to refuse.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl StateDir {
    /// Creates the directory if needed and takes its lock, failing if it stays held for
    /// [`LOCK_GRACE`].
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let io = |source| StateError::Io {
            path: root.to_owned(),
            source,
        };
        fs::create_dir_all(root.join("journal")).map_err(io)?;
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        let end = std::time::Instant::now() + LOCK_GRACE;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < end => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => return Err(StateError::Locked(lock_path)),
                Err(fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        Ok(StateDir {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    fn journal_path(&self, partner: &str, script: &str) -> PathBuf {
        self.root
            .join("journal")
            .join(format!("{partner}.{script}.json"))
    }

    /// Writes a journal record durably: temp file, fsync, rename, fsync of the directory.
    pub fn write_journal(&self, record: &Record) -> Result<(), StateError> {
        let path = self.journal_path(&record.partner, &record.script);
        write_durably(
            &path,
            &serde_json::to_vec_pretty(record).expect("record serializes"),
        )
    }

    pub fn clear_journal(&self, partner: &str, script: &str) -> Result<(), StateError> {
        let path = self.journal_path(partner, script);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StateError::Io { path, source: e })
            }
            _ => sync_dir(&self.root.join("journal")),
        }
    }

    /// The replaces of a partner that a previous run left unfinished.
    pub fn journals(&self, partner: &str) -> Result<Vec<Record>, StateError> {
        read_journals(&self.root, partner)
    }

    fn held_path(&self) -> PathBuf {
        held_path(&self.root)
    }

    /// Digests that failed their health check.
    pub fn held(&self) -> Result<Vec<Held>, StateError> {
        read_held(&self.root)
    }

    /// Remembers a digest that failed health, replacing older entries for the same script.
    pub fn hold(&self, held: Held) -> Result<(), StateError> {
        let mut all = self.held()?;
        all.retain(|h| !(h.partner == held.partner && h.script == held.script));
        all.push(held);
        all.sort();
        write_durably(
            &self.held_path(),
            &serde_json::to_vec_pretty(&all).expect("held serializes"),
        )
    }

    /// What the last pass of a partner recorded as declared.
    pub fn declared_volumes(&self, partner: &str) -> Result<Option<Vec<Volume>>, StateError> {
        Ok(read_volumes(&self.root)?.partners.remove(partner))
    }

    /// Records the volumes a partner's scripts declare, durably, replacing what its last
    /// pass recorded and leaving the other partners' alone. Returns whether it changed:
    /// the file is only written when it did.
    pub fn record_volumes(&self, partner: &str, volumes: Vec<Volume>) -> Result<bool, StateError> {
        let mut all = read_volumes(&self.root)?;
        if all.of(partner) == Some(volumes.as_slice()) {
            return Ok(false);
        }
        all.partners.insert(partner.to_owned(), volumes);
        write_durably(
            &volumes_path(&self.root),
            &serde_json::to_vec_pretty(&all).expect("volumes serialize"),
        )?;
        Ok(true)
    }

    /// Every partner's image record.
    pub fn images(&self) -> Result<Images, StateError> {
        read_images(&self.root)
    }

    /// Records an image berth just pulled for a partner (once per reference), durably, so
    /// that it is the only kind of image berth ever removes.
    pub fn record_pull(&self, partner: &str, pulled: Pulled) -> Result<(), StateError> {
        let mut all = self.images()?;
        let mine = all.partners.entry(partner.to_owned()).or_default();
        mine.pulled.retain(|p| p.reference != pulled.reference);
        mine.pulled.push(pulled);
        self.write_images(&all)
    }

    /// Replaces a partner's image record; the file is only written when it changed.
    pub fn record_images(&self, partner: &str, images: PartnerImages) -> Result<(), StateError> {
        let mut all = self.images()?;
        if all.partners.get(partner) == Some(&images) {
            return Ok(());
        }
        all.partners.insert(partner.to_owned(), images);
        self.write_images(&all)
    }

    fn write_images(&self, all: &Images) -> Result<(), StateError> {
        write_durably(
            &images_path(&self.root),
            &serde_json::to_vec_pretty(all).expect("images serialize"),
        )
    }
}

/// `images.json`: per partner, the images berth pulled (`registry/repository@digest` and
/// the engine's id) and what each of its containers runs and ran before. Written by the
/// pull and by the pass ([`StateDir::record_pull`], [`StateDir::record_images`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Images {
    pub partners: BTreeMap<String, PartnerImages>,
}

fn images_path(root: &Path) -> PathBuf {
    root.join("images.json")
}

fn read_images(root: &Path) -> Result<Images, StateError> {
    let path = images_path(root);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Images::default()),
        Err(source) => Err(StateError::Io { path, source }),
    }
}

fn held_path(root: &Path) -> PathBuf {
    root.join("failed-health.json")
}

fn volumes_path(root: &Path) -> PathBuf {
    root.join("volumes.json")
}

/// `volumes.json`: the named volumes each partner's desired state declared at its last
/// pass on this host, so that `berth volumes` tells a declared volume from an orphaned one
/// without the manifest repo. Written by the pass ([`StateDir::record_volumes`]), read
/// without the lock ([`read_volumes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredVolumes {
    /// Per partner that has had a pass here, every volume its scripts declare, sorted. A
    /// partner with an empty list declares none; a partner missing has never been recorded.
    pub partners: BTreeMap<String, Vec<Volume>>,
}

impl DeclaredVolumes {
    /// What the last pass of a partner recorded, if one did.
    pub fn of(&self, partner: &str) -> Option<&[Volume]> {
        self.partners.get(partner).map(Vec::as_slice)
    }
}

/// The declared volumes, read without taking the lock (for `berth volumes`, which changes
/// nothing); none recorded when the file does not exist yet.
pub fn read_volumes(root: &Path) -> Result<DeclaredVolumes, StateError> {
    let path = volumes_path(root);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeclaredVolumes::default()),
        Err(source) => Err(StateError::Io { path, source }),
    }
}

/// A partner's journal records, read without taking the lock: for `berth plan`, which
/// changes nothing, and must not mistake another run's replace in flight for leftovers.
pub fn read_journals(root: &Path, partner: &str) -> Result<Vec<Record>, StateError> {
    let dir = root.join("journal");
    let io = |source| StateError::Io {
        path: dir.clone(),
        source,
    };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(io)?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes = fs::read(&path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if record.partner == partner {
            out.push(record);
        }
    }
    out.sort_by(|a, b| a.script.cmp(&b.script));
    Ok(out)
}

/// The held digests, read without taking the lock (for `berth plan`, which changes nothing).
pub fn read_held(root: &Path) -> Result<Vec<Held>, StateError> {
    let path = held_path(root);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(StateError::Io { path, source }),
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    crate::durable::write(path, bytes).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    crate::durable::sync_dir(dir).map_err(|source| StateError::Io {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_journal_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(matches!(
            StateDir::open(dir.path()),
            Err(StateError::Locked(_))
        ));
        let rec = Record {
            partner: "p".into(),
            script: "s".into(),
            phase: Phase::Creating,
            parts: vec![PartRecord {
                name: "berth-p-s".into(),
                next_name: "berth-p-s.next-1".into(),
                old_id: Some("old".into()),
                new_id: None,
                job: false,
                reverts_to: None,
            }],
        };
        state.write_journal(&rec).unwrap();
        assert_eq!(state.journals("p").unwrap(), vec![rec]);
        assert!(state.journals("q").unwrap().is_empty());
        state.clear_journal("p", "s").unwrap();
        assert!(state.journals("p").unwrap().is_empty());
        drop(state);
        assert!(StateDir::open(dir.path()).is_ok(), "lock released on drop");
    }

    #[test]
    fn a_single_replace_journaled_by_an_earlier_berth_is_read_as_a_unit_of_one() {
        let old = r#"{"partner":"p","script":"s","name":"berth-p-s","next_name":"berth-p-s.next-1","old_id":"o1","new_id":"n1","phase":"cut-over"}"#;
        let rec: Record = serde_json::from_str(old).unwrap();
        assert_eq!(rec.phase, Phase::CutOver);
        assert_eq!(
            rec.parts,
            vec![PartRecord {
                name: "berth-p-s".into(),
                next_name: "berth-p-s.next-1".into(),
                old_id: Some("o1".into()),
                new_id: Some("n1".into()),
                job: false,
                reverts_to: None,
            }]
        );
    }

    #[test]
    fn declared_volumes_are_kept_per_partner_and_written_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(
            read_volumes(dir.path()).unwrap(),
            DeclaredVolumes::default()
        );
        assert_eq!(state.declared_volumes("p").unwrap(), None);
        let v = Volume::new("p", "s", "data");
        assert!(state.record_volumes("p", vec![v.clone()]).unwrap());
        assert!(!state.record_volumes("p", vec![v.clone()]).unwrap());
        assert!(state.record_volumes("q", vec![]).unwrap());
        let all = read_volumes(dir.path()).unwrap();
        assert_eq!(all.of("p"), Some(&[v][..]));
        assert_eq!(all.of("q"), Some(&[][..]));
        assert_eq!(all.of("r"), None);
    }

    #[test]
    fn pulled_images_are_recorded_once_per_reference_and_per_partner() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let pulled = |r: &str| Pulled {
            reference: r.into(),
            digest: "sha256:d".into(),
            id: "sha256:i".into(),
            script: "s".into(),
            component: None,
        };
        state.record_pull("p", pulled("r/a@sha256:1")).unwrap();
        state.record_pull("p", pulled("r/a@sha256:2")).unwrap();
        state.record_pull("p", pulled("r/a@sha256:1")).unwrap();
        state.record_pull("q", pulled("r/a@sha256:3")).unwrap();
        let all = state.images().unwrap();
        let refs = |p: &str| -> Vec<String> {
            all.partners[p]
                .pulled
                .iter()
                .map(|x| x.reference.clone())
                .collect()
        };
        assert_eq!(refs("p"), ["r/a@sha256:2", "r/a@sha256:1"]);
        assert_eq!(refs("q"), ["r/a@sha256:3"]);
        state.record_images("p", PartnerImages::default()).unwrap();
        let all = state.images().unwrap();
        assert!(all.partners["p"].pulled.is_empty());
        assert_eq!(
            all.partners["q"].pulled.len(),
            1,
            "the other partner's record stays"
        );
    }

    #[test]
    fn held_keeps_the_latest_per_script() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let h = |d: &str| Held {
            partner: "p".into(),
            script: "s".into(),
            digest: d.into(),
            spec_hash: "h".into(),
        };
        state.hold(h("a")).unwrap();
        state.hold(h("b")).unwrap();
        assert_eq!(state.held().unwrap(), vec![h("b")]);
    }
}
