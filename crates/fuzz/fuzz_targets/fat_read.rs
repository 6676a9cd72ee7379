//! The FAT32 reader must never panic, hang or allocate without bound, whatever the volume
//! holds, and what it promises must hold: a directory that passes `check_dir_chains` lists,
//! every file in it opens, and every file that opens reads to exactly its size.
//!
//! A FAT32 volume has at least 65,525 clusters, so a raw input can never be a whole volume.
//! Most inputs are instead patches onto a volume written by our writer (held in memory): the
//! first byte is even, then records of [region, offset (u16 LE), length, bytes], the region
//! picking the reserved sectors, either FAT or the data region. An odd first byte makes the
//! rest of the input the volume's first bytes, zero-filled up to a length given by the next
//! four bytes: that exercises the boot sector checks.
#![no_main]

use std::io::{self, Read};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use media::fat32::{self, Source, Tree, VolumeOptions};
use media::fatread::{FatVolume, ReadAt};

struct Template {
    bytes: Vec<u8>,
    /// Where each patch region starts.
    regions: [u64; 4],
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let mut tree = Tree::new();
        let mut add = |path: &str, len: usize| {
            let data = (0..len).map(|i| (i * 7 + len) as u8).collect();
            tree.add_file(path, Source::Bytes(data));
        };
        add("nix-cache-info", 21);
        add("empty", 0);
        add("Mixed.Case", 3);
        add("mixed.case", 4);
        add("BIG.BIN", 6000);
        for i in 0..24 {
            add(&format!("nar/{i:02}-a-long-name-for-a-nar.nar.zst"), 40 * i);
        }
        add("autoinstall/manifest.json", 700);
        tree.add_dir("autoinstall/reports");
        let g = fat32::min_geometry(&tree, 0);
        let f = tempfile::tempfile().unwrap();
        f.set_len(g.bytes()).unwrap();
        let opts = VolumeOptions {
            label: "FUZZ".into(),
            volume_id: 1,
            hidden_sectors: 0,
            timestamp: 0,
        };
        fat32::write(&f, 0, &g, &tree, &opts, &mut |_| {}).unwrap();
        let mut bytes = vec![0u8; g.bytes() as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut bytes, 0).unwrap();
        let reserved = u16::from_le_bytes([bytes[14], bytes[15]]) as u64 * 512;
        let fat = u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as u64 * 512;
        Template {
            bytes,
            regions: [0, reserved, reserved + fat, reserved + 2 * fat],
        }
    })
}

/// A volume seen through patches, later ones on top.
struct Patched<'a> {
    base: &'a [u8],
    patches: Vec<(u64, &'a [u8])>,
}

impl ReadAt for Patched<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.base.read_at(buf, offset)?;
        let end = offset + n as u64;
        for &(at, bytes) in &self.patches {
            let (lo, hi) = (at.max(offset), (at + bytes.len() as u64).min(end));
            if lo < hi {
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&bytes[(lo - at) as usize..(hi - at) as usize]);
            }
        }
        Ok(n)
    }
}

/// The input's bytes, then zeros up to `len`.
struct ZeroFilled<'a> {
    head: &'a [u8],
    len: u64,
}

impl ReadAt for ZeroFilled<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(offset)) as usize;
        let buf = &mut buf[..n];
        let got = self.head.read_at(buf, offset)?;
        buf[got..].fill(0);
        Ok(n)
    }
}

/// Bytes of file contents read per input, to keep each run fast.
const READ_BUDGET: u64 = 4 << 20;

struct Walk {
    entries: usize,
    read: u64,
}

fn walk<S: ReadAt>(vol: &FatVolume<S>, dir: &str, depth: usize, w: &mut Walk) {
    let checked = vol.check_dir_chains(dir).is_ok();
    let names = match vol.list(dir) {
        Ok(names) => names,
        Err(e) => {
            assert!(!checked, "{dir}: its chains passed the check, yet: {e}");
            return;
        }
    };
    for name in names {
        assert!(!name.is_empty() && !name.contains(['/', '\0']) && name != "." && name != "..");
        w.entries += 1;
        if w.entries > 2000 || depth > 8 {
            return;
        }
        let path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let _ = vol.open_file(&path.to_ascii_uppercase());
        match vol.open_file(&path) {
            Ok(mut f) => {
                let size = f.size();
                let want = size.min(READ_BUDGET.saturating_sub(w.read));
                let mut buf = Vec::new();
                let got = (&mut f).take(want).read_to_end(&mut buf);
                // The chain was checked when the file was opened and the sources here never
                // end early, so reading cannot fail.
                assert_eq!(got.ok(), Some(want as usize), "{path}: a short read");
                if want == size {
                    assert_eq!(
                        f.read(&mut [0u8; 16]).unwrap(),
                        0,
                        "{path}: bytes past its size"
                    );
                }
                w.read += want;
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => walk(vol, &path, depth + 1, w),
            Err(e) => assert!(!checked, "{path}: its chain passed the check, yet: {e}"),
        }
    }
}

fn run<S: ReadAt>(src: S, len: u64) {
    let Ok(vol) = FatVolume::with_source(src, 0, len, "fuzz.img".into()) else {
        return;
    };
    let mut w = Walk {
        entries: 0,
        read: 0,
    };
    walk(&vol, "", 0, &mut w);
    let _ = vol.check_dir_chains("autoinstall/reports");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        if rest.len() < 4 {
            return;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as u64;
        let src = ZeroFilled {
            head: &rest[4..],
            len: len.min(256 << 20),
        };
        run(src, len.min(256 << 20));
        return;
    }
    let t = template();
    let mut patches = Vec::new();
    let mut rest = rest;
    while rest.len() >= 4 {
        let region = t.regions[rest[0] as usize % 4];
        let at = region + u16::from_le_bytes([rest[1], rest[2]]) as u64;
        let n = (rest[3] as usize).min(rest.len() - 4);
        patches.push((at, &rest[4..4 + n]));
        rest = &rest[4 + n..];
    }
    let src = Patched {
        base: &t.bytes,
        patches,
    };
    run(src, t.bytes.len() as u64);
});
