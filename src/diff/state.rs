//! A revision's desired state per partner, resolved for comparison.

use std::fmt::Write as _;

use super::{PartnerState, ScriptState, State};
use crate::image::TagSource;
use crate::manifest::{self, Repo};
use crate::resolve::{self, CachedTags, Secrets};

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

/// Every partner of a revision as its host would run it: locked or live versions, and
/// container specs with env files counted by path only (they are host-local).
pub async fn state<S: TagSource>(repo: &Repo, tags: &CachedTags<'_, S>) -> State {
    let mut out = State::new();
    for (name, p) in &repo.partners {
        let p = &p.doc;
        let mut scripts = std::collections::BTreeMap::new();
        for opt in &p.scripts {
            let Some(script) = repo.scripts.get(opt.script.as_str()) else {
                continue;
            };
            let script = &script.doc;
            let resolved = resolve::resolve_parts(repo, name, opt, script, tags).await;
            for (i, part) in script.parts().iter().enumerate() {
                let spec = resolve::container_spec(name, script, part, opt, Secrets::NamesOnly)
                    .expect("opening no secret cannot fail");
                scripts.insert(
                    resolve::pin_key(&opt.script, part.component),
                    ScriptState {
                        resolved: match &resolved {
                            Ok(parts) => {
                                Ok((parts[i].1.version.clone(), parts[i].1.digest.clone()))
                            }
                            Err(why) => Err(why.clone()),
                        },
                        spec,
                    },
                );
            }
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
