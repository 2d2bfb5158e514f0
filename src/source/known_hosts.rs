//! SSH host-key trust for git remotes: the server's key must be listed for its host in an
//! OpenSSH `known_hosts` file the operator chose. Lines are matched as OpenSSH matches them:
//! `host` for port 22 and `[host]:port` otherwise, comma-separated patterns with `*`, `?`
//! and `!` negation, hashed names (`|1|salt|hash`, `HashKnownHosts yes`), and `@revoked`
//! keys. `@cert-authority` lines are skipped: libssh2, which makes the connection, has no
//! host certificates.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Digest as _;
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};

/// Why the server's host key is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    #[error(
        "{host} offered the host key {algorithm} {fingerprint}, and {} lists no key for {host}; \
         refusing to connect (add the server's key: ssh-keyscan{} {})",
        file.display(), keyscan_port(host), keyscan_host(host)
    )]
    Unknown {
        host: String,
        algorithm: String,
        fingerprint: String,
        file: PathBuf,
    },
    #[error(
        "the host key of {host} changed: it offered {algorithm} {fingerprint}, and {} lists another \
         {algorithm} key for it; refusing to connect (someone may be in between; if the key was \
         rotated, replace the line in {})",
        file.display(), file.display()
    )]
    Changed {
        host: String,
        algorithm: String,
        fingerprint: String,
        file: PathBuf,
    },
    #[error(
        "{host} offered the host key {algorithm} {fingerprint}, and {} lists only {} for it; \
         refusing to connect (keep every line ssh-keyscan prints for the server)",
        file.display(), listed.join(", ")
    )]
    OtherType {
        host: String,
        algorithm: String,
        fingerprint: String,
        listed: Vec<String>,
        file: PathBuf,
    },
    #[error(
        "{host} offered the host key {algorithm} {fingerprint}, which {} marks @revoked; refusing to connect",
        file.display()
    )]
    Revoked {
        host: String,
        algorithm: String,
        fingerprint: String,
        file: PathBuf,
    },
    #[error("{host} sent no host key berth can read")]
    Unreadable { host: String },
}

/// `[host]:port` → ` -p port`, for the hint in a message.
fn keyscan_port(host: &str) -> String {
    host.rsplit_once("]:")
        .map_or_else(String::new, |(_, port)| format!(" -p {port}"))
}

fn keyscan_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.rsplit_once("]:"))
        .map_or(host, |(h, _)| h)
}

/// The entries of one known_hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    file: PathBuf,
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Reads the file; a line that does not parse is skipped with a warning, as OpenSSH
    /// skips it.
    pub fn read(file: &Path) -> std::io::Result<KnownHosts> {
        let text = std::fs::read_to_string(file)?;
        Ok(KnownHosts::parse(file, &text))
    }

    fn parse(file: &Path, text: &str) -> KnownHosts {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.parse::<Entry>() {
                Ok(e) => entries.push(e),
                Err(e) => tracing::warn!(
                    file = %format!("{}:{}", file.display(), n + 1),
                    error = %e,
                    "skipping a known_hosts line that does not parse"
                ),
            }
        }
        KnownHosts {
            file: file.to_owned(),
            entries,
        }
    }

    /// Whether the server at `host`:`port` may present `key` (its SSH wire encoding, as
    /// libssh2 hands it over).
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Result<(), HostKeyError> {
        let host = lookup_name(host, port);
        let Some(algorithm) = algorithm_of(key) else {
            return Err(HostKeyError::Unreadable { host });
        };
        let (mut matched, mut revoked) = (false, false);
        let mut listed: Vec<String> = Vec::new();
        for entry in self
            .entries
            .iter()
            .filter(|e| host_matches(e.host_patterns(), &host))
        {
            let same_key = entry.public_key().to_bytes().is_ok_and(|k| k == key);
            match entry.marker() {
                Some(Marker::Revoked) => revoked |= same_key,
                Some(Marker::CertAuthority) => {}
                None if same_key => matched = true,
                None => {
                    let other = entry.public_key().algorithm().as_str().to_owned();
                    if !listed.contains(&other) {
                        listed.push(other);
                    }
                }
            }
        }
        if matched && !revoked {
            return Ok(());
        }
        let (fingerprint, file) = (fingerprint(key), self.file.clone());
        Err(if revoked {
            HostKeyError::Revoked {
                host,
                algorithm,
                fingerprint,
                file,
            }
        } else if listed.contains(&algorithm) {
            HostKeyError::Changed {
                host,
                algorithm,
                fingerprint,
                file,
            }
        } else if !listed.is_empty() {
            HostKeyError::OtherType {
                host,
                algorithm,
                fingerprint,
                listed,
                file,
            }
        } else {
            HostKeyError::Unknown {
                host,
                algorithm,
                fingerprint,
                file,
            }
        })
    }
}

/// The name OpenSSH looks a server up by: `host`, or `[host]:port` off port 22.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// The key's algorithm name, the first string of its wire encoding.
fn algorithm_of(key: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let name = key.get(4..4 + len)?;
    std::str::from_utf8(name).ok().map(str::to_owned)
}

/// `SHA256:<base64>`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(key))
    )
}

fn host_matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = <Hmac<sha1::Sha1>>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut matched = false;
            for pattern in list {
                let pattern = pattern.to_ascii_lowercase();
                match pattern.strip_prefix('!') {
                    Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
                    Some(_) => {}
                    None => matched |= glob(pattern.as_bytes(), name.as_bytes()),
                }
            }
            matched
        }
    }
}

/// OpenSSH's wildcard match: `*` any run, `?` any one character.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINqseu5trohQHnUDCQXpcgZF7lUf02jPv32PxrKDEjTY";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILr9HbfEC56fXHl4iUZ5LvNUFwia2du9LSJJ7NVC8dCo";

    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDGNIuN8fvOYPepFHOC1E5ur36kAY9zwcdVA7iKx9/Yz8lOz6dLmpV/wL+TSNR40vf9KH+8LFwiNozTks20YY/c=";

    fn blob(line: &str) -> Vec<u8> {
        line.parse::<ssh_key::PublicKey>()
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    fn check(file: &str, host: &str, port: u16, key: &str) -> Result<(), HostKeyError> {
        KnownHosts::parse(Path::new("kh"), file).check(host, port, &blob(key))
    }

    #[test]
    fn a_listed_key_passes_under_the_name_openssh_looks_up() {
        assert_eq!(
            check(&format!("example.org {KEY}\n"), "example.org", 22, KEY),
            Ok(())
        );
        assert_eq!(
            check(
                &format!("[example.org]:2222 {KEY}\n"),
                "Example.ORG",
                2222,
                KEY
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &format!("a.org,*.example.org {KEY}\n"),
                "git.example.org",
                22,
                KEY
            ),
            Ok(())
        );
        // The plain name is port 22 only, as in OpenSSH.
        assert!(matches!(
            check(&format!("example.org {KEY}\n"), "example.org", 2222, KEY),
            Err(HostKeyError::Unknown { .. })
        ));
        assert!(matches!(
            check(
                &format!("*.example.org,!git.example.org {KEY}\n"),
                "git.example.org",
                22,
                KEY
            ),
            Err(HostKeyError::Unknown { .. })
        ));
    }

    #[test]
    fn hashed_names_match() {
        // `ssh-keygen -H` of "[127.0.0.1]:2222", salt and hash computed here the same way.
        let salt = b"0123456789abcdefghij";
        let mut mac = <Hmac<sha1::Sha1>>::new_from_slice(salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let b64 = base64::engine::general_purpose::STANDARD;
        let line = format!(
            "|1|{}|{} {KEY}\n",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        assert_eq!(check(&line, "127.0.0.1", 2222, KEY), Ok(()));
        assert!(check(&line, "127.0.0.1", 2223, KEY).is_err());
    }

    #[test]
    fn a_different_key_is_refused_naming_host_and_fingerprint() {
        let err = check(
            &format!("# ours\nbad line\nexample.org {OTHER}\n"),
            "example.org",
            22,
            KEY,
        )
        .unwrap_err();
        assert!(matches!(err, HostKeyError::Changed { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("example.org")
                && text.contains(&fingerprint(&blob(KEY)))
                && text.contains("ssh-ed25519"),
            "{text}"
        );
        let revoked = check(
            &format!("example.org {KEY}\n@revoked * {KEY}\n"),
            "example.org",
            22,
            KEY,
        );
        assert!(
            matches!(revoked, Err(HostKeyError::Revoked { .. })),
            "{revoked:?}"
        );
        let other_type = check(&format!("example.org {ECDSA}\n"), "example.org", 22, KEY);
        assert!(
            matches!(&other_type, Err(HostKeyError::OtherType { listed, .. }) if listed == &["ecdsa-sha2-nistp256"]),
            "{other_type:?}"
        );
        let unknown = check(&format!("other.org {KEY}\n"), "example.org", 2222, KEY)
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("ssh-keyscan -p 2222 example.org"),
            "{unknown}"
        );
    }
}
