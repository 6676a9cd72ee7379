//! The manifest (a stick's, or a cache site's per-serial lookup) must never panic, and what
//! it accepts must round-trip and answer the installer's questions without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifest::document::{Expected, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Manifest::parse(text) else { return };
    let again = Manifest::parse(&m.to_json()).expect("our own output parses");
    assert_eq!(again, m);
    for serial in [None, Some("SN-1"), m.lookup_key.as_deref()] {
        for min_generation in [
            None,
            Some(m.generation),
            Some(m.generation.saturating_add(1)),
        ] {
            let _ = m.answers(&Expected {
                serial,
                fleet: m.fleet.as_deref(),
                min_generation,
            });
        }
    }
    for h in &m.hosts {
        for s in &h.serials {
            let _ = m.host_for_serial(s);
        }
    }
});
