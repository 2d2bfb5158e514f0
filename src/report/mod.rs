//! Reporting to the fleet team (docs/reporting.md): the status record a pass leaves, and
//! getting it to the status repo. A partner host is behind the partner's firewall; the
//! fleet team sees it only through this record.

pub mod push;
pub mod record;

use std::path::Path;

pub use record::{Head, Pin, Record, ScriptRecord, State, WindowRecord};

/// The last pass's record in the state dir, whether or not it reached the status repo.
const LOCAL: &str = "record.json";

/// The last record that reached the status repo, to tell whether a new one is news.
const REPORTED: &str = "reported.json";

/// The last pass's record; `None` when there is none or it cannot be read (a new one is
/// then built from scratch, which only resets the `since` times).
pub fn read_local(state_dir: &Path) -> Option<Record> {
    read(&state_dir.join(LOCAL))
}

pub fn write_local(state_dir: &Path, record: &Record) -> std::io::Result<()> {
    crate::durable::write(&state_dir.join(LOCAL), &record.to_json())
}

/// The last pass's record as written, byte for byte: what goes to the status repo.
pub fn read_local_bytes(state_dir: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(state_dir.join(LOCAL))
}

/// The last record that reached the status repo; `None` when none has (or it cannot be
/// read, which only makes the next record go out).
pub fn read_reported(state_dir: &Path) -> Option<Record> {
    read(&state_dir.join(REPORTED))
}

pub fn write_reported(state_dir: &Path, record: &Record) -> std::io::Result<()> {
    crate::durable::write(&state_dir.join(REPORTED), &record.to_json())
}

fn read(path: &Path) -> Option<Record> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How old the last record in the status repo may get before the same outcome is sent
/// again, so the fleet team can tell a quiet host from a silent one.
pub const DAILY: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// Why a pass's record goes to the status repo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// None has reached it yet.
    First,
    /// The outcome differs from the last one that did.
    Changed,
    /// The last one that did is a day old.
    Daily,
    /// The last attempt failed.
    Retry,
}

impl Due {
    pub fn as_str(self) -> &'static str {
        match self {
            Due::First => "first",
            Due::Changed => "changed",
            Due::Daily => "daily",
            Due::Retry => "retry",
        }
    }
}

/// Whether `record` goes to the status repo, given the last record that reached it and
/// whether the last attempt failed; `None` when the repo already tells the same story and
/// is less than a day old.
pub fn due(record: &Record, reported: Option<&Record>, last_failed: bool) -> Option<Due> {
    let Some(reported) = reported else {
        return Some(Due::First);
    };
    if !record.same_outcome(reported) {
        Some(Due::Changed)
    } else if record.at.duration_since(reported.at) >= DAILY {
        Some(Due::Daily)
    } else if last_failed {
        Some(Due::Retry)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: &str, exit: u8) -> Record {
        Record {
            schema: record::SCHEMA,
            partner: "lab".into(),
            berth: "0.1.0 (abc)".into(),
            revision: Some("r1".into()),
            source: None,
            exit,
            interval_secs: 300,
            at: at.parse().unwrap(),
            window: WindowRecord::default(),
            scripts: vec![ScriptRecord {
                script: "svc".into(),
                component: None,
                desired: Some(Pin {
                    version: "1.0.0".into(),
                    digest: "sha256:aa".into(),
                }),
                running: Some(Pin {
                    version: "1.0.0".into(),
                    digest: "sha256:aa".into(),
                }),
                state: State::InSync,
                detail: String::new(),
                since: at.parse().unwrap(),
            }],
        }
    }

    #[test]
    fn the_first_record_goes_out() {
        assert_eq!(
            due(&record("2026-12-01T10:00:00Z", 0), None, false),
            Some(Due::First)
        );
    }

    #[test]
    fn the_same_outcome_stays_home_for_a_day() {
        let sent = record("2026-12-01T10:00:00Z", 0);
        let mut later = record("2026-12-01T22:00:00Z", 0);
        later.window.opens = Some("2026-12-02T02:00:00Z".parse().unwrap());
        assert_eq!(
            due(&later, Some(&sent), false),
            None,
            "times alone are no news"
        );
        let next_day = record("2026-12-02T10:00:00Z", 0);
        assert_eq!(due(&next_day, Some(&sent), false), Some(Due::Daily));
        let almost = record("2026-12-02T09:59:59Z", 0);
        assert_eq!(due(&almost, Some(&sent), false), None);
    }

    #[test]
    fn a_changed_outcome_goes_out_at_once() {
        let sent = record("2026-12-01T10:00:00Z", 0);
        let failed = record("2026-12-01T10:05:00Z", 1);
        assert_eq!(due(&failed, Some(&sent), false), Some(Due::Changed));
        let mut moved = record("2026-12-01T10:05:00Z", 0);
        moved.scripts[0].desired.as_mut().unwrap().version = "1.1.0".into();
        moved.scripts[0].state = State::Deferred("window".into());
        assert_eq!(due(&moved, Some(&sent), false), Some(Due::Changed));
        let mut upgraded = record("2026-12-01T10:05:00Z", 0);
        upgraded.berth = "0.2.0 (def)".into();
        assert_eq!(due(&upgraded, Some(&sent), false), Some(Due::Changed));
    }

    #[test]
    fn a_failed_attempt_is_tried_again() {
        let sent = record("2026-12-01T10:00:00Z", 0);
        let same = record("2026-12-01T10:05:00Z", 0);
        assert_eq!(due(&same, Some(&sent), true), Some(Due::Retry));
    }

    #[test]
    fn the_record_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let r = record("2026-12-01T10:00:00Z", 0);
        write_local(dir.path(), &r).unwrap();
        assert_eq!(read_local(dir.path()), Some(r.clone()));
        let bytes = read_local_bytes(dir.path()).unwrap();
        assert!(bytes.ends_with(b"}\n"), "one JSON document and a newline");
        assert_eq!(read_reported(dir.path()), None);
        write_reported(dir.path(), &r).unwrap();
        assert_eq!(read_reported(dir.path()), Some(r));
    }
}
