//! Cluster chains: FAT entries read through a small cache of FAT windows, and chains walked
//! into runs of contiguous clusters. Every walk is bounded, so a hostile FAT costs at most one
//! pass over as many entries as the volume has clusters.

use std::io;

use super::{FatVolume, ReadAt};

/// Bytes of FAT per cached window: 16,384 entries, 64 MiB of file at 4 KiB clusters.
const WINDOW: u64 = 64 * 1024;
/// Windows kept; a chain walk touches them in order, so few are ever needed at once.
const WINDOWS: usize = 32;

/// FAT entry values (the top four bits are reserved and ignored).
const ENTRY_MASK: u32 = 0x0FFF_FFFF;
const BAD_CLUSTER: u32 = 0x0FFF_FFF7;
const END_OF_CHAIN_MIN: u32 = 0x0FFF_FFF8;

/// Contiguous clusters `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub first: u32,
    pub count: u32,
}

impl Run {
    fn contains(&self, cluster: u32) -> bool {
        cluster >= self.first && cluster - self.first < self.count
    }
}

/// How long a chain may be.
#[derive(Debug, Clone, Copy)]
pub(super) enum Length {
    /// Exactly this many clusters: a file's, from its size.
    Exact(u64),
    /// At most this many: a directory's, which has no size.
    AtMost(u64),
}

#[derive(Default)]
pub(super) struct FatCache {
    windows: Vec<FatWindow>,
    /// The window the last lookup used: a chain walk mostly stays in one.
    last: usize,
    clock: u64,
}

struct FatWindow {
    /// Window number: the window holds FAT bytes `index * WINDOW ..`.
    index: u64,
    bytes: Vec<u8>,
    used: u64,
}

impl<S: ReadAt> FatVolume<S> {
    /// The FAT entry of `cluster` (in range), masked to 28 bits.
    fn fat_entry(&self, cache: &mut FatCache, cluster: u32) -> io::Result<u32> {
        let at = cluster as u64 * 4;
        let index = at / WINDOW;
        let slot = match cache.windows.get(cache.last) {
            Some(w) if w.index == index => cache.last,
            _ => self.fat_window(cache, index)?,
        };
        cache.last = slot;
        let w = &cache.windows[slot];
        let off = (at - index * WINDOW) as usize;
        // The layout guarantees the FAT has an entry for every cluster, so this is in bounds.
        let b = &w.bytes[off..off + 4];
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & ENTRY_MASK)
    }

    /// The slot of window `index`, read in place of the least recently used one if missing.
    fn fat_window(&self, cache: &mut FatCache, index: u64) -> io::Result<usize> {
        cache.clock += 1;
        if let Some(i) = cache.windows.iter().position(|w| w.index == index) {
            cache.windows[i].used = cache.clock;
            return Ok(i);
        }
        let slot = if cache.windows.len() < WINDOWS {
            cache.windows.push(FatWindow {
                index,
                bytes: Vec::new(),
                used: 0,
            });
            cache.windows.len() - 1
        } else {
            (0..cache.windows.len())
                .min_by_key(|&i| cache.windows[i].used)
                .expect("the cache is full")
        };
        let start = index * WINDOW;
        let len = WINDOW.min(self.layout.fat_bytes - start) as usize;
        let w = &mut cache.windows[slot];
        w.index = u64::MAX; // Not valid until the read succeeds.
        w.bytes.resize(len, 0);
        self.read_exact_at(&mut w.bytes, self.layout.fat_offset + start)?;
        w.index = index;
        w.used = cache.clock;
        Ok(slot)
    }

    /// Walks the chain starting at `first` into runs. `whose` names the chain's owner for
    /// messages ("the file nar/x.nar.zst"). The walk stops after `length`'s bound (never more
    /// than the volume's cluster count), so a loop is an error, not a hang; so is a cluster out
    /// of range, a free or bad cluster inside the chain, and a chain of the wrong length.
    pub(super) fn chain(
        &self,
        first: u32,
        length: Length,
        whose: &dyn Fn() -> String,
    ) -> io::Result<Vec<Run>> {
        let l = &self.layout;
        let limit = match length {
            Length::Exact(n) | Length::AtMost(n) => n.min(l.clusters as u64),
        };
        if let Length::Exact(n) = length {
            if n > l.clusters as u64 {
                return Err(self.bad(format!(
                    "{} needs {n} clusters, more than the volume's {}",
                    whose(),
                    l.clusters
                )));
            }
        }
        if limit == 0 {
            return Err(self.bad(format!(
                "{} starts at cluster {first}, but its size needs no clusters",
                whose()
            )));
        }
        if !l.in_range(first) {
            return Err(self.bad(format!(
                "{} starts at cluster {first}, outside the volume's clusters 2 to {}",
                whose(),
                l.max_cluster()
            )));
        }
        let mut cache = self.fat.lock().unwrap_or_else(|p| p.into_inner());
        let mut runs: Vec<Run> = Vec::new();
        let mut walked = 0u64;
        let mut cluster = first;
        loop {
            match runs.last_mut() {
                Some(r) if r.first as u64 + r.count as u64 == cluster as u64 => r.count += 1,
                _ => runs.push(Run {
                    first: cluster,
                    count: 1,
                }),
            }
            walked += 1;
            let next = self.fat_entry(&mut cache, cluster)?;
            if next >= END_OF_CHAIN_MIN {
                break;
            }
            let problem = match next {
                0 => format!("reaches a free cluster after cluster {cluster}"),
                BAD_CLUSTER => format!("reaches a bad-cluster mark after cluster {cluster}"),
                n if !l.in_range(n) => format!(
                    "points from cluster {cluster} to cluster {n}, outside the volume's \
                     clusters 2 to {}",
                    l.max_cluster()
                ),
                n if walked >= limit => {
                    if runs.iter().any(|r| r.contains(n)) {
                        format!("loops from cluster {cluster} back to cluster {n}")
                    } else if let Length::Exact(_) = length {
                        format!("has more than the {walked} clusters its size needs")
                    } else {
                        format!("is longer than {walked} clusters, the most a directory may take")
                    }
                }
                n => {
                    cluster = n;
                    continue;
                }
            };
            return Err(self.bad(format!("the cluster chain of {} {problem}", whose())));
        }
        if let Length::Exact(n) = length {
            if walked < n {
                return Err(self.bad(format!(
                    "the cluster chain of {} ends after {walked} clusters, but its size needs {n}",
                    whose()
                )));
            }
        }
        Ok(runs)
    }
}

/// Finds two chains sharing a cluster: `chains` holds each chain's runs with its owner's
/// index. Returns the two owners and a shared cluster.
pub(super) fn find_cross_link(chains: &[(usize, Run)]) -> Option<(usize, usize, u32)> {
    let mut sorted: Vec<&(usize, Run)> = chains.iter().collect();
    sorted.sort_by_key(|(_, r)| r.first);
    // After sorting by start, a run overlaps an earlier one exactly when it starts before the
    // furthest end seen so far.
    let mut furthest: Option<(u64, usize)> = None;
    for (owner, run) in sorted {
        let end = run.first as u64 + run.count as u64;
        if let Some((f_end, f_owner)) = furthest {
            if (run.first as u64) < f_end {
                return Some((f_owner, *owner, run.first));
            }
            if end > f_end {
                furthest = Some((end, *owner));
            }
        } else {
            furthest = Some((end, *owner));
        }
    }
    None
}
