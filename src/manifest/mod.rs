//! The manifest repo: its documents (docs/manifests.md), how they are read from disk and how
//! they are checked. Everything downstream works from a [`Repo`] that validated cleanly.

mod check;
mod load;
mod model;
mod part;
pub mod range;
mod span;
pub mod syntax;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use load::{LoadError, MAX_FILE_BYTES, parse};
pub use model::*;
pub use part::{OwnImage, Part, cycle};
pub use span::{Pos, Sp};

use crate::diag::Diagnostics;

/// A parsed document and the repo-relative path it came from.
#[derive(Debug, Clone)]
pub struct Doc<T> {
    pub path: String,
    pub doc: T,
}

/// Every document of one revision of the manifest repo, by name.
#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
    pub fleet: Option<Doc<Fleet>>,
    pub partners: BTreeMap<String, Doc<Partner>>,
    pub scripts: BTreeMap<String, Doc<Script>>,
    /// `berth.lock`, when the repo has one: agents then apply exactly what it pins.
    pub lock: Option<Doc<crate::lock::Lock>>,
}

impl Repo {
    /// The zone a partner's windows are read in: its own, else the fleet's, else UTC.
    pub fn timezone<'a>(&'a self, partner: &'a Partner) -> &'a str {
        partner
            .timezone
            .as_deref()
            .or_else(|| self.fleet.as_ref()?.doc.timezone.as_deref())
            .map_or("UTC", String::as_str)
    }

    /// A partner's windows, else the fleet's; empty means never automatically.
    pub fn windows<'a>(&'a self, partner: &'a Partner) -> &'a [Window] {
        partner
            .windows
            .as_deref()
            .or_else(|| self.fleet.as_ref()?.doc.windows.as_deref())
            .unwrap_or_default()
    }

    /// The registry a script's images come from, after fleet defaults.
    pub fn registry<'a>(&'a self, image: &'a Image) -> Option<&'a str> {
        match image.source.value {
            Source::Local => None,
            _ => image
                .registry
                .as_deref()
                .or_else(|| self.fleet.as_ref()?.doc.registry.as_deref())
                .map(String::as_str),
        }
    }
}

/// Reads and checks a repo: the repo as far as it parsed, and every finding, sorted.
pub fn validate(root: &Path) -> Result<(Repo, Diagnostics), LoadError> {
    let loaded = load::load(root)?;
    let mut diagnostics = loaded.diagnostics;
    check::check(
        &loaded.repo,
        &loaded.broken_scripts,
        loaded.broken_partners,
        &mut diagnostics,
    );
    Ok((loaded.repo, diagnostics.finish()))
}
