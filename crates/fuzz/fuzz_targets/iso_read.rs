//! The ISO 9660 (Joliet) reader must never panic, hang or allocate without bound, whatever
//! the medium holds: every directory of the tree lists or fails, every file opens or fails,
//! and reads stay within the medium.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use media::isoread::IsoPayload;
use media::read::Payload;

fn walk(p: &IsoPayload<&[u8]>, dir: &str, depth: usize, budget: &mut usize) {
    let Ok(names) = p.list(dir) else { return };
    for name in names {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        assert!(!name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']));
        let path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        if let Ok(mut f) = p.open(&path) {
            let mut buf = Vec::new();
            let _ = (&mut f).take(1 << 20).read_to_end(&mut buf);
        } else if depth < 8 {
            walk(p, &path, depth + 1, budget);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = IsoPayload::with_source(data, data.len() as u64, "fuzz".into()) {
        let mut budget = 1000;
        walk(&p, "", 0, &mut budget);
        let _ = p.read_capped("autoinstall/manifest.json", 1 << 20);
    }
});
