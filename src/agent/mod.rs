//! The partner agent: `berth agent --config FILE [--once]`. It fetches the manifest repo,
//! converges the host inside its window, and keeps a status others can read.

pub mod pass;
