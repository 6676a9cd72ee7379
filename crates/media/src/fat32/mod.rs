//! A write-once FAT32 builder: the whole tree is known up front, so every directory and file
//! gets contiguous clusters and the volume is written in one sequential pass, file contents
//! with `copy_file_range` straight from their source. This is what the payload path needs
//! (the fatfs crate allocates cluster by cluster and writes big files at a fraction of the
//! disk's speed, and its `..` entries upset fsck.fat); reading uses fatfs.
//!
//! The volume always has at least 65,525 clusters, because UEFI firmware decides between FAT16
//! and FAT32 by the cluster count alone.

mod alloc;
mod names;
pub mod refresh;
mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use alloc::Run;
use names::short_name_as_is;
pub use names::volume_label;
pub use write::{copy_range, write};

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
/// The largest file FAT32 holds: its directory entry's size is 32 bits.
pub const MAX_FILE: u64 = u32::MAX as u64;

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

    /// The first file (in name order) that FAT32 cannot hold: 4 GiB or more. Checked before
    /// a stick is opened, so that such a fleet is refused with nothing written.
    pub fn file_over_fat_limit(&self) -> Option<(String, u64)> {
        self.walk()
            .into_iter()
            .find_map(|(path, s)| s.filter(|s| s.size() > MAX_FILE).map(|s| (path, s.size())))
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
    /// The geometry of a volume shaped as this writer shapes them (512-byte sectors, 32
    /// reserved, two FATs sized by [`geometry_for_size`]), from its boot sector; `None` for
    /// any other shape, which a refresh in place must not assume it understands.
    pub fn of_ours(boot: &[u8]) -> Option<Geometry> {
        let u16_at = |at: usize| u16::from_le_bytes([boot[at], boot[at + 1]]) as u64;
        let u32_at = |at: usize| u32::from_le_bytes(boot[at..at + 4].try_into().unwrap()) as u64;
        if boot.len() < 512 || u16_at(11) != SECTOR || u16_at(14) != RESERVED_SECTORS {
            return None;
        }
        let spc = boot[13] as u64;
        if boot[16] as u64 != FATS || !spc.is_power_of_two() || u16_at(40) & 0x80 != 0 {
            return None; // also refused: FAT mirroring turned off
        }
        let g = geometry_for_size(u32_at(32) * SECTOR, spc);
        (g.fat_sectors == u32_at(36) && g.clusters >= MIN_CLUSTERS).then_some(g)
    }

    pub(crate) fn cluster_bytes(&self) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::names::{dos_datetime, generated_short_name};
    use super::*;

    #[test]
    fn fat_labels_are_upper_case_and_cut_to_eleven_bytes() {
        assert_eq!(&volume_label("ESP"), b"ESP        ");
        assert_eq!(&volume_label("boot partition 1"), b"BOOTPARTITI");
        assert_eq!(&volume_label("aipayload"), b"AIPAYLOAD  ");
    }

    #[test]
    fn a_file_of_4_gib_is_found_before_anything_is_written() {
        let file = |size| Source::File {
            path: "/nonexistent".into(),
            size,
        };
        let mut t = Tree::new();
        t.add_file("nar/a.nar.zst", file(MAX_FILE));
        t.add_file("a.narinfo", Source::Bytes(b"x".to_vec()));
        assert_eq!(t.file_over_fat_limit(), None, "4 GiB less one byte fits");
        t.add_file("nar/b.nar.zst", file(MAX_FILE + 1));
        t.add_file("nar/c.nar.zst", file(5 << 30));
        assert_eq!(
            t.file_over_fat_limit(),
            Some(("nar/b.nar.zst".to_string(), MAX_FILE + 1))
        );
    }

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
