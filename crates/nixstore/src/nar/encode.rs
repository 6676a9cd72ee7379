//! NAR encoding from a path on disk, streaming: file contents pass through a fixed buffer.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{padding, MAGIC};
use crate::hash::{HashingWriter, Sha256Hash};

const COPY_BUFFER: usize = 256 * 1024;

/// Writes the NAR serialisation of `path` (a file, symlink or directory) to `out`.
/// Errors name the file that could not be read.
pub fn encode<W: Write>(path: &Path, out: W) -> io::Result<()> {
    let mut enc = Encoder {
        out: BufWriter::with_capacity(COPY_BUFFER, out),
        buf: vec![0; COPY_BUFFER],
    };
    enc.str(MAGIC)?;
    enc.node(path)?;
    enc.out.flush()
}

/// The NAR hash and size of `path`, as `nix-store -q --hash --size` gives them.
pub fn dump(path: &Path) -> io::Result<(Sha256Hash, u64)> {
    let mut w = HashingWriter::new(io::sink());
    encode(path, &mut w)?;
    let (_, hash, size) = w.finish();
    Ok((hash, size))
}

struct Encoder<W: Write> {
    out: BufWriter<W>,
    buf: Vec<u8>,
}

fn context<'a>(path: &'a Path, what: &str) -> impl FnOnce(io::Error) -> io::Error + 'a {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl<W: Write> Encoder<W> {
    fn str(&mut self, s: &[u8]) -> io::Result<()> {
        self.out.write_all(&(s.len() as u64).to_le_bytes())?;
        self.out.write_all(s)?;
        self.out.write_all(&[0u8; 8][..padding(s.len() as u64)])
    }

    fn strs(&mut self, tokens: &[&[u8]]) -> io::Result<()> {
        tokens.iter().try_for_each(|t| self.str(t))
    }

    fn node(&mut self, path: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(path).map_err(context(path, "reading metadata of"))?;
        let ft = meta.file_type();
        self.str(b"(")?;
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(context(path, "reading symlink"))?;
            self.strs(&[
                b"type",
                b"symlink",
                b"target",
                target.as_os_str().as_bytes(),
            ])?;
        } else if ft.is_file() {
            self.file(path, meta.len(), meta.permissions().mode() & 0o100 != 0)?;
        } else if ft.is_dir() {
            self.strs(&[b"type", b"directory"])?;
            let mut names: Vec<_> = fs::read_dir(path)
                .map_err(context(path, "listing directory"))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(context(path, "listing directory"))?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                self.strs(&[b"entry", b"(", b"name", name.as_bytes(), b"node"])?;
                self.node(&path.join(&name))?;
                self.str(b")")?;
            }
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is neither a file, a directory nor a symlink; a NAR cannot hold it",
                    path.display()
                ),
            ));
        }
        self.str(b")")
    }

    fn file(&mut self, path: &Path, size: u64, executable: bool) -> io::Result<()> {
        self.strs(&[b"type", b"regular"])?;
        if executable {
            self.strs(&[b"executable", b""])?;
        }
        self.str(b"contents")?;
        self.out.write_all(&size.to_le_bytes())?;
        let mut file = File::open(path).map_err(context(path, "opening"))?;
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = file
                .read(&mut self.buf[..want])
                .map_err(context(path, "reading"))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while it was being archived", path.display()),
                ));
            }
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        self.out.write_all(&[0u8; 8][..padding(size)])
    }
}
