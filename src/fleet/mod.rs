//! `berth fleet`: the federation as the fleet team sees it (docs/fleet.md). Every partner of
//! the manifests, what it should run and what its host last reported in the status repo
//! (`partners/<partner>.json`, a [`crate::report::Record`]), whether that record was signed
//! by the partner's `report_key`, how old it is, and its update windows over the next
//! [`DAYS`] days with the changes waiting for them.

pub mod html;
pub mod render;
pub mod repo;
pub mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::agenda::{Period, View};
use crate::exit::Exit;
use crate::manifest::{self, Doc, Partner, Repo};
use crate::report::Record;
use crate::source::verify::{self, AllowedSigners, VerifyError};
pub use repo::RepoRef;
pub use status::{Expected, Mark, Reported, Verdict, Wanted};

/// How far ahead the timeline reaches.
pub const DAYS: u32 = 14;

/// The JSON output's version; it changes when a field's meaning does.
pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot open the git repo {location}")]
    Open {
        location: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot fetch {url}")]
    Fetch {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("{what} not found in {location}")]
    NoBranch {
        location: String,
        what: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read commit {commit}")]
    Read {
        commit: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot write the manifests to {path}")]
    Export {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the credentials for {url}")]
    Credentials {
        url: String,
        #[source]
        source: Box<crate::source::SourceError>,
    },
    #[error("cannot make a temporary directory")]
    Temp {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the manifests")]
    Manifests(#[from] manifest::LoadError),
    #[error("the manifests are invalid")]
    Invalid {
        root: PathBuf,
        diagnostics: crate::diag::Diagnostics,
    },
}

/// Whether a record's commit was signed by its partner's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mark", rename_all = "kebab-case")]
pub enum Signature {
    /// Signed with the partner's `report_key`.
    Signed { fingerprint: String },
    /// The commit carries no signature, though the partner declares a key.
    Unsigned,
    /// Signed, but not by the partner's key, or not validly; `signer` names the partner
    /// whose key it was, when it was another partner's.
    Bad {
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        signer: Option<String>,
    },
    /// The partner declares no `report_key`: nothing to verify against.
    NoKey,
    /// There is no record to verify.
    NoRecord,
}

impl Signature {
    pub fn as_str(&self) -> &'static str {
        match self {
            Signature::Signed { .. } => "signed",
            Signature::Unsigned => "unsigned",
            Signature::Bad { .. } => "bad signature",
            Signature::NoKey => "no key declared",
            Signature::NoRecord => "-",
        }
    }
}

/// Where the status repo was read.
#[derive(Debug, Clone, Serialize)]
pub struct StatusSource {
    pub location: String,
    pub branch: String,
    pub commit: String,
}

/// An interval of time, for windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// A partner's windows over the timeline, as its schedule reads them.
#[derive(Debug, Clone, Serialize)]
pub struct Windows {
    pub timezone: String,
    /// The window open at `now`, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_until: Option<Timestamp>,
    /// When a window next opens (beyond the timeline too), if one ever does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_opens: Option<Timestamp>,
    /// The windows within `[now, now + DAYS)`, back-to-back ones joined, blackouts cut out.
    pub spans: Vec<Span>,
    /// Where pending changes are applied: now when a window is open, else the next opening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applies_at: Option<Timestamp>,
}

/// One partner's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub partner: String,
    pub expected: Expected,
    /// The record as read; `None` when missing.
    pub record: Option<Record>,
    /// Why the record cannot be read, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// The status repo commit that last wrote the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub signature: Signature,
    pub verdict: Verdict,
    pub windows: Windows,
}

impl Row {
    /// What `--exit-code` makes of this partner.
    pub fn exit(&self) -> Exit {
        self.verdict
            .marks
            .iter()
            .map(|m| m.exit())
            .fold(Exit::Ok, Exit::worst)
    }
}

/// The whole picture.
#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub schema: u32,
    pub now: Timestamp,
    pub status: StatusSource,
    /// The manifest revision the partners should be at (`None` for a plain directory).
    pub revision: Option<String>,
    pub partners: Vec<Row>,
    /// Records in the status repo for partners the manifests do not have.
    pub strays: Vec<String>,
    /// With `rollout:` in fleet.yaml: per script and digest being rolled out, which wave
    /// it has reached and when each later wave can take it at the earliest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollout: Vec<Rollout>,
}

/// Where one digest of one script (or component) stands across the waves.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub script: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    pub version: String,
    pub digest: String,
    pub waves: Vec<crate::rollout::Reach>,
}

/// The digests the records say partners want, per unit, and where each stands
/// ([`reaches`]).
fn rollouts(repo: &Repo, records: &BTreeMap<String, Record>, now: Timestamp) -> Vec<Rollout> {
    let reports = records
        .iter()
        .map(|(p, r)| (p.clone(), r.rollout()))
        .collect();
    let wanted = records
        .values()
        .flat_map(|r| &r.scripts)
        .filter_map(|s| {
            let d = s.desired.as_ref()?;
            Some(Digest {
                script: s.script.clone(),
                component: s.component.clone(),
                version: d.version.clone(),
                digest: d.digest.clone(),
            })
        })
        .collect();
    reaches(repo, &reports, wanted, now)
}

/// One digest of one script (or component) some partner is to take.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest {
    pub script: String,
    pub component: Option<String>,
    pub version: String,
    pub digest: String,
}

/// Where each wanted digest stands across the waves of `repo`: reached by a wave, or the
/// earliest each later wave can take it given the bakes and every member's windows
/// (`crate::rollout::estimate`). Empty when the repo has no `rollout:`.
pub fn reaches(
    repo: &Repo,
    reports: &BTreeMap<String, crate::rollout::Report>,
    wanted: std::collections::BTreeSet<Digest>,
    now: Timestamp,
) -> Vec<Rollout> {
    let Some(waves) = crate::rollout::Waves::of(repo) else {
        return Vec::new();
    };
    let fleet = crate::rollout::Fleet::new(waves, repo, Ok(reports.clone()));
    let schedules: BTreeMap<String, crate::window::Schedule> = repo
        .partners
        .iter()
        .map(|(name, p)| {
            let schedule = crate::window::Schedule::from_manifest(
                repo.timezone(&p.doc),
                repo.windows(&p.doc),
                &p.doc.blackouts,
            );
            (name.clone(), schedule)
        })
        .collect();
    wanted
        .into_iter()
        .map(|w| {
            let unit = crate::rollout::Unit {
                script: &w.script,
                component: w.component.as_deref(),
            };
            let waves = crate::rollout::estimate(&fleet, unit, &w.digest, &schedules, now);
            Rollout {
                script: w.script.clone(),
                component: w.component.clone(),
                version: w.version,
                digest: w.digest,
                waves,
            }
        })
        .collect()
}

impl Fleet {
    /// The exit code `--exit-code` asks for: the worst over every partner.
    pub fn exit(&self) -> Exit {
        self.partners
            .iter()
            .map(Row::exit)
            .fold(Exit::Ok, Exit::worst)
    }
}

/// The manifests `berth fleet` compares with: validated, and their revision.
pub struct Manifests {
    pub repo: Repo,
    pub revision: Option<String>,
    /// Keeps exported manifests on disk while they are read.
    _dir: Option<tempfile::TempDir>,
}

/// Reads the manifests: a plain directory in place (no revision), a git repo or URL at its
/// branch (`#branch`, else `HEAD` for a path and the remote's `HEAD` for a URL).
pub fn manifests(spec: &RepoRef) -> Result<Manifests, FleetError> {
    let plain =
        !spec.is_url() && spec.branch.is_none() && git2::Repository::open(&spec.location).is_err();
    let (root, revision, dir) = if plain {
        (PathBuf::from(&spec.location), None, None)
    } else {
        let opened = repo::open(spec, None)?;
        let dir = repo::export(&opened.repo, opened.tip)?;
        (
            dir.path().join("manifests"),
            Some(opened.tip.to_string()),
            Some(dir),
        )
    };
    let (repo, diagnostics) = manifest::validate(&root)?;
    if diagnostics.has_errors() {
        return Err(FleetError::Invalid { root, diagnostics });
    }
    Ok(Manifests {
        repo,
        revision,
        _dir: dir,
    })
}

/// Reads the status repo at its branch (`main` unless `#branch`) and judges every partner
/// of `manifests` at `now`.
pub fn read(status: &RepoRef, manifests: &Manifests, now: Timestamp) -> Result<Fleet, FleetError> {
    let branch = status.branch.clone().unwrap_or_else(|| "main".to_owned());
    let opened = repo::open(status, Some(&branch))?;
    let (repo, tip) = (&opened.repo, opened.tip);
    let files = repo::files_in(repo, tip, "partners").map_err(|source| FleetError::Read {
        commit: tip.to_string(),
        source,
    })?;
    let mut records: BTreeMap<String, Vec<u8>> = files
        .into_iter()
        .filter_map(|(name, bytes)| Some((name.strip_suffix(".json")?.to_owned(), bytes)))
        .collect();
    let keys = report_keys(&manifests.repo.partners);
    let period = Period {
        now,
        until: now
            .checked_add(SignedDuration::from_hours(24 * i64::from(DAYS)))
            .unwrap_or(Timestamp::MAX),
        days: DAYS,
    };
    let mut partners = Vec::new();
    let mut read_records = BTreeMap::new();
    for (name, doc) in &manifests.repo.partners {
        let expected = expected(&manifests.repo, &doc.doc, manifests.revision.as_deref());
        let (reported, unreadable) = match records.remove(name) {
            None => (Reported::Missing, None),
            Some(bytes) => match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) if &r.partner != name => {
                    let why = format!("the record names partner `{}`", r.partner);
                    (Reported::Unreadable(why.clone()), Some(why))
                }
                Ok(r) => (Reported::Record(Box::new(r)), None),
                Err(e) => {
                    let why = format!("not a status record: {e}");
                    (Reported::Unreadable(why.clone()), Some(why))
                }
            },
        };
        let path = Record::path_in_repo(name, None);
        let commit = match reported {
            Reported::Missing => None,
            _ => repo::last_change(repo, tip, &path),
        };
        let signature = match (commit, &doc.doc.report_key) {
            (None, _) => Signature::NoRecord,
            (Some(_), None) => Signature::NoKey,
            (Some(c), Some(key)) => signature(repo, c, name, doc, key, &keys, now),
        };
        let mut verdict = status::judge(&expected, &reported, now);
        // A record whose origin the declared key cannot confirm is not to be trusted.
        if matches!(signature, Signature::Unsigned | Signature::Bad { .. }) {
            verdict.marks.push(Mark::Unverified);
            verdict.marks.sort();
        }
        let record = match reported {
            Reported::Record(r) => Some(*r),
            _ => None,
        };
        if let Some(r) = &record {
            read_records.insert(name.clone(), r.clone());
        }
        partners.push(Row {
            partner: name.clone(),
            expected,
            record,
            unreadable,
            commit: commit.map(|c| c.to_string()),
            signature,
            windows: windows(&manifests.repo, &doc.doc, &period),
            verdict,
        });
    }
    Ok(Fleet {
        schema: SCHEMA,
        now,
        status: StatusSource {
            location: status.location.clone(),
            branch,
            commit: tip.to_string(),
        },
        revision: manifests.revision.clone(),
        partners,
        strays: records.into_keys().collect(),
        rollout: rollouts(&manifests.repo, &read_records, now),
    })
}

/// What a partner of a later rollout wave reads before it plans: the waves of `repo`, and
/// the records of the status repo `rollout.status` names (`partners/*.json`, or a
/// namespace's `namespaces/<ns>/partners/*.json`), fetched within `BERTH_GIT_TIMEOUT` like
/// the manifests, with `auth` when it is the status repo this host reports to. `None` when
/// the repo has no `rollout:` or the partner is in the first wave (nothing to read); an
/// unreadable status repo is an `Err` in the reports, which keeps what runs.
pub fn rollout(
    repo: &Repo,
    partner: &str,
    namespace: Option<&str>,
    auth: Option<(&str, &crate::source::RemoteAuth)>,
) -> Option<crate::rollout::Fleet> {
    let waves = crate::rollout::Waves::of(repo)?;
    if waves.wave_of(partner).is_none_or(|w| w == 0) {
        return None;
    }
    let status = &repo.fleet.as_ref()?.doc.rollout.as_ref()?.status;
    let spec = RepoRef {
        location: status.url.value.clone(),
        branch: Some(
            status
                .branch
                .as_ref()
                .map_or_else(|| "main".to_owned(), |b| b.value.clone()),
        ),
    };
    let auth = auth
        .filter(|(url, _)| *url == spec.location)
        .map(|(_, a)| a);
    let reports = status_records(&spec, namespace, auth).map_err(|e| crate::exit::chain(&e));
    if let Err(why) = &reports {
        tracing::warn!(status = %spec.location, error = %why, "cannot read the rollout's status repo");
    }
    Some(crate::rollout::Fleet::new(waves, repo, reports))
}

/// Every partner's record in the status repo, as the rollout reads it.
pub fn status_records(
    spec: &RepoRef,
    namespace: Option<&str>,
    auth: Option<&crate::source::RemoteAuth>,
) -> Result<BTreeMap<String, crate::rollout::Report>, FleetError> {
    let opened = repo::open_with(spec, None, auth)?;
    let dir = match namespace {
        None => "partners".to_owned(),
        Some(ns) => format!("namespaces/{ns}/partners"),
    };
    let files =
        repo::files_in(&opened.repo, opened.tip, &dir).map_err(|source| FleetError::Read {
            commit: opened.tip.to_string(),
            source,
        })?;
    Ok(files
        .into_iter()
        .filter_map(|(name, bytes)| {
            let partner = name.strip_suffix(".json")?.to_owned();
            let report = match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) if r.partner == partner => r.rollout(),
                Ok(r) => crate::rollout::Report::Unreadable(format!(
                    "the record names partner `{}`",
                    r.partner
                )),
                Err(e) => crate::rollout::Report::Unreadable(format!("not a status record: {e}")),
            };
            Some((partner, report))
        })
        .collect())
}

/// What the manifests ask of a partner.
fn expected(repo: &Repo, partner: &Partner, revision: Option<&str>) -> Expected {
    let scripts = partner
        .scripts
        .iter()
        .map(|opt| {
            let name = &opt.script.value;
            let own = repo
                .scripts
                .get(name)
                .and_then(|s| s.doc.versions.as_ref())
                .map(|v| v.value.clone());
            let versions = match (opt.versions.as_ref().map(|v| v.value.clone()), own) {
                (Some(a), Some(b)) => format!("{a}, {b}"),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => "*".to_owned(),
            };
            let locked = repo
                .lock
                .as_ref()
                .and_then(|l| l.doc.pin(&partner.name, name))
                .map(|p| p.version.clone());
            Wanted {
                script: name.clone(),
                versions,
                locked,
            }
        })
        .collect();
    Expected {
        revision: revision.map(str::to_owned),
        scripts,
    }
}

/// Each partner's declared key, parsed, for naming who signed a record.
fn report_keys(partners: &BTreeMap<String, Doc<Partner>>) -> Vec<(String, String)> {
    partners
        .iter()
        .filter_map(|(name, doc)| {
            let key =
                ssh_key::PublicKey::from_openssh(doc.doc.report_key.as_deref()?.trim()).ok()?;
            Some((
                key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
                name.clone(),
            ))
        })
        .collect()
}

/// Verifies the commit that wrote a partner's record against its `report_key`, with the
/// verifier manifest commits are checked by (an allowed signers file of one line).
fn signature(
    repo: &git2::Repository,
    commit: git2::Oid,
    name: &str,
    doc: &Doc<Partner>,
    key: &str,
    keys: &[(String, String)],
    now: Timestamp,
) -> Signature {
    let signers = match AllowedSigners::parse_in(
        &format!("{name} {}", key.trim()),
        Path::new(&doc.path),
        &jiff::tz::TimeZone::UTC,
    ) {
        Ok(s) => s,
        Err(e) => {
            return Signature::Bad {
                detail: crate::exit::chain(&e),
                signer: None,
            };
        }
    };
    match verify::verify_commit(repo, commit, &signers, now) {
        Ok(v) => Signature::Signed {
            fingerprint: v.fingerprint,
        },
        Err(VerifyError::Unsigned { .. }) => Signature::Unsigned,
        Err(e) => {
            let signer = match &e {
                VerifyError::UnknownKey { fingerprint, .. } => keys
                    .iter()
                    .find(|(f, _)| f == fingerprint)
                    .map(|(_, p)| p.clone()),
                _ => None,
            };
            Signature::Bad {
                detail: match &signer {
                    Some(p) => format!("signed with partner `{p}`'s key"),
                    None => crate::exit::chain(&e),
                },
                signer,
            }
        }
    }
}

/// A partner's windows over the period.
fn windows(repo: &Repo, partner: &Partner, period: &Period) -> Windows {
    let view = View::new(repo, partner, period);
    let open_until = view.current(period.now).map(|s| s.end);
    let next_opens = view
        .next(period.now)
        .map(|s| s.start)
        .or(view.opens_later)
        .or_else(|| open_until.and_then(|end| view.schedule.next_open(end)));
    Windows {
        timezone: view.tz_name.clone(),
        open_until,
        next_opens,
        spans: view
            .stretches
            .iter()
            .map(|s| Span {
                start: s.start,
                end: s.end,
            })
            .collect(),
        applies_at: open_until.map(|_| period.now).or(next_opens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "git {args:?}");
    }

    fn record(partner: &str, version: &str) -> String {
        format!(
            r#"{{"schema":1,"partner":"{partner}","berth":"t","revision":null,"exit":0,"interval_secs":60,
              "at":"2026-03-10T11:00:00Z","window":{{}},
              "scripts":[{{"script":"svc","desired":{{"version":"{version}","digest":"sha256:{version}"}},
              "running":{{"version":"{version}","digest":"sha256:{version}"}},"state":"in-sync","detail":"",
              "since":"2026-03-10T10:00:00Z"}}]}}"#
        )
    }

    #[test]
    fn a_namespace_reads_its_own_records_and_production_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(root.join("partners")).unwrap();
        std::fs::create_dir_all(root.join("namespaces/staging/partners")).unwrap();
        std::fs::write(root.join("partners/lab.json"), record("lab", "1.0.0")).unwrap();
        std::fs::write(
            root.join("namespaces/staging/partners/lab.json"),
            record("lab", "2.0.0"),
        )
        .unwrap();
        std::fs::write(root.join("partners/bad.json"), record("other", "1.0.0")).unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "records"]);
        let spec = RepoRef {
            location: root.display().to_string(),
            branch: Some("main".into()),
        };
        let version = |reports: &BTreeMap<String, crate::rollout::Report>| match &reports["lab"] {
            crate::rollout::Report::Seen { units, .. } => {
                units[0].running.as_ref().unwrap().version.clone()
            }
            other => panic!("{other:?}"),
        };
        let production = status_records(&spec, None, None).unwrap();
        assert_eq!(version(&production), "1.0.0");
        assert_eq!(
            production["bad"],
            crate::rollout::Report::Unreadable("the record names partner `other`".into())
        );
        let staging = status_records(&spec, Some("staging"), None).unwrap();
        assert_eq!(version(&staging), "2.0.0");
        assert_eq!(staging.len(), 1, "{staging:?}");
    }
}
