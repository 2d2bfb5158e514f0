//! A registry's authentication: the `WWW-Authenticate` challenge of its 401, and the JSON
//! answer of the token realm.
#![no_main]

use berth::registry::oci::{TokenAnswer, challenge_params};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<TokenAnswer>(data);
    if let Ok(header) = std::str::from_utf8(data) {
        let _ = challenge_params(header);
    }
});
