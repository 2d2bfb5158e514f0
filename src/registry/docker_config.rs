//! Registry credentials the way the Docker CLI keeps them: `$DOCKER_CONFIG/config.json`
//! (else `~/.docker/config.json`) with `auths`, `credHelpers` and `credsStore`. Docker Hub
//! answers to `docker.io`, `index.docker.io` and `registry-1.docker.io`, and the CLI files
//! all three under `https://index.docker.io/v1/`; so does berth.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::image::{Credentials, IDENTITY_TOKEN_USER};

/// The key Docker Hub's credentials are kept under, and the server name its helpers get.
pub const HUB_KEY: &str = "https://index.docker.io/v1/";

/// How long a credential helper may take: one that hangs would hold the pass (and with it
/// the agent's status server) forever.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The user's Docker client configuration; empty when there is none.
#[derive(Debug, Default)]
pub struct DockerConfig {
    file: File,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("credential helper {helper} did not start")]
    Start {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper {helper} did not answer within {}s and was stopped", timeout.as_secs_f64())]
    Timeout { helper: String, timeout: Duration },
    #[error("cannot wait for credential helper {helper}")]
    Wait {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper {helper} has no credentials for {server}")]
    NoCredentials { helper: String, server: String },
    #[error("credential helper {helper} answered something that is not credentials")]
    Answer {
        helper: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The directory the Docker CLI keeps its `config.json` with registry credentials in.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
}

impl DockerConfig {
    /// Reads the config the Docker CLI would; a missing or unreadable file means no
    /// credentials (anonymous pulls), which is what the CLI does too.
    pub fn load() -> DockerConfig {
        let path = config_dir().map(|d| d.join("config.json"));
        let file = path
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an unreadable Docker config.json");
                    None
                }
            })
            .unwrap_or_default();
        DockerConfig { file }
    }

    /// Credentials for a registry host: its credential helper, else `auths` (an identity
    /// token before a user and password), else the default credential store. A helper
    /// that fails or hangs is logged and means no credentials.
    pub fn credentials(&self, registry: &str) -> Option<Credentials> {
        let host = canonical(registry);
        let server = if host == canonical(HUB_KEY) {
            HUB_KEY
        } else {
            registry
        };
        let keyed = |key: &String| key == registry || canonical(key) == host;
        let helper = self
            .file
            .cred_helpers
            .get(registry)
            .or_else(|| {
                self.file
                    .cred_helpers
                    .iter()
                    .find(|(k, _)| keyed(k))
                    .map(|(_, v)| v)
            })
            .filter(|h| !h.is_empty());
        if let Some(helper) = helper {
            return logged(run_helper(helper, server));
        }
        let entry = self.file.auths.get(registry).or_else(|| {
            self.file
                .auths
                .iter()
                .find(|(k, _)| keyed(k))
                .map(|(_, v)| v)
        });
        let found = |username: &str, password: &str| Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
            server: server.to_owned(),
        };
        if let Some(entry) = entry {
            if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
                return Some(found(IDENTITY_TOKEN_USER, token));
            }
            if let Some(auth) = &entry.auth
                && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(auth)
                && let Ok(text) = String::from_utf8(bytes)
                && let Some((user, pass)) = text.split_once(':')
            {
                return Some(found(user, pass));
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Some(found(u, p));
            }
        }
        self.file
            .creds_store
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|store| logged(run_helper(store, server)))
    }
}

/// The registry host a config key or registry name stands for: scheme and path dropped,
/// Docker Hub's names folded into one.
fn canonical(key: &str) -> &str {
    let host = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => key,
    };
    match host {
        "docker.io" | "registry-1.docker.io" => "index.docker.io",
        _ => host,
    }
}

fn logged(answer: Result<Credentials, HelperError>) -> Option<Credentials> {
    answer
        .map_err(|e| tracing::warn!(error = %crate::exit::chain(&e), "no credentials from the credential helper"))
        .ok()
}

/// `docker-credential-<helper> get`, with the server on stdin, bounded by the helper timeout.
fn run_helper(helper: &str, server: &str) -> Result<Credentials, HelperError> {
    ask_helper(
        &format!("docker-credential-{helper}"),
        server,
        HELPER_TIMEOUT,
    )
}

fn ask_helper(program: &str, server: &str, timeout: Duration) -> Result<Credentials, HelperError> {
    let helper = || program.to_owned();
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| HelperError::Start {
            helper: helper(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    // Read on a thread of its own: a helper that fills the pipe must not stall the wait.
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            let _ = tx.send(out);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HelperError::Timeout {
                    helper: helper(),
                    timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                return Err(HelperError::Wait {
                    helper: helper(),
                    source,
                });
            }
        }
    };
    if !status.success() {
        return Err(HelperError::NoCredentials {
            helper: helper(),
            server: server.to_owned(),
        });
    }
    // A helper that left a child holding its stdout has said all it will.
    let remaining = deadline.saturating_duration_since(Instant::now());
    let out = rx
        .recv_timeout(remaining.max(Duration::from_secs(1)))
        .unwrap_or_default();
    let answer: HelperAnswer =
        serde_json::from_slice(&out).map_err(|source| HelperError::Answer {
            helper: helper(),
            source,
        })?;
    Ok(Credentials {
        username: answer.username,
        password: answer.secret,
        server: server.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        DockerConfig {
            file: serde_json::from_str(json).unwrap(),
        }
    }

    #[test]
    fn auths_by_host_and_by_url() {
        let c = config(
            r#"{"auths": {"r.example:5000": {"auth": "dXNlcjpwYXNz"}, "https://index.example/v1/": {"username": "a", "password": "b"}}}"#,
        );
        let got = c.credentials("r.example:5000").unwrap();
        assert_eq!(
            (got.username.as_str(), got.password.as_str()),
            ("user", "pass")
        );
        assert_eq!(c.credentials("index.example").unwrap().password, "b");
        assert!(c.credentials("other").is_none());
    }

    #[test]
    fn missing_helper_gives_none() {
        let c = config(r#"{"credHelpers": {"r.example": "berth-test-no-such-helper"}}"#);
        assert!(c.credentials("r.example").is_none());
    }

    #[test]
    fn docker_hub_by_any_of_its_names() {
        let c = config(r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}}}"#);
        for name in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            let got = c.credentials(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(
                (got.username.as_str(), got.password.as_str()),
                ("user", "pass"),
                "{name}"
            );
            assert_eq!(got.server, HUB_KEY, "{name}");
            assert_eq!(got.identity_token(), None);
        }
        let short = config(r#"{"auths": {"docker.io": {"username": "a", "password": "b"}}}"#);
        assert_eq!(
            short.credentials("registry-1.docker.io").unwrap().password,
            "b"
        );
        assert!(c.credentials("ghcr.io").is_none());
    }

    #[test]
    fn an_identitytoken_entry_is_an_identity_token() {
        let c = config(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz", "identitytoken": "id-42"}, "r.example": {"identitytoken": "id-7"}}}"#,
        );
        assert_eq!(
            c.credentials("docker.io").unwrap().identity_token(),
            Some("id-42")
        );
        let got = c.credentials("r.example").unwrap();
        assert_eq!(got.identity_token(), Some("id-7"));
        assert_eq!(got.server, "r.example");
    }

    fn helper_script(body: &str) -> (tempfile::TempDir, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker-credential-test");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = path.to_str().unwrap().to_owned();
        (dir, program)
    }

    #[test]
    fn a_helper_answering_user_token_gives_an_identity_token() {
        let (_dir, program) = helper_script(
            r#"read server; printf '{"ServerURL":"%s","Username":"<token>","Secret":"id-from-helper"}' "$server""#,
        );
        let got = ask_helper(&program, HUB_KEY, Duration::from_secs(10)).unwrap();
        assert_eq!(got.identity_token(), Some("id-from-helper"));
        assert_eq!(got.server, HUB_KEY);
        let (_dir, program) = helper_script(r#"printf '{"Username":"u","Secret":"p"}'"#);
        let got = ask_helper(&program, "r.example", Duration::from_secs(10)).unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("u", "p"));
        assert_eq!(got.identity_token(), None);
    }

    #[test]
    fn a_hanging_helper_is_stopped_after_the_timeout() {
        let (_dir, program) = helper_script("exec sleep 300");
        let started = Instant::now();
        let err = ask_helper(&program, "r.example", Duration::from_millis(500)).unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "gave up after {took:?}");
        assert_eq!(
            err.to_string(),
            format!("credential helper {program} did not answer within 0.5s and was stopped")
        );
    }
}
