//! Reading a file whose chain was resolved into runs when it was opened: no FAT lookups while
//! reading, large reads go straight from the device into the caller's buffer, small ones
//! through a buffer of a few hundred KiB.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::chain::Run;
use super::{FatVolume, ReadAt};

/// Reads at least this large skip the buffer.
const DIRECT: usize = 64 * 1024;
/// What one buffered read fetches (less at the end of a run).
const BUFFER: u64 = 256 * 1024;

/// A contiguous piece of a file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Piece {
    /// Offset in the extent.
    at: u64,
    /// Offset in the file of the piece's first byte.
    file_off: u64,
    len: u64,
}

/// A file of a `FatVolume`, read from its start; `Seek` moves anywhere.
pub struct FatFile<'a, S: ReadAt = File> {
    vol: &'a FatVolume<S>,
    pub(super) pieces: Vec<Piece>,
    size: u64,
    pos: u64,
    /// The piece holding `pos` last time: reads mostly continue in it.
    piece: usize,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
}

impl<'a, S: ReadAt> FatFile<'a, S> {
    /// `runs` must cover `size` bytes: the chain walk has checked that.
    pub(super) fn new(vol: &'a FatVolume<S>, runs: &[Run], size: u64) -> Self {
        let cb = vol.layout.cluster_bytes as u64;
        let mut pieces = Vec::with_capacity(runs.len());
        let mut file_off = 0;
        for r in runs {
            let len = (r.count as u64 * cb).min(size - file_off);
            pieces.push(Piece {
                at: vol.layout.cluster_offset(r.first),
                file_off,
                len,
            });
            file_off += len;
        }
        debug_assert_eq!(file_off, size);
        FatFile {
            vol,
            pieces,
            size,
            pos: 0,
            piece: 0,
            buf: Vec::new(),
            buf_at: 0,
        }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The index of the piece holding `self.pos`, which is before the end.
    fn piece_at_pos(&mut self) -> usize {
        let pos = self.pos;
        let hit = |p: &Piece| pos >= p.file_off && pos - p.file_off < p.len;
        let i = if self.pieces.get(self.piece).is_some_and(hit) {
            self.piece
        } else if self.pieces.get(self.piece + 1).is_some_and(hit) {
            self.piece + 1
        } else {
            self.pieces.partition_point(|p| p.file_off + p.len <= pos)
        };
        self.piece = i;
        i
    }
}

impl<S: ReadAt> Read for FatFile<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.buf_at && self.pos - self.buf_at < self.buf.len() as u64 {
            let off = (self.pos - self.buf_at) as usize;
            let n = out.len().min(self.buf.len() - off);
            out[..n].copy_from_slice(&self.buf[off..off + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        let i = self.piece_at_pos();
        let p = self.pieces[i];
        let within = self.pos - p.file_off;
        let left = p.len - within;
        if out.len() >= DIRECT {
            let n = (out.len() as u64).min(left) as usize;
            self.vol.read_exact_at(&mut out[..n], p.at + within)?;
            self.pos += n as u64;
            return Ok(n);
        }
        let fill = BUFFER.min(left) as usize;
        self.buf.resize(fill, 0);
        if let Err(e) = self.vol.read_exact_at(&mut self.buf, p.at + within) {
            self.buf.clear();
            return Err(e);
        }
        self.buf_at = self.pos;
        let n = out.len().min(fill);
        out[..n].copy_from_slice(&self.buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S: ReadAt> Seek for FatFile<'_, S> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a seek before the start of a file",
            )
        })?;
        Ok(self.pos)
    }
}
