//! `berth diff [REPO] --base REV [--head REV]`: for each partner, what its host will change
//! between two revisions, for a pull request.

use std::fmt::Write as _;
use std::path::Path;

use clap::ValueEnum;

use super::{cannot_run, host};
use crate::diff::{self, PartnerDiff, State, revision};
use crate::engine::DockerEngine;
use crate::exit::Exit;
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

fn render(
    diffs: &[PartnerDiff],
    waves: Option<&Waves>,
    base: &str,
    head: &str,
    format: DiffFormat,
) -> String {
    let mut out = String::new();
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
) -> Exit {
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
        out!(
            "{}",
            render(
                &diffs,
                Waves::of(&head_repo).as_ref(),
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
