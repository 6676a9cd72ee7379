//! Free clusters and how they are handed out. A fresh volume is one free run, so first-fit
//! gives every directory and file contiguous clusters in the order they are asked for (the
//! sequential layout the writer is built around). A volume refreshed in place is free only
//! in the gaps between what stays on it, so a file takes the first gap that holds it whole,
//! and only when none does is it split over the first gaps in order (FAT chains allow that).

use super::END_OF_CHAIN;

/// Contiguous clusters `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: u32,
    pub count: u32,
}

/// The clusters still free, as runs in cluster order.
#[derive(Debug, Clone)]
pub(super) struct FreeSpace {
    runs: Vec<Run>,
    /// Runs before this index are used up.
    start: usize,
}

impl FreeSpace {
    /// All `clusters` clusters of a fresh volume (numbered from 2).
    pub fn whole(clusters: u64) -> Self {
        FreeSpace {
            runs: vec![Run {
                first: 2,
                count: clusters as u32,
            }],
            start: 0,
        }
    }

    /// The clusters whose entry in `fat` (indexed by cluster, entries 0 and 1 reserved) is 0.
    pub fn from_fat(fat: &[u32]) -> Self {
        let mut runs: Vec<Run> = Vec::new();
        for (c, &e) in fat.iter().enumerate().skip(2) {
            if e & 0x0FFF_FFFF != 0 {
                continue;
            }
            match runs.last_mut() {
                Some(r) if (r.first + r.count) as usize == c => r.count += 1,
                _ => runs.push(Run {
                    first: c as u32,
                    count: 1,
                }),
            }
        }
        FreeSpace { runs, start: 0 }
    }

    /// Free clusters left.
    pub fn free(&self) -> u64 {
        self.runs[self.start..].iter().map(|r| r.count as u64).sum()
    }

    /// The first free cluster (FSInfo's hint), or 0xFFFFFFFF ("unknown") when none is.
    pub fn next(&self) -> u32 {
        self.runs.get(self.start).map_or(u32::MAX, |r| r.first)
    }

    /// Takes `n` (> 0) clusters, or `None` if fewer are free (and then takes none).
    pub fn take(&mut self, n: u32) -> Option<Vec<Run>> {
        debug_assert!(n > 0);
        if let Some(i) = (self.start..self.runs.len()).find(|&i| self.runs[i].count >= n) {
            let r = &mut self.runs[i];
            let got = Run {
                first: r.first,
                count: n,
            };
            r.first += n;
            r.count -= n;
            self.skip_empty();
            return Some(vec![got]);
        }
        if self.free() < n as u64 {
            return None;
        }
        let mut need = n;
        let mut got = Vec::new();
        while need > 0 {
            let r = &mut self.runs[self.start];
            let k = r.count.min(need);
            if k > 0 {
                got.push(Run {
                    first: r.first,
                    count: k,
                });
                r.first += k;
                r.count -= k;
                need -= k;
            }
            self.skip_empty();
        }
        Some(got)
    }

    fn skip_empty(&mut self) {
        while self.start < self.runs.len() && self.runs[self.start].count == 0 {
            self.start += 1;
        }
    }
}

/// Writes the chain through `runs` into `fat`, ending it.
pub(super) fn link(fat: &mut [u32], runs: &[Run]) {
    let clusters: Vec<u32> = runs
        .iter()
        .flat_map(|r| r.first..r.first + r.count)
        .collect();
    for w in clusters.windows(2) {
        fat[w[0] as usize] = w[1];
    }
    if let Some(&last) = clusters.last() {
        fat[last as usize] = END_OF_CHAIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_volume_hands_out_in_order() {
        let mut s = FreeSpace::whole(10);
        assert_eq!(s.take(3).unwrap(), vec![Run { first: 2, count: 3 }]);
        assert_eq!(s.take(7).unwrap(), vec![Run { first: 5, count: 7 }]);
        assert_eq!(s.take(1), None);
    }

    #[test]
    fn gaps_first_fit_then_split() {
        // Clusters 2..12; used: 3, 6, 7, 10.
        let mut fat = vec![0u32; 12];
        fat[0] = 0x0FFF_FFF8;
        fat[1] = END_OF_CHAIN;
        for c in [3, 6, 7, 10] {
            fat[c] = END_OF_CHAIN;
        }
        let mut s = FreeSpace::from_fat(&fat);
        assert_eq!(s.free(), 6); // 2, 4, 5, 8, 9, 11
        assert_eq!(s.take(2).unwrap(), vec![Run { first: 4, count: 2 }]);
        assert_eq!(
            s.take(3).unwrap(),
            vec![Run { first: 2, count: 1 }, Run { first: 8, count: 2 }]
        );
        assert_eq!(s.take(2), None);
        assert_eq!(s.free(), 1);
        let mut fat = vec![0u32; 12];
        link(
            &mut fat,
            &[Run { first: 2, count: 1 }, Run { first: 8, count: 2 }],
        );
        assert_eq!((fat[2], fat[8], fat[9]), (8, 9, END_OF_CHAIN));
    }
}
