//! The journal a replace leaves in the state directory, read back after a crash: one
//! record as JSON, and the directory reader over a file holding the input.
#![no_main]

use berth::state::{Record, StateDir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Record>(data);

    let root = tempfile::tempdir().expect("temp dir");
    let state = StateDir::open(root.path()).expect("state dir");
    std::fs::write(root.path().join("journal/p.s.json"), data).expect("journal file");
    let _ = state.journals("p");
});
