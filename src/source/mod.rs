//! The manifest repo as the source of truth: fetching it with git, following a branch, tag
//! or commit, and refusing heads that are unsigned or rewrite history.

pub mod verify;

use std::path::Path;

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
