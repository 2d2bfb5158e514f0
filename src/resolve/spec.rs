//! A partner's container spec for a script: the script's settings, the partner's env on
//! top, then the host's env files; and when the new container counts as healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{HealthCheck, ResolveError};
use crate::container::ContainerSpec;
use crate::manifest::{OptIn, Script, syntax};

/// When a new container counts as healthy.
pub fn health(script: &Script) -> HealthCheck {
    HealthCheck {
        http: script
            .health
            .as_ref()
            .and_then(|h| h.http.as_ref())
            .map(|u| u.value.clone()),
        timeout: script
            .health
            .as_ref()
            .and_then(|h| h.timeout.as_ref())
            .and_then(|t| syntax::parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(60)),
    }
}

/// Whether to read the host's env files into the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvFiles {
    /// On the host: their contents count, so a rotated secret rolls the container.
    Read,
    /// Away from the host (CI's `berth diff`): only their paths count.
    PathsOnly,
}

/// The container spec: the script's settings, the partner's env on top, then the host's
/// env files.
pub fn container_spec(
    script: &Script,
    opt: &OptIn,
    env_files: EnvFiles,
) -> Result<ContainerSpec, ResolveError> {
    let c = &script.container;
    let mut env: BTreeMap<String, String> = c
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    env.extend(opt.env.iter().map(|(k, v)| (k.clone(), v.value.clone())));
    if env_files == EnvFiles::Read {
        for file in &opt.env_files {
            let text =
                std::fs::read_to_string(&file.value).map_err(|source| ResolveError::EnvFile {
                    path: file.value.clone(),
                    source,
                })?;
            env.extend(parse_env_file(&text));
        }
    }
    Ok(ContainerSpec {
        command: c.command.clone(),
        env,
        env_files: opt.env_files.iter().map(|f| f.value.clone()).collect(),
        ports: c.ports.iter().map(|p| p.value.clone()).collect(),
        volumes: c.volumes.iter().map(|v| v.value.clone()).collect(),
        network: c.network.as_ref().map(|n| n.value.clone()),
        init: c.init.unwrap_or(true),
        stop_timeout_secs: c
            .stop_timeout
            .as_ref()
            .and_then(|t| syntax::parse_duration(t).ok())
            .map_or(10, |d| d.as_secs()),
        memory: c.memory.as_ref().and_then(|m| syntax::parse_memory(m).ok()),
        nano_cpus: c.cpus.as_ref().map(|n| (n.value * 1e9) as i64),
        read_only: c.read_only,
        user: c.user.as_ref().map(|u| u.value.clone()),
    })
}

/// `KEY=value` lines as `docker run --env-file` reads them; blank lines and `#` comments
/// are skipped, and so are bare `KEY` lines (berth does not pass its own environment on).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files() {
        let parsed = parse_env_file("# c\n\nA=1\n  B = x=y\nBARE\n");
        assert_eq!(
            parsed,
            vec![("A".into(), "1".into()), ("B".into(), " x=y".into())]
        );
    }
}
