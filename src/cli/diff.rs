//! `berth diff [REPO] --base REV [--head REV]`: for each partner, what its host will change
//! between two revisions, for a pull request.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use clap::ValueEnum;

use super::{cannot_run, host};
use crate::diff::{self, PartnerDiff, State, revision};
use crate::engine::DockerEngine;
use crate::exit::Exit;
use crate::fleet::{self, RepoRef, Rollout};
use crate::manifest;
use crate::registry::Sources;
use crate::resolve::CachedTags;
use crate::rollout::Waves;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum DiffFormat {
    Text,
    Json,
    Markdown,
}

/// The wave a partner's host takes a change in, with `rollout:` in the head's fleet.yaml:
/// `wave rest, after early has baked it 48h`.
fn wave(waves: Option<&Waves>, partner: &str) -> Option<String> {
    let waves = waves?;
    let i = waves.wave_of(partner)?;
    let this = &waves.waves[i];
    Some(match i.checked_sub(1).map(|p| &waves.waves[p]) {
        None => format!("wave {}, first", this.name),
        Some(prev) => format!(
            "wave {}, after {} has run it {}",
            this.name,
            prev.name,
            bake(this.bake)
        ),
    })
}

fn bake(d: std::time::Duration) -> String {
    match d.as_secs() {
        0 => "in sync".to_owned(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Where the changed digests stand across the waves, from the status repo: which wave each
/// has reached and the earliest each later wave can take it.
struct Staging {
    status: String,
    /// Why the status repo could not be read: the estimate then assumes no partner runs
    /// the digests yet.
    unreadable: Option<String>,
    rollouts: Vec<Rollout>,
}

fn render(
    diffs: &[PartnerDiff],
    waves: Option<&Waves>,
    staging: Option<&Staging>,
    base: &str,
    head: &str,
    format: DiffFormat,
) -> String {
    let mut out = String::new();
    let staged = staging.filter(|s| !s.rollouts.is_empty());
    let heading = |s: &Staging| match &s.unreadable {
        None => format!("rollout (status repo {})", s.status),
        Some(why) => format!(
            "rollout (status repo {} unreadable: {why}; estimated as if no partner runs these yet)",
            s.status
        ),
    };
    let named = |partner: &str| match wave(waves, partner) {
        Some(w) => format!("{partner} ({w})"),
        None => partner.to_owned(),
    };
    match format {
        DiffFormat::Text => {
            let _ = writeln!(out, "berth diff {base} -> {head}");
            for d in diffs {
                let _ = writeln!(out, "{}:", named(&d.partner));
                for c in &d.changes {
                    let _ = writeln!(out, "  {}", c.describe());
                }
            }
            let _ = writeln!(out, "{} partner(s) change", diffs.len());
            if let Some(s) = staged {
                let _ = writeln!(out, "{}:", heading(s));
                for l in fleet::render::rollout_lines(&s.rollouts) {
                    let _ = writeln!(out, "  {l}");
                }
            }
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
                        let partner = match wave(waves, &d.partner) {
                            Some(w) => format!("`{}` ({w})", d.partner),
                            None => format!("`{}`", d.partner),
                        };
                        let _ =
                            writeln!(out, "| {partner} | {} |", c.describe().replace('|', "\\|"));
                    }
                }
            }
            if let Some(s) = staged {
                let _ = writeln!(out, "\n{}:\n", heading(s));
                for l in fleet::render::rollout_lines(&s.rollouts) {
                    let _ = writeln!(out, "- {l}");
                }
            }
        }
        DiffFormat::Json => {
            let mut doc = serde_json::json!({
                "base": base,
                "head": head,
                "partners": diffs,
                "changes": diffs.iter().map(|d| d.changes.len()).sum::<usize>(),
            });
            if waves.is_some() {
                doc["waves"] = diffs
                    .iter()
                    .filter_map(|d| Some((d.partner.clone(), wave(waves, &d.partner)?.into())))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            if let Some(s) = staged {
                doc["rollout"] = serde_json::json!({
                    "status": s.status,
                    "unreadable": s.unreadable,
                    "digests": s.rollouts,
                });
            }
            let _ = writeln!(out, "{doc:#}");
        }
    }
    out
}

/// What `berth diff` is asked.
pub struct DiffArgs<'a> {
    pub repo: &'a Path,
    pub base: &'a str,
    pub head: Option<&'a str>,
    pub format: DiffFormat,
    pub exit_code: bool,
    /// The status repo to estimate the rollout from, instead of `rollout.status`.
    pub status: Option<&'a str>,
    pub now: Option<jiff::Timestamp>,
}

/// The changed digests a partner's host takes (added scripts, new versions, rebuilt
/// images), as the head resolves them.
fn changed_digests(diffs: &[PartnerDiff], head: &State) -> BTreeSet<fleet::Digest> {
    let mut out = BTreeSet::new();
    for d in diffs {
        for c in &d.changes {
            let key = match c {
                diff::Change::ScriptAdded { script, .. }
                | diff::Change::Version { script, .. }
                | diff::Change::Digest { script, .. } => script,
                _ => continue,
            };
            let resolved = head
                .get(&d.partner)
                .and_then(|p| p.scripts.get(key))
                .and_then(|s| s.resolved.as_ref().ok());
            if let Some((version, digest)) = resolved {
                let (script, component) = match key.split_once('/') {
                    Some((s, c)) => (s.to_owned(), Some(c.to_owned())),
                    None => (key.clone(), None),
                };
                out.insert(fleet::Digest {
                    script,
                    component,
                    version: version.clone(),
                    digest: digest.clone(),
                });
            }
        }
    }
    out
}

/// Reads the status repo (`--status`, else the head's `rollout.status`) and estimates
/// where each changed digest will be; `None` without `rollout:`.
fn staging(
    head_repo: &manifest::Repo,
    status: Option<&str>,
    wanted: BTreeSet<fleet::Digest>,
    now: jiff::Timestamp,
) -> Option<Staging> {
    let declared = &head_repo.fleet.as_ref()?.doc.rollout.as_ref()?.status;
    let spec = match status {
        Some(s) => RepoRef::parse(s),
        None => RepoRef {
            location: declared.url.value.clone(),
            branch: Some(
                declared
                    .branch
                    .as_ref()
                    .map_or_else(|| "main".to_owned(), |b| b.value.clone()),
            ),
        },
    };
    let (reports, unreadable) = match fleet::status_records(&spec, None, None) {
        Ok(r) => (r, None),
        Err(e) => (Default::default(), Some(crate::exit::chain(&e))),
    };
    Some(Staging {
        status: spec.location,
        unreadable,
        rollouts: fleet::reaches(head_repo, &reports, wanted, now),
    })
}

pub fn diff(args: &DiffArgs<'_>) -> Exit {
    let DiffArgs {
        repo: repo_path,
        base,
        head,
        format,
        exit_code,
        status,
        now,
    } = *args;
    let base_side = match revision::side(repo_path, base) {
        Ok(s) => s,
        Err(e) => return cannot_run(&e),
    };
    let head_side = match head {
        Some(rev) => match revision::side(repo_path, rev) {
            Ok(s) => s,
            Err(e) => return cannot_run(&e),
        },
        None => revision::working_tree(repo_path),
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
            Some(r) => diff::state(r, &tags).await,
            None => State::new(),
        };
        let head_state = diff::state(&head_repo, &tags).await;
        let diffs = diff::diff(&base_state, &head_state);
        let staging = staging(
            &head_repo,
            status,
            changed_digests(&diffs, &head_state),
            now.unwrap_or_else(jiff::Timestamp::now),
        );
        out!(
            "{}",
            render(
                &diffs,
                Waves::of(&head_repo).as_ref(),
                staging.as_ref(),
                &base_side.label,
                &head_side.label,
                format
            )
        );
        if exit_code && !diffs.is_empty() {
            Exit::Pending
        } else {
            Exit::Ok
        }
    })
}
