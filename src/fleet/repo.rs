//! Reaching a repo `berth fleet` reads: a path (bare or checked out) opened in place, or a
//! git URL fetched into a temporary bare repo. Only committed content counts: files are read
//! from the branch tip's tree, never from a worktree.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use super::FleetError;

/// `URL-or-path[#branch]`, as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub location: String,
    pub branch: Option<String>,
}

impl RepoRef {
    pub fn parse(text: &str) -> RepoRef {
        match text.rsplit_once('#') {
            Some((location, branch)) if !branch.is_empty() => RepoRef {
                location: location.to_owned(),
                branch: Some(branch.to_owned()),
            },
            _ => RepoRef {
                location: text.trim_end_matches('#').to_owned(),
                branch: None,
            },
        }
    }

    /// A remote rather than a path: `scheme://…` or scp-like `user@host:path`.
    pub fn is_url(&self) -> bool {
        self.location.contains("://")
            || (self.location.contains('@')
                && self.location.contains(':')
                && !Path::new(&self.location).exists())
    }
}

/// An opened repo and the commit its branch points at.
pub struct Opened {
    pub repo: Repository,
    pub tip: Oid,
    /// Keeps a fetched repo's temporary directory until the repo is dropped.
    _fetched: Option<tempfile::TempDir>,
}

/// Opens `spec` at `spec.branch`, else at `default_branch`, else at `HEAD`.
pub fn open(spec: &RepoRef, default_branch: Option<&str>) -> Result<Opened, FleetError> {
    open_with(spec, default_branch, None)
}

/// [`open`], fetching a URL with these credentials (the agent's `report:` ones, when a
/// later rollout wave reads the status repo it reports to).
pub fn open_with(
    spec: &RepoRef,
    default_branch: Option<&str>,
    auth: Option<&crate::source::RemoteAuth>,
) -> Result<Opened, FleetError> {
    let branch = spec.branch.as_deref().or(default_branch);
    let (repo, fetched) = if spec.is_url() {
        let dir = tempfile::tempdir().map_err(|source| FleetError::Temp { source })?;
        let repo = fetch(&spec.location, branch, dir.path(), auth)?;
        (repo, Some(dir))
    } else {
        let repo = Repository::open(&spec.location).map_err(|source| FleetError::Open {
            location: spec.location.clone(),
            source,
        })?;
        (repo, None)
    };
    let (name, what) = match branch {
        Some(b) => (format!("refs/heads/{b}"), format!("branch `{b}`")),
        None => ("HEAD".to_owned(), "HEAD".to_owned()),
    };
    let tip = repo
        .revparse_single(&name)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|source| FleetError::NoBranch {
            location: spec.location.clone(),
            what,
            source,
        })?;
    Ok(Opened {
        repo,
        tip,
        _fetched: fetched,
    })
}

/// Fetches one branch (or the remote's HEAD) of `url` into a new bare repo at `dir`.
fn fetch(
    url: &str,
    branch: Option<&str>,
    dir: &Path,
    auth: Option<&crate::source::RemoteAuth>,
) -> Result<Repository, FleetError> {
    let fetch_err = |source| FleetError::Fetch {
        url: url.to_owned(),
        source,
    };
    let repo = Repository::init_bare(dir).map_err(fetch_err)?;
    let refspec = match branch {
        Some(b) => format!("+refs/heads/{b}:refs/heads/{b}"),
        None => "+HEAD:refs/heads/HEAD-of-remote".to_owned(),
    };
    {
        let mut remote = repo.remote_anonymous(url).map_err(fetch_err)?;
        let mut options = git2::FetchOptions::new();
        options.download_tags(git2::AutotagOption::None);
        if let Some(auth) = auth {
            let (callbacks, _) = crate::source::remote_callbacks(url, auth).map_err(|e| {
                FleetError::Credentials {
                    url: url.to_owned(),
                    source: Box::new(e),
                }
            })?;
            options.remote_callbacks(callbacks);
        }
        tracing::debug!(url, refspec, "fetching");
        crate::source::bound_git_io();
        remote
            .fetch(&[&refspec], Some(&mut options), None)
            .map_err(fetch_err)?;
    }
    if branch.is_none() {
        repo.set_head("refs/heads/HEAD-of-remote")
            .map_err(fetch_err)?;
    }
    Ok(repo)
}

/// The blob id of `path` in `commit`'s tree, if it is a file there.
pub fn blob_at(repo: &Repository, commit: Oid, path: &str) -> Option<Oid> {
    let tree = repo.find_commit(commit).ok()?.tree().ok()?;
    let entry = tree.get_path(Path::new(path)).ok()?;
    (entry.kind() == Some(ObjectType::Blob)).then(|| entry.id())
}

/// The commit that gave `path` the content it has at `tip`: followed back through every
/// parent that has the same content, as `git log -1 -- path` finds it.
pub fn last_change(repo: &Repository, tip: Oid, path: &str) -> Option<Oid> {
    let blob = blob_at(repo, tip, path)?;
    let mut current = repo.find_commit(tip).ok()?;
    loop {
        let same = current
            .parents()
            .find(|p| blob_at(repo, p.id(), path) == Some(blob));
        match same {
            Some(parent) => current = parent,
            None => return Some(current.id()),
        }
    }
}

/// The files directly under `dir` in `commit`'s tree, with their content.
pub fn files_in(
    repo: &Repository,
    commit: Oid,
    dir: &str,
) -> Result<Vec<(String, Vec<u8>)>, git2::Error> {
    let tree = repo.find_commit(commit)?.tree()?;
    let Ok(entry) = tree.get_path(Path::new(dir)) else {
        return Ok(Vec::new());
    };
    let Some(sub) = entry.to_object(repo)?.as_tree().cloned() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in sub.iter() {
        if e.kind() != Some(ObjectType::Blob) {
            continue;
        }
        let Ok(name) = e.name() else { continue };
        let blob = repo.find_blob(e.id())?;
        out.push((name.to_owned(), blob.content().to_vec()));
    }
    Ok(out)
}

/// Writes `commit`'s tree to a new temporary directory, for the manifest loader.
pub fn export(repo: &Repository, commit: Oid) -> Result<tempfile::TempDir, FleetError> {
    let dir = tempfile::tempdir().map_err(|source| FleetError::Temp { source })?;
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|source| FleetError::Read {
            commit: commit.to_string(),
            source,
        })?;
    let root: PathBuf = dir.path().join("manifests");
    crate::source::write_tree(repo, &tree, &root).map_err(|source| FleetError::Export {
        path: root.clone(),
        source,
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_branch_follows_the_last_hash() {
        assert_eq!(
            RepoRef::parse("file:///srv/status.git#reports"),
            RepoRef {
                location: "file:///srv/status.git".into(),
                branch: Some("reports".into())
            }
        );
        assert_eq!(
            RepoRef::parse("/srv/status"),
            RepoRef {
                location: "/srv/status".into(),
                branch: None
            }
        );
        assert!(RepoRef::parse("file:///srv/status.git").is_url());
        assert!(RepoRef::parse("git@example.org:fleet/status.git").is_url());
        assert!(!RepoRef::parse("/srv/status").is_url());
    }
}
