//! A write-once FAT32 builder: the whole tree is known up front, so every directory and file
//! gets contiguous clusters and the volume is written in one sequential pass, file contents
//! with `copy_file_range` straight from their source. This is what the payload path needs
//! (the fatfs crate allocates cluster by cluster and writes big files at a fraction of the
//! disk's speed, and its `..` entries upset fsck.fat); reading uses fatfs.
//!
//! The volume always has at least 65,525 clusters, because UEFI firmware decides between FAT16
//! and FAT32 by the cluster count alone.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

const SECTOR: u64 = 512;
const RESERVED_SECTORS: u64 = 32;
const FATS: u64 = 2;
/// FAT32 needs more clusters than this (Microsoft's FAT specification).
const MIN_CLUSTERS: u64 = 65_525 + 16;
const DIR_ENTRY: u64 = 32;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_LFN: u8 = 0x0F;
const END_OF_CHAIN: u32 = 0x0FFF_FFFF;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    Bytes(Vec<u8>),
    /// A file on the host, copied with copy_file_range. `size` must be its size.
    File {
        path: PathBuf,
        size: u64,
    },
}

impl Source {
    pub fn size(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::File { size, .. } => *size,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Dir {
    entries: BTreeMap<String, Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Dir(Dir),
    File(Source),
}

/// The tree to write: directories and files by `/`-separated path.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    root: Dir,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    fn dir_mut(&mut self, path: &str) -> &mut Dir {
        let mut dir = &mut self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let node = dir
                .entries
                .entry(part.to_string())
                .or_insert_with(|| Node::Dir(Dir::default()));
            dir = match node {
                Node::Dir(d) => d,
                Node::File(_) => panic!("{path}: {part} is a file"),
            };
        }
        dir
    }

    /// Adds an (empty) directory and its parents.
    pub fn add_dir(&mut self, path: &str) {
        self.dir_mut(path);
    }

    /// Adds a file, creating its parent directories.
    pub fn add_file(&mut self, path: &str, source: Source) {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        self.dir_mut(parent)
            .entries
            .insert(name.to_string(), Node::File(source));
    }

    /// Every file (with its source) and every empty directory (with `None`), by path, in
    /// name order.
    pub fn walk(&self) -> Vec<(String, Option<&Source>)> {
        fn go<'a>(d: &'a Dir, prefix: &str, out: &mut Vec<(String, Option<&'a Source>)>) {
            for (name, node) in &d.entries {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                match node {
                    Node::File(s) => out.push((path, Some(s))),
                    Node::Dir(sub) if sub.entries.is_empty() => out.push((path, None)),
                    Node::Dir(sub) => go(sub, &path, out),
                }
            }
        }
        let mut out = Vec::new();
        go(&self.root, "", &mut out);
        out
    }

    /// [`Tree::walk`], for a writer that turns paths into names on another file system
    /// (a directory, a cpio archive, an ISO): every component must be a plain name (not
    /// empty, `.` or `..`, no NUL), or the tree is refused. Our trees are made of store hashes,
    /// host names and the names of files in extra-files directories; this keeps a name that
    /// is none of those from reaching outside the output.
    pub fn plain_walk(&self) -> std::io::Result<Vec<(String, Option<&Source>)>> {
        let entries = self.walk();
        for (path, _) in &entries {
            if path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{path:?} is not a plain relative path; it cannot be written"),
                ));
            }
        }
        Ok(entries)
    }

    /// Total bytes of file contents.
    pub fn content_bytes(&self) -> u64 {
        fn walk(d: &Dir) -> u64 {
            d.entries
                .values()
                .map(|n| match n {
                    Node::Dir(d) => walk(d),
                    Node::File(s) => s.size(),
                })
                .sum()
        }
        walk(&self.root)
    }
}

/// Volume options.
#[derive(Debug, Clone)]
pub struct VolumeOptions {
    /// Up to 11 characters, upper-cased.
    pub label: String,
    pub volume_id: u32,
    /// The partition's first LBA ("hidden sectors"), for firmware that cares.
    pub hidden_sectors: u32,
    /// Timestamp of every entry, seconds since the Unix epoch (SOURCE_DATE_EPOCH).
    pub timestamp: u64,
}

/// The geometry of a planned volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub total_sectors: u64,
    pub sectors_per_cluster: u64,
    pub fat_sectors: u64,
    pub clusters: u64,
}

impl Geometry {
    pub fn bytes(&self) -> u64 {
        self.total_sectors * SECTOR
    }
    fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * SECTOR
    }
    fn data_start(&self) -> u64 {
        (RESERVED_SECTORS + FATS * self.fat_sectors) * SECTOR
    }
    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_start() + (cluster as u64 - 2) * self.cluster_bytes()
    }
}

/// The cluster size for a volume of about `bytes`: 4 KiB up to 8 GiB, then 16 KiB and 32 KiB
/// (as mkfs.fat), smaller only where 4 KiB would leave too few clusters for FAT32.
fn sectors_per_cluster(bytes: u64) -> u64 {
    let preferred = match bytes {
        b if b <= 8 << 30 => 8,
        b if b <= 32 << 30 => 32,
        _ => 64,
    };
    let mut spc = preferred;
    while spc > 1 && bytes / (spc * SECTOR) < MIN_CLUSTERS {
        spc /= 2;
    }
    spc
}

fn fat_sectors_for(clusters: u64) -> u64 {
    ((clusters + 2) * 4).div_ceil(SECTOR)
}

/// Geometry for a volume of exactly `total_bytes` (rounded down to sectors). The cluster count
/// is what every reader derives from the geometry, so the FAT is sized for an upper bound of
/// it and the count taken from what remains.
fn geometry_for_size(total_bytes: u64, spc: u64) -> Geometry {
    let total_sectors = total_bytes / SECTOR;
    let fat = fat_sectors_for(total_sectors.saturating_sub(RESERVED_SECTORS) / spc);
    let clusters = total_sectors.saturating_sub(RESERVED_SECTORS + FATS * fat) / spc;
    Geometry {
        total_sectors,
        sectors_per_cluster: spc,
        fat_sectors: fat,
        clusters,
    }
}

fn entries_for_name(name: &str) -> u64 {
    if short_name_as_is(name).is_some() {
        1
    } else {
        1 + (name.encode_utf16().count() as u64).div_ceil(13)
    }
}

fn dir_entry_count(dir: &Dir, is_root: bool) -> u64 {
    let own = if is_root { 1 } else { 2 }; // volume label, or . and ..
    own + dir.entries.keys().map(|n| entries_for_name(n)).sum::<u64>() + 1
}

fn clusters_needed(dir: &Dir, is_root: bool, cluster_bytes: u64) -> u64 {
    let mut n = (dir_entry_count(dir, is_root) * DIR_ENTRY).div_ceil(cluster_bytes);
    for node in dir.entries.values() {
        n += match node {
            Node::Dir(d) => clusters_needed(d, false, cluster_bytes),
            Node::File(s) => s.size().div_ceil(cluster_bytes),
        };
    }
    n
}

/// The smallest volume that holds `tree` with `free_bytes` to spare.
pub fn min_geometry(tree: &Tree, free_bytes: u64) -> Geometry {
    let estimate = tree.content_bytes() + free_bytes;
    let spc = sectors_per_cluster(estimate.max(34 << 20));
    let cluster_bytes = spc * SECTOR;
    let data = (clusters_needed(&tree.root, true, cluster_bytes)
        + free_bytes.div_ceil(cluster_bytes))
    .max(MIN_CLUSTERS);
    let fat = fat_sectors_for(data);
    Geometry {
        total_sectors: RESERVED_SECTORS + FATS * fat + data * spc,
        sectors_per_cluster: spc,
        fat_sectors: fat,
        clusters: data,
    }
}

/// Geometry for a volume of `bytes`, or `None` if `tree` does not fit in it.
pub fn geometry_for(tree: &Tree, bytes: u64) -> Option<Geometry> {
    let spc = sectors_per_cluster(bytes);
    let g = geometry_for_size(bytes, spc);
    let need = clusters_needed(&tree.root, true, g.cluster_bytes());
    (g.clusters >= MIN_CLUSTERS && g.clusters >= need).then_some(g)
}

// Names.

fn valid_short_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || "!#$%&'()-@^_`{}~".contains(c)
}

/// The 11-byte short name if `name` is already a valid upper-case 8.3 name.
fn short_name_as_is(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.split_once('.') {
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    if base.is_empty()
        || base.len() > 8
        || ext.len() > 3
        || ext.contains('.')
        || !base.chars().chain(ext.chars()).all(valid_short_char)
    {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base.as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(out)
}

/// A short name for a long one: `_` and seven hex digits, unique within its directory, with
/// the first three valid characters of the extension.
fn generated_short_name(name: &str, index: u32) -> [u8; 11] {
    let mut out = [b' '; 11];
    out[..8].copy_from_slice(format!("_{index:07X}").as_bytes());
    if let Some((_, ext)) = name.rsplit_once('.') {
        let ext: Vec<u8> = ext
            .chars()
            .map(|c| c.to_ascii_uppercase())
            .filter(|c| valid_short_char(*c))
            .take(3)
            .map(|c| c as u8)
            .collect();
        out[8..8 + ext.len()].copy_from_slice(&ext);
    }
    out
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| (sum >> 1 | (sum & 1) << 7).wrapping_add(b))
}

/// DOS date and time of a Unix timestamp (clamped to 1980..2107).
fn dos_datetime(unix: u64) -> (u16, u16) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = year.clamp(1980, 2107);
    let date = (((year - 1980) as u16) << 9) | ((month as u16) << 5) | day as u16;
    let time = (((secs / 3600) as u16) << 11)
        | ((((secs / 60) % 60) as u16) << 5)
        | ((secs % 60) / 2) as u16;
    (date, time)
}

struct EntryWriter<'a> {
    buf: &'a mut Vec<u8>,
    date: u16,
    time: u16,
}

impl EntryWriter<'_> {
    fn short(&mut self, name: &[u8; 11], attr: u8, cluster: u32, size: u32) {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = attr;
        e[14..16].copy_from_slice(&self.time.to_le_bytes());
        e[16..18].copy_from_slice(&self.date.to_le_bytes());
        e[18..20].copy_from_slice(&self.date.to_le_bytes());
        e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        e[22..24].copy_from_slice(&self.time.to_le_bytes());
        e[24..26].copy_from_slice(&self.date.to_le_bytes());
        e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
        self.buf.extend_from_slice(&e);
    }

    fn long(&mut self, name: &str, short: &[u8; 11]) {
        let mut units: Vec<u16> = name.encode_utf16().collect();
        let parts = units.len().div_ceil(13);
        if !units.len().is_multiple_of(13) {
            units.push(0);
        }
        units.resize(parts * 13, 0xFFFF);
        let sum = lfn_checksum(short);
        for i in (0..parts).rev() {
            let mut e = [0u8; 32];
            e[0] = (i as u8 + 1) | if i == parts - 1 { 0x40 } else { 0 };
            e[11] = ATTR_LFN;
            e[13] = sum;
            let chunk = &units[i * 13..i * 13 + 13];
            let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
            for (u, off) in chunk.iter().zip(offsets) {
                e[off..off + 2].copy_from_slice(&u.to_le_bytes());
            }
            self.buf.extend_from_slice(&e);
        }
    }
}

/// Writes `tree` as a FAT32 volume of geometry `g` at byte `offset` of `out`.
/// `progress` is told the number of content bytes copied as files are written.
pub fn write(
    out: &File,
    offset: u64,
    g: &Geometry,
    tree: &Tree,
    opts: &VolumeOptions,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let cb = g.cluster_bytes();
    let mut fat = vec![0u32; g.clusters as usize + 2];
    fat[0] = 0x0FFF_FFF8;
    fat[1] = END_OF_CHAIN;
    let mut next_cluster: u32 = 2;
    let mut alloc = |fat: &mut Vec<u32>, bytes: u64| -> io::Result<u32> {
        let n = bytes.div_ceil(cb).max(1) as u32;
        let first = next_cluster;
        if (first + n) as u64 > g.clusters + 2 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the FAT volume is too small for its files",
            ));
        }
        for c in first..first + n - 1 {
            fat[c as usize] = c + 1;
        }
        fat[(first + n - 1) as usize] = END_OF_CHAIN;
        next_cluster += n;
        Ok(first)
    };

    // Pass 1: clusters for every directory (breadth-first, root at cluster 2), then files.
    struct PlannedDir<'t> {
        dir: &'t Dir,
        cluster: u32,
        parent: u32,
        is_root: bool,
    }
    let mut dirs: Vec<PlannedDir> = Vec::new();
    let root_bytes = dir_entry_count(&tree.root, true) * DIR_ENTRY;
    let root_cluster = alloc(&mut fat, root_bytes)?;
    debug_assert_eq!(root_cluster, 2);
    dirs.push(PlannedDir {
        dir: &tree.root,
        cluster: 2,
        parent: 0,
        is_root: true,
    });
    let mut dir_clusters: BTreeMap<*const Dir, u32> = BTreeMap::new();
    dir_clusters.insert(&tree.root as *const Dir, 2);
    let mut i = 0;
    while i < dirs.len() {
        // A `..` that points at the root holds 0, not the root's cluster.
        let (dir, cluster) = (
            dirs[i].dir,
            if dirs[i].is_root { 0 } else { dirs[i].cluster },
        );
        for node in dir.entries.values() {
            if let Node::Dir(d) = node {
                let c = alloc(&mut fat, dir_entry_count(d, false) * DIR_ENTRY)?;
                dir_clusters.insert(d as *const Dir, c);
                dirs.push(PlannedDir {
                    dir: d,
                    cluster: c,
                    parent: cluster,
                    is_root: false,
                });
            }
        }
        i += 1;
    }
    let mut files: Vec<(u32, &Source)> = Vec::new();
    let mut file_clusters: BTreeMap<*const Source, u32> = BTreeMap::new();
    for pd in &dirs {
        for node in pd.dir.entries.values() {
            if let Node::File(s) = node {
                if s.size() > u32::MAX as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "a file of {} bytes does not fit FAT32's 4 GiB limit",
                            s.size()
                        ),
                    ));
                }
                let c = if s.size() == 0 {
                    0
                } else {
                    alloc(&mut fat, s.size())?
                };
                file_clusters.insert(s as *const Source, c);
                files.push((c, s));
            }
        }
    }
    let used = next_cluster as u64 - 2;

    // Pass 2: write the reserved area, the FATs and every directory.
    let mut boot = [0u8; 512];
    boot[..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    boot[3..11].copy_from_slice(b"MKINSTLR");
    boot[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    boot[13] = g.sectors_per_cluster as u8;
    boot[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    boot[16] = FATS as u8;
    boot[21] = 0xF8;
    boot[24..26].copy_from_slice(&63u16.to_le_bytes());
    boot[26..28].copy_from_slice(&255u16.to_le_bytes());
    boot[28..32].copy_from_slice(&opts.hidden_sectors.to_le_bytes());
    boot[32..36].copy_from_slice(&(g.total_sectors as u32).to_le_bytes());
    boot[36..40].copy_from_slice(&(g.fat_sectors as u32).to_le_bytes());
    boot[44..48].copy_from_slice(&2u32.to_le_bytes());
    boot[48..50].copy_from_slice(&1u16.to_le_bytes());
    boot[50..52].copy_from_slice(&6u16.to_le_bytes());
    boot[64] = 0x80;
    boot[66] = 0x29;
    boot[67..71].copy_from_slice(&opts.volume_id.to_le_bytes());
    let label = volume_label(&opts.label);
    boot[71..82].copy_from_slice(&label);
    boot[82..90].copy_from_slice(b"FAT32   ");
    boot[510] = 0x55;
    boot[511] = 0xAA;
    let mut fsinfo = [0u8; 512];
    fsinfo[..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    fsinfo[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    fsinfo[488..492].copy_from_slice(&((g.clusters - used) as u32).to_le_bytes());
    fsinfo[492..496].copy_from_slice(&next_cluster.to_le_bytes());
    fsinfo[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    let mut reserved = vec![0u8; (RESERVED_SECTORS * SECTOR) as usize];
    for base in [0, 6 * SECTOR as usize] {
        reserved[base..base + 512].copy_from_slice(&boot);
        reserved[base + 512..base + 1024].copy_from_slice(&fsinfo);
    }
    out.write_all_at(&reserved, offset)?;
    let fat_bytes: Vec<u8> = {
        let mut v: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
        v.resize((g.fat_sectors * SECTOR) as usize, 0);
        v
    };
    for n in 0..FATS {
        out.write_all_at(
            &fat_bytes,
            offset + (RESERVED_SECTORS + n * g.fat_sectors) * SECTOR,
        )?;
    }

    let (date, time) = dos_datetime(opts.timestamp);
    for pd in &dirs {
        let mut buf = Vec::new();
        let mut w = EntryWriter {
            buf: &mut buf,
            date,
            time,
        };
        if pd.is_root {
            w.short(&label, ATTR_VOLUME_ID, 0, 0);
        } else {
            w.short(b".          ", ATTR_DIRECTORY, pd.cluster, 0);
            w.short(b"..         ", ATTR_DIRECTORY, pd.parent, 0);
        }
        for (index, (name, node)) in pd.dir.entries.iter().enumerate() {
            let short = match short_name_as_is(name) {
                Some(s) => s,
                None => {
                    let s = generated_short_name(name, index as u32);
                    w.long(name, &s);
                    s
                }
            };
            match node {
                Node::Dir(d) => {
                    w.short(&short, ATTR_DIRECTORY, dir_clusters[&(d as *const Dir)], 0)
                }
                Node::File(s) => w.short(
                    &short,
                    0,
                    file_clusters[&(s as *const Source)],
                    s.size() as u32,
                ),
            }
        }
        // Zero the rest of the directory's clusters: a zero entry ends the listing.
        let len = (dir_entry_count(pd.dir, pd.is_root) * DIR_ENTRY)
            .div_ceil(cb)
            .max(1)
            * cb;
        buf.resize(len as usize, 0);
        out.write_all_at(&buf, offset + g.cluster_offset(pd.cluster))?;
    }

    // Pass 3: file contents, in cluster order so the writes are sequential.
    files.sort_by_key(|(c, _)| *c);
    for (cluster, source) in files {
        if source.size() == 0 {
            continue;
        }
        let at = offset + g.cluster_offset(cluster);
        match source {
            Source::Bytes(b) => {
                out.write_all_at(b, at)?;
                progress(b.len() as u64);
            }
            Source::File { path, size } => {
                let src = File::open(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                })?;
                copy_range(&src, out, at, *size, progress).map_err(|e| {
                    io::Error::new(e.kind(), format!("copying {}: {e}", path.display()))
                })?;
            }
        }
    }
    Ok(())
}

fn volume_label(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    for (o, c) in out
        .iter_mut()
        .zip(label.chars().filter(|c| c.is_ascii_graphic() || *c == ' '))
    {
        *o = c.to_ascii_uppercase() as u8;
    }
    out
}

/// Copies `len` bytes of `src` to `dst` at `at`: in the kernel when it can
/// (copy_file_range), by reads and writes when it cannot (a block device, another file system).
pub fn copy_range(
    src: &File,
    dst: &File,
    at: u64,
    len: u64,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = done as i64;
        let mut off_out = (at + done) as i64;
        let chunk = (len - done).min(64 << 20) as usize;
        match nix::fcntl::copy_file_range(
            src.as_fd(),
            Some(&mut off_in),
            dst.as_fd(),
            Some(&mut off_out),
            chunk,
        ) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the source is shorter than expected",
                ))
            }
            Ok(n) => {
                done += n as u64;
                progress(n as u64);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::EINVAL
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EOPNOTSUPP,
            ) => {
                let mut buf = vec![0u8; 4 << 20];
                while done < len {
                    let n = ((len - done) as usize).min(buf.len());
                    src.read_exact_at(&mut buf[..n], done)?;
                    dst.write_all_at(&buf[..n], at + done)?;
                    done += n as u64;
                    progress(n as u64);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_name_as_is("BOOTX64.EFI"), Some(*b"BOOTX64 EFI"));
        assert_eq!(short_name_as_is("EFI"), Some(*b"EFI        "));
        assert_eq!(short_name_as_is("loader"), None);
        assert_eq!(short_name_as_is("A.B.C"), None);
        assert_eq!(&generated_short_name("x.narinfo", 5), b"_0000005NAR");
        assert_eq!(entries_for_name("nix-cache-info"), 3);
    }

    #[test]
    fn dates() {
        // 2024-02-29 13:37:42 UTC
        let (d, t) = dos_datetime(1_709_213_862);
        assert_eq!((d >> 9) + 1980, 2024);
        assert_eq!((d >> 5) & 0xF, 2);
        assert_eq!(d & 0x1F, 29);
        assert_eq!((t >> 11, (t >> 5) & 0x3F, (t & 0x1F) * 2), (13, 37, 42));
    }

    #[test]
    fn geometry_always_fat32() {
        let tree = Tree::new();
        let g = min_geometry(&tree, 0);
        assert!(g.clusters >= MIN_CLUSTERS);
        assert!(fat_sectors_for(g.clusters) <= g.fat_sectors);
        for size in [40u64 << 20, 300 << 20, 9 << 30, 40 << 30] {
            let g = geometry_for(&tree, size).unwrap();
            assert!(g.clusters >= MIN_CLUSTERS, "{size}: {g:?}");
            assert!(
                RESERVED_SECTORS + FATS * g.fat_sectors + g.clusters * g.sectors_per_cluster
                    <= g.total_sectors
            );
            assert!(fat_sectors_for(g.clusters) <= g.fat_sectors);
        }
        assert!(geometry_for(&tree, 20 << 20).is_none());
    }
}
