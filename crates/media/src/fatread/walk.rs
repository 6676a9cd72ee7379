//! The whole volume read back for a refresh in place: its geometry (if our writer shaped
//! it), its FAT, and every directory and file with its clusters. Every chain is walked with
//! the same bounds as any read, and a directory reached twice (a loop through `..`-like
//! entries) is an error, so a damaged stick makes the refresh give up, never hang.

use std::collections::{BTreeMap, HashSet};
use std::io;

use super::{join, node_of, FatVolume, ReadAt};
use crate::fat32::refresh::{OnDisk, OnDiskFile};
use crate::fat32::{Geometry, Run};

/// Directories deeper than this are not ours.
const MAX_DEPTH: usize = 32;
/// Nor more entries than this (a fleet of 1,000 hosts has about 30,000): a stick that claims
/// more is read no further, whatever memory its directories would take.
const MAX_ENTRIES: usize = 1 << 22;

impl<S: ReadAt> FatVolume<S> {
    /// Reads back the volume for [`crate::fat32::refresh::plan`]; an `InvalidData` error if
    /// it is not shaped as our writer shapes volumes or does not read cleanly.
    pub fn on_disk(&self) -> io::Result<OnDisk> {
        let mut boot = vec![0u8; 1024];
        self.read_exact_at(&mut boot, 0)?;
        let geometry = Geometry::of_ours(&boot)
            .filter(|g| g.clusters == self.layout.clusters as u64 && g.bytes() <= self.len)
            .ok_or_else(|| self.bad("the volume is not shaped as mkinstaller writes them"))?;
        let mut raw = vec![0u8; (geometry.clusters as usize + 2) * 4];
        self.read_exact_at(&mut raw, self.layout.fat_offset)?;
        let fat = raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0FFF_FFFF)
            .collect();
        let mut entries = BTreeMap::new();
        let mut seen = HashSet::new();
        self.walk_dir(self.layout.root_cluster, "", 0, &mut seen, &mut entries)?;
        Ok(OnDisk {
            geometry,
            boot,
            fat,
            entries,
        })
    }

    fn walk_dir(
        &self,
        cluster: u32,
        prefix: &str,
        depth: usize,
        seen: &mut HashSet<u32>,
        out: &mut BTreeMap<String, Option<OnDiskFile>>,
    ) -> io::Result<()> {
        if depth > MAX_DEPTH || !seen.insert(cluster) {
            return Err(self.bad(format!(
                "{} is nested too deep or reached twice",
                super::describe_dir(prefix)
            )));
        }
        let d = self.dir(cluster, &|| super::describe_dir(prefix))?;
        if out.len() + d.entries.len() > MAX_ENTRIES {
            return Err(self.bad(format!(
                "more than {MAX_ENTRIES} files and directories: not a stick of ours"
            )));
        }
        for e in d.entries.iter().filter(|e| e.plain) {
            let path = join(prefix, &e.name);
            if e.is_dir {
                out.insert(path.clone(), None);
                self.walk_dir(e.cluster, &path, depth + 1, seen, out)?;
            } else {
                let runs = self
                    .file_chain(node_of(e), &path)?
                    .into_iter()
                    .map(|r| Run {
                        first: r.first,
                        count: r.count,
                    })
                    .collect();
                out.insert(
                    path,
                    Some(OnDiskFile {
                        size: e.size as u64,
                        runs,
                    }),
                );
            }
        }
        Ok(())
    }
}
