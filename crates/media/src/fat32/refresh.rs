//! Refreshing a FAT32 volume of ours in place: the files that are already there with the same
//! bytes stay where they are, the new ones go into clusters the old volume does not use, every
//! directory is written afresh beside the old ones, and one sector switches from the old tree
//! to the new: the boot sector's root cluster. So a write cut off at any point leaves a volume
//! that reads as the old tree or as the new one:
//!
//! 1. new files and directories, into clusters free on the old volume (nothing the old tree
//!    uses is touched), and the FAT gains the new chains beside the old ones (only entries
//!    that were free change, so the old tree reads the same); then a flush;
//! 2. the boot sector names the new root directory (one sector: the commit), then a flush;
//! 3. FSInfo and the backup boot sector, and the FAT loses the chains only the old tree used
//!    (nothing the new tree uses changes); the clusters of old files the caller says must not
//!    linger (secrets that travelled in the clear) are overwritten with zeros; then a flush.
//!
//! Writes within a step may reach the medium in any order; the flushes order the steps.
//!
//! Only FAT sectors that change are written, to both FATs, so what a refresh writes is the new
//! files, the directories and a few FAT sectors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::alloc::{FreeSpace, Run};
use super::write::{
    allocate, fat_offset, set_free, set_root, write_dirs, write_files, Allocation, BACKUP_BOOT,
};
use super::{Geometry, Source, Tree, FATS, SECTOR};

/// A FAT32 volume as it is on the medium.
#[derive(Debug, Clone)]
pub struct OnDisk {
    pub geometry: Geometry,
    /// Sectors 0 and 1: the boot sector and FSInfo, kept as they are but for the root
    /// cluster and the free counts.
    pub boot: Vec<u8>,
    /// The FAT, one entry per cluster, entries 0 and 1 included.
    pub fat: Vec<u32>,
    /// Every directory (`None`) and file (its size and clusters) by path.
    pub entries: BTreeMap<String, Option<OnDiskFile>>,
}

/// A file on the medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDiskFile {
    pub size: u64,
    pub runs: Vec<Run>,
}

/// A refresh worked out: what stays, what goes where.
pub struct Plan<'t> {
    g: Geometry,
    /// The volume as it is (read back by the caller, and borrowed, not copied: its FAT is
    /// megabytes on a large stick).
    old: &'t OnDisk,
    alloc: Allocation<'t>,
    timestamp: u64,
    /// Files kept where they are, and their bytes.
    pub kept: (usize, u64),
    /// Files to write, and their bytes.
    pub new: (usize, u64),
    /// Nothing differs from what is on the medium.
    pub unchanged: bool,
    /// Clusters of old files that are not kept and must not linger once freed.
    scrub: Vec<Run>,
}

/// Works out how `tree` replaces `old`. `same` says whether a file of the tree already on the
/// medium with the same size holds the same bytes (it may read them); `scrub` whether an old
/// file's bytes must be overwritten once it is freed. An `io::ErrorKind::StorageFull` error
/// means the new files do not fit beside the old ones: nothing can be refreshed, and the
/// volume must be written whole.
pub fn plan<'t>(
    old: &'t OnDisk,
    tree: &'t Tree,
    timestamp: u64,
    same: &mut dyn FnMut(&str, &Source) -> io::Result<bool>,
    scrub: &dyn Fn(&str) -> bool,
) -> io::Result<Plan<'t>> {
    let g = old.geometry;
    if old.fat.len() != g.clusters as usize + 2 || old.boot.len() != 2 * SECTOR as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the volume read back does not match its geometry",
        ));
    }
    let mut keep: HashMap<String, Vec<Run>> = HashMap::new();
    let (mut kept, mut new) = ((0, 0), (0, 0));
    let walked = tree.walk();
    for (path, source) in &walked {
        let Some(source) = source else { continue };
        let on_disk = match old.entries.get(path) {
            Some(Some(f)) if f.size == source.size() && source.size() > 0 => Some(f),
            _ => None,
        };
        match on_disk {
            Some(f) if same(path, source)? => {
                keep.insert(path.clone(), f.runs.clone());
                kept = (kept.0 + 1, kept.1 + source.size());
            }
            _ => new = (new.0 + 1, new.1 + source.size()),
        }
    }
    let mut space = FreeSpace::from_fat(&old.fat);
    let free = space.free() * g.cluster_bytes();
    let alloc =
        allocate(&g, tree, &mut space, &|path, _| keep.get(path).cloned()).map_err(|e| match e
            .kind()
        {
            io::ErrorKind::StorageFull => io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "{} MiB of new files and directories do not fit in the {} MiB the old \
                     ones leave free",
                    (new.1 + tree_dirs_bytes(tree, &g)).div_ceil(1 << 20),
                    free >> 20
                ),
            ),
            _ => e,
        })?;
    let paths: BTreeSet<&str> = all_paths(&walked);
    let unchanged = new.0 == 0
        && old.entries.len() == paths.len()
        && old.entries.keys().all(|p| paths.contains(p.as_str()));
    let scrub = old
        .entries
        .iter()
        .filter(|(path, f)| f.is_some() && scrub(path) && !keep.contains_key(path.as_str()))
        .flat_map(|(_, f)| f.as_ref().expect("a file").runs.iter().copied())
        .collect();
    Ok(Plan {
        scrub,
        g,
        old,
        alloc,
        timestamp,
        kept,
        new,
        unchanged,
    })
}

/// Every file and directory of the walk, the directories that hold something included.
fn all_paths<'a>(walked: &'a [(String, Option<&Source>)]) -> BTreeSet<&'a str> {
    let mut paths = BTreeSet::new();
    for (path, _) in walked {
        let mut p = path.as_str();
        paths.insert(p);
        while let Some((parent, _)) = p.rsplit_once('/') {
            paths.insert(parent);
            p = parent;
        }
    }
    paths
}

/// About what the tree's directories take (for a message).
fn tree_dirs_bytes(tree: &Tree, g: &Geometry) -> u64 {
    let files: u64 = tree
        .walk()
        .iter()
        .filter_map(|(_, s)| s.map(|s| s.size().div_ceil(g.cluster_bytes())))
        .sum();
    super::clusters_needed(&tree.root, true, g.cluster_bytes()).saturating_sub(files)
        * g.cluster_bytes()
}

impl Plan<'_> {
    /// Carries the refresh out on the volume at byte `offset` of `out`. Returns the bytes
    /// written.
    pub fn write(&self, out: &File, offset: u64, progress: &mut dyn FnMut(u64)) -> io::Result<u64> {
        if self.unchanged {
            return Ok(0);
        }
        let g = &self.g;
        let mut written = 0u64;
        // 1. New files and every directory, where the old tree has nothing.
        write_files(out, offset, g, &self.alloc.files, &mut |n| {
            written += n;
            progress(n)
        })?;
        let label: [u8; 11] = self.old.boot[71..82].try_into().expect("11 bytes");
        write_dirs(out, offset, g, &self.alloc, &label, self.timestamp)?;
        written += self.alloc.dirs_clusters().saturating_mul(g.cluster_bytes());
        // ... and the new chains beside the old.
        let union: Vec<u32> = self
            .old
            .fat
            .iter()
            .zip(&self.alloc.fat)
            .enumerate()
            .map(|(c, (&old, &new))| if c < 2 || old != 0 { old } else { new })
            .collect();
        written += write_changed(out, offset, g, &self.old.fat, &union)?;
        out.sync_data()?;
        // 2. The commit: the boot sector names the new root.
        let mut boot = self.old.boot.clone();
        set_root(&mut boot[..SECTOR as usize], self.alloc.root);
        out.write_all_at(&boot[..SECTOR as usize], offset)?;
        out.sync_data()?;
        // 3. FSInfo, the backup boot sector, and the old tree's chains freed.
        let new_free = self.alloc.fat[2..].iter().filter(|&&e| e == 0).count() as u64;
        let next = self.alloc.fat[2..]
            .iter()
            .position(|&e| e == 0)
            .map_or(u32::MAX, |i| i as u32 + 2);
        set_free(&mut boot[SECTOR as usize..], new_free, next);
        out.write_all_at(&boot[SECTOR as usize..], offset + SECTOR)?;
        out.write_all_at(&boot, offset + BACKUP_BOOT as u64)?;
        written += 3 * SECTOR;
        written += write_changed(out, offset, g, &union, &self.alloc.fat)?;
        // Freed now, and nothing of the new tree is there (new files went where the old
        // tree had nothing).
        let zeros = vec![0u8; g.cluster_bytes() as usize];
        for run in &self.scrub {
            for c in run.first..run.first + run.count {
                out.write_all_at(&zeros, offset + g.cluster_offset(c))?;
                written += zeros.len() as u64;
            }
        }
        out.sync_data()?;
        Ok(written)
    }
}

/// Writes the FAT sectors where `to` differs from `from`, in both FATs, runs of changed
/// sectors in one write each. Returns the bytes written.
fn write_changed(
    out: &File,
    offset: u64,
    g: &Geometry,
    from: &[u32],
    to: &[u32],
) -> io::Result<u64> {
    let per = (SECTOR / 4) as usize;
    let sectors = to.len().div_ceil(per);
    let changed = |s: usize| {
        let r = s * per..((s + 1) * per).min(to.len());
        from[r.clone()] != to[r]
    };
    let mut written = 0;
    let mut s = 0;
    while s < sectors {
        if !changed(s) {
            s += 1;
            continue;
        }
        let first = s;
        while s < sectors && changed(s) {
            s += 1;
        }
        let mut bytes: Vec<u8> = to[first * per..(s * per).min(to.len())]
            .iter()
            .flat_map(|e| e.to_le_bytes())
            .collect();
        bytes.resize((s - first) * SECTOR as usize, 0);
        for n in 0..FATS {
            out.write_all_at(&bytes, offset + fat_offset(g, n) + first as u64 * SECTOR)?;
            written += bytes.len() as u64;
        }
    }
    Ok(written)
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
