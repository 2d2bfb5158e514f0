//! The manifest loader: every document kind parsed from arbitrary text, then the whole
//! repo check with the input as a partner file beside a valid script, as `berth validate`
//! reads a pull request's files.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use berth::manifest::{self, Fleet, Partner, Script};
use libfuzzer_sys::fuzz_target;
use tempfile::TempDir;

/// A script the partner may opt in to, so the cross-document checks run too.
const SCRIPT: &str = include_str!("../../tests/fixtures/minimal/scripts/counts.yaml");

/// One repo for the whole run, its partner file rewritten per input: making a directory
/// per input would cost more than checking it. It lives in `TMPDIR` (script/fuzz points
/// that at a directory it removes).
static REPO: LazyLock<TempDir> = LazyLock::new(|| {
    let repo = tempfile::tempdir().expect("temp dir");
    for dir in ["partners", "scripts"] {
        std::fs::create_dir(repo.path().join(dir)).expect("repo dir");
    }
    std::fs::write(repo.path().join("scripts/counts.yaml"), SCRIPT).expect("script file");
    repo
});

static PARTNER: LazyLock<PathBuf> = LazyLock::new(|| REPO.path().join("partners/alpha.yaml"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = manifest::parse::<Partner>(text);
    let _ = manifest::parse::<Script>(text);
    let _ = manifest::parse::<Fleet>(text);

    std::fs::write(&*PARTNER, data).expect("partner file");
    let _ = manifest::validate(REPO.path());
});
