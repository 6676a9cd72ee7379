//! A thread's writer of file contents and metadata blocks (see [`Writer`]).

use std::io::{self, Read};

use crate::device::Aligned;
use crate::layout::BLOCK;
use crate::{Fs, Run, REGION_BLOCKS};

/// One thread's way of putting contents on the device: small things are packed into a
/// region written in one go; big files stream straight to their own runs.
pub struct Writer<'a> {
    fs: &'a Fs,
    region: Option<(Run, u64)>,
    buf: Option<Aligned>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(fs: &'a Fs) -> Writer<'a> {
        Writer {
            fs,
            region: None,
            buf: None,
        }
    }
}

impl Writer<'_> {
    /// Writes the region's used part and records it; the rest of it stays free.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if let Some((run, used)) = self.region.take() {
            if used > 0 {
                let buf = self.buf.take().expect("a region has a buffer");
                self.fs.io.submit(buf, (used * BLOCK) as usize, run.start)?;
                self.fs.alloc.lock().unwrap().used.push(Run {
                    start: run.start,
                    len: used,
                });
            }
        }
        Ok(())
    }

    /// Places `size` bytes read from `src`, returning where they went. A small file goes
    /// into the region; one that does not fit in what is left of it continues in the next
    /// region (two extents rather than a wasted tail).
    pub(crate) fn file(&mut self, size: u64, src: &mut dyn Read) -> io::Result<Vec<Run>> {
        let n = size.div_ceil(BLOCK);
        if n > REGION_BLOCKS {
            return self.big_file(n, size, src);
        }
        let mut runs: Vec<Run> = Vec::new();
        let (mut blocks_left, mut bytes_left) = (n, size);
        while blocks_left > 0 {
            let (run, used) = match self.region {
                Some((run, used)) if used < run.len => (run, used),
                _ => {
                    self.flush()?;
                    let run = self.fs.alloc_region(1, REGION_BLOCKS)?;
                    (run, 0)
                }
            };
            let k = blocks_left.min(run.len - used);
            let bytes = bytes_left.min(k * BLOCK) as usize;
            if self.buf.is_none() {
                self.buf = Some(self.fs.io.buffer()?);
            }
            let buf = self.buf.as_mut().expect("just made").as_mut();
            let buf = &mut buf[(used * BLOCK) as usize..((used + k) * BLOCK) as usize];
            src.read_exact(&mut buf[..bytes])?;
            buf[bytes..].fill(0);
            self.region = Some((run, used + k));
            match runs.last_mut() {
                Some(last) if last.start + last.len == run.start + used => last.len += k,
                _ => runs.push(Run {
                    start: run.start + used,
                    len: k,
                }),
            }
            blocks_left -= k;
            bytes_left -= bytes as u64;
        }
        Ok(runs)
    }

    pub(crate) fn big_file(
        &mut self,
        n: u64,
        size: u64,
        src: &mut dyn Read,
    ) -> io::Result<Vec<Run>> {
        let runs = self.fs.alloc_runs(n)?;
        let mut left = size;
        for r in &runs {
            let mut block = r.start;
            while block < r.start + r.len {
                let blocks = (r.start + r.len - block).min(REGION_BLOCKS);
                let bytes = (blocks * BLOCK).min(left) as usize;
                let mut buf = self.fs.io.buffer()?;
                let chunk = &mut buf.as_mut()[..(blocks * BLOCK) as usize];
                src.read_exact(&mut chunk[..bytes])?;
                chunk[bytes..].fill(0);
                self.fs.io.submit(buf, (blocks * BLOCK) as usize, block)?;
                left -= bytes as u64;
                block += blocks;
            }
        }
        Ok(runs)
    }

    /// Places `data` (directory blocks, a long symlink, extent leaves).
    pub(crate) fn bytes(&mut self, data: &[u8]) -> io::Result<Vec<Run>> {
        self.file(data.len() as u64, &mut &data[..])
    }

    /// Writes out what is still packed. Call it before [`Fs::finish`].
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()
    }
}
