//! `/etc/berth/agent.yaml` (docs/operations.md): which partner this host is, where its manifests
//! come from and what to trust, how often to reconcile, where to keep state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::diag::{Diagnostic, Diagnostics};
use crate::manifest::{Pos, Sp, syntax};
use crate::plan::gate::DEFAULT_MIN_FREE;
use crate::source::{self, Follow, RepoSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    partner: Sp<String>,
    repo: RepoFile,
    #[serde(default)]
    interval: Option<Sp<String>>,
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    listen: Option<Sp<String>>,
    #[serde(default)]
    policy: Option<PathBuf>,
    #[serde(default)]
    age_identity: Option<PathBuf>,
    #[serde(default)]
    secrets_dir: Option<PathBuf>,
    #[serde(default)]
    min_free: Option<Sp<String>>,
    #[serde(default)]
    notify: Vec<crate::notify::config::HookFile>,
    #[serde(default)]
    deferred_long: Option<Sp<String>>,
    #[serde(default)]
    report: Option<ReportFile>,
    #[serde(default)]
    namespace: Option<Sp<String>>,
    #[serde(default)]
    engine: Option<Sp<String>>,
}

/// `report:`, the status repo the agent pushes its record to (docs/reporting.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    url: Sp<String>,
    #[serde(default)]
    branch: Option<Sp<String>>,
    #[serde(default)]
    ssh_key: Option<PathBuf>,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    signing_key: Option<PathBuf>,
    #[serde(default)]
    known_hosts: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoFile {
    url: Sp<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    commit: Option<Sp<String>>,
    #[serde(default)]
    verify: Option<VerifyFile>,
    #[serde(default)]
    allow_rewrite: bool,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    ssh_key: Option<PathBuf>,
    #[serde(default)]
    known_hosts: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyFile {
    allowed_signers: PathBuf,
}

/// A checked agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub partner: String,
    pub repo: RepoSpec,
    pub interval: Duration,
    pub state_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    /// The config file itself, for the fetch child to read.
    pub path: PathBuf,
    /// The directory the config file is in: berth's own, guarded by the floor.
    pub config_dir: PathBuf,
    /// The age identity file the partner's secrets are opened with.
    pub age_identity: Option<PathBuf>,
    /// The tmpfs directory secret files are mounted from: berth's own, guarded too.
    pub secrets_dir: PathBuf,
    /// The partner's host policy file, read at every pass so a change needs no restart.
    pub policy: Option<PathBuf>,
    /// Bytes a pull must leave free on the engine's data root; 0 turns the guard off.
    pub min_free: u64,
    /// The webhooks told of transitions, and when a deferral is long.
    pub notify: crate::notify::Notify,
    /// The status repo the agent reports to, if any.
    pub report: Option<crate::report::push::Spec>,
    /// The namespace it acts in alone; its state is under `namespaces/<ns>` in `state_dir`.
    pub namespace: Option<String>,
    /// One Docker engine (the default) or a Swarm manager (docs/swarm.md).
    pub engine: crate::container::EngineKind,
}

impl AgentConfig {
    /// berth's own files and directories, which no container may mount or read as an env
    /// file: its credentials, its policy and its secrets.
    pub fn own_files(&self) -> Vec<PathBuf> {
        [
            &self.repo.token_file,
            &self.repo.ssh_key,
            &self.repo.known_hosts,
            &self.repo.allowed_signers,
            &self.policy,
            &self.age_identity,
        ]
        .into_iter()
        .chain(
            self.report
                .iter()
                .flat_map(|r| [&r.ssh_key, &r.known_hosts, &r.token_file, &r.signing_key]),
        )
        .flatten()
        .chain([&self.secrets_dir])
        .cloned()
        .collect()
    }
}

/// Reads and checks the config; every problem is a diagnostic at its `path:line:col`.
pub fn load(path: &Path) -> Result<AgentConfig, Diagnostics> {
    let name = path.display().to_string();
    let mut diags = Diagnostics::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::error(
                &name,
                Pos { line: 1, col: 1 },
                format!("cannot read: {e}"),
            ));
            return Err(diags);
        }
    };
    let file: File = match crate::manifest::parse(&text) {
        Ok(f) => f,
        Err((pos, message)) => {
            diags.push(Diagnostic::error(&name, pos, message));
            return Err(diags);
        }
    };
    if let Some(ns) = &file.namespace
        && !syntax::is_name(ns)
    {
        diags.push(Diagnostic::error(
            &name,
            ns.pos,
            format!("invalid namespace `{}`", ns.value),
        ));
    }
    let namespace = file.namespace.map(|ns| ns.value);
    let engine = match &file.engine {
        None => Default::default(),
        Some(e) => e.parse().unwrap_or_else(|why: String| {
            diags.push(Diagnostic::error(&name, e.pos, why));
            Default::default()
        }),
    };
    if !syntax::is_name(&file.partner) {
        diags.push(Diagnostic::error(
            &name,
            file.partner.pos,
            format!("invalid partner name `{}`", file.partner.value),
        ));
    }
    let follow = match (&file.repo.branch, &file.repo.tag, &file.repo.commit) {
        (None, None, None) => Follow::Branch("main".into()),
        (Some(b), None, None) => Follow::Branch(b.clone()),
        (None, Some(t), None) => Follow::Tag(t.clone()),
        (None, None, Some(c)) => {
            if c.len() != 40 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                diags.push(Diagnostic::error(
                    &name,
                    c.pos,
                    "commit must be a full 40-character commit id",
                ));
            }
            Follow::Commit(c.value.clone())
        }
        _ => {
            diags.push(Diagnostic::error(
                &name,
                file.repo.url.pos,
                "give at most one of branch, tag and commit",
            ));
            Follow::Branch("main".into())
        }
    };
    check_known_hosts(
        "repo",
        &file.repo.url,
        file.repo.known_hosts.as_ref(),
        &name,
        &mut diags,
    );
    let interval = match &file.interval {
        None => Duration::from_secs(300),
        Some(i) => match syntax::parse_duration(i) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                diags.push(Diagnostic::error(
                    &name,
                    i.pos,
                    "interval must be at least 1s",
                ));
                Duration::from_secs(300)
            }
            Err(m) => {
                diags.push(Diagnostic::error(&name, i.pos, m));
                Duration::from_secs(300)
            }
        },
    };
    let listen = match &file.listen {
        None => None,
        Some(l) => match l.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                diags.push(Diagnostic::error(
                    &name,
                    l.pos,
                    format!("invalid listen address `{}`: expected ip:port", l.value),
                ));
                None
            }
        },
    };
    let min_free = match &file.min_free {
        None => DEFAULT_MIN_FREE,
        Some(m) => syntax::parse_size(m, "min_free").unwrap_or_else(|why| {
            diags.push(Diagnostic::error(&name, m.pos, why));
            DEFAULT_MIN_FREE
        }),
    };
    let notify =
        crate::notify::config::check(&name, file.notify, file.deferred_long.as_ref(), &mut diags);
    let report = file.report.map(|r| report_spec(r, &name, &mut diags));
    if diags.has_errors() {
        return Err(diags);
    }
    Ok(AgentConfig {
        partner: file.partner.value,
        repo: RepoSpec {
            url: file.repo.url.value,
            follow,
            allowed_signers: file.repo.verify.map(|v| v.allowed_signers),
            allow_rewrite: file.repo.allow_rewrite,
            token_env: file.repo.token_env,
            token_file: file.repo.token_file,
            ssh_key: file.repo.ssh_key,
            known_hosts: file.repo.known_hosts.map(|k| PathBuf::from(k.value)),
        },
        interval,
        state_dir: crate::state::namespaced(
            &file
                .state_dir
                .map_or_else(|| PathBuf::from("/var/lib/berth"), PathBuf::from),
            namespace.as_deref(),
        ),
        listen,
        age_identity: file.age_identity,
        secrets_dir: file
            .secrets_dir
            .unwrap_or_else(|| PathBuf::from("/run/berth/secrets")),
        path: path.to_owned(),
        config_dir: std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
        policy: file.policy,
        min_free,
        notify,
        report,
        namespace,
        engine,
    })
}

/// The `report:` block, checked: a URL, a valid branch name, at most one token source, and
/// `known_hosts` exactly when the URL is an SSH one.
fn report_spec(r: ReportFile, name: &str, diags: &mut Diagnostics) -> crate::report::push::Spec {
    if r.url.trim().is_empty() {
        diags.push(Diagnostic::error(name, r.url.pos, "report.url is empty"));
    }
    let branch = match r.branch {
        None => "main".to_owned(),
        Some(b) => {
            if !is_branch_name(&b.value) {
                diags.push(Diagnostic::error(
                    name,
                    b.pos,
                    format!("invalid branch name `{}`", b.value),
                ));
            }
            b.value
        }
    };
    check_known_hosts("report", &r.url, r.known_hosts.as_ref(), name, diags);
    if r.token_env.is_some() && r.token_file.is_some() {
        diags.push(Diagnostic::error(
            name,
            r.url.pos,
            "give at most one of report.token_env and report.token_file",
        ));
    }
    crate::report::push::Spec {
        url: r.url.value.trim().to_owned(),
        branch,
        ssh_key: r.ssh_key,
        token_env: r.token_env,
        token_file: r.token_file,
        signing_key: r.signing_key,
        known_hosts: r.known_hosts.map(|k| PathBuf::from(k.value)),
    }
}

/// An SSH remote names the host keys it trusts, as it names its key: an unattended agent
/// must not depend on what the service user's home happens to hold. `block` is `repo` or
/// `report`, the block `url` and `known_hosts` are in.
fn check_known_hosts(
    block: &str,
    url: &Sp<String>,
    known_hosts: Option<&Sp<String>>,
    name: &str,
    diags: &mut Diagnostics,
) {
    let url_text = url.value.trim();
    match (known_hosts, source::is_ssh_url(url_text)) {
        (None, true) => diags.push(Diagnostic::error(
            name,
            url.pos,
            format!(
                "`{url_text}` is an SSH remote: set {block}.known_hosts to a file listing the server's host key \
                 (ssh-keyscan -p PORT HOST > /etc/berth/known_hosts, then check the fingerprint)"
            ),
        )),
        (Some(k), false) => diags.push(Diagnostic::error(
            name,
            k.pos,
            format!("known_hosts is for SSH remotes, and `{url_text}` is not one"),
        )),
        _ => {}
    }
}

/// git's rules for a branch name (`git check-ref-format --branch`), checked without
/// libgit2, which the daemon keeps out of its own process (see `fetch`).
fn is_branch_name(b: &str) -> bool {
    !b.is_empty()
        && !b.starts_with(['-', '/', '.'])
        && !b.ends_with(['/', '.'])
        && !b.ends_with(".lock")
        && !b.contains("..")
        && !b.contains("//")
        && !b.contains("@{")
        && !b.contains("/.")
        && b != "@"
        && !b.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<AgentConfig, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    const BASE: &str = "partner: lab\nrepo:\n  url: /srv/manifests\n";

    #[test]
    fn min_free_defaults_to_2_gib_and_takes_berths_sizes() {
        assert_eq!(load_text(BASE).unwrap().min_free, 2 << 30);
        let set = load_text(&format!("{BASE}min_free: 512m\n")).unwrap();
        assert_eq!(set.min_free, 512 << 20);
        let off = load_text(&format!("{BASE}min_free: 0\n")).unwrap();
        assert_eq!(off.min_free, 0);
    }

    #[test]
    fn a_namespace_is_a_name_and_keeps_its_state_apart() {
        let none = load_text(BASE).unwrap();
        assert_eq!(
            (none.namespace, none.state_dir),
            (None, PathBuf::from("/var/lib/berth"))
        );
        let staging = load_text(&format!("{BASE}namespace: staging\n")).unwrap();
        assert_eq!(staging.namespace.as_deref(), Some("staging"));
        assert_eq!(
            staging.state_dir,
            PathBuf::from("/var/lib/berth/namespaces/staging")
        );
        let bad = load_text(&format!("{BASE}namespace: Staging_1\n")).unwrap_err();
        let text = bad.render_text(Path::new(""));
        assert!(
            text.contains("agent.yaml:4:12") && text.contains("invalid namespace `Staging_1`"),
            "{text}"
        );
    }

    #[test]
    fn an_ssh_remote_names_its_known_hosts() {
        let ssh = "partner: lab\nrepo:\n  url: git@git.example.org:fleet/manifests.git\n";
        let text = load_text(ssh).unwrap_err().render_text(Path::new(""));
        assert!(
            text.contains("agent.yaml:3:8")
                && text.contains("is an SSH remote: set repo.known_hosts"),
            "{text}"
        );
        let set = load_text(&format!("{ssh}  known_hosts: /etc/berth/known_hosts\n")).unwrap();
        assert_eq!(
            set.repo.known_hosts.as_deref(),
            Some(Path::new("/etc/berth/known_hosts"))
        );
        assert!(
            set.own_files()
                .contains(&PathBuf::from("/etc/berth/known_hosts"))
        );
        let https =
            "partner: lab\nrepo:\n  url: https://git.example.org/m.git\n  known_hosts: kh\n";
        let text = load_text(https).unwrap_err().render_text(Path::new(""));
        assert!(
            text.contains("agent.yaml:4:16") && text.contains("known_hosts is for SSH remotes"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_min_free_is_an_error_at_its_position() {
        let diags = load_text(&format!("{BASE}min_free: 2 GiB\n")).unwrap_err();
        let text = diags.render_text(Path::new(""));
        assert!(
            text.contains("agent.yaml:4:11")
                && text.contains(
                    "invalid min_free `2 GiB`: expected bytes or a number with k, m or g"
                ),
            "{text}"
        );
    }

    #[test]
    fn report_takes_a_url_and_defaults_to_main() {
        let config = load_text(&format!(
            "{BASE}report:\n  url: file:///srv/status.git\n  signing_key: /etc/berth/host_key\n"
        ))
        .unwrap();
        let report = config.report.clone().unwrap();
        assert_eq!(report.url, "file:///srv/status.git");
        assert_eq!(report.branch, "main");
        assert!(
            config
                .own_files()
                .contains(&PathBuf::from("/etc/berth/host_key")),
            "the signing key is berth's own"
        );
        assert_eq!(load_text(BASE).unwrap().report, None);
    }

    #[test]
    fn an_ssh_status_repo_names_its_known_hosts() {
        let ssh = format!("{BASE}report:\n  url: ssh://git@git.example.org/fleet/status.git\n");
        let text = load_text(&ssh).unwrap_err().render_text(Path::new(""));
        assert!(
            text.contains("agent.yaml:5:8")
                && text.contains(
                    "`ssh://git@git.example.org/fleet/status.git` is an SSH remote: set report.known_hosts"
                )
                && text.contains("ssh-keyscan -p PORT HOST"),
            "{text}"
        );
        let set = load_text(&format!(
            "{ssh}  known_hosts: /etc/berth/status_known_hosts\n"
        ))
        .unwrap();
        let report = set.report.clone().unwrap();
        assert_eq!(
            report.known_hosts.as_deref(),
            Some(Path::new("/etc/berth/status_known_hosts"))
        );
        assert!(
            set.own_files()
                .contains(&PathBuf::from("/etc/berth/status_known_hosts"))
        );
        let file = format!("{BASE}report:\n  url: file:///srv/status.git\n  known_hosts: kh\n");
        let text = load_text(&file).unwrap_err().render_text(Path::new(""));
        assert!(
            text.contains("agent.yaml:6:16") && text.contains("known_hosts is for SSH remotes"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_report_block_is_an_error_at_its_position() {
        let diags = load_text(&format!(
            "{BASE}report:\n  url: /srv/status.git\n  branch: a..b\n"
        ))
        .unwrap_err();
        let text = diags.render_text(Path::new(""));
        assert!(
            text.contains("agent.yaml:6:11") && text.contains("invalid branch name `a..b`"),
            "{text}"
        );
        let diags = load_text(&format!(
            "{BASE}report:\n  url: /srv/status.git\n  sign: x\n"
        ))
        .unwrap_err();
        let text = diags.render_text(Path::new(""));
        assert!(text.contains("agent.yaml:6:3"), "{text}");
    }
}
