//! Reading a manifest repo from disk: which files count, the limits that keep a hostile
//! repo from exhausting the host (size, symlinks, alias expansion), and YAML parsing with
//! every node's position kept.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::DeserializeOwned;

use super::{Doc, Fleet, Partner, Pos, Repo, Script};
use crate::diag::{Diagnostic, Diagnostics};

pub use crate::diag::MAX_FILE_BYTES;

/// Why a repo could not be read at all (as opposed to being read and found wrong).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A repo as read, with everything found wrong while reading it.
pub struct Loaded {
    pub repo: Repo,
    pub diagnostics: Diagnostics,
    /// Stems of files that exist but could not be parsed, so references to them are not
    /// reported a second time as unknown.
    pub broken_scripts: BTreeSet<String>,
    /// Whether some partner file could not be parsed: its opt-ins are unknown, so no script
    /// can be said to be unused.
    pub broken_partners: bool,
}

/// Reads every manifest under `root`. Files that are wrong become diagnostics; only a
/// repo that cannot be listed at all is an error.
pub fn load(root: &Path) -> Result<Loaded, LoadError> {
    let io = |source| LoadError::Io {
        path: root.to_owned(),
        source,
    };
    if !fs::metadata(root).map_err(io)?.is_dir() {
        return Err(LoadError::NotADirectory(root.to_owned()));
    }
    let canonical = root.canonicalize().map_err(io)?;
    let reader = Reader {
        root,
        canonical: &canonical,
    };
    let mut diagnostics = Diagnostics::default();

    let fleet = match fs::symlink_metadata(root.join("fleet.yaml")) {
        Ok(_) => reader
            .read_doc::<Fleet>("fleet.yaml")
            .map_err(|d| diagnostics.push(d))
            .ok(),
        Err(_) => None,
    };

    let lock = match fs::symlink_metadata(root.join(crate::lock::FILE)) {
        Ok(_) => reader
            .read_doc::<crate::lock::Lock>(crate::lock::FILE)
            .map_err(|d| diagnostics.push(d))
            .ok()
            .filter(|l| {
                for d in lock_digests(root, &l.doc) {
                    diagnostics.push(d);
                }
                let ok = l.doc.version == 1;
                if !ok {
                    diagnostics.push(file_error(
                        crate::lock::FILE,
                        format!(
                            "unsupported lock version {}: this berth reads version 1",
                            l.doc.version
                        ),
                    ));
                }
                ok
            }),
        Err(_) => None,
    };

    let partner_files = reader.list("partners", &mut diagnostics)?;
    let script_files = reader.list("scripts", &mut diagnostics)?;
    let partner_docs = reader.read_all::<Partner>(&partner_files);
    let script_docs = reader.read_all::<Script>(&script_files);

    let mut partners = BTreeMap::new();
    let mut broken_partners = false;
    for (stem, result) in partner_docs {
        match result {
            Ok(doc) => {
                partners.insert(stem, doc);
            }
            Err(d) => {
                diagnostics.push(d);
                broken_partners = true;
            }
        }
    }
    let mut scripts = BTreeMap::new();
    let mut broken_scripts = BTreeSet::new();
    for (stem, result) in script_docs {
        match result {
            Ok(doc) => {
                scripts.insert(stem, doc);
            }
            Err(d) => {
                diagnostics.push(d);
                broken_scripts.insert(stem);
            }
        }
    }
    if partner_files.is_empty() {
        diagnostics.push(Diagnostic::at(
            crate::diag::Severity::Error,
            "partners/",
            None,
            "the repo declares no partner: add partners/<name>.yaml",
        ));
    }
    Ok(Loaded {
        repo: Repo {
            root: root.to_owned(),
            fleet,
            partners,
            scripts,
            lock,
        },
        diagnostics,
        broken_scripts,
        broken_partners,
    })
}

/// A manifest file to read: its repo-relative path and its stem.
struct Entry {
    rel: String,
    stem: String,
}

struct Reader<'a> {
    root: &'a Path,
    canonical: &'a Path,
}

impl Reader<'_> {
    /// The `.yaml` files of one directory, sorted; anything else there is reported.
    fn list(&self, dir: &str, diags: &mut Diagnostics) -> Result<Vec<Entry>, LoadError> {
        let path = self.root.join(dir);
        if fs::symlink_metadata(&path).is_err() {
            return Ok(Vec::new());
        }
        if let Err(d) = self.inside(dir) {
            diags.push(d);
            return Ok(Vec::new());
        }
        let io = |source| LoadError::Io {
            path: path.clone(),
            source,
        };
        let mut names: Vec<String> = fs::read_dir(&path)
            .map_err(io)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        names.sort();
        let mut entries = Vec::new();
        for name in names {
            let rel = format!("{dir}/{name}");
            if name.starts_with('.') {
                continue;
            }
            if let Some(stem) = name.strip_suffix(".yaml") {
                entries.push(Entry {
                    stem: stem.to_owned(),
                    rel,
                });
            } else if name.ends_with(".yml") {
                diags.push(file_error(
                    &rel,
                    "manifest files end in .yaml: rename this file",
                ));
            } else {
                diags.push(Diagnostic::warning(
                    rel,
                    Pos { line: 1, col: 1 },
                    "not a .yaml file: ignored",
                ));
            }
        }
        Ok(entries)
    }

    /// Parses files on as many threads as the machine has cores, each taking the next
    /// unclaimed file, so they share the work whatever the files' sizes.
    fn read_all<T: DeserializeOwned + Send>(
        &self,
        entries: &[Entry],
    ) -> Vec<(String, Result<Doc<T>, Diagnostic>)> {
        let next = AtomicUsize::new(0);
        let work = || {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(e) = entries.get(i) else { break };
                out.push((i, e.stem.clone(), self.read_doc::<T>(&e.rel)));
            }
            out
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let mut all = std::thread::scope(|s| {
            let others: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mut mine = work();
            for other in others {
                mine.extend(other.join().expect("parser thread"));
            }
            mine
        });
        all.sort_by_key(|(i, _, _)| *i);
        all.into_iter().map(|(_, stem, r)| (stem, r)).collect()
    }

    /// A symlink must resolve inside the repo.
    fn inside(&self, rel: &str) -> Result<(), Diagnostic> {
        let path = self.root.join(rel);
        let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            return Ok(());
        }
        match path.canonicalize() {
            Ok(target) if target.starts_with(self.canonical) => Ok(()),
            Ok(target) => Err(file_error(
                rel,
                format!(
                    "symlink leads out of the repo (to {}): refused",
                    target.display()
                ),
            )),
            Err(_) => Err(file_error(rel, "dangling symlink: refused")),
        }
    }

    fn read_doc<T: DeserializeOwned>(&self, rel: &str) -> Result<Doc<T>, Diagnostic> {
        self.inside(rel)?;
        let path = self.root.join(rel);
        let cannot = |e: std::io::Error| file_error(rel, format!("cannot read: {e}"));
        // Opening a FIFO or a device would wait for a writer forever: look first, and
        // again at what was opened, in case it was swapped in between.
        regular(rel, &fs::metadata(&path).map_err(cannot)?)?;
        let file = fs::File::open(&path).map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        regular(rel, &meta)?;
        let size = meta.len();
        if size > MAX_FILE_BYTES {
            return Err(file_error(
                rel,
                format!("file is {size} bytes; manifests are limited to 1 MiB: refused"),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(file_error(rel, "file grew past 1 MiB while read: refused"));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            Diagnostic::error(rel, position_of(&e.into_bytes()[..at]), "not valid UTF-8")
        })?;
        let doc =
            parse::<T>(&text).map_err(|(pos, message)| Diagnostic::error(rel, pos, message))?;
        Ok(Doc {
            path: rel.to_owned(),
            doc,
        })
    }
}

/// A pin whose digest is not `sha256:<64 hex digits>` is an error at its line: agents would
/// hand the engine whatever the lock says.
fn lock_digests(root: &Path, lock: &crate::lock::Lock) -> Vec<Diagnostic> {
    let text = fs::read_to_string(root.join(crate::lock::FILE)).unwrap_or_default();
    let mut out = Vec::new();
    for (partner, pins) in &lock.partners {
        for (script, pin) in pins {
            if crate::image::is_digest(&pin.digest) {
                continue;
            }
            let pos = text
                .lines()
                .enumerate()
                .find_map(|(i, line)| {
                    let col = line.find("digest:")?;
                    line.contains(pin.digest.as_str()).then_some(Pos {
                        line: i as u32 + 1,
                        col: col as u32 + 1,
                    })
                })
                .unwrap_or(Pos { line: 1, col: 1 });
            out.push(Diagnostic::error(
                crate::lock::FILE,
                pos,
                format!(
                    "{partner}/{script} is pinned to digest {:?}, which is not sha256:<64 hex digits>",
                    pin.digest
                ),
            ));
        }
    }
    out
}

/// Only regular files are manifests.
fn regular(rel: &str, meta: &fs::Metadata) -> Result<(), Diagnostic> {
    if meta.is_file() {
        return Ok(());
    }
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    let kind = if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(file_error(
        rel,
        format!("{kind}, not a regular file: refused"),
    ))
}

fn file_error(rel: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic::error(rel, Pos { line: 1, col: 1 }, message)
}

/// Line and column just past `prefix`.
fn position_of(prefix: &[u8]) -> Pos {
    let line = prefix.iter().filter(|b| **b == b'\n').count() + 1;
    let col = prefix.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    Pos {
        line: line as u32,
        col: col as u32,
    }
}

/// Parses one YAML document with a budget that stops alias-expansion bombs early.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, (Pos, String)> {
    let mut options = serde_saphyr::Options::default();
    let budget = options.budget.get_or_insert_with(Default::default);
    budget.max_aliases = 1_000;
    budget.max_events = 2_000_000;
    options.alias_limits.max_total_replayed_events = 100_000;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<T>(text, options).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line() as u32,
                col: l.column() as u32,
            })
            .unwrap_or_default();
        (pos, message(&e))
    })
}

/// The parser's own words for an error, through its formatter interface: without the
/// position (the diagnostic carries it), without its advice about the parser's options
/// (meant for a program, not for the author of a manifest), and with control characters
/// escaped, as the interface asks of direct callers.
fn message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter as _;
    ForAuthors
        .format_message(e)
        .chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            escaped
                .into_iter()
                .flatten()
                .chain((!c.is_control()).then_some(c))
        })
        .collect()
}

/// The parser's developer wording, but for duplicate keys, whose advice names its API.
struct ForAuthors;

impl serde_saphyr::MessageFormatter for ForAuthors {
    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> std::borrow::Cow<'a, str> {
        match err {
            serde_saphyr::Error::DuplicateMappingKey { key: Some(k), .. } => {
                format!("duplicate mapping key: {k}").into()
            }
            serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => {
                "duplicate mapping key".into()
            }
            other => serde_saphyr::DefaultMessageFormatter.format_message(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(text: &str) -> (Pos, String) {
        parse::<super::super::Partner>(text).expect_err("must not parse")
    }

    #[test]
    fn duplicate_keys_are_reported_without_parser_advice() {
        let (pos, message) = parse_error("apiVersion: berth/v1\nkind: Partner\nkind: Partner\n");
        assert_eq!(pos, Pos { line: 3, col: 1 });
        assert_eq!(message, "duplicate mapping key: kind");
    }

    #[test]
    fn messages_carry_no_position_of_their_own() {
        let (pos, message) = parse_error("name: alpha: beta\n");
        assert_eq!(pos, Pos { line: 1, col: 12 });
        assert_eq!(message, "mapping values are not allowed in this context");
    }

    #[test]
    fn alias_bombs_stop_at_the_replay_budget() {
        let mut text = String::from("apiVersion: berth/v1\nkind: Partner\nname: a\nscripts:\n");
        text.push_str(
            "  - script: a\n    env: &e0 {A: a, B: b, C: c, D: d, E: e, F: f, G: g, H: h}\n",
        );
        for i in 1..10 {
            let refs = vec![format!("*e{}", i - 1); 10].join(", ");
            text.push_str(&format!("  - script: a\n    env: &e{i} {{<<: [{refs}]}}\n"));
        }
        let started = std::time::Instant::now();
        let (_, message) = parse_error(&text);
        assert!(message.contains("alias replay limit exceeded"), "{message}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
