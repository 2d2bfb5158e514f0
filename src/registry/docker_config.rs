//! Registry credentials the way the Docker CLI keeps them: `$DOCKER_CONFIG/config.json`
//! (else `~/.docker/config.json`) with `auths`, `credHelpers` and `credsStore`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::image::Credentials;

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

impl DockerConfig {
    /// Reads the config the Docker CLI would; a missing or unreadable file means no
    /// credentials (anonymous pulls), which is what the CLI does too.
    pub fn load() -> DockerConfig {
        let path = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|d| d.join("config.json"));
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

    /// Credentials for a registry host: its credential helper, else `auths`, else the
    /// default credential store.
    pub fn credentials(&self, registry: &str) -> Option<Credentials> {
        if let Some(helper) = self.file.cred_helpers.get(registry) {
            return run_helper(helper, registry);
        }
        let entry = self.file.auths.get(registry).or_else(|| {
            self.file
                .auths
                .iter()
                .find(|(k, _)| strip_scheme(k) == registry)
                .map(|(_, v)| v)
        });
        if let Some(entry) = entry {
            if let Some(auth) = &entry.auth
                && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(auth)
                && let Ok(text) = String::from_utf8(bytes)
                && let Some((user, pass)) = text.split_once(':')
            {
                return Some(Credentials {
                    username: user.to_owned(),
                    password: pass.to_owned(),
                    server: registry.to_owned(),
                });
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Some(Credentials {
                    username: u.clone(),
                    password: p.clone(),
                    server: registry.to_owned(),
                });
            }
        }
        self.file
            .creds_store
            .as_deref()
            .and_then(|store| run_helper(store, registry))
    }
}

fn strip_scheme(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// `docker-credential-<helper> get`, with the registry on stdin.
fn run_helper(helper: &str, registry: &str) -> Option<Credentials> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(
            |e| tracing::warn!(helper = %program, error = %e, "credential helper did not start"),
        )
        .ok()?;
    let _ = child.stdin.take()?.write_all(registry.as_bytes());
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        tracing::warn!(helper = %program, registry, "credential helper has no credentials");
        return None;
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout).ok()?;
    Some(Credentials {
        username: answer.username,
        password: answer.secret,
        server: registry.to_owned(),
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
}
