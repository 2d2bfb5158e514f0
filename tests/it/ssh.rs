//! The agent over SSH git remotes, against a real `sshd` (Debian's openssh-server, started
//! by `common::sshd`), the real engine and real repos: converging and following pushes,
//! signed heads, and the host-key and client-key refusals a partner must be able to trust.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::sshd::{Sshd, keygen};
use crate::common::*;

/// A fleet repo served over SSH: the host's manifest dir is the engineer's working copy,
/// pushed (over SSH, with OpenSSH's own client) to a bare repo the agent follows.
struct Remote {
    sshd: Sshd,
    host: Host,
    bare: PathBuf,
    /// The known_hosts file OpenSSH's client and the agent trust.
    known_hosts: PathBuf,
}

impl Remote {
    fn new(tag: &str, range: &str) -> Remote {
        let sshd = Sshd::start();
        let host = Host::new(tag);
        host.write(&versions(range));
        let bare = host.dir.path().join("manifests.git");
        let known_hosts = host.dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line())).unwrap();
        let remote = Remote {
            sshd,
            host,
            bare,
            known_hosts,
        };
        git(
            remote.host.dir.path(),
            &["init", "-q", "--bare", "-b", "main", "manifests.git"],
        );
        git(&remote.host.repo(), &["init", "-q", "-b", "main"]);
        git(
            &remote.host.repo(),
            &["remote", "add", "origin", &remote.url()],
        );
        remote
    }

    fn url(&self) -> String {
        self.sshd.url(&self.bare)
    }

    /// Commits everything in the working copy and pushes it over SSH; returns the commit.
    fn push(&self, message: &str, git_args: &[&str]) -> String {
        let repo = self.host.repo();
        git(&repo, &["add", "-A"]);
        let mut args = git_args.to_vec();
        args.extend(["commit", "-q", "--allow-empty", "-m", message]);
        git(&repo, &args);
        let ssh = format!(
            "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
            self.sshd.client_key().display(),
            self.known_hosts.display()
        );
        run(Command::new("git")
            .current_dir(&repo)
            .args(["push", "-q", "origin", "main"])
            .env("GIT_SSH_COMMAND", ssh)
            .env("HOME", &repo)
            .env("GIT_CONFIG_NOSYSTEM", "1"))
        .assert_exit(0);
        git(&self.bare, &["rev-parse", "main"])
    }

    /// agent.yaml following the bare repo over SSH with this key and known_hosts file.
    fn config(&self, key: &Path, known_hosts: &Path, extra_repo_lines: &str) -> PathBuf {
        self.host.agent_config(
            &format!(
                "  url: {}\n  branch: main\n  ssh_key: {}\n  known_hosts: {}\n{extra_repo_lines}",
                self.url(),
                key.display(),
                known_hosts.display()
            ),
            "",
        )
    }

    /// How many SSH logins the server accepted so far.
    fn logins(&self) -> usize {
        self.sshd
            .log()
            .matches("Accepted publickey for root")
            .count()
    }
}

fn versions(v: &str) -> Setup {
    Setup {
        versions: Some(v.into()),
        ..Setup::default()
    }
}

fn agent_once(config: &Path) -> Run {
    Berth::new("agent")
        .args(["--once", "--config"])
        .arg(config)
        .run()
}

fn revision_label(host: &Host) -> String {
    inspect(&host.name(), "{{index .Config.Labels \"berth.revision\"}}")
}

fn status_source(host: &Host) -> String {
    let out = Berth::new("status")
        .args(["--format", "json", "--state-dir"])
        .arg(host.state_dir())
        .run();
    out.assert_exit(0);
    out.json()["source"].as_str().unwrap_or_default().to_owned()
}

/// A known_hosts file listing a freshly made key (not the server's) for the server.
fn wrong_known_hosts(remote: &Remote) -> PathBuf {
    let other = keygen(remote.host.dir.path(), "impostor");
    let public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let path = remote.host.dir.path().join("wrong_known_hosts");
    std::fs::write(
        &path,
        format!("[127.0.0.1]:{} {}", remote.sshd.port, public.trim()),
    )
    .unwrap();
    path
}

#[test]
fn an_agent_converges_over_ssh_and_follows_pushes() {
    let remote = Remote::new("ssh", "=1.0.0");
    let first = remote.push("first", &[]);
    let config = remote.config(&remote.sshd.client_key(), &remote.known_hosts, "");
    agent_once(&config).assert_exit(0);
    assert_eq!(remote.host.version_label(), "1.0.0");
    assert_eq!(revision_label(&remote.host), first);
    assert!(remote.host.running());
    assert_eq!(
        remote.host.served_version().as_deref(),
        Some("1.0.0"),
        "the service answers"
    );
    let logins = remote.logins();
    assert!(
        logins >= 2,
        "the push and the agent logged in:\n{}",
        remote.sshd.log()
    );

    remote.host.write(&versions("^1"));
    let second = remote.push("bump", &[]);
    agent_once(&config).assert_exit(0);
    assert_eq!(remote.host.version_label(), "1.1.0");
    assert_eq!(revision_label(&remote.host), second);
    assert!(remote.logins() > logins, "the second pass fetched over SSH");
}

#[test]
fn signed_heads_are_verified_over_ssh_with_hashed_known_hosts() {
    let remote = Remote::new("sshsig", "=1.0.0");
    // `HashKnownHosts yes`, as many partners' OpenSSH writes it.
    run(Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&remote.known_hosts))
    .assert_exit(0);
    let hashed = std::fs::read_to_string(&remote.known_hosts).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");

    let signing = keygen(remote.host.dir.path(), "fleet");
    let public = std::fs::read_to_string(signing.with_extension("pub")).unwrap();
    let signers = remote.host.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("fleet@example.org {public}")).unwrap();
    let key_arg = format!("user.signingkey={}", signing.display());
    let signed = remote.push(
        "signed",
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &key_arg,
            "-c",
            "commit.gpgsign=true",
        ],
    );
    let config = remote.config(
        &remote.sshd.client_key(),
        &remote.known_hosts,
        &format!("  verify: {{ allowed_signers: {} }}\n", signers.display()),
    );
    agent_once(&config).assert_exit(0);
    assert_eq!(revision_label(&remote.host), signed);
    assert_eq!(remote.host.version_label(), "1.0.0");

    remote.host.write(&versions("^1"));
    remote.push("unsigned", &[]);
    agent_once(&config).assert_exit(1);
    assert_eq!(
        remote.host.version_label(),
        "1.0.0",
        "stays at the signed head"
    );
    assert_eq!(revision_label(&remote.host), signed);
    let source = status_source(&remote.host);
    assert!(source.contains("not signed"), "{source}");
}

#[test]
fn a_wrong_host_key_refuses_the_fetch_and_changes_nothing() {
    let remote = Remote::new("sshkey", "=1.0.0");
    let first = remote.push("first", &[]);
    let wrong = wrong_known_hosts(&remote);
    let host_name = format!("[127.0.0.1]:{}", remote.sshd.port);
    let fingerprint = remote.sshd.fingerprint();

    // Never converged: nothing to stay at, nothing created.
    let logins = remote.logins();
    let out = agent_once(&remote.config(&remote.sshd.client_key(), &wrong, ""));
    out.assert_exit(3);
    let text = out.text();
    assert!(
        text.contains(&format!("the host key of {host_name} changed"))
            && text.contains(&format!("ssh-ed25519 {fingerprint}")),
        "{text}"
    );
    assert!(remote.host.containers().is_empty(), "nothing was created");
    assert_eq!(
        remote.logins(),
        logins,
        "berth never logged in:\n{}",
        remote.sshd.log()
    );

    // Converged, then the key no longer matches: the host stays as it is.
    agent_once(&remote.config(&remote.sshd.client_key(), &remote.known_hosts, "")).assert_exit(0);
    let id = remote.host.id();
    remote.host.write(&versions("^1"));
    remote.push("bump", &[]);
    let out = agent_once(&remote.config(&remote.sshd.client_key(), &wrong, ""));
    out.assert_exit(3);
    assert_eq!(remote.host.id(), id, "the container was not touched");
    assert_eq!(revision_label(&remote.host), first);
    let source = status_source(&remote.host);
    assert!(
        source.contains(&host_name) && source.contains(&fingerprint),
        "{source}"
    );

    // A file that does not list the server at all says so, and how to fix it.
    let other_host = remote.host.dir.path().join("other_known_hosts");
    let line = remote.sshd.known_hosts_line();
    std::fs::write(&other_host, line.replace("[127.0.0.1]", "[127.0.0.2]")).unwrap();
    let out = agent_once(&remote.config(&remote.sshd.client_key(), &other_host, ""));
    out.assert_exit(3);
    let source = status_source(&remote.host);
    assert!(
        source.contains(&format!("lists no key for {host_name}"))
            && source.contains(&format!("ssh-keyscan -p {} 127.0.0.1", remote.sshd.port)),
        "{source}"
    );
    assert_eq!(remote.host.version_label(), "1.0.0");
}

#[test]
fn a_client_key_the_server_refuses_is_a_clear_error() {
    let remote = Remote::new("sshauth", "=1.0.0");
    remote.push("first", &[]);
    let stranger = keygen(remote.host.dir.path(), "stranger");
    let logins = remote.logins();
    let out = agent_once(&remote.config(&stranger, &remote.known_hosts, ""));
    out.assert_exit(3);
    let text = out.text();
    assert!(
        text.contains(&format!("cannot fetch {}", remote.url()))
            && text.contains(&format!(
                "the remote refused the credentials (the SSH key {} for user root)",
                stranger.display()
            )),
        "{text}"
    );
    assert!(remote.host.containers().is_empty());
    assert_eq!(remote.logins(), logins, "{}", remote.sshd.log());
    let offered = run(Command::new("ssh-keygen")
        .arg("-lf")
        .arg(stranger.with_extension("pub")));
    let offered = offered
        .stdout()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(
        remote
            .sshd
            .log()
            .contains("Failed publickey for root from 127.0.0.1 port"),
        "the server saw the key and refused it:\n{}",
        remote.sshd.log()
    );
    assert!(
        remote.sshd.log().contains(&offered),
        "{}",
        remote.sshd.log()
    );
}

/// Without known_hosts, an SSH remote is refused when the config is read, before any
/// connection: there is no silent trust of whatever key answers.
#[test]
fn an_ssh_remote_without_known_hosts_is_refused_at_load() {
    let remote = Remote::new("sshnokh", "=1.0.0");
    remote.push("first", &[]);
    let config = remote.host.agent_config(
        &format!(
            "  url: {}\n  ssh_key: {}\n",
            remote.url(),
            remote.sshd.client_key().display()
        ),
        "",
    );
    let connections = remote.sshd.log().matches("Connection from").count();
    let out = agent_once(&config);
    out.assert_exit(1);
    assert!(
        out.text().contains(&format!(
            "agent.yaml:3:8: error: `{}` is an SSH remote: set repo.known_hosts",
            remote.url()
        )),
        "{}",
        out.text()
    );
    assert_eq!(
        remote.sshd.log().matches("Connection from").count(),
        connections,
        "no connection was made:\n{}",
        remote.sshd.log()
    );
}

/// `source::remote_callbacks`, as the status-repo push uses it: a push over SSH with the
/// server's key in known_hosts lands in the bare repo; with a wrong key the refusal names
/// the host and key; and without known_hosts libgit2 alone refuses a host that
/// `$HOME/.ssh/known_hosts` does not list (it never trusts whatever key answers).
#[test]
fn remote_callbacks_push_over_ssh_and_refuse_unknown_hosts() {
    use berth::source::{RemoteAuth, known_hosts::HostKeyError, remote_callbacks};

    let remote = Remote::new("sshpush", "=1.0.0");
    let pushed = remote.push("first", &[]);
    let local = git2::Repository::open(remote.host.repo()).unwrap();
    let mut auth = RemoteAuth {
        ssh_key: Some(remote.sshd.client_key()),
        token: None,
        known_hosts: Some(remote.known_hosts.clone()),
    };
    let push = |auth: &RemoteAuth, refspec: &str| {
        let (callbacks, refusal) = remote_callbacks(&remote.url(), auth).unwrap();
        let mut options = git2::PushOptions::new();
        options.remote_callbacks(callbacks);
        let mut origin = local.remote_anonymous(&remote.url()).unwrap();
        let result = origin.push(&[refspec], Some(&mut options));
        (result, refusal.take())
    };

    let (result, refusal) = push(&auth, "refs/heads/main:refs/heads/status");
    assert!(
        result.is_ok() && refusal.is_none(),
        "{result:?} {refusal:?}"
    );
    assert_eq!(git(&remote.bare, &["rev-parse", "status"]), pushed);

    auth.known_hosts = Some(wrong_known_hosts(&remote));
    let (result, refusal) = push(&auth, "refs/heads/main:refs/heads/refused");
    assert!(result.is_err());
    match refusal {
        Some(HostKeyError::Changed {
            host, fingerprint, ..
        }) => {
            assert_eq!(host, format!("[127.0.0.1]:{}", remote.sshd.port));
            assert_eq!(fingerprint, remote.sshd.fingerprint());
        }
        other => panic!("{other:?}"),
    }

    let home_known_hosts = std::env::home_dir().unwrap().join(".ssh/known_hosts");
    let listed = std::fs::read_to_string(&home_known_hosts).unwrap_or_default();
    assert!(
        !listed.contains(&format!("[127.0.0.1]:{}", remote.sshd.port)),
        "{} lists this test's server",
        home_known_hosts.display()
    );
    auth.known_hosts = None;
    let (result, refusal) = push(&auth, "refs/heads/main:refs/heads/unknown");
    let err = result.unwrap_err();
    assert_eq!(err.code(), git2::ErrorCode::Certificate, "{err}");
    assert_eq!(err.message(), "invalid or unknown remote ssh hostkey");
    assert!(refusal.is_none());
    let refs = git(&remote.bare, &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(
        refs, "refs/heads/main\nrefs/heads/status",
        "only the trusted push landed"
    );
}
