//! Baseline for the validate target (README, Performance): "`berth validate` on 1,000 partners x 200 scripts: at most 2x
//! the time to only parse the same YAML files".
//!
//! Lists `partners/*.yaml` and `scripts/*.yaml` of a repo, reads each file and parses it into
//! a generic value with the same YAML parser and options berth uses
//! (`berth::manifest::parse`), on one thread, with no checks at all. Prints the elapsed
//! seconds. `script/bench` runs it side by side with `berth validate` on the same repo.
//!
//! Usage: `cargo bench --bench parse_only -- DIR`, or the built bench binary with `DIR`.
//! Without a directory (as a plain `cargo bench` runs it) it prints the usage and succeeds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and maybe a filter); a repo is the first existing directory.
    let dir = std::env::args_os()
        .skip(1)
        .map(PathBuf::from)
        .find(|p| !p.to_string_lossy().starts_with("--"));
    let Some(dir) = dir else {
        println!("usage: parse_only DIR  (parses DIR/partners/*.yaml and DIR/scripts/*.yaml)");
        return ExitCode::SUCCESS;
    };
    if !dir.is_dir() {
        eprintln!("parse_only: {}: not a directory", dir.display());
        return ExitCode::from(3);
    }
    let started = Instant::now();
    let mut files = 0usize;
    let mut failed = 0usize;
    for sub in ["partners", "scripts"] {
        let paths = match yaml_files(&dir.join(sub)) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("parse_only: cannot list {}: {e}", dir.join(sub).display());
                return ExitCode::from(3);
            }
        };
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("parse_only: cannot read {}: {e}", path.display());
                    return ExitCode::from(3);
                }
            };
            files += 1;
            match berth::manifest::parse::<serde_json::Value>(&text) {
                Ok(value) => drop(std::hint::black_box(value)),
                Err(_) => failed += 1,
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("parse_only: {files} files ({failed} did not parse) in {elapsed:.6} s");
    println!("{elapsed:.6}");
    ExitCode::SUCCESS
}

/// `dir/*.yaml`, sorted; a missing directory has none.
fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}
