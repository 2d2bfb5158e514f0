//! Opening sealed files: the host's age identities, the checks a sealed file passes before
//! it is read (a regular file inside the repo, like a manifest), and the decryption.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret as _;
use hmac::{Hmac, Mac as _};
use zeroize::Zeroizing;

use super::{Plaintext, repo_path};
use crate::exit::chain;

/// The largest sealed file berth reads: far more than any key or list of settings needs.
const MAX_SEALED_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the age identity file {path}")]
    ReadIdentity {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not an age X25519 identity (`AGE-SECRET-KEY-1…`): {why}")]
    BadIdentity {
        path: String,
        line: usize,
        why: &'static str,
    },
    #[error("{path}: no identity in the file")]
    NoIdentityInFile { path: String },
    #[error(
        "secret {name}: no age identity on this host (`age_identity` in agent.yaml, `--age-identity`)"
    )]
    NoIdentity { name: String },
    #[error("secret {name}: cannot read {path}")]
    Read {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {name}: {path} refused: {why}")]
    Refused {
        name: String,
        path: String,
        why: String,
    },
    #[error("secret {name}: cannot decrypt {path}")]
    Decrypt {
        name: String,
        path: String,
        #[source]
        source: age::DecryptError,
    },
}

/// The host's age identities, and the key its secrets' hashes are computed with.
pub struct Keyring {
    identities: Vec<age::x25519::Identity>,
    /// Derived from the first identity: a label then carries a hash nobody without the
    /// identity can test guesses against, so a short secret cannot be brute-forced from
    /// `docker inspect`.
    hash_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Keyring({} identities)", self.identities.len())
    }
}

impl Keyring {
    /// Reads an identity file as `age-keygen` writes it: `#` comments, blank lines, and one
    /// or more `AGE-SECRET-KEY-1…` lines.
    pub fn load(path: &Path) -> Result<Keyring, SecretError> {
        let shown = path.display().to_string();
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            SecretError::ReadIdentity {
                path: shown.clone(),
                source,
            }
        })?);
        let mut identities = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            identities.push(line.parse::<age::x25519::Identity>().map_err(|why| {
                SecretError::BadIdentity {
                    path: shown.clone(),
                    line: i + 1,
                    why,
                }
            })?);
        }
        Keyring::new(identities).ok_or(SecretError::NoIdentityInFile { path: shown })
    }

    fn new(identities: Vec<age::x25519::Identity>) -> Option<Keyring> {
        let first = identities.first()?.to_string();
        let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(first.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"berth/v1 secret hashes");
        let hash_key = Zeroizing::new(mac.finalize().into_bytes().into());
        Some(Keyring {
            identities,
            hash_key,
        })
    }

    /// The keyed hash of a secret's content (HMAC-SHA256, lowercase hex), as the spec hash
    /// and the `berth.secrets` label count it.
    pub fn hash(&self, name: &str, plain: &Plaintext) -> String {
        let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(self.hash_key.as_slice())
            .expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(plain.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Reads a partner's sealed file, refusing what the manifest loader refuses: a symlink
/// that leads out of the repo (or nowhere), anything but a regular file, and files over
/// 1 MiB.
fn read_sealed(root: &Path, partner: &str, name: &str) -> Result<(PathBuf, Vec<u8>), SecretError> {
    let rel = repo_path(partner, name);
    let shown = rel.display().to_string();
    let io = |source| SecretError::Read {
        name: name.to_owned(),
        path: shown.clone(),
        source,
    };
    let refused = |why: String| SecretError::Refused {
        name: name.to_owned(),
        path: shown.clone(),
        why,
    };
    super::check_name(name).map_err(&refused)?;
    let path = root.join(&rel);
    let canonical_root = root.canonicalize().map_err(io)?;
    let real = path.canonicalize().map_err(io)?;
    if !real.starts_with(&canonical_root) {
        return Err(refused(format!(
            "it leads out of the repo (to {})",
            real.display()
        )));
    }
    // A symlink to another partner's secret would hand it over: the file must be the
    // partner's own, wherever its name leads.
    let own = canonical_root.join(repo_path(partner, name).parent().unwrap_or(Path::new("")));
    if !real.starts_with(&own) {
        return Err(refused(format!(
            "it leads out of secrets/{partner}/ (to {})",
            real.strip_prefix(&canonical_root)
                .unwrap_or(&real)
                .display()
        )));
    }
    let file = std::fs::File::open(&real).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(refused("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SEALED_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_SEALED_BYTES {
        return Err(refused("larger than 1 MiB".into()));
    }
    Ok((rel, bytes))
}

/// What `berth validate` checks without any identity: the secret exists in the partner's
/// own directory, is a regular file inside the repo and has a well-formed age header.
pub fn check_sealed(root: &Path, partner: &str, name: &str) -> Result<(), String> {
    let (rel, bytes) = read_sealed(root, partner, name).map_err(|e| match &e {
        SecretError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            format!(
                "secret `{name}` does not exist: there is no {}",
                repo_path(partner, name).display()
            )
        }
        _ => chain(&e),
    })?;
    age::Decryptor::new(&bytes[..])
        .map(drop)
        .map_err(|e| format!("secret `{name}`: {} is not an age file: {e}", rel.display()))
}

/// The plaintext of a partner's secret, decrypted with the host's identities.
pub fn open(
    root: &Path,
    partner: &str,
    name: &str,
    keys: Option<&Keyring>,
) -> Result<Plaintext, SecretError> {
    let keys = keys.ok_or_else(|| SecretError::NoIdentity {
        name: name.to_owned(),
    })?;
    let (rel, bytes) = read_sealed(root, partner, name)?;
    let failed = |source| SecretError::Decrypt {
        name: name.to_owned(),
        path: rel.display().to_string(),
        source,
    };
    let mut reader = age::Decryptor::new(&bytes[..])
        .and_then(|d| d.decrypt(keys.identities.iter().map(|i| i as &dyn age::Identity)))
        .map_err(failed)?;
    let mut plain = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut plain)
        .map_err(|e| failed(age::DecryptError::Io(e)))?;
    Ok(Plaintext(plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn identity() -> age::x25519::Identity {
        age::x25519::Identity::generate()
    }

    fn seal(to: &age::x25519::Identity, plain: &[u8]) -> Vec<u8> {
        let recipient = to.to_public();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut w = encryptor.wrap_output(&mut out).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap();
        out
    }

    fn repo_with(partner: &str, name: &str, bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(repo_path(partner, name));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        dir
    }

    fn keyring_file(ids: &[&age::x25519::Identity]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "# created: 2026-12-01\n# public key: age1…\n").unwrap();
        for id in ids {
            writeln!(f, "{}", id.to_string().expose_secret()).unwrap();
        }
        f
    }

    #[test]
    fn a_sealed_file_opens_with_any_identity_of_the_file() {
        let (other, ours) = (identity(), identity());
        let repo = repo_with("p", "db.env", &seal(&ours, b"DB_PASSWORD=hunter2\n"));
        let both = Keyring::load(keyring_file(&[&other, &ours]).path()).unwrap();
        let plain = open(repo.path(), "p", "db.env", Some(&both)).unwrap();
        assert_eq!(plain.as_bytes(), b"DB_PASSWORD=hunter2\n");
        assert_eq!(check_sealed(repo.path(), "p", "db.env"), Ok(()));

        let wrong = Keyring::load(keyring_file(&[&other]).path()).unwrap();
        let e = chain(&open(repo.path(), "p", "db.env", Some(&wrong)).unwrap_err());
        assert!(
            e.starts_with("secret db.env: cannot decrypt secrets/p/db.env.age"),
            "{e}"
        );
        let e = chain(&open(repo.path(), "p", "db.env", None).unwrap_err());
        assert!(e.contains("no age identity on this host"), "{e}");
    }

    #[test]
    fn validate_finds_missing_and_malformed_files() {
        let repo = repo_with("p", "x", b"DB_PASSWORD=hunter2\n");
        let e = check_sealed(repo.path(), "p", "x").unwrap_err();
        assert!(e.contains("secrets/p/x.age is not an age file"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = check_sealed(repo.path(), "p", "y").unwrap_err();
        assert_eq!(e, "secret `y` does not exist: there is no secrets/p/y.age");
        std::os::unix::fs::symlink("/etc/hostname", repo.path().join("secrets/p/out.age")).unwrap();
        let e = check_sealed(repo.path(), "p", "out").unwrap_err();
        assert!(e.contains("leads out of the repo"), "{e}");
    }

    #[test]
    fn a_link_to_another_partners_secret_is_refused() {
        let id = identity();
        let repo = repo_with("b", "db.env", &seal(&id, b"B_PASSWORD=theirs\n"));
        std::fs::create_dir_all(repo.path().join("secrets/a")).unwrap();
        std::os::unix::fs::symlink("../b/db.env.age", repo.path().join("secrets/a/db.env.age"))
            .unwrap();
        let e = check_sealed(repo.path(), "a", "db.env").unwrap_err();
        assert!(
            e.contains("leads out of secrets/a/ (to secrets/b/db.env.age)"),
            "{e}"
        );
        let keys = Keyring::load(keyring_file(&[&id]).path()).unwrap();
        assert!(open(repo.path(), "a", "db.env", Some(&keys)).is_err());
        assert!(open(repo.path(), "b", "db.env", Some(&keys)).is_ok());
    }

    #[test]
    fn the_keyed_hash_depends_on_the_identity_the_name_and_the_content() {
        let id = identity();
        let a = Keyring::new(vec![id.clone()]).unwrap();
        let b = Keyring::new(vec![identity()]).unwrap();
        let plain = Plaintext::new(b"1234".to_vec());
        let h = a.hash("pin", &plain);
        assert_eq!(h.len(), 64);
        assert_eq!(h, Keyring::new(vec![id]).unwrap().hash("pin", &plain));
        assert_ne!(h, b.hash("pin", &plain), "another host, another key");
        assert_ne!(h, a.hash("pin2", &plain));
        assert_ne!(h, a.hash("pin", &Plaintext::new(b"1235".to_vec())));
        use sha2::Digest as _;
        let plain_sha: String = sha2::Sha256::digest(b"1234")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(
            h, plain_sha,
            "not a plain hash anyone can test guesses against"
        );
    }

    #[test]
    fn identity_files_are_checked() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "# nothing but comments").unwrap();
        assert!(matches!(
            Keyring::load(f.path()),
            Err(SecretError::NoIdentityInFile { .. })
        ));
        writeln!(f, "AGE-SECRET-KEY-1NOTAKEY").unwrap();
        let e = Keyring::load(f.path()).unwrap_err().to_string();
        assert!(
            e.ends_with(
                ":2: not an age X25519 identity (`AGE-SECRET-KEY-1…`): invalid Bech32 encoding"
            ),
            "{e}"
        );
    }
}
