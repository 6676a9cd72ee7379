//! The narinfo parser must never panic, and what it accepts must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixstore::narinfo::NarInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(info) = NarInfo::parse(text) {
            let again = NarInfo::parse(&info.to_text()).expect("our own output parses");
            assert_eq!(again, info);
        }
    }
});
