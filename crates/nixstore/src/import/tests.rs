//! Hostile compressed streams: every pass ends, bounded, whatever the source sends.
use super::*;
use std::time::{Duration, Instant};

/// A small tree's NAR, its narinfo (no FileHash or FileSize: they are not signed, so a
/// hostile medium can leave them out) and its zstd file.
fn sample() -> (Vec<u8>, NarInfo, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), vec![b'x'; 10_000]).unwrap();
    let mut nar = Vec::new();
    nar::encode(dir.path(), &mut nar).unwrap();
    let info = NarInfo {
        store_path: StorePath::parse("/nix/store/00000000000000000000000000000000-t").unwrap(),
        url: "nar/t.nar.zst".into(),
        compression: "zstd".into(),
        file_hash: None,
        file_size: None,
        nar_hash: Sha256Hash::of(&nar),
        nar_size: nar.len() as u64,
        references: Vec::new(),
        deriver: None,
        sigs: Vec::new(),
        ca: None,
    };
    let compressed = zstd::encode_all(nar.as_slice(), 3).unwrap();
    (nar, info, compressed)
}

/// Bytes without end, and a count of how many were taken.
struct Endless<'a> {
    byte: u8,
    taken: &'a std::cell::Cell<u64>,
}

impl Read for Endless<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        buf.fill(self.byte);
        self.taken.set(self.taken.get() + buf.len() as u64);
        Ok(buf.len())
    }
}

fn check(
    compressed: impl Read,
    info: &NarInfo,
    how: Check,
) -> Result<(UnpackStats, FilePin), ImportError> {
    through_compressed(compressed, Path::new("t"), info, how, |nar| {
        check_nar(nar, &info.store_path, &info.nar_hash, info.nar_size)
    })
}

#[test]
fn a_whole_file_passes_and_is_pinned() {
    let (_, info, compressed) = sample();
    let (_, pin) = check(compressed.as_slice(), &info, Check::Full).unwrap();
    assert_eq!(pin.file_hash, Sha256Hash::of(&compressed));
    assert_eq!(pin.file_size, compressed.len() as u64);
    check(compressed.as_slice(), &info, Check::Pinned(pin)).unwrap();
}

/// A valid compressed NAR followed by endless bytes, with no FileSize to stop at: refused
/// after reading at most a byte more than the file, at once.
#[test]
fn endless_bytes_after_the_frame_are_refused_at_once() {
    let (_, info, compressed) = sample();
    for byte in [0u8, 0x5a] {
        let taken = std::cell::Cell::new(0);
        let start = Instant::now();
        let err = check(
            compressed.as_slice().chain(Endless {
                byte,
                taken: &taken,
            }),
            &info,
            Check::Full,
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::Trailing { .. }), "{err}");
        assert!(taken.get() <= 256 * 1024, "read {} bytes", taken.get());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

/// A frame that never ends (a header, then empty raw blocks for ever) produces no NAR
/// bytes at all: it is read only as far as a NAR of NarSize could compress to.
#[test]
fn a_frame_without_end_is_cut_at_the_most_a_nar_can_take() {
    let (_, info, _) = sample();
    // Frame header: magic, descriptor 0 (no size, no checksum, window descriptor follows),
    // window descriptor for 1 MiB.
    let mut head = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x50];
    let taken = std::cell::Cell::new(0);
    // An empty raw block that is not the last: three zero bytes.
    let blocks = Endless {
        byte: 0,
        taken: &taken,
    };
    head.truncate(6);
    let err = check(head.as_slice().chain(blocks), &info, Check::Full).unwrap_err();
    assert!(
        taken.get() <= max_compressed_size(info.nar_size) + 256 * 1024,
        "read {} bytes",
        taken.get()
    );
    assert!(!err.to_string().is_empty());
}

/// A stream that decompresses to more than NarSize: cut one byte past it.
#[test]
fn a_nar_longer_than_its_size_is_cut() {
    let (nar, mut info, compressed) = sample();
    info.nar_size = nar.len() as u64 / 2;
    let err = check(compressed.as_slice(), &info, Check::Full).unwrap_err();
    assert!(!err.to_string().is_empty());
    // And uncompressed.
    info.compression = "none".into();
    let taken = std::cell::Cell::new(0);
    let err = check(
        nar.as_slice().chain(Endless {
            byte: 1,
            taken: &taken,
        }),
        &info,
        Check::Full,
    )
    .unwrap_err();
    assert!(!err.to_string().is_empty());
    assert_eq!(taken.get(), 0, "read past the NAR");
}

/// A frame asking for a window larger than any Nix cache uses is refused, not allocated.
#[test]
fn a_huge_window_is_refused() {
    let (nar, info, _) = sample();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.long_distance_matching(true).unwrap();
    enc.window_log(MAX_WINDOW_LOG + 2).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &nar).unwrap();
    let big = enc.finish().unwrap();
    let err = check(big.as_slice(), &info, Check::Full).unwrap_err();
    assert!(err.to_string().contains("too much memory"), "{err}");
    // The same NAR with an ordinary window passes.
    let small = zstd::encode_all(nar.as_slice(), 19).unwrap();
    check(small.as_slice(), &info, Check::Full).unwrap();
}
