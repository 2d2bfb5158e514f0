//! `berth lock [REPO] [--check]`: pin every partner's scripts to a version and digest.

use std::path::Path;

use super::host;
use crate::engine::DockerEngine;
use crate::exit::Exit;
use crate::registry::Sources;
use crate::resolve::{self, CachedTags};

pub fn lock(repo_path: &Path, check: bool) -> Exit {
    let repo = match host::load(repo_path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    host::runtime().block_on(async {
        let engine = DockerEngine::connect().await.ok();
        let sources = Sources::new(engine.as_ref());
        let tags = CachedTags::new(&sources);
        let fresh = match resolve::resolve_all(&repo, &tags).await {
            Ok(l) => l,
            Err(failed) => {
                for f in &failed {
                    eprintln!("berth: cannot resolve {f}");
                }
                eprintln!(
                    "berth: {} pin(s) could not be resolved; berth.lock was not written",
                    failed.len()
                );
                return Exit::CannotRun;
            }
        };
        if check {
            let Some(current) = &repo.lock else {
                outln!("berth.lock is missing: run `berth lock`");
                return Exit::Wrong;
            };
            let drift = current.doc.drift(&fresh);
            if drift.is_empty() {
                outln!("berth.lock is up to date");
                return Exit::Ok;
            }
            outln!("berth.lock is stale:");
            for d in &drift {
                outln!("  {d}");
            }
            return Exit::Wrong;
        }
        let path = repo_path.join(crate::lock::FILE);
        if let Err(e) = crate::durable::write(&path, fresh.render().as_bytes()) {
            eprintln!("berth: cannot write {}: {e}", path.display());
            return Exit::CannotRun;
        }
        let pins: usize = fresh.partners.values().map(|s| s.len()).sum();
        let changes = repo
            .lock
            .as_ref()
            .map_or(pins, |l| l.doc.drift(&fresh).len());
        outln!(
            "wrote {}: {pins} pin(s) for {} partner(s), {changes} change(s)",
            path.display(),
            fresh.partners.len()
        );
        Exit::Ok
    })
}
