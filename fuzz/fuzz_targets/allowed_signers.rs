//! The `allowed_signers` file a host trusts commits by: principals, options, keys.
#![no_main]

use berth::source::verify::AllowedSigners;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = AllowedSigners::parse(text);
    }
});
