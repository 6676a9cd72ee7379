//! An HTTP server's Content-Range header must never panic the online installer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((start, total)) = autoinstall_terminal::online::parse_content_range(text) {
        // What it accepted is the header's own numbers.
        assert!(text.contains(&start.to_string()));
        if let Some(t) = total {
            assert!(text.contains(&t.to_string()));
        }
    }
});
