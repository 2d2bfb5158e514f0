//! Getting a record into the status repo: one commit that replaces `partners/<partner>.json`
//! on the remote branch's tip and nothing else, pushed without a worktree. Many partners push
//! to one branch, each writing only its own file, so a push that loses the race (the branch
//! moved since it was read) is rebuilt on the new tip and tried again, with a short jittered
//! backoff, until the deadline.
//!
//! A remote on this host (a path or `file://`) is updated in place with a compare-and-swap
//! of the branch: libgit2's local push overwrites the branch without checking that it still
//! points where it did, and would drop a concurrent partner's commit. Any other remote is
//! fetched into a bare repo in the state dir (`status-repo.git`) and pushed to, where the
//! server refuses a push that is not a fast-forward.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{ErrorCode, Oid, Repository};
use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

use crate::source::{HostKeyRefusal, RemoteAuth, read_token, remote_callbacks};

/// Where and how the agent reports (agent.yaml `report:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `ssh://…` / `git@host:path`, `https://…`, `file:///…` or a path to a bare repo.
    pub url: String,
    pub branch: String,
    /// Private key for SSH remotes.
    pub ssh_key: Option<PathBuf>,
    /// OpenSSH `known_hosts` file the SSH server's host key must be listed in.
    pub known_hosts: Option<PathBuf>,
    /// Credentials for HTTPS: a token, read from an env var or a file.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// OpenSSH private key (no passphrase) the commits are signed with.
    pub signing_key: Option<PathBuf>,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The branch now holds this commit.
    Commit(String),
    /// The branch already held exactly this record: nothing was committed.
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot read the signing key {}", path.display())]
    SigningKey {
        path: PathBuf,
        #[source]
        source: ssh_key::Error,
    },
    #[error("the signing key {} has a passphrase; berth signs with keys without one", path.display())]
    Encrypted { path: PathBuf },
    #[error("cannot sign the commit")]
    Sign(#[source] ssh_key::Error),
    #[error("cannot read the git token from {0}")]
    Token(String),
    #[error("cannot open the status repo {url}")]
    Open {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("the status repo mirror in {} is unusable", path.display())]
    Mirror {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot reach {url}")]
    Connect {
        url: String,
        #[source]
        source: Box<crate::source::SourceError>,
    },
    #[error("cannot reach {url}")]
    HostKey {
        url: String,
        #[source]
        source: Box<crate::source::known_hosts::HostKeyError>,
    },
    #[error("cannot fetch {branch} from {url}")]
    Fetch {
        url: String,
        branch: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot build the commit")]
    Commit(#[source] git2::Error),
    #[error("cannot push to {branch} of {url}")]
    Push {
        url: String,
        branch: String,
        #[source]
        source: git2::Error,
    },
    #[error("{url} refused the push to {branch}: {message}")]
    Refused {
        url: String,
        branch: String,
        message: String,
    },
    #[error("{branch} of {url} kept moving: gave up after {attempts} attempts (last: {last})")]
    Contended {
        url: String,
        branch: String,
        attempts: u32,
        last: String,
    },
}

/// Who the commits are by: the partner, so the status repo's history says whose host wrote
/// what. The address is in `.invalid`, which never delivers mail.
pub fn identity(partner: &str) -> (String, String) {
    (
        format!("berth {partner}"),
        format!("{partner}@berth.invalid"),
    )
}

/// One try at the branch.
enum Try {
    Done(Pushed),
    /// The branch moved under us: rebuild on the new tip.
    Raced(String),
}

/// Writes `record` (its exact bytes) as `partners/<partner>.json` on the branch (under
/// `namespaces/<ns>/` for a namespace's agent), retrying lost races until `deadline`.
pub fn push(
    spec: &Spec,
    state_dir: &Path,
    partner: &str,
    namespace: Option<&str>,
    record: &[u8],
    message: &str,
    deadline: Instant,
) -> Result<Pushed, PushError> {
    let key = spec.signing_key.as_deref().map(signing_key).transpose()?;
    let change = Change {
        path: super::Record::path_in_repo(partner, namespace),
        record,
        partner,
        message,
        key: key.as_ref(),
    };
    let target = match local_path(&spec.url) {
        Some(path) => Target::Local(path),
        None => Target::Mirror(open_mirror(&state_dir.join("status-repo.git"), &spec.url)?),
    };
    let mut attempts = 0;
    let mut rng = seed(partner);
    loop {
        attempts += 1;
        let tried = match &target {
            Target::Local(path) => try_local(spec, path, &change)?,
            Target::Mirror(mirror) => try_remote(spec, mirror, &change)?,
        };
        let why = match tried {
            Try::Done(pushed) => return Ok(pushed),
            Try::Raced(why) => why,
        };
        // 50 ms more per attempt up to 250 ms, plus up to 200 ms at random, so partners
        // racing for the branch part ways.
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pause =
            Duration::from_millis((50 * u64::from(attempts.min(5))).min(250) + (rng >> 33) % 200);
        if Instant::now() + pause >= deadline {
            return Err(PushError::Contended {
                url: spec.url.clone(),
                branch: spec.branch.clone(),
                attempts,
                last: why,
            });
        }
        tracing::debug!(attempts, why = %why, "the status branch moved; trying again");
        std::thread::sleep(pause);
    }
}

/// Where the commit goes: a repo on this host, or a remote through the state dir's mirror.
enum Target {
    Local(PathBuf),
    Mirror(Repository),
}

/// The commit a push adds.
struct Change<'a> {
    path: String,
    record: &'a [u8],
    partner: &'a str,
    message: &'a str,
    key: Option<&'a PrivateKey>,
}

fn signing_key(path: &Path) -> Result<PrivateKey, PushError> {
    let key = PrivateKey::read_openssh_file(path).map_err(|source| PushError::SigningKey {
        path: path.to_owned(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(PushError::Encrypted {
            path: path.to_owned(),
        });
    }
    Ok(key)
}

/// A pseudo-random start for the backoff, different per partner and per process.
fn seed(partner: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    partner
        .bytes()
        .fold(nanos ^ u64::from(std::process::id()), |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        })
}

/// The directory of a remote on this host: a `file://` URL or a path (not `host:path`).
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    let scp_like = url
        .split_once(':')
        .is_some_and(|(host, _)| !host.contains('/'));
    (!url.contains("://") && !scp_like).then(|| PathBuf::from(url))
}

fn try_local(spec: &Spec, path: &Path, change: &Change<'_>) -> Result<Try, PushError> {
    let open = |source| PushError::Open {
        url: spec.url.clone(),
        source,
    };
    let repo = Repository::open_bare(path).map_err(open)?;
    let branch = format!("refs/heads/{}", spec.branch);
    let tip = match repo.find_reference(&branch) {
        Ok(r) => Some(
            r.resolve()
                .map_err(open)?
                .target()
                .expect("a direct reference"),
        ),
        Err(e) if e.code() == ErrorCode::NotFound => None,
        Err(e) => return Err(open(e)),
    };
    let Some(commit) = build(&repo, tip, change).map_err(PushError::Commit)? else {
        return Ok(Try::Done(Pushed::Unchanged));
    };
    let log = format!("berth: report {}", change.partner);
    let updated = match tip {
        Some(tip) => repo.reference_matching(&branch, commit, true, tip, &log),
        None => repo.reference(&branch, commit, false, &log),
    };
    match updated {
        Ok(_) => Ok(Try::Done(Pushed::Commit(commit.to_string()))),
        Err(e)
            if matches!(
                e.code(),
                ErrorCode::Modified | ErrorCode::Locked | ErrorCode::Exists
            ) =>
        {
            Ok(Try::Raced(e.message().to_owned()))
        }
        Err(source) => Err(PushError::Push {
            url: spec.url.clone(),
            branch: spec.branch.clone(),
            source,
        }),
    }
}

fn open_mirror(path: &Path, url: &str) -> Result<Repository, PushError> {
    let mirror_err = |source| PushError::Mirror {
        path: path.to_owned(),
        source,
    };
    let repo = match Repository::open_bare(path) {
        Ok(r) => r,
        Err(_) => Repository::init_bare(path).map_err(mirror_err)?,
    };
    match repo.find_remote("origin") {
        Ok(remote) if remote.url().ok() == Some(url) => {}
        Ok(_) => repo.remote_set_url("origin", url).map_err(mirror_err)?,
        Err(_) => {
            repo.remote("origin", url).map_err(mirror_err)?;
        }
    }
    Ok(repo)
}

/// The local ref the outgoing commit is pushed from.
const OUTGOING: &str = "refs/berth/outgoing";

fn try_remote(spec: &Spec, repo: &Repository, change: &Change<'_>) -> Result<Try, PushError> {
    let tracking = format!("refs/remotes/origin/{}", spec.branch);
    // A branch deleted on the remote must not leave a stale tip to build on.
    if let Ok(mut stale) = repo.find_reference(&tracking) {
        let _ = stale.delete();
    }
    let token = read_token(spec.token_env.as_deref(), spec.token_file.as_deref())
        .map_err(PushError::Token)?;
    let mut remote = repo
        .find_remote("origin")
        .map_err(|source| PushError::Mirror {
            path: repo.path().to_owned(),
            source,
        })?;
    let auth = RemoteAuth {
        ssh_key: spec.ssh_key.clone(),
        token,
        known_hosts: spec.known_hosts.clone(),
    };
    let (fetching, refusal) = callbacks(spec, &auth)?;
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(fetching);
    options.download_tags(git2::AutotagOption::None);
    remote
        .fetch(
            &[format!("+refs/heads/{0}:{tracking}", spec.branch)],
            Some(&mut options),
            None,
        )
        .map_err(|source| {
            refused(spec, &refusal).unwrap_or_else(|| PushError::Fetch {
                url: spec.url.clone(),
                branch: spec.branch.clone(),
                source,
            })
        })?;
    let tip = repo.refname_to_id(&tracking).ok();
    let Some(commit) = build(repo, tip, change).map_err(PushError::Commit)? else {
        return Ok(Try::Done(Pushed::Unchanged));
    };
    repo.reference(OUTGOING, commit, true, "berth: outgoing report")
        .map_err(PushError::Commit)?;
    let rejected = std::cell::RefCell::new(None);
    let (mut callbacks, refusal) = callbacks(spec, &auth)?;
    callbacks.push_update_reference(|_, status| {
        if let Some(message) = status {
            *rejected.borrow_mut() = Some(message.to_owned());
        }
        Ok(())
    });
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks);
    let pushed = remote.push(
        &[format!("{OUTGOING}:refs/heads/{}", spec.branch)],
        Some(&mut options),
    );
    drop(options);
    match pushed {
        // The client's own check against the tip it saw when it connected.
        Err(e) if e.code() == ErrorCode::NotFastForward => Ok(Try::Raced(e.message().to_owned())),
        Err(source) => Err(refused(spec, &refusal).unwrap_or_else(|| PushError::Push {
            url: spec.url.clone(),
            branch: spec.branch.clone(),
            source,
        })),
        Ok(()) => match rejected.into_inner() {
            None => Ok(Try::Done(Pushed::Commit(commit.to_string()))),
            // The server's check, when another push landed first.
            Some(message) if is_race(&message) => Ok(Try::Raced(message)),
            Some(message) => Err(PushError::Refused {
                url: spec.url.clone(),
                branch: spec.branch.clone(),
                message,
            }),
        },
    }
}

/// Whether a server's refusal of a ref update may mean the branch moved, as git's
/// receive-pack words it (a compare-and-swap it lost is "failed to update ref"). Trying
/// again is harmless if it was something else: the last refusal ends up in the error.
fn is_race(message: &str) -> bool {
    [
        "fetch first",
        "non-fast-forward",
        "failed to lock",
        "failed to update ref",
        "stale info",
        "cannot lock",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// The credentials `auth` holds and, for SSH, the host-key check against its
/// `known_hosts`: the same callbacks the manifest fetch uses.
fn callbacks(
    spec: &Spec,
    auth: &RemoteAuth,
) -> Result<(git2::RemoteCallbacks<'static>, HostKeyRefusal), PushError> {
    remote_callbacks(&spec.url, auth).map_err(|source| PushError::Connect {
        url: spec.url.clone(),
        source: Box::new(source),
    })
}

/// The host-key refusal behind a failed fetch or push, if that is what failed it: libgit2
/// words it only as "invalid or unknown remote ssh hostkey".
fn refused(spec: &Spec, refusal: &HostKeyRefusal) -> Option<PushError> {
    refusal.take().map(|source| PushError::HostKey {
        url: spec.url.clone(),
        source: Box::new(source),
    })
}

/// `tree` (or an empty one) with the file at `path` set to `blob`, every directory on the
/// way rewritten and everything else kept as it is.
fn with_file(
    repo: &Repository,
    tree: Option<&git2::Tree<'_>>,
    path: &[&str],
    blob: Oid,
) -> Result<Oid, git2::Error> {
    let mut builder = repo.treebuilder(tree)?;
    match path {
        [file] => {
            builder.insert(file, blob, 0o100_644)?;
        }
        [dir, rest @ ..] => {
            let sub = match tree.and_then(|t| t.get_name(dir)) {
                Some(entry) if entry.kind() == Some(git2::ObjectType::Tree) => {
                    Some(repo.find_tree(entry.id())?)
                }
                _ => None,
            };
            let sub = with_file(repo, sub.as_ref(), rest, blob)?;
            builder.insert(dir, sub, 0o040_000)?;
        }
        [] => return Err(git2::Error::from_str("an empty path in the status repo")),
    }
    builder.write()
}

/// The commit on `tip` whose tree is the tip's with the record's file replaced, written to
/// `repo`; `None` when the tip already holds exactly that file.
fn build(
    repo: &Repository,
    tip: Option<Oid>,
    change: &Change<'_>,
) -> Result<Option<Oid>, git2::Error> {
    let parent = tip.map(|t| repo.find_commit(t)).transpose()?;
    let root = parent.as_ref().map(git2::Commit::tree).transpose()?;
    let blob = repo.blob(change.record)?;
    if root
        .as_ref()
        .and_then(|t| t.get_path(std::path::Path::new(&change.path)).ok())
        .is_some_and(|e| e.id() == blob)
    {
        return Ok(None);
    }
    let parts: Vec<&str> = change.path.split('/').collect();
    let tree = repo.find_tree(with_file(repo, root.as_ref(), &parts, blob)?)?;
    let (name, email) = identity(change.partner);
    let who = git2::Signature::now(&name, &email)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let buffer = repo.commit_create_buffer(&who, &who, change.message, &tree, &parents)?;
    let content = buffer.as_str()?;
    let commit = match change.key {
        Some(key) => {
            let signature = sign(key, content.as_bytes())
                .map_err(|e| git2::Error::from_str(&format!("cannot sign the commit: {e}")))?;
            repo.commit_signed(content, signature.trim_end(), Some("gpgsig"))?
        }
        None => repo
            .odb()?
            .write(git2::ObjectType::Commit, content.as_bytes())?,
    };
    Ok(Some(commit))
}

/// An SSH signature of a commit as `git commit -S` with `gpg.format=ssh` makes it: SSHSIG
/// in the `git` namespace over SHA-512, armored.
pub fn sign(key: &PrivateKey, commit: &[u8]) -> Result<String, ssh_key::Error> {
    SshSig::sign(
        key,
        crate::source::verify::GIT_NAMESPACE,
        HashAlg::Sha512,
        commit,
    )?
    .to_pem(LineEnding::LF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_remotes_are_paths_and_file_urls() {
        assert_eq!(
            local_path("file:///srv/status.git"),
            Some("/srv/status.git".into())
        );
        assert_eq!(
            local_path("/srv/status.git"),
            Some("/srv/status.git".into())
        );
        assert_eq!(local_path("status.git"), Some("status.git".into()));
        assert_eq!(local_path("git@example.org:fleet/status.git"), None);
        assert_eq!(local_path("ssh://git@example.org/fleet/status.git"), None);
        assert_eq!(local_path("https://example.org/fleet/status.git"), None);
    }

    #[test]
    fn a_lost_race_is_told_from_a_refusal() {
        assert!(is_race("fetch first"));
        assert!(is_race("failed to lock"));
        assert!(is_race("failed to update ref"));
        assert!(!is_race("pre-receive hook declined"));
        assert!(!is_race("protected branch hook declined"));
    }
}
