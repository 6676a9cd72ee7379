//! The `Read` adapters the pipelines are built from, each written once: count what passes,
//! report it as progress, refuse a stream longer than a bound, remember whether the source
//! failed (so an error can be blamed on the source, not on where the bytes were going).

use std::io::{self, Read};

/// Counts the bytes read through it.
pub struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R> Counted<R> {
    pub fn new(inner: R) -> Self {
        Counted { inner, n: 0 }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Tells `progress` how many bytes each read brought (a progress bar's `inc`).
pub struct Progress<'a, R> {
    inner: R,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl<'a, R> Progress<'a, R> {
    pub fn new(inner: R, progress: &'a (dyn Fn(u64) + Sync)) -> Self {
        Progress { inner, progress }
    }
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// At most `limit` bytes; one more is an error naming `what`, not a quiet end (as
/// `Read::take` would give): a source that goes on is refused, never cut short unnoticed.
pub struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
    what: String,
}

impl<R> Limited<R> {
    pub fn new(inner: R, limit: u64, what: impl Into<String>) -> Self {
        Limited {
            inner,
            left: limit,
            limit,
            what: what.into(),
        }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Past the limit: a byte more is an error, the end is the end.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is longer than {} bytes, which no such file is",
                        self.what, self.limit
                    ),
                )),
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Remembers whether reading from the source failed, so that a failure further down (a
/// writer that gave up because its input ended early) is blamed on the source.
pub struct NoteFailure<R> {
    inner: R,
    failed: bool,
}

impl<R> NoteFailure<R> {
    pub fn new(inner: R) -> Self {
        NoteFailure {
            inner,
            failed: false,
        }
    }

    pub fn failed(&self) -> bool {
        self.failed
    }
}

impl<R: Read> Read for NoteFailure<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// Reads `r` to its end, at most `limit` bytes: the whole of a small file (a manifest, a
/// narinfo, a signature) whose size no source can inflate.
pub fn read_limited(r: impl Read, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    Limited::new(r, limit, what).read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_what_goes_on_and_take_what_fits() {
        assert_eq!(read_limited(&b"abc"[..], 3, "x").unwrap(), b"abc");
        let e = read_limited(&b"abcd"[..], 3, "the manifest").unwrap_err();
        assert!(
            e.to_string()
                .contains("the manifest is longer than 3 bytes"),
            "{e}"
        );
        assert_eq!(
            read_limited(io::repeat(7).take(5), 10, "x").unwrap().len(),
            5
        );
        assert!(read_limited(io::repeat(0), 1 << 16, "endless").is_err());
    }

    #[test]
    fn counts_and_reports_progress() {
        let seen = std::sync::atomic::AtomicU64::new(0);
        let add = |n| {
            seen.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        };
        let mut c = Counted::new(Progress::new(&[1u8; 1000][..], &add));
        io::copy(&mut c, &mut io::sink()).unwrap();
        assert_eq!(c.count(), 1000);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1000);
    }

    #[test]
    fn a_failing_source_is_noted() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("gone"))
            }
        }
        let mut r = NoteFailure::new(Broken);
        assert!(r.read(&mut [0u8; 4]).is_err());
        assert!(r.failed());
    }
}
