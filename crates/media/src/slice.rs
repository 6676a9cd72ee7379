//! A window onto part of a file or block device (a partition of an image or a stick), as
//! fatfs wants its storage when it writes reports and formats ESPs.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// A window onto part of a file or block device, as fatfs wants its storage.
///
/// fatfs reads one cluster (4 KiB here) or one FAT entry (4 bytes) per call, so reads go
/// through a few cached windows: a 600 MiB payload is then read in 256 KiB preads rather than
/// 300,000 tiny ones. There are several because reading a file alternates between its data
/// and the FAT (the next cluster's number): with one window, each would evict the other and
/// every 4 KiB cluster would cost two 256 KiB reads (measured: a third of an install's time).
/// Writes go straight through and drop the windows.
pub struct Slice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
    windows: Vec<Window>,
    /// Bumped on every window hit, to find the least recently used one.
    clock: u64,
}

struct Window {
    /// Offset in the slice of `bytes[0]`.
    at: u64,
    bytes: Vec<u8>,
    used: u64,
}

const WINDOW: usize = 256 * 1024;
/// Data, FAT, and a directory or two.
const WINDOWS: usize = 4;

impl Slice {
    pub fn new(file: File, start: u64, len: u64) -> Slice {
        Slice {
            file,
            start,
            len,
            pos: 0,
            windows: Vec::new(),
            clock: 0,
        }
    }

    /// The index of a window holding `self.pos`, reading one (in place of the least recently
    /// used) if none does; `None` at the end of the slice.
    fn window_for_pos(&mut self) -> io::Result<Option<usize>> {
        self.clock += 1;
        let pos = self.pos;
        if let Some(i) = self
            .windows
            .iter()
            .position(|w| pos >= w.at && pos < w.at + w.bytes.len() as u64)
        {
            self.windows[i].used = self.clock;
            return Ok(Some(i));
        }
        let i = if self.windows.len() < WINDOWS {
            self.windows.push(Window {
                at: 0,
                bytes: Vec::new(),
                used: 0,
            });
            self.windows.len() - 1
        } else {
            (0..self.windows.len())
                .min_by_key(|&i| self.windows[i].used)
                .expect("windows exist")
        };
        let at = pos - pos % 4096;
        let want = (WINDOW as u64).min(self.len - at) as usize;
        let w = &mut self.windows[i];
        w.bytes.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self
                .file
                .read_at(&mut w.bytes[got..], self.start + at + got as u64)
            {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    w.bytes.clear();
                    return Err(e);
                }
            }
        }
        w.bytes.truncate(got);
        w.at = at;
        w.used = self.clock;
        Ok((pos < at + got as u64).then_some(i))
    }
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        if n >= WINDOW {
            let n = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
            self.pos += n as u64;
            return Ok(n);
        }
        let Some(i) = self.window_for_pos()? else {
            return Ok(0);
        };
        let w = &self.windows[i];
        let off = (self.pos - w.at) as usize;
        let n = n.min(w.bytes.len() - off);
        buf[..n].copy_from_slice(&w.bytes[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Slice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.windows.clear();
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let n = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Slice {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => p as i64,
            SeekFrom::End(d) => self.len as i64 + d,
            SeekFrom::Current(d) => self.pos as i64 + d,
        };
        if pos < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            ));
        }
        self.pos = pos as u64;
        Ok(self.pos)
    }
}

/// Where a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub len: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads that hop between regions (as fatfs does between the FAT and a file's clusters)
    /// and reads after a write return exactly the bytes of the underlying file.
    #[test]
    fn slice_reads_match_the_file_across_windows_and_writes() {
        let mut tmp = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        tmp.write_all(&bytes).unwrap();
        let start = 4096u64;
        let len = bytes.len() as u64 - start - 100;
        let mut s = Slice::new(tmp.try_clone().unwrap(), start, len);
        let view = &bytes[start as usize..(start + len) as usize];
        // FAT-like 4-byte reads near the start, cluster reads far away, a few other places.
        for k in 0..2000u64 {
            for at in [
                k * 4,
                1_000_000 + k * 512,
                2_500_000 + (k % 7) * 9_000,
                len - 3,
            ] {
                let mut buf = [0u8; 700];
                s.seek(SeekFrom::Start(at)).unwrap();
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0 && n <= 700);
                assert_eq!(&buf[..n], &view[at as usize..at as usize + n], "at {at}");
            }
        }
        // A write is visible to the next read.
        s.seek(SeekFrom::Start(10)).unwrap();
        s.write_all(b"fresh").unwrap();
        s.seek(SeekFrom::Start(8)).unwrap();
        let mut buf = [0u8; 9];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[2..7], b"fresh");
        // The end of the slice reads as the end.
        s.seek(SeekFrom::Start(len)).unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }
}
