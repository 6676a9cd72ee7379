//! Directories: 32-byte entries parsed from a directory's clusters, long names assembled from
//! their LFN entries and checked against the short entry, and a sorted index for
//! case-insensitive lookups (the payload's `nar/` directory can hold tens of thousands of
//! entries, and an install opens every one of them by name).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use super::chain::{Length, Run};
use super::{FatVolume, ReadAt};

/// A directory may take this many bytes (two million entries). The FAT specification's own
/// limit is 65,536 entries, but our writer does not enforce it, and a large fleet's `nar/`
/// directory can pass it: each file takes six entries with its long name.
pub(super) const MAX_DIR_BYTES: u64 = 64 << 20;
/// Parsed directories kept, in entries: a big `nar/` and everything else of a payload.
const MAX_CACHED_ENTRIES: usize = 1 << 20;
/// Directory bytes read per call.
const READ_CHUNK: u64 = 1 << 20;

const ENTRY: usize = 32;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LFN: u8 = 0x0F;
const DELETED: u8 = 0xE5;
/// The NT case flags in byte 12: the base or extension of a short name is shown lower-case.
const LOWER_BASE: u8 = 0x08;
const LOWER_EXT: u8 = 0x10;
/// A long name has at most 255 UTF-16 units, so at most 20 entries of 13.
const LFN_UNITS: usize = 13;
const MAX_LFN_PARTS: usize = 20;

#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The long name when a valid one precedes the short entry, else the short name.
    pub name: Box<str>,
    /// The short name as stored, space-padded base and extension.
    pub short: [u8; 11],
    pub is_dir: bool,
    pub cluster: u32,
    pub size: u32,
    /// Whether `name` is a plain path component: only those are listed and found. The others
    /// stay here so that their chains are still checked.
    pub plain: bool,
}

pub(super) struct Dir {
    pub entries: Vec<Entry>,
    /// Indices of plain entries by ASCII-folded name, directory order among equals.
    by_name: Vec<u32>,
    /// Indices of plain entries by upper-cased short name, directory order among equals.
    by_short: Vec<u32>,
}

fn fold_cmp(a: &[u8], b: &[u8]) -> Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

/// The stored form of `name` if it can be a short name: base up to 8 and extension up to 3
/// ASCII characters, upper-cased. Non-ASCII short names are found through their long names.
fn short_key(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = name.split_once('.').unwrap_or((name, ""));
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || ext.contains('.') {
        return None;
    }
    if !name.is_ascii() || name.contains(' ') {
        return None;
    }
    let mut key = [b' '; 11];
    key[..base.len()].copy_from_slice(base.as_bytes());
    key[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    key.make_ascii_uppercase();
    Some(key)
}

fn short_upper(raw: &[u8; 11]) -> [u8; 11] {
    let mut k = *raw;
    k.make_ascii_uppercase();
    k
}

impl Dir {
    fn new(entries: Vec<Entry>) -> Dir {
        let plain: Vec<u32> = (0..entries.len() as u32)
            .filter(|&i| entries[i as usize].plain)
            .collect();
        let mut by_name = plain.clone();
        // Stable sorts, so equal names stay in directory order.
        by_name.sort_by(|&a, &b| {
            fold_cmp(
                entries[a as usize].name.as_bytes(),
                entries[b as usize].name.as_bytes(),
            )
        });
        let mut by_short = plain;
        by_short.sort_by_key(|&i| short_upper(&entries[i as usize].short));
        Dir {
            entries,
            by_name,
            by_short,
        }
    }

    /// The entry called `name`: an exact match of its (long) name first, then the first
    /// whose name matches ignoring ASCII case, then the first whose short name does.
    pub fn lookup(&self, name: &str) -> Option<&Entry> {
        let e = &self.entries;
        let n = name.as_bytes();
        let lo = self
            .by_name
            .partition_point(|&i| fold_cmp(e[i as usize].name.as_bytes(), n).is_lt());
        let same = self.by_name[lo..]
            .partition_point(|&i| fold_cmp(e[i as usize].name.as_bytes(), n).is_eq());
        let same = &self.by_name[lo..lo + same];
        if let Some(&i) = same.iter().find(|&&i| &*e[i as usize].name == name) {
            return Some(&e[i as usize]);
        }
        if let Some(&i) = same.first() {
            return Some(&e[i as usize]);
        }
        let key = short_key(name)?;
        let lo = self
            .by_short
            .partition_point(|&i| short_upper(&e[i as usize].short) < key);
        self.by_short
            .get(lo)
            .filter(|&&i| short_upper(&e[i as usize].short) == key)
            .map(|&i| &e[i as usize])
    }
}

/// A long name being assembled: its entries come last part first, each numbered.
struct Lfn {
    checksum: u8,
    /// The part number the next entry must have; 0 once the name is complete.
    next: u8,
    parts: u8,
    units: [u16; LFN_UNITS * MAX_LFN_PARTS],
}

/// The checksum of a short name that its LFN entries carry (FAT specification).
pub(super) fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| (sum >> 1 | (sum & 1) << 7).wrapping_add(b))
}

/// Whether `name` can be a path component: not empty, not `.` or `..`, no `/` or NUL.
fn plain_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The name a short entry shows, honouring the NT lower-case flags; `None` when it cannot be
/// a path component. Bytes beyond ASCII are code-page characters we do not know the page of,
/// so they are read as Latin-1 to keep them distinct.
fn short_display(raw: &[u8; 11], flags: u8) -> Option<String> {
    let mut bytes = *raw;
    if bytes[0] == 0x05 {
        // 0xE5 as a first byte marks a deleted entry, so a name starting with it stores 0x05.
        bytes[0] = DELETED;
    }
    if flags & LOWER_BASE != 0 {
        bytes[..8].make_ascii_lowercase();
    }
    if flags & LOWER_EXT != 0 {
        bytes[8..].make_ascii_lowercase();
    }
    let trim = |s: &[u8]| s.len() - s.iter().rev().take_while(|&&b| b == b' ').count();
    let base = &bytes[..trim(&bytes[..8])];
    let ext = &bytes[8..8 + trim(&bytes[8..])];
    if base.is_empty() || base.iter().chain(ext).any(|&b| b < 0x20) {
        return None;
    }
    let mut name: String = base.iter().map(|&b| b as char).collect();
    if !ext.is_empty() {
        name.push('.');
        name.extend(ext.iter().map(|&b| b as char));
    }
    plain_component(&name).then_some(name)
}

/// Parses a directory's bytes as they are read, until its end marker.
#[derive(Default)]
pub(super) struct Parser {
    entries: Vec<Entry>,
    lfn: Option<Box<Lfn>>,
    pub done: bool,
}

impl Parser {
    /// Parses whole 32-byte entries of `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        for e in bytes.chunks_exact(ENTRY) {
            if self.done {
                return;
            }
            match e[0] {
                0x00 => self.done = true,
                DELETED => self.lfn = None,
                _ if e[11] & 0x3F == ATTR_LFN => self.lfn_part(e),
                _ => self.short_entry(e),
            }
        }
    }

    fn lfn_part(&mut self, e: &[u8]) {
        let seq = e[0] & 0x1F;
        let checksum = e[13];
        if e[0] & 0x40 != 0 {
            // The last part, stored first: starts a new name.
            if seq == 0 || seq as usize > MAX_LFN_PARTS {
                self.lfn = None;
                return;
            }
            self.lfn = Some(Box::new(Lfn {
                checksum,
                next: seq,
                parts: seq,
                units: [0; LFN_UNITS * MAX_LFN_PARTS],
            }));
        }
        let Some(lfn) = self.lfn.as_mut() else {
            return;
        };
        if seq == 0 || seq != lfn.next || checksum != lfn.checksum {
            // Out of order or from another name: this name is lost.
            self.lfn = None;
            return;
        }
        let at = (seq as usize - 1) * LFN_UNITS;
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (k, off) in offsets.into_iter().enumerate() {
            lfn.units[at + k] = u16::from_le_bytes([e[off], e[off + 1]]);
        }
        lfn.next = seq - 1;
    }

    fn short_entry(&mut self, e: &[u8]) {
        let lfn = self.lfn.take();
        let attr = e[11];
        if attr & ATTR_VOLUME_ID != 0 {
            return;
        }
        let raw: [u8; 11] = e[..11].try_into().expect("11 bytes");
        if &raw == b".          " || &raw == b"..         " {
            return;
        }
        let long = lfn
            .filter(|l| l.next == 0 && l.checksum == lfn_checksum(&raw))
            .and_then(|l| {
                let units = &l.units[..l.parts as usize * LFN_UNITS];
                let len = units.iter().position(|&u| u == 0).unwrap_or(units.len());
                (len <= 255)
                    .then(|| String::from_utf16(&units[..len]).ok())
                    .flatten()
            });
        // A long name that fails its checksum belongs to an entry since replaced by a system
        // that knows no long names: the short name is the true one, as Windows reads it.
        let (name, plain) = match long {
            Some(n) => {
                let plain = plain_component(&n);
                (n, plain)
            }
            None => match short_display(&raw, e[12]) {
                Some(n) => (n, true),
                None => (String::from_utf8_lossy(&raw).into_owned(), false),
            },
        };
        let cluster = (u16::from_le_bytes([e[20], e[21]]) as u32) << 16
            | u16::from_le_bytes([e[26], e[27]]) as u32;
        self.entries.push(Entry {
            name: name.into_boxed_str(),
            short: raw,
            is_dir: attr & ATTR_DIRECTORY != 0,
            cluster,
            size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
            plain,
        });
    }
}

#[derive(Default)]
pub(super) struct DirCache {
    dirs: HashMap<u32, Arc<Dir>>,
    entries: usize,
}

impl<S: ReadAt> FatVolume<S> {
    /// The clusters of the directory at `cluster`, bounded by `MAX_DIR_BYTES`.
    pub(super) fn dir_chain(
        &self,
        cluster: u32,
        whose: &dyn Fn() -> String,
    ) -> io::Result<Vec<Run>> {
        let max = MAX_DIR_BYTES / self.layout.cluster_bytes as u64;
        self.chain(cluster, Length::AtMost(max), whose)
    }

    /// The parsed directory whose first cluster is `cluster`, from the cache if it is there.
    pub(super) fn dir(&self, cluster: u32, whose: &dyn Fn() -> String) -> io::Result<Arc<Dir>> {
        if let Some(d) = self.lock_dirs().dirs.get(&cluster) {
            return Ok(d.clone());
        }
        let runs = self.dir_chain(cluster, whose)?;
        let cb = self.layout.cluster_bytes as u64;
        let mut parser = Parser::default();
        let mut buf = Vec::new();
        'runs: for run in runs {
            let start = self.layout.cluster_offset(run.first);
            let len = run.count as u64 * cb;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(READ_CHUNK);
                buf.resize(n as usize, 0);
                self.read_exact_at(&mut buf, start + done)?;
                parser.feed(&buf);
                if parser.done {
                    break 'runs;
                }
                done += n;
            }
        }
        let dir = Arc::new(Dir::new(parser.entries));
        let mut cache = self.lock_dirs();
        if cache.entries + dir.entries.len() > MAX_CACHED_ENTRIES {
            cache.dirs.clear();
            cache.entries = 0;
        }
        if dir.entries.len() <= MAX_CACHED_ENTRIES {
            cache.entries += dir.entries.len();
            if let Some(old) = cache.dirs.insert(cluster, dir.clone()) {
                cache.entries -= old.entries.len();
            }
        }
        Ok(dir)
    }

    fn lock_dirs(&self) -> std::sync::MutexGuard<'_, DirCache> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(name: &[u8; 11], attr: u8, flags: u8) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = attr;
        e[12] = flags;
        e[26] = 9;
        e[28] = 5;
        e
    }

    fn long(name: &str, short: &[u8; 11]) -> Vec<u8> {
        let mut units: Vec<u16> = name.encode_utf16().collect();
        let parts = units.len().div_ceil(13);
        if !units.len().is_multiple_of(13) {
            units.push(0);
        }
        units.resize(parts * 13, 0xFFFF);
        let mut out = Vec::new();
        for i in (0..parts).rev() {
            let mut e = [0u8; 32];
            e[0] = (i as u8 + 1) | if i == parts - 1 { 0x40 } else { 0 };
            e[11] = ATTR_LFN;
            e[13] = lfn_checksum(short);
            let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
            for (k, off) in offsets.into_iter().enumerate() {
                e[off..off + 2].copy_from_slice(&units[i * 13 + k].to_le_bytes());
            }
            out.extend_from_slice(&e);
        }
        out
    }

    fn parse(bytes: &[u8]) -> Vec<Entry> {
        let mut p = Parser::default();
        p.feed(bytes);
        p.entries
    }

    #[test]
    fn long_names_short_names_and_what_is_skipped() {
        let mut b = Vec::new();
        b.extend(short(b"LABEL      ", ATTR_VOLUME_ID, 0));
        b.extend(short(b".          ", ATTR_DIRECTORY, 0));
        b.extend(short(b"..         ", ATTR_DIRECTORY, 0));
        b.extend(long("a long name.narinfo", b"_0000001NAR"));
        b.extend(short(b"_0000001NAR", 0, 0));
        b.extend(short(b"GONE    TXT", 0, 0));
        b[32 * 6] = DELETED;
        b.extend(short(b"README  TXT", 0, LOWER_BASE));
        // A long name whose checksum does not match its short entry: the short name wins.
        b.extend(long("stale", b"OTHER      "));
        b.extend(short(b"FRESH      ", ATTR_DIRECTORY, 0));
        b.extend(long("has/slash", b"SLASH      "));
        b.extend(short(b"SLASH      ", 0, 0));
        b.extend(short(b"\x05SC        ", 0, 0));
        b.extend([0u8; 32]);
        b.extend(short(b"AFTEREND   ", 0, 0));
        let e = parse(&b);
        let names: Vec<(&str, bool)> = e.iter().map(|e| (&*e.name, e.plain)).collect();
        assert_eq!(
            names,
            [
                ("a long name.narinfo", true),
                ("readme.TXT", true),
                ("FRESH", true),
                ("has/slash", false),
                ("\u{e5}SC", true),
            ]
        );
        assert!(e[2].is_dir && !e[1].is_dir);
        assert_eq!((e[0].cluster, e[0].size), (9, 5));
    }

    #[test]
    fn lookups_prefer_exact_then_folded_then_short() {
        let mut b = Vec::new();
        b.extend(long("Foo", b"_0000000   "));
        b.extend(short(b"_0000000   ", 0, 0));
        b.extend(long("foo", b"_0000001   "));
        b.extend(short(b"_0000001   ", 0, 0));
        b.extend(long("x.narinfo", b"_0000002NAR"));
        b.extend(short(b"_0000002NAR", 0, 0));
        let d = Dir::new(parse(&b));
        assert_eq!(&*d.lookup("foo").unwrap().name, "foo");
        assert_eq!(&*d.lookup("Foo").unwrap().name, "Foo");
        assert_eq!(&*d.lookup("FOO").unwrap().name, "Foo");
        assert_eq!(&*d.lookup("X.NARINFO").unwrap().name, "x.narinfo");
        assert_eq!(&*d.lookup("_0000002.nar").unwrap().name, "x.narinfo");
        assert!(d.lookup("_0000002").is_none());
        assert!(d.lookup("bar").is_none());
    }

    #[test]
    fn broken_long_name_sequences_fall_back_to_the_short_name() {
        let short_name = b"_0000009   ";
        let mut parts = long("twenty-seven characters!!!!", short_name);
        assert_eq!(parts.len(), 96);
        // Drop the middle part: the name is incomplete.
        parts.drain(32..64);
        parts.extend(short(short_name, 0, 0));
        assert_eq!(&*parse(&parts)[0].name, "_0000009");
        // A name whose first entry claims 31 parts is not a name.
        let mut bad = long("x", short_name);
        bad[0] = 0x40 | 31;
        bad.extend(short(short_name, 0, 0));
        assert_eq!(&*parse(&bad)[0].name, "_0000009");
    }
}
