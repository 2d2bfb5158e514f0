//! The manifest repo as the source of truth: fetching it with git into the state dir,
//! following a branch, tag or pinned commit, and refusing heads that are unsigned (when
//! `verify` is set) or that rewrite history (unless `allow_rewrite`). A plain directory is a
//! source too, at revision `worktree`.

pub mod known_hosts;
pub mod verify;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to follow in the manifest repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    Branch(String),
    Tag(String),
    Commit(String),
}

/// How to reach the manifest repo and what to trust.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    /// `https://…`, `ssh://…` / `git@host:path`, `file:///…`, or a plain directory.
    pub url: String,
    pub follow: Follow,
    /// `allowed_signers` file: only heads signed by one of its keys are applied.
    pub allowed_signers: Option<PathBuf>,
    /// Accept a head that does not descend from the last accepted commit.
    pub allow_rewrite: bool,
    /// Credentials for HTTPS: a token, read from an env var or a file.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Private key for SSH remotes.
    pub ssh_key: Option<PathBuf>,
    /// OpenSSH `known_hosts` file the SSH server's host key must be listed in.
    pub known_hosts: Option<PathBuf>,
}

/// The manifests of one revision, ready to load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkout {
    pub root: PathBuf,
    /// Commit id, or `worktree` for a plain directory.
    pub revision: String,
    /// Why this is not the remote's head (unreachable, refused), if it is not.
    pub held_back: Option<HeldBack>,
}

/// Why the host stays at an older revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeldBack {
    /// The remote could not be fetched: a passing condition.
    Unreachable(String),
    /// The head was refused (unverified or rewritten history): the repo is wrong.
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot fetch {url}")]
    Fetch {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot fetch {url}")]
    HostKey {
        url: String,
        #[source]
        source: Box<known_hosts::HostKeyError>,
    },
    #[error("cannot read the known_hosts file {path}")]
    KnownHosts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} did not answer within {}s (BERTH_GIT_TIMEOUT)", timeout.as_secs_f64())]
    FetchTimeout {
        url: String,
        timeout: Duration,
        #[source]
        source: git2::Error,
    },
    #[error("the manifest repo mirror in {path} is unusable")]
    Mirror {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("{what} not found in {url}")]
    NoSuchRef { url: String, what: String },
    #[error("cannot write the checkout of {revision} to {path}")]
    Checkout {
        revision: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the git token from {0}")]
    Token(String),
    #[error("cannot use state directory {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}; there is no earlier accepted revision to stay at")]
    NothingToStayAt(String),
    #[error("`{0}` is not a full commit id")]
    NotACommit(String),
    #[error("{0}; there is no earlier accepted revision to stay at")]
    RefusedWithNothingToStayAt(String),
    #[error(transparent)]
    Verify(#[from] verify::VerifyError),
}

/// What the state dir remembers about the source.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Memory {
    /// The last commit that passed every check; the host never goes back past it.
    accepted: Option<String>,
}

/// Whether `url` names a plain directory rather than a git remote.
pub fn is_plain_directory(url: &str) -> bool {
    !url.contains("://")
        && !url.contains('@')
        && Path::new(url).is_dir()
        && !Path::new(url).join(".git").exists()
        && !url.ends_with(".git")
}

/// How long a git remote may take to accept a connection, and then to answer each read:
/// `BERTH_GIT_TIMEOUT` in seconds, 30 by default. Without a bound, a remote that accepts
/// and never answers holds the pass forever.
pub fn git_timeout() -> Duration {
    std::env::var("BERTH_GIT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// Sets libgit2's process-wide connect and read timeouts, once, before the first fetch
/// (the agent's and `berth fleet`'s).
pub fn bound_git_io() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let millis = i32::try_from(git_timeout().as_millis()).unwrap_or(i32::MAX);
        // SAFETY: libgit2 reads these options when it opens a connection; the Once sets
        // them before any fetch of this process and never again, so no read races the
        // write.
        let set = unsafe {
            git2::opts::set_server_connect_timeout_in_milliseconds(millis)
                .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(millis))
        };
        if let Err(e) = set {
            tracing::warn!(error = %e, "cannot bound git's network timeouts");
        }
    });
}

/// Brings the mirror up to date and picks the revision to apply. An unreachable remote
/// keeps the last accepted revision; a refused head too, reported as such.
pub fn sync(
    spec: &RepoSpec,
    state_dir: &Path,
    now: jiff::Timestamp,
) -> Result<Checkout, SourceError> {
    if is_plain_directory(&spec.url) {
        return Ok(Checkout {
            root: PathBuf::from(&spec.url),
            revision: "worktree".into(),
            held_back: None,
        });
    }
    let dir = state_dir.join("source");
    std::fs::create_dir_all(&dir).map_err(|source| SourceError::State {
        path: dir.clone(),
        source,
    })?;
    let memory = read_memory(&dir);
    let mirror_path = dir.join("mirror.git");
    let mirror = open_mirror(&mirror_path, &spec.url)?;
    let stay = |why: HeldBack| -> Result<Checkout, SourceError> {
        let Some(accepted) = memory.accepted.as_deref() else {
            return Err(match why {
                HeldBack::Unreachable(t) => SourceError::NothingToStayAt(t),
                HeldBack::Refused(t) => SourceError::RefusedWithNothingToStayAt(t),
            });
        };
        let mut checkout = export(&mirror, accepted, &dir)?;
        checkout.held_back = Some(why);
        Ok(checkout)
    };

    if let Err(e) = fetch(&mirror, spec) {
        tracing::warn!(url = %spec.url, error = %crate::exit::chain(&e), "fetch failed; staying at the last accepted revision");
        return stay(HeldBack::Unreachable(crate::exit::chain(&e)));
    }
    let head = resolve_head(&mirror, spec)?;
    let head_text = head.to_string();

    if let Some(path) = &spec.allowed_signers {
        let signers = verify::AllowedSigners::load(path)?;
        if let Err(e) = verify::verify_commit(&mirror, head, &signers, now) {
            return stay(HeldBack::Refused(crate::exit::chain(&e)));
        }
    }
    if let Some(accepted) = memory.accepted.as_deref()
        && accepted != head_text
        && !spec.allow_rewrite
    {
        let previous = git2::Oid::from_str(accepted).ok();
        let descends =
            previous.is_some_and(|p| mirror.graph_descendant_of(head, p).unwrap_or(false));
        if !descends {
            return stay(HeldBack::Refused(format!(
                "the new head {} does not descend from the last applied commit {} (history was rewritten); set allow_rewrite: true to accept it",
                short(&head_text),
                short(accepted)
            )));
        }
    }
    export(&mirror, &head_text, &dir)
}

/// Records a revision whose manifests validated as the last accepted one: later heads must
/// descend from it, and the host stays at it when the remote is unreachable or refused.
/// Written as a plain loose ref, without libgit2: the agent daemon calls this, and keeps
/// libgit2 (and the TLS stack it starts) to its fetch child.
pub fn accept(state_dir: &Path, revision: &str) -> Result<(), SourceError> {
    let dir = state_dir.join("source");
    let refs = dir.join("mirror.git").join("refs").join("berth");
    if revision.len() != 40 || !revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SourceError::NotACommit(revision.to_owned()));
    }
    let state = |path: PathBuf| move |source| SourceError::State { path, source };
    std::fs::create_dir_all(&refs).map_err(state(refs.clone()))?;
    // Keeps the accepted commit reachable when the branch is rewritten later.
    let accepted = refs.join("accepted");
    crate::durable::write(&accepted, format!("{revision}\n").as_bytes())
        .map_err(state(accepted))?;
    write_memory(
        &dir,
        &Memory {
            accepted: Some(revision.to_owned()),
        },
    )
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn read_memory(dir: &Path) -> Memory {
    std::fs::read(dir.join("source.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_memory(dir: &Path, memory: &Memory) -> Result<(), SourceError> {
    let path = dir.join("source.json");
    crate::durable::write(
        &path,
        &serde_json::to_vec_pretty(memory).expect("memory serializes"),
    )
    .map_err(|source| SourceError::State { path, source })
}

fn open_mirror(path: &Path, url: &str) -> Result<git2::Repository, SourceError> {
    let mirror_err = |source| SourceError::Mirror {
        path: path.to_owned(),
        source,
    };
    let repo = match git2::Repository::open_bare(path) {
        Ok(r) => r,
        Err(_) => git2::Repository::init_bare(path).map_err(mirror_err)?,
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

/// Fetches what the spec follows, with the credentials and host keys it names.
fn fetch(repo: &git2::Repository, spec: &RepoSpec) -> Result<(), SourceError> {
    let fetch_err = |source| SourceError::Fetch {
        url: spec.url.clone(),
        source,
    };
    let token = read_token(spec.token_env.as_deref(), spec.token_file.as_deref())
        .map_err(SourceError::Token)?;
    let auth = RemoteAuth {
        ssh_key: spec.ssh_key.clone(),
        token,
        known_hosts: spec.known_hosts.clone(),
    };
    let (callbacks, refusal) = remote_callbacks(&spec.url, &auth)?;
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(callbacks);
    options.download_tags(git2::AutotagOption::None);
    let refspecs: Vec<String> = match &spec.follow {
        Follow::Branch(b) => vec![format!("+refs/heads/{b}:refs/remotes/origin/{b}")],
        Follow::Tag(t) => vec![format!("+refs/tags/{t}:refs/tags/{t}")],
        Follow::Commit(_) => vec!["+refs/heads/*:refs/remotes/origin/*".into()],
    };
    let mut remote = repo.find_remote("origin").map_err(fetch_err)?;
    bound_git_io();
    remote
        .fetch(&refspecs, Some(&mut options), None)
        .map_err(|source| match source.code() {
            git2::ErrorCode::Timeout => SourceError::FetchTimeout {
                url: spec.url.clone(),
                timeout: git_timeout(),
                source,
            },
            _ => match refusal.take() {
                Some(refused) => SourceError::HostKey {
                    url: spec.url.clone(),
                    source: Box::new(refused),
                },
                None => fetch_err(source),
            },
        })
}

/// The HTTPS token of a remote, from the environment variable or else the file named (its
/// content trimmed); the error names the one that could not be read.
pub fn read_token(var: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    match (var, file) {
        (Some(var), _) => std::env::var(var).map(Some).map_err(|_| format!("${var}")),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|_| file.display().to_string()),
        (None, None) => Ok(None),
    }
}

/// How berth authenticates to a git remote, and which SSH host keys it trusts there.
#[derive(Debug, Clone, Default)]
pub struct RemoteAuth {
    /// Private key for SSH remotes.
    pub ssh_key: Option<PathBuf>,
    /// Token for HTTPS remotes, sent as the password.
    pub token: Option<String>,
    /// OpenSSH `known_hosts` file; without it libgit2 checks `$HOME/.ssh/known_hosts`
    /// (the `HOME` of the process when libgit2 started), refusing a host it does not list.
    pub known_hosts: Option<PathBuf>,
}

/// What the host-key check refused on a connection. libgit2 replaces the callback's error
/// with its own "invalid or unknown remote ssh hostkey", so the caller reads the reason
/// here after a failed fetch or push.
#[derive(Debug, Clone, Default)]
pub struct HostKeyRefusal(Rc<RefCell<Option<known_hosts::HostKeyError>>>);

impl HostKeyRefusal {
    pub fn take(&self) -> Option<known_hosts::HostKeyError> {
        self.0.borrow_mut().take()
    }
}

/// The credential and host-key callbacks for a fetch from or a push to `url`: the SSH key
/// or token of `auth` (offered once: a refused credential fails rather than loops), and,
/// with `known_hosts`, the server's SSH host key checked against that file (TLS
/// certificates stay libgit2's to check).
pub fn remote_callbacks(
    url: &str,
    auth: &RemoteAuth,
) -> Result<(git2::RemoteCallbacks<'static>, HostKeyRefusal), SourceError> {
    let trusted =
        match &auth.known_hosts {
            Some(path) => Some(known_hosts::KnownHosts::read(path).map_err(|source| {
                SourceError::KnownHosts {
                    path: path.clone(),
                    source,
                }
            })?),
            None => None,
        };
    let mut callbacks = git2::RemoteCallbacks::new();
    let ssh_key = auth.ssh_key.clone();
    let token = auth.token.clone();
    let mut offered: Option<String> = None;
    callbacks.credentials(move |_url, username, allowed| {
        if let Some(offered) = &offered {
            return Err(git2::Error::from_str(&format!(
                "the remote refused the credentials ({offered})"
            )));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY)
            && let Some(key) = &ssh_key
        {
            let user = username.unwrap_or("git");
            offered = Some(format!("the SSH key {} for user {user}", key.display()));
            return git2::Cred::ssh_key(user, None, key, None);
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT)
            && let Some(token) = &token
        {
            offered = Some("the token".into());
            return git2::Cred::userpass_plaintext(username.unwrap_or("berth"), token);
        }
        offered = Some("no key or token is configured for this kind of remote".into());
        git2::Cred::default()
    });
    let refusal = HostKeyRefusal::default();
    if let Some(trusted) = trusted {
        let port = ssh_port(url);
        let refused = refusal.clone();
        callbacks.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
            };
            let checked = match hostkey.hostkey() {
                Some(key) => trusted.check(host, port, key),
                None => Err(known_hosts::HostKeyError::Unreadable {
                    host: host.to_owned(),
                }),
            };
            match checked {
                Ok(()) => Ok(git2::CertificateCheckStatus::CertificateOk),
                Err(e) => {
                    let message = e.to_string();
                    *refused.0.borrow_mut() = Some(e);
                    Err(git2::Error::from_str(&message))
                }
            }
        });
    }
    Ok((callbacks, refusal))
}

/// Whether libgit2 reaches `url` over SSH: `ssh://`, `ssh+git://`, `git+ssh://`, or the
/// scp-like `[user@]host:path`.
pub fn is_ssh_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return matches!(scheme, "ssh" | "ssh+git" | "git+ssh");
    }
    url.split_once(':')
        .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
}

/// The SSH port of `url`: the one in `ssh://host:port/…`, else 22.
fn ssh_port(url: &str) -> u16 {
    let Some((_, rest)) = url.split_once("://") else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

fn resolve_head(repo: &git2::Repository, spec: &RepoSpec) -> Result<git2::Oid, SourceError> {
    let missing = |what: String| SourceError::NoSuchRef {
        url: spec.url.clone(),
        what,
    };
    let (name, what) = match &spec.follow {
        Follow::Branch(b) => (format!("refs/remotes/origin/{b}"), format!("branch {b}")),
        Follow::Tag(t) => (format!("refs/tags/{t}"), format!("tag {t}")),
        Follow::Commit(c) => {
            let oid = git2::Oid::from_str(c).map_err(|_| missing(format!("commit {c}")))?;
            repo.find_commit(oid)
                .map_err(|_| missing(format!("commit {c}")))?;
            return Ok(oid);
        }
    };
    repo.revparse_single(&name)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|_| missing(what))
}

/// Writes a commit's tree to `dir/checkout/<commit>` (once) and removes older checkouts.
fn export(repo: &git2::Repository, revision: &str, dir: &Path) -> Result<Checkout, SourceError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        let revision = revision.to_owned();
        move |source| SourceError::Checkout {
            revision,
            path,
            source,
        }
    };
    let checkouts = dir.join("checkout");
    let target = checkouts.join(revision);
    if !target.exists() {
        let oid = git2::Oid::from_str(revision).map_err(|source| SourceError::Mirror {
            path: dir.to_owned(),
            source,
        })?;
        let tree = repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|source| SourceError::Mirror {
                path: dir.to_owned(),
                source,
            })?;
        let staging = checkouts.join(format!("{revision}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        write_tree(repo, &tree, &staging).map_err(io(&staging))?;
        std::fs::rename(&staging, &target).map_err(io(&target))?;
    }
    if let Ok(entries) = std::fs::read_dir(&checkouts) {
        for e in entries.flatten() {
            if e.file_name() != revision {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(Checkout {
        root: target,
        revision: revision.to_owned(),
        held_back: None,
    })
}

/// Materialises a tree: files, directories and symlinks as git stores them (the loader
/// refuses symlinks that leave the repo).
pub fn write_tree(repo: &git2::Repository, tree: &git2::Tree, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        if name.contains('/') || name == ".." || name == "." {
            continue;
        }
        let path = dir.join(name);
        let object = entry.to_object(repo).map_err(std::io::Error::other)?;
        match entry.filemode() {
            0o040000 => {
                let sub = object.peel_to_tree().map_err(std::io::Error::other)?;
                write_tree(repo, &sub, &path)?;
            }
            0o120000 => {
                let blob = object.peel_to_blob().map_err(std::io::Error::other)?;
                let target = String::from_utf8_lossy(blob.content()).into_owned();
                std::os::unix::fs::symlink(target, &path)?;
            }
            0o100644 | 0o100755 => {
                let blob = object.peel_to_blob().map_err(std::io::Error::other)?;
                std::fs::write(&path, blob.content())?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_and_their_ports_as_libgit2_reads_them() {
        for url in [
            "ssh://git@example.org/m.git",
            "git+ssh://example.org:2222/m.git",
            "git@example.org:fleet/m.git",
        ] {
            assert!(is_ssh_url(url), "{url}");
        }
        for url in ["https://example.org/m.git", "file:///srv/m.git", "/srv/m"] {
            assert!(!is_ssh_url(url), "{url}");
        }
        assert_eq!(ssh_port("ssh://root@127.0.0.1:2222/srv/m.git"), 2222);
        assert_eq!(ssh_port("ssh://[::1]:2200/m.git"), 2200);
        assert_eq!(ssh_port("ssh://example.org/m.git"), 22);
        assert_eq!(ssh_port("git@example.org:m.git"), 22);
    }
}
