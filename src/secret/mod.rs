//! Per-partner secrets sealed with age (docs/security.md, Secrets): `secrets/<partner>/<name>.age` in the
//! manifest repo, opened on the host with its age identity. This module owns what a secret
//! is to berth: the names a manifest may use ([`check_name`]), the plaintext that is never
//! printed or serialized ([`Plaintext`]), the decryption ([`open`]), the tmpfs directory
//! secret files are mounted from ([`dir`]), and the redaction of error text ([`redact`]).
//! It imports only `exit`, so the container spec, the resolver and the executor can all
//! carry its types.

mod dir;
mod open;
mod redact;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

pub use dir::{DirError, SecretsDir};
pub use open::{Keyring, SecretError, check_sealed, open};
pub use redact::{REDACTED, Redact};

/// The repo directory that holds one subdirectory of sealed files per partner.
pub const REPO_DIR: &str = "secrets";

/// Where a partner's secret lives in the repo, relative to its root.
pub fn repo_path(partner: &str, name: &str) -> PathBuf {
    PathBuf::from(REPO_DIR)
        .join(partner)
        .join(format!("{name}.age"))
}

/// A secret's name is a plain file name in its partner's own directory: letters, digits,
/// `.`, `_` and `-`, not starting with `.` and without `..`, so that no name can reach
/// another partner's secrets or anything else in the repo.
pub fn check_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid secret name `{name}`: {why}"));
    if name.is_empty() {
        return bad("empty");
    }
    if name.contains('/') {
        return bad("a name, not a path: secrets are read from the partner's own directory");
    }
    if name.contains("..") {
        return bad("`..` is not allowed");
    }
    if name.starts_with('.') {
        return bad("must not start with `.`");
    }
    if name.len() > 200 {
        return bad("longer than 200 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return bad("only letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

/// A secret's decrypted content. Never printed (its `Debug` shows the length only), never
/// serialized, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    pub fn new(bytes: Vec<u8>) -> Plaintext {
        Plaintext(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

/// What the host decrypted (or read from env files) for one container: kept beside its
/// spec for the engine and the executor, and never serialized or printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Unsealed {
    /// `env_secrets`' variables, set over the spec's `env` when the container is created.
    pub env: BTreeMap<String, Zeroizing<String>>,
    /// Each secret file's content, by secret name.
    pub files: BTreeMap<String, Plaintext>,
    /// The values error text must never show.
    pub redact: Redact,
}

impl fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Unsealed")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_in_the_partners_own_directory() {
        for ok in ["case-counts.env", "tls.key", "a_b-1"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("other/x", "a name, not a path"),
            ("../other/x", "a name, not a path"),
            ("..", "`..`"),
            ("a..b", "`..`"),
            (".hidden", "must not start with `.`"),
            ("a b", "only letters"),
        ] {
            let got = check_name(bad).unwrap_err();
            assert!(got.contains(why), "{bad}: {got}");
        }
        assert_eq!(
            repo_path("p", "tls.key"),
            PathBuf::from("secrets/p/tls.key.age")
        );
    }

    #[test]
    fn plaintext_is_never_printed() {
        let plain = Plaintext::new(b"hunter2".to_vec());
        assert_eq!(format!("{plain:?}"), "Plaintext(7 bytes)");
        let unsealed = Unsealed {
            env: [(
                "DB_PASSWORD".to_owned(),
                Zeroizing::new("hunter2".to_owned()),
            )]
            .into(),
            files: [("tls.key".to_owned(), plain)].into(),
            redact: Redact::new(["hunter2".to_owned()]),
        };
        let shown = format!("{unsealed:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("DB_PASSWORD") && shown.contains("tls.key"),
            "{shown}"
        );
    }
}
