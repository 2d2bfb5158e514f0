//! A revision of the manifest repo written out to a temporary directory, so it can be
//! loaded and resolved like any checkout.

use std::path::{Path, PathBuf};

/// A revision's manifests written out to a temp dir, or the working tree as it is.
pub struct Side {
    pub root: PathBuf,
    /// `main (0123456789ab)`, or `working tree`.
    pub label: String,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("{0} is not inside a git repository")]
    NotGit(PathBuf, #[source] git2::Error),
    #[error("unknown revision {0}")]
    Unknown(String, #[source] git2::Error),
    #[error("the manifests are not at {path} in revision {rev}")]
    NoPath { rev: String, path: String },
    #[error("cannot write revision {0} to a temp dir")]
    Write(String, #[source] std::io::Error),
}

/// The manifests at `rev` of the git repo `repo_path` is in (the same subdirectory of it).
pub fn side(repo_path: &Path, rev: &str) -> Result<Side, RevisionError> {
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

/// The working tree as it is.
pub fn working_tree(repo_path: &Path) -> Side {
    Side {
        root: repo_path.to_owned(),
        label: "working tree".into(),
        _dir: None,
    }
}
