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

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum DiffFormat {
    Text,
    Json,
    Markdown,
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
            render(&diffs, &base_side.label, &head_side.label, format)
        );
        if exit_code && !diffs.is_empty() {
            Exit::Pending
        } else {
            Exit::Ok
        }
    })
}
