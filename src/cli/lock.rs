//! `berth lock [REPO] [--check]`: pin every partner's scripts to a version and digest.

use std::path::Path;

use super::{exit, host};
use crate::lock::{Lock, Pin};
use crate::manifest::Repo;
use crate::resolve::{self, CachedTags, Sources, TagSource};
use crate::runtime::DockerEngine;

/// Resolves every opt-in live. Returns the fresh lock, or the pins that failed.
pub async fn resolve_all<S: TagSource>(
    repo: &Repo,
    tags: &CachedTags<'_, S>,
) -> Result<Lock, Vec<String>> {
    let mut lock = Lock {
        version: 1,
        ..Lock::default()
    };
    let mut failed = Vec::new();
    for (name, partner) in &repo.partners {
        for opt in &partner.doc.scripts {
            let Some(script) = repo.scripts.get(opt.script.as_str()) else {
                continue;
            };
            match resolve::resolve_live(repo, opt, &script.doc, tags).await {
                Ok(r) => {
                    lock.partners.entry(name.clone()).or_default().insert(
                        opt.script.value.clone(),
                        Pin {
                            version: r.version,
                            digest: r.digest,
                            image: r.image.display(),
                        },
                    );
                }
                Err(why) => failed.push(format!("{name}/{}: {why}", opt.script.value)),
            }
        }
    }
    if failed.is_empty() {
        Ok(lock)
    } else {
        Err(failed)
    }
}

pub fn lock(repo_path: &Path, check: bool) -> i32 {
    let repo = match host::load(repo_path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    host::runtime().block_on(async {
        let engine = DockerEngine::connect().await.ok();
        let sources = Sources::new(engine.as_ref());
        let tags = CachedTags::new(&sources);
        let fresh = match resolve_all(&repo, &tags).await {
            Ok(l) => l,
            Err(failed) => {
                for f in &failed {
                    eprintln!("berth: cannot resolve {f}");
                }
                eprintln!(
                    "berth: {} pin(s) could not be resolved; berth.lock was not written",
                    failed.len()
                );
                return exit::CANNOT_RUN;
            }
        };
        if check {
            let Some(current) = &repo.lock else {
                outln!("berth.lock is missing: run `berth lock`");
                return exit::WRONG;
            };
            let drift = current.doc.drift(&fresh);
            if drift.is_empty() {
                outln!("berth.lock is up to date");
                return exit::OK;
            }
            outln!("berth.lock is stale:");
            for d in &drift {
                outln!("  {d}");
            }
            return exit::WRONG;
        }
        let path = repo_path.join(crate::lock::FILE);
        let tmp = repo_path.join(format!("{}.tmp", crate::lock::FILE));
        let written =
            std::fs::write(&tmp, fresh.render()).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            eprintln!("berth: cannot write {}: {e}", path.display());
            return exit::CANNOT_RUN;
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
        exit::OK
    })
}
