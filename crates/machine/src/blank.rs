//! Whether a disk holds nothing that an install could cost: then the installer may check the
//! payload as it writes it instead of reading the whole closure twice (manifest::Verify). A
//! disk that holds nothing reads as zeros at both ends, where every partition table (MBR,
//! primary and backup GPT) and every signature the installer's world knows sits (ext4, xfs,
//! btrfs, FAT, swap, LUKS, LVM, md 0.90/1.0/1.2, ZFS's four labels, bcachefs: all within
//! the first or the last MiB), and at points spread over the rest, where a disk whose ends
//! were wiped but whose data is still there shows it. Reading every byte would cost as much
//! as the verify pass it replaces; 64 KiB at 64 points costs milliseconds even on a spinning
//! disk.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

const MIB: u64 = 1 << 20;
/// Points sampled between the two ends.
const SAMPLES: u64 = 64;
const SAMPLE_BYTES: u64 = 64 << 10;

/// The byte ranges read: both ends' MiB, then `SAMPLES` evenly spaced ranges between them.
/// Ranges are clipped to the disk and never overlap.
pub fn probes(size: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    if size <= 2 * MIB {
        out.push(0..size);
        return out;
    }
    out.extend([0..MIB, size - MIB..size]);
    let (lo, hi) = (MIB, size - MIB);
    let step = (hi - lo) / (SAMPLES + 1);
    if step >= SAMPLE_BYTES {
        out.extend((1..=SAMPLES).map(|i| {
            let at = lo + i * step;
            at..(at + SAMPLE_BYTES).min(hi)
        }));
    } else if hi > lo {
        out.push(lo..hi);
    }
    out
}

/// The offset of the first byte that is not zero in [`probes`] of `file` (`size` bytes), or
/// None when the disk holds nothing there.
pub fn first_data(file: &File, size: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; MIB as usize];
    for range in probes(size) {
        let mut at = range.start;
        while at < range.end {
            let n = ((range.end - at).min(MIB)) as usize;
            file.read_exact_at(&mut buf[..n], at)?;
            if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
                return Ok(Some(at + i as u64));
            }
            at += n as u64;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_cover_both_ends_and_spread_over_the_rest() {
        let size = 16u64 << 30;
        let p = probes(size);
        assert_eq!(p[0], 0..MIB);
        assert_eq!(p[1], size - MIB..size);
        assert_eq!(p.len() as u64, 2 + SAMPLES);
        for r in &p[2..] {
            assert!(r.start >= MIB && r.end <= size - MIB && r.end - r.start == SAMPLE_BYTES);
        }
        // Spread: the samples reach from the first to the last sixty-fifth of the middle.
        let middle = size - 2 * MIB;
        assert!(p[2].start < MIB + middle / 32);
        assert!(p.last().unwrap().start > size - MIB - middle / 32);
    }

    #[test]
    fn small_disks_are_read_whole() {
        let whole = probes(MIB);
        assert_eq!((whole.len(), &whole[0]), (1, &(0..MIB)));
        assert_eq!(
            probes(3 * MIB),
            vec![0..MIB, 2 * MIB..3 * MIB, MIB..2 * MIB]
        );
    }

    #[test]
    fn data_anywhere_probed_is_found() {
        let dir = std::env::temp_dir().join(format!("blank-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let size = 1u64 << 30;
        f.set_len(size).unwrap();
        assert_eq!(first_data(&f, size).unwrap(), None);
        // A byte in the middle of a sample, then one in the backup GPT's place.
        let sample = probes(size)[10].start + 100;
        f.write_all_at(&[1], sample).unwrap();
        assert_eq!(first_data(&f, size).unwrap(), Some(sample));
        f.write_all_at(&[0], sample).unwrap();
        f.write_all_at(&[0xEF], size - 512).unwrap();
        assert_eq!(first_data(&f, size).unwrap(), Some(size - 512));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
