//! The directory secret files are mounted from. It must be on tmpfs, so a plaintext lives
//! in memory only: never in a file on disk, in a backup or past a reboot (the kernel may
//! still swap tmpfs pages out; a host that must exclude that encrypts its swap). Under it each container
//! has a directory of its own (0700, so no other host user can read into it) with one
//! file per secret (0444, so a container running as a user other than root can read the
//! file it is given: the engine bind-mounts the file itself, past the 0700 directory).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::Plaintext;

/// `statfs(2)`'s filesystem type for tmpfs (linux/magic.h).
const TMPFS_MAGIC: u64 = 0x0102_1994;

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error(
        "the secrets directory {path} is not on tmpfs: secret files are only ever written to memory (mount a tmpfs there, or set `secrets_dir` / `--secrets-dir`)"
    )]
    NotTmpfs { path: String },
    #[error("the secrets directory {path} is not a directory")]
    NotDir { path: String },
    #[error("cannot use the secrets directory {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a container's directory in the secrets directory {dir}")]
    Foreign { path: String, dir: String },
}

/// berth's own tmpfs directory for secret files, checked.
#[derive(Debug, Clone)]
pub struct SecretsDir {
    path: PathBuf,
}

impl SecretsDir {
    /// Checks the directory without creating it: it, or the nearest directory above it
    /// that exists, must be on tmpfs, and it (its last component) must not be a symlink or
    /// a file.
    pub fn open(path: &Path) -> Result<SecretsDir, DirError> {
        let path = std::path::absolute(path).map_err(|e| io(path, e))?;
        let mut existing = path.as_path();
        loop {
            match std::fs::symlink_metadata(existing) {
                Ok(meta) if existing == path && !meta.is_dir() => {
                    return Err(DirError::NotDir {
                        path: path.display().to_string(),
                    });
                }
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    existing = existing.parent().ok_or_else(|| io(&path, e))?;
                }
                Err(e) => return Err(io(&path, e)),
            }
        }
        tmpfs(existing, &path)?;
        Ok(SecretsDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the files of the container created under `name` go.
    pub fn dir_for(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a container's secret files into `dir` (one of [`SecretsDir::dir_for`]),
    /// replacing what an earlier write left there.
    pub fn write(&self, dir: &Path, files: &BTreeMap<String, Plaintext>) -> Result<(), DirError> {
        self.own(dir)?;
        for d in [&self.path, dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| io(d, e))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io(d, e))?;
        }
        tmpfs(dir, &self.path)?;
        for (name, plain) in files {
            let file = dir.join(name);
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&file, e)),
                _ => {}
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&file)
                .and_then(|mut f| f.write_all(plain.as_bytes()))
                .map_err(|e| io(&file, e))?;
        }
        Ok(())
    }

    /// Removes a container's directory and its files; one that is gone counts as removed.
    pub fn remove(&self, dir: &Path) -> Result<(), DirError> {
        self.own(dir)?;
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir, e)),
            _ => Ok(()),
        }
    }

    /// Only a container's directory right under this one is ever written or removed, so
    /// a label that names another path (a container berth did not create) touches nothing.
    fn own(&self, dir: &Path) -> Result<(), DirError> {
        let named = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.') && !n.is_empty());
        if named && dir.parent() == Some(self.path.as_path()) {
            Ok(())
        } else {
            Err(DirError::Foreign {
                path: dir.display().to_string(),
                dir: self.path.display().to_string(),
            })
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> DirError {
    DirError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether `at` is on tmpfs; the error names `shown`, the directory the user configured.
fn tmpfs(at: &Path, shown: &Path) -> Result<(), DirError> {
    let fs = rustix::fs::statfs(at).map_err(|e| io(shown, e.into()))?;
    #[allow(clippy::unnecessary_cast)] // the field's type differs between architectures
    let kind = fs.f_type as u64;
    if kind == TMPFS_MAGIC {
        Ok(())
    } else {
        Err(DirError::NotTmpfs {
            path: shown.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_on_disk_is_refused() {
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let e = SecretsDir::open(&disk.path().join("secrets")).unwrap_err();
        assert!(matches!(e, DirError::NotTmpfs { .. }), "{e}");
    }

    #[test]
    fn files_go_only_into_a_containers_own_directory() {
        let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm is a tmpfs");
        let dir = SecretsDir::open(&shm.path().join("secrets")).unwrap();
        let c = dir.dir_for("berth-p-s");
        let files = [("tls.key".to_owned(), Plaintext::new(b"k1".to_vec()))].into();
        dir.write(&c, &files).unwrap();
        dir.write(&c, &files).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&c), 0o700);
        assert_eq!(mode(&c.join("tls.key")), 0o444);
        assert_eq!(std::fs::read(c.join("tls.key")).unwrap(), b"k1");
        assert!(matches!(
            dir.write(&shm.path().join("elsewhere"), &files),
            Err(DirError::Foreign { .. })
        ));
        assert!(dir.remove(Path::new("/etc")).is_err());
        dir.remove(&c).unwrap();
        dir.remove(&c).unwrap();
        assert!(!c.exists());
    }
}
