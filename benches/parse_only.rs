//! Placeholder replaced by the validate benchmark baseline.
fn main() {}
