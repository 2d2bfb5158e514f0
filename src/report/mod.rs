//! Reporting to the fleet team (docs/reporting.md): the status record a pass leaves, and
//! getting it to the status repo. A partner host is behind the partner's firewall; the
//! fleet team sees it only through this record.

pub mod record;

pub use record::{Pin, Record, ScriptRecord, State, WindowRecord};
