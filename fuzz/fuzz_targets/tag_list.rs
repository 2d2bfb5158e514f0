//! A registry's tag-list answer: the JSON body, and its `Link` headers (one per input
//! line) that pagination follows.
#![no_main]

use berth::registry::oci::{TagList, next_link};
use http::header::{HeaderMap, HeaderValue, LINK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<TagList>(data);

    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(LINK, value);
        }
    }
    let _ = next_link(&headers);
});
