//! Reading a payload from an ISO 9660 image or CD without mounting it: `mkinstaller inspect`
//! and `verify` on a build host, and the installer on a CD or BMC virtual medium, share this
//! reader. (Build hosts and CI kernels often have no iso9660 driver; the installer then needs
//! neither the driver nor a mount.)
//!
//! Only the Joliet tree is read: it keeps names as written, case included, up to 103
//! characters with xorriso's `-joliet-long` (our longest is `nar/<52>.nar.zst`), and needs no
//! System Use parsing as Rock Ridge would. Files over 4 GiB (ISO level 3) are several
//! directory records with the multi-extent flag, read back to back. Every extent is checked
//! against the medium's size, directories are capped in size, and names must be plain
//! components: a hostile image yields an error, never a read outside the medium.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::read::Payload;
use crate::readat::{read_exact_at, ReadAt};

const BLOCK: u64 = 2048;
/// Far more than our largest directory (the payload's top: one entry per store path).
const MAX_DIR_BYTES: u64 = 64 << 20;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Whether `path` starts like an ISO 9660 volume ("CD001" in the first volume descriptor).
pub fn is_iso(path: &Path) -> bool {
    let mut magic = [0u8; 5];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut magic, 16 * BLOCK + 1))
        .is_ok()
        && &magic == b"CD001"
}

/// One directory record, decoded.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    dir: bool,
    /// (byte offset, length) of each extent, in order.
    extents: Vec<(u64, u64)>,
}

/// A payload in the Joliet tree of an ISO 9660 volume.
pub struct IsoPayload<S: ReadAt = File> {
    file: S,
    size: u64,
    root: Entry,
    what: String,
}

impl IsoPayload<File> {
    pub fn open(path: &Path) -> io::Result<IsoPayload> {
        let what = path.display().to_string();
        let mut file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {what}: {e}")))?;
        let size = file.seek(SeekFrom::End(0))?;
        IsoPayload::with_source(file, size, what)
    }
}

impl<S: ReadAt> IsoPayload<S> {
    /// The ISO on `file` (of `size` bytes; memory for the fuzzer); `what` names it in messages.
    pub fn with_source(file: S, size: u64, what: String) -> io::Result<IsoPayload<S>> {
        let mut vd = vec![0u8; BLOCK as usize];
        for n in 16..16 + 64u64 {
            read_exact_at(&file, &mut vd, n * BLOCK)
                .map_err(|e| bad(format!("{what}: reading volume descriptor {n}: {e}")))?;
            if &vd[1..6] != b"CD001" {
                return Err(bad(format!("{what} is not an ISO 9660 volume")));
            }
            match vd[0] {
                // A supplementary descriptor with a UCS-2 escape sequence: Joliet.
                2 if vd[88] == b'%' && vd[89] == b'/' && matches!(vd[90], b'@' | b'C' | b'E') => {
                    // The root's record, named `.` like every directory's first record.
                    let rec = &vd[156..190];
                    let lba = u32::from_le_bytes(rec[2..6].try_into().expect("4 bytes")) as u64;
                    let len = u32::from_le_bytes(rec[10..14].try_into().expect("4 bytes")) as u64;
                    let root = Entry {
                        name: String::new(),
                        dir: true,
                        extents: vec![checked_extent(lba, len, size, &what)?],
                    };
                    return Ok(IsoPayload {
                        file,
                        size,
                        root,
                        what,
                    });
                }
                255 => break,
                _ => {}
            }
        }
        Err(bad(format!(
            "{what}: the ISO has no Joliet tree (mkinstaller's ISOs always do: was it written by another tool?)"
        )))
    }

    fn entries(&self, dir: &Entry) -> io::Result<Vec<Entry>> {
        let (start, len) = dir.extents[0];
        if len > MAX_DIR_BYTES {
            return Err(bad(format!(
                "{}: a directory of {len} bytes is larger than any payload's",
                self.what
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        read_exact_at(&self.file, &mut bytes, start)?;
        let mut out: Vec<Entry> = Vec::new();
        let mut at = 0usize;
        let mut continues = false;
        while at < bytes.len() {
            let n = bytes[at] as usize;
            if n == 0 {
                // Records do not cross blocks: the rest of this one is padding.
                at = (at / BLOCK as usize + 1) * BLOCK as usize;
                continue;
            }
            let rec = bytes.get(at..at + n).ok_or_else(|| {
                bad(format!(
                    "{}: a directory record runs past its directory",
                    self.what
                ))
            })?;
            at += n;
            let multi = rec.get(25).is_some_and(|f| f & 0x80 != 0);
            if let Some(e) = record(rec, self.size, &self.what)? {
                match out.last_mut() {
                    // The next part of a file over 4 GiB.
                    Some(prev) if continues && prev.name == e.name => {
                        prev.extents.extend(e.extents)
                    }
                    _ => out.push(e),
                }
            }
            continues = multi;
        }
        Ok(out)
    }

    fn lookup(&self, path: &str) -> io::Result<Entry> {
        let mut cur = self.root.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !cur.dir {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: {path}: {} is a file", self.what, cur.name),
                ));
            }
            cur = self
                .entries(&cur)?
                .into_iter()
                .find(|e| e.name == part)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{}: {path}: no such file", self.what),
                    )
                })?;
        }
        Ok(cur)
    }
}

/// Decodes one directory record of a directory; `None` for its `.` and `..` records.
fn record(rec: &[u8], medium: u64, what: &str) -> io::Result<Option<Entry>> {
    if rec.len() < 34 {
        return Err(bad(format!(
            "{what}: a directory record of {} bytes",
            rec.len()
        )));
    }
    let lba = u32::from_le_bytes(rec[2..6].try_into().expect("4 bytes")) as u64;
    let len = u32::from_le_bytes(rec[10..14].try_into().expect("4 bytes")) as u64;
    let dir = rec[25] & 0x02 != 0;
    let name_len = rec[32] as usize;
    let raw = rec
        .get(33..33 + name_len)
        .ok_or_else(|| bad(format!("{what}: a name runs past its directory record")))?;
    if raw == [0] || raw == [1] {
        return Ok(None); // `.` and `..`
    }
    if raw.len() % 2 != 0 {
        return Err(bad(format!("{what}: a Joliet name of odd length")));
    }
    let units: Vec<u16> = raw
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let mut name = String::from_utf16(&units)
        .map_err(|_| bad(format!("{what}: a Joliet name that is not UCS-2")))?;
    if let Some(stem) = name.strip_suffix(";1") {
        name = stem.to_string();
    }
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(bad(format!("{what}: a directory entry named {name:?}")));
    }
    Ok(Some(Entry {
        name,
        dir,
        extents: vec![checked_extent(lba, len, medium, what)?],
    }))
}

fn checked_extent(lba: u64, len: u64, medium: u64, what: &str) -> io::Result<(u64, u64)> {
    let start = lba * BLOCK;
    if start.checked_add(len).is_none_or(|end| end > medium) {
        return Err(bad(format!(
            "{what}: an extent at block {lba} of {len} bytes lies beyond the medium ({medium} bytes)"
        )));
    }
    Ok((start, len))
}

/// Reads a file's extents back to back.
struct ExtentReader<'a, S: ReadAt> {
    file: &'a S,
    extents: Vec<(u64, u64)>,
    /// Index of the current extent, and bytes read of it.
    at: usize,
    done: u64,
}

impl<S: ReadAt> Read for ExtentReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(start, len)) = self.extents.get(self.at) {
            if self.done == len {
                self.at += 1;
                self.done = 0;
                continue;
            }
            let want = (buf.len() as u64).min(len - self.done) as usize;
            let n = self.file.read_at(&mut buf[..want], start + self.done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the medium ended inside a file",
                ));
            }
            self.done += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

impl<S: ReadAt> Payload for IsoPayload<S> {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        let e = self.lookup(path)?;
        if e.dir {
            return Err(io::Error::other(format!(
                "{}: {path} is a directory",
                self.what
            )));
        }
        Ok(Box::new(ExtentReader {
            file: &self.file,
            extents: e.extents,
            at: 0,
            done: 0,
        }))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let d = self.lookup(dir)?;
        if !d.dir {
            return Err(io::Error::other(format!("{}: {dir} is a file", self.what)));
        }
        Ok(self.entries(&d)?.into_iter().map(|e| e.name).collect())
    }

    fn describe(&self) -> String {
        format!("{} (ISO 9660)", self.what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir_record(name: &[u8], lba: u32, len: u32, flags: u8) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r[2..6].copy_from_slice(&lba.to_le_bytes());
        r[6..10].copy_from_slice(&lba.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = flags;
        r[32] = name.len() as u8;
        r.extend_from_slice(name);
        if r.len() % 2 == 1 {
            r.push(0);
        }
        r[0] = r.len() as u8;
        r
    }

    fn joliet(name: &str) -> Vec<u8> {
        name.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
    }

    /// A minimal Joliet-only volume: one directory `d` holding `f` ("hello, iso"), and a file
    /// `big` in two extents (the multi-extent form of files over 4 GiB). `file_lba` lets a
    /// test point `f` elsewhere.
    fn volume(file_lba: u32) -> tempfile::NamedTempFile {
        let b = BLOCK as usize;
        let mut img = vec![0u8; 24 * b];
        // Block 16: the Joliet supplementary descriptor; 17: the terminator.
        img[16 * b] = 2;
        img[16 * b + 1..16 * b + 6].copy_from_slice(b"CD001");
        img[16 * b + 88..16 * b + 91].copy_from_slice(b"%/E");
        let root = dir_record(&[0], 18, BLOCK as u32, 2);
        img[16 * b + 156..16 * b + 156 + 34].copy_from_slice(&root[..34]);
        img[17 * b] = 255;
        img[17 * b + 1..17 * b + 6].copy_from_slice(b"CD001");
        // Block 18: the root; 19: d; 20: f's data; 21, 22: big's two extents.
        let mut root_dir = dir_record(&[0], 18, BLOCK as u32, 2);
        root_dir.extend(dir_record(&[1], 18, BLOCK as u32, 2));
        root_dir.extend(dir_record(&joliet("d"), 19, BLOCK as u32, 2));
        root_dir.extend(dir_record(&joliet("big;1"), 21, 3, 0x80));
        root_dir.extend(dir_record(&joliet("big;1"), 22, 4, 0));
        img[18 * b..18 * b + root_dir.len()].copy_from_slice(&root_dir);
        let mut d = dir_record(&[0], 19, BLOCK as u32, 2);
        d.extend(dir_record(&[1], 18, BLOCK as u32, 2));
        d.extend(dir_record(&joliet("f;1"), file_lba, 10, 0));
        img[19 * b..19 * b + d.len()].copy_from_slice(&d);
        img[20 * b..20 * b + 10].copy_from_slice(b"hello, iso");
        img[21 * b..21 * b + 3].copy_from_slice(b"abc");
        img[22 * b..22 * b + 4].copy_from_slice(b"defg");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&img).unwrap();
        f
    }

    #[test]
    fn reads_joliet_names_directories_and_multi_extent_files() {
        let v = volume(20);
        assert!(is_iso(v.path()));
        let p = IsoPayload::open(v.path()).unwrap();
        let mut top = p.list("").unwrap();
        top.sort();
        assert_eq!(top, ["big", "d"]);
        assert_eq!(p.list("d").unwrap(), ["f"]);
        assert_eq!(p.read_capped("d/f", 100).unwrap(), b"hello, iso");
        assert_eq!(p.read_capped("big", 100).unwrap(), b"abcdefg");
        assert_eq!(
            p.open("d/missing").err().unwrap().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn an_extent_beyond_the_medium_is_an_error_not_a_read() {
        let v = volume(1_000_000);
        let p = IsoPayload::open(v.path()).unwrap();
        let e = p.open("d/f").err().unwrap();
        assert!(e.to_string().contains("beyond the medium"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_an_iso_is_refused() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![0u8; 64 * 1024]).unwrap();
        assert!(!is_iso(f.path()));
        assert!(IsoPayload::open(f.path()).is_err());
    }
}
