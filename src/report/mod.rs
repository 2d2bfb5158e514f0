//! Reporting to the fleet team (docs/reporting.md): the status record a pass leaves, and
//! getting it to the status repo. A partner host is behind the partner's firewall; the
//! fleet team sees it only through this record.

pub mod record;

use std::path::Path;

pub use record::{Head, Pin, Record, ScriptRecord, State, WindowRecord};

/// The last pass's record in the state dir, whether or not it reached the status repo.
const LOCAL: &str = "record.json";

/// The last pass's record; `None` when there is none or it cannot be read (a new one is
/// then built from scratch, which only resets the `since` times).
pub fn read_local(state_dir: &Path) -> Option<Record> {
    let bytes = std::fs::read(state_dir.join(LOCAL)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write_local(state_dir: &Path, record: &Record) -> std::io::Result<()> {
    crate::durable::write(
        &state_dir.join(LOCAL),
        &serde_json::to_vec_pretty(record).expect("the record serializes"),
    )
}
