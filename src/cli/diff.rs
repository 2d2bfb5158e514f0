//! `berth diff [REPO] --base REV [--head REV]`: for each partner, what its host will change
//! between two revisions, for a pull request.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::{exit, host};
use crate::diff::{self, PartnerDiff, PartnerState, ScriptState, State};
use crate::manifest::{self, Repo};
use crate::resolve::{self, CachedTags, EnvFiles, Sources, TagSource};
use crate::runtime::DockerEngine;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum DiffFormat {
    Text,
    Json,
    Markdown,
}

/// A revision's manifests written out to a temp dir, or the working tree as it is.
struct Side {
    root: PathBuf,
    label: String,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, thiserror::Error)]
enum RevisionError {
    #[error("{0} is not inside a git repository")]
    NotGit(PathBuf, #[source] git2::Error),
    #[error("unknown revision {0}")]
    Unknown(String, #[source] git2::Error),
    #[error("the manifests are not at {path} in revision {rev}")]
    NoPath { rev: String, path: String },
    #[error("cannot write revision {0} to a temp dir")]
    Write(String, #[source] std::io::Error),
}

fn side(repo_path: &Path, rev: &str) -> Result<Side, RevisionError> {
    let git = git2::Repository::discover(repo_path)
        .map_err(|e| RevisionError::NotGit(repo_path.to_owned(), e))?;
    let commit = git
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| RevisionError::Unknown(rev.to_owned(), e))?;
    let mut tree = commit
        .tree()
        .map_err(|e| RevisionError::Unknown(rev.to_owned(), e))?;
    let workdir = git.workdir().and_then(|w| w.canonicalize().ok());
    let here = repo_path.canonicalize().ok();
    if let (Some(w), Some(h)) = (workdir, here)
        && let Ok(rel) = h.strip_prefix(&w)
        && !rel.as_os_str().is_empty()
    {
        let missing = || RevisionError::NoPath {
            rev: rev.to_owned(),
            path: rel.display().to_string(),
        };
        tree = tree
            .get_path(rel)
            .and_then(|e| e.to_object(&git))
            .and_then(|o| o.peel_to_tree())
            .map_err(|_| missing())?;
    }
    let dir = tempfile::tempdir().map_err(|e| RevisionError::Write(rev.to_owned(), e))?;
    crate::source::write_tree(&git, &tree, dir.path())
        .map_err(|e| RevisionError::Write(rev.to_owned(), e))?;
    let id = commit.id().to_string();
    Ok(Side {
        root: dir.path().to_owned(),
        label: format!("{rev} ({})", &id[..12]),
        _dir: Some(dir),
    })
}

/// Time zone, windows and blackouts in one line.
fn schedule(repo: &Repo, partner: &manifest::Partner) -> String {
    let mut s = repo.timezone(partner).to_owned();
    let windows = repo.windows(partner);
    if windows.is_empty() {
        s.push_str(": no windows");
    }
    for w in windows {
        let days: Vec<&str> = w.days.iter().map(|d| d.value.as_str()).collect();
        let _ = write!(s, "; {} {}-{}", days.join(","), w.start.value, w.end.value);
    }
    for b in &partner.blackouts {
        let _ = write!(s, "; blackout {}..{}", b.from.value, b.to.value);
    }
    s
}

fn idle(partner: &manifest::Partner) -> String {
    partner.idle.as_ref().map_or(String::new(), |i| {
        format!("{} {} == {}", i.url.value, i.pointer.value, i.equals.value)
    })
}

async fn state<S: TagSource>(repo: &Repo, tags: &CachedTags<'_, S>) -> State {
    let mut out = State::new();
    for (name, p) in &repo.partners {
        let p = &p.doc;
        let mut scripts = std::collections::BTreeMap::new();
        for opt in &p.scripts {
            let Some(script) = repo.scripts.get(opt.script.as_str()) else {
                continue;
            };
            let script = &script.doc;
            let resolved = match &repo.lock {
                Some(lock) => resolve::resolve_locked(&lock.doc, repo, name, opt, script),
                None => resolve::resolve_live(repo, opt, script, tags).await,
            };
            let spec = resolve::container_spec(script, opt, EnvFiles::PathsOnly)
                .expect("reading no env file cannot fail");
            scripts.insert(
                opt.script.value.clone(),
                ScriptState {
                    resolved: resolved.map(|r| (r.version, r.digest)),
                    spec,
                },
            );
        }
        out.insert(
            name.clone(),
            PartnerState {
                schedule: schedule(repo, p),
                idle: idle(p),
                scripts,
            },
        );
    }
    out
}

fn render(diffs: &[PartnerDiff], base: &str, head: &str, format: DiffFormat) -> String {
    let mut out = String::new();
    match format {
        DiffFormat::Text => {
            let _ = writeln!(out, "berth diff {base} -> {head}");
            for d in diffs {
                let _ = writeln!(out, "{}:", d.partner);
                for c in &d.changes {
                    let _ = writeln!(out, "  {}", c.describe());
                }
            }
            let _ = writeln!(out, "{} partner(s) change", diffs.len());
        }
        DiffFormat::Markdown => {
            let _ = writeln!(out, "### berth: what each partner's host will change\n");
            let _ = writeln!(out, "`{base}` → `{head}`\n");
            if diffs.is_empty() {
                let _ = writeln!(out, "No partner's host changes.");
            } else {
                let _ = writeln!(out, "| partner | change |\n|---|---|");
                for d in diffs {
                    for c in &d.changes {
                        let _ = writeln!(
                            out,
                            "| `{}` | {} |",
                            d.partner,
                            c.describe().replace('|', "\\|")
                        );
                    }
                }
            }
        }
        DiffFormat::Json => {
            let doc = serde_json::json!({
                "base": base,
                "head": head,
                "partners": diffs,
                "changes": diffs.iter().map(|d| d.changes.len()).sum::<usize>(),
            });
            let _ = writeln!(out, "{doc:#}");
        }
    }
    out
}

pub fn diff(
    repo_path: &Path,
    base: &str,
    head: Option<&str>,
    format: DiffFormat,
    exit_code: bool,
) -> i32 {
    let base_side = match side(repo_path, base) {
        Ok(s) => s,
        Err(e) => return super::cannot_run(&e),
    };
    let head_side = match head {
        Some(rev) => match side(repo_path, rev) {
            Ok(s) => s,
            Err(e) => return super::cannot_run(&e),
        },
        None => Side {
            root: repo_path.to_owned(),
            label: "working tree".into(),
            _dir: None,
        },
    };
    let head_repo = match host::load(&head_side.root) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // A base that does not validate diffs as an empty fleet, so the pull request that
    // fixes it still shows what it changes.
    let base_repo = match manifest::validate(&base_side.root) {
        Ok((r, d)) if !d.has_errors() => Some(r),
        _ => None,
    };
    host::runtime().block_on(async {
        let engine = DockerEngine::connect().await.ok();
        let sources = Sources::new(engine.as_ref());
        let tags = CachedTags::new(&sources);
        let base_state = match &base_repo {
            Some(r) => state(r, &tags).await,
            None => State::new(),
        };
        let head_state = state(&head_repo, &tags).await;
        let diffs = diff::diff(&base_state, &head_state);
        out!(
            "{}",
            render(&diffs, &base_side.label, &head_side.label, format)
        );
        if exit_code && !diffs.is_empty() {
            exit::PENDING
        } else {
            exit::OK
        }
    })
}
