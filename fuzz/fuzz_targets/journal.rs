//! The journal an update leaves in the state directory, read back after a crash: one
//! record as JSON, and the directory reader over a file holding the input.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use berth::state::{Record, StateDir};
use libfuzzer_sys::fuzz_target;
use tempfile::TempDir;

/// One state directory for the whole run, its journal file rewritten per input: opening
/// one per input would cost more than reading it. It lives in `TMPDIR` (script/fuzz points
/// that at a directory it removes).
static STATE: LazyLock<(TempDir, StateDir)> = LazyLock::new(|| {
    let root = tempfile::tempdir().expect("temp dir");
    let state = StateDir::open(root.path()).expect("state dir");
    (root, state)
});

static JOURNAL: LazyLock<PathBuf> = LazyLock::new(|| STATE.0.path().join("journal/p.s.json"));

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Record>(data);

    std::fs::write(&*JOURNAL, data).expect("journal file");
    let _ = STATE.1.journals("p");
});
