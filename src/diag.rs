//! Diagnostics about manifest files, and their three renderings: a terminal, JSON for tools,
//! and GitHub workflow annotations for pull requests.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A 1-based line and column in a manifest file; `0:0` when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Where a value was written: a file and a position in it, shown as `path:line:col`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub path: String,
    pub pos: Pos,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pos.line == 0 {
            write!(f, "{}", self.path)
        } else {
            write!(f, "{}:{}", self.path, self.pos)
        }
    }
}

impl Serialize for Loc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Files larger than this are refused by the manifest loader and never quoted in a
/// diagnostic: a YAML file of a megabyte is a mistake or an attack.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the manifest repo, located by a repo-relative path and a position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// Repo-relative, `/`-separated.
    pub path: String,
    /// `None` for findings about the repo as a whole (e.g. no partner at all).
    pub pos: Option<Pos>,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, pos: Pos, message: impl Into<String>) -> Self {
        Self::at(Severity::Error, path, Some(pos), message)
    }

    pub fn warning(path: impl Into<String>, pos: Pos, message: impl Into<String>) -> Self {
        Self::at(Severity::Warning, path, Some(pos), message)
    }

    pub fn at(
        severity: Severity,
        path: impl Into<String>,
        pos: Option<Pos>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            path: path.into(),
            pos: pos.filter(|p| p.line > 0),
            severity,
            message: message.into(),
        }
    }

    /// `path:line:col`, or just the path when there is no position.
    pub fn location(&self) -> String {
        match self.pos {
            Some(p) => format!("{}:{}:{}", self.path, p.line, p.col),
            None => self.path.clone(),
        }
    }
}

/// Sorted, deduplicated findings; the order is stable so CI output diffs cleanly.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.0.iter().filter(|d| d.severity == severity).count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts by file, position, severity and message, and drops exact repeats.
    pub fn finish(mut self) -> Self {
        self.0.sort();
        self.0.dedup();
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// Text for a person: `path:line:col: error: message`, the line itself and a caret.
    /// Source lines are read back from `root` only here, at the edge.
    pub fn render_text(&self, root: &Path) -> String {
        let mut out = String::new();
        let mut cache: Option<(String, Vec<String>)> = None;
        let canonical_root = root.canonicalize().ok();
        for d in &self.0 {
            let _ = writeln!(
                out,
                "{}: {}: {}",
                d.location(),
                severity_word(d.severity),
                d.message
            );
            let Some(pos) = d.pos else { continue };
            if cache.as_ref().is_none_or(|(p, _)| *p != d.path) {
                let text = snippet_source(root.join(&d.path), canonical_root.as_deref());
                cache = Some((d.path.clone(), text.lines().map(str::to_owned).collect()));
            }
            let lines = &cache.as_ref().expect("filled above").1;
            if let Some(line) = lines.get(pos.line as usize - 1) {
                let number = pos.line.to_string();
                let pad = " ".repeat(number.len());
                let caret = " ".repeat(pos.col.saturating_sub(1) as usize);
                let _ = writeln!(out, "{pad} |\n{number} | {line}\n{pad} | {caret}^");
            }
        }
        out
    }

    /// The documented, stable JSON shape of `berth validate --format json`.
    pub fn render_json(&self) -> serde_json::Value {
        let items: Vec<_> = self
            .0
            .iter()
            .map(|d| {
                serde_json::json!({
                    "severity": d.severity,
                    "path": d.path,
                    "line": d.pos.map(|p| p.line),
                    "column": d.pos.map(|p| p.col),
                    "message": d.message,
                })
            })
            .collect();
        serde_json::json!({
            "valid": !self.has_errors(),
            "errors": self.count(Severity::Error),
            "warnings": self.count(Severity::Warning),
            "diagnostics": items,
        })
    }

    /// GitHub workflow commands; `prefix` is the repo's path inside the checked-out workspace.
    pub fn render_github(&self, prefix: &str) -> String {
        let mut out = String::new();
        for d in &self.0 {
            let file = if prefix.is_empty() {
                d.path.clone()
            } else {
                format!("{}/{}", prefix.trim_end_matches('/'), d.path)
            };
            let mut props = format!("file={}", escape_property(&file));
            if let Some(p) = d.pos {
                let _ = write!(props, ",line={},col={}", p.line, p.col);
            }
            let _ = writeln!(
                out,
                "::{} {}::{}",
                severity_word(d.severity),
                props,
                escape_data(&d.message)
            );
        }
        out
    }
}

/// The text of a repo file to quote under a diagnostic, or nothing. Only a regular file that
/// resolves inside the repo and is within the manifest size limit is read: a finding about a
/// symlink leading out of the repo, or about an oversized file, must not print (or read) the
/// very content the loader refused.
fn snippet_source(path: PathBuf, canonical_root: Option<&Path>) -> String {
    let inside = match (canonical_root, path.canonicalize()) {
        (Some(root), Ok(target)) => target.starts_with(root),
        _ => false,
    };
    let regular_small =
        std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= MAX_FILE_BYTES);
    let mut text = String::new();
    if inside && regular_small {
        let read = std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut text));
        if read.is_err() {
            text.clear();
        }
    }
    text
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(path: &str, line: u32) -> Diagnostics {
        let mut d = Diagnostics::default();
        d.push(Diagnostic::error(path, Pos { line, col: 1 }, "wrong"));
        d
    }

    #[test]
    fn text_quotes_the_line_of_a_repo_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("partners")).unwrap();
        std::fs::write(dir.path().join("partners/a.yaml"), "one\ntwo\n").unwrap();
        let out = one("partners/a.yaml", 2).render_text(dir.path());
        assert!(out.contains("partners/a.yaml:2:1: error: wrong\n"), "{out}");
        assert!(out.contains("2 | two\n"), "{out}");
    }

    #[cfg(unix)]
    #[test]
    fn text_never_quotes_what_a_symlink_out_of_the_repo_points_at() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "TOP-SECRET\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("partners")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            dir.path().join("partners/a.yaml"),
        )
        .unwrap();
        let out = one("partners/a.yaml", 1).render_text(dir.path());
        assert!(out.contains("partners/a.yaml:1:1: error: wrong"), "{out}");
        assert!(!out.contains("TOP-SECRET"), "{out}");
    }

    #[test]
    fn text_never_reads_an_oversized_file() {
        let dir = tempfile::tempdir().unwrap();
        let big = format!("HEAD\n{}", "#\n".repeat(MAX_FILE_BYTES as usize));
        std::fs::write(dir.path().join("big.yaml"), big).unwrap();
        let out = one("big.yaml", 1).render_text(dir.path());
        assert!(out.contains("big.yaml:1:1: error: wrong"), "{out}");
        assert!(!out.contains("HEAD"), "{out}");
    }

    #[test]
    fn github_prefixes_the_repo_and_escapes() {
        let mut d = Diagnostics::default();
        d.push(Diagnostic::error(
            "p/a.yaml",
            Pos { line: 3, col: 4 },
            "50%\nnext",
        ));
        assert_eq!(
            d.render_github("fleet/"),
            "::error file=fleet/p/a.yaml,line=3,col=4::50%25%0Anext\n"
        );
    }
}
