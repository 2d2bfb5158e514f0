//! `berth.lock`: any lock that parses must survive `berth lock` writing it again, or an
//! agent in frozen mode would read other pins than the ones CI reviewed.
#![no_main]

use berth::lock::Lock;
use berth::manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(lock) = manifest::parse::<Lock>(text) else {
        return;
    };
    // The loader refuses other versions before anything reads the pins.
    if lock.version != 1 {
        return;
    }
    let rendered = lock.render();
    match manifest::parse::<Lock>(&rendered) {
        Ok(back) => assert_eq!(
            back, lock,
            "the rendered lock reads back otherwise:\n{rendered}"
        ),
        Err((pos, message)) => {
            panic!("the rendered lock does not parse ({pos:?}: {message}):\n{rendered}")
        }
    }
});
