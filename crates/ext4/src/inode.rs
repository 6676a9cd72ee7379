//! Inodes and their extent trees, encoded. Pure: no I/O.

use crate::crc32c::crc32c;
use crate::layout::{put16, put32, BLOCK, INODE_SIZE};

pub const S_IFREG: u16 = 0o100000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFLNK: u16 = 0o120000;
const EXTENTS_FL: u32 = 0x80000;
const EXTENT_MAGIC: u16 = 0xF30A;
/// The longest run one extent can describe.
pub const MAX_EXTENT: u64 = 32768;
/// Extents that fit in the inode itself, and in one leaf block.
const IN_INODE: usize = 4;
pub const PER_LEAF: usize = ((BLOCK - 12) / 12) as usize;
/// Leaf blocks one inode can point to (a tree of depth one): 1360 extents, 170 GiB.
pub const MAX_LEAVES: usize = IN_INODE;

/// A run of blocks: `len` blocks from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub len: u64,
}

/// Where an inode's contents are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Blocks, in file order. A file of more runs than fit in the inode needs `leaves`.
    Blocks(Vec<Run>),
    /// A symlink target of under 60 bytes, kept in the inode.
    InlineLink(Vec<u8>),
}

/// What an inode says.
#[derive(Debug, Clone)]
pub struct Inode {
    pub mode: u16,
    pub size: u64,
    pub links: u16,
    pub mtime: u32,
    pub ctime: u32,
    pub data: Data,
}

/// Splits runs longer than an extent can hold.
pub fn extents(runs: &[Run]) -> Vec<Run> {
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let mut at = 0;
        while at < r.len {
            let len = (r.len - at).min(MAX_EXTENT);
            out.push(Run {
                start: r.start + at,
                len,
            });
            at += len;
        }
    }
    out
}

/// How many leaf blocks a file of these runs needs (0 when they fit in the inode).
pub fn leaves_needed(runs: &[Run]) -> usize {
    let n = extents(runs).len();
    if n <= IN_INODE {
        0
    } else {
        n.div_ceil(PER_LEAF)
    }
}

fn header(b: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(b, 0, EXTENT_MAGIC);
    put16(b, 2, entries as u16);
    put16(b, 4, max as u16);
    put16(b, 6, depth);
}

fn extent(b: &mut [u8], logical: u64, r: Run) {
    put32(b, 0, logical as u32);
    put16(b, 4, r.len as u16);
    put16(b, 6, (r.start >> 32) as u16);
    put32(b, 8, r.start as u32);
}

/// The 60 bytes of `i_block` for `runs`, and the contents of the leaf blocks (to be written
/// at `leaf_blocks`, as many as [`leaves_needed`] said).
pub fn extent_tree(runs: &[Run], leaf_blocks: &[u64]) -> ([u8; 60], Vec<Vec<u8>>) {
    let ext = extents(runs);
    let mut iblock = [0u8; 60];
    let mut logical = 0u64;
    let mut starts = Vec::with_capacity(ext.len());
    for r in &ext {
        starts.push(logical);
        logical += r.len;
    }
    if ext.len() <= IN_INODE {
        header(&mut iblock, ext.len(), IN_INODE, 0);
        for (i, r) in ext.iter().enumerate() {
            extent(&mut iblock[12 + 12 * i..], starts[i], *r);
        }
        return (iblock, Vec::new());
    }
    let chunks: Vec<usize> = (0..ext.len()).step_by(PER_LEAF).collect();
    assert_eq!(
        chunks.len(),
        leaf_blocks.len(),
        "one leaf block per {PER_LEAF} extents"
    );
    assert!(
        chunks.len() <= IN_INODE,
        "files of over 1360 extents are not supported"
    );
    header(&mut iblock, chunks.len(), IN_INODE, 1);
    let mut leaves = Vec::with_capacity(chunks.len());
    for (i, &first) in chunks.iter().enumerate() {
        let idx = &mut iblock[12 + 12 * i..];
        put32(idx, 0, starts[first] as u32);
        put32(idx, 4, leaf_blocks[i] as u32);
        put16(idx, 8, (leaf_blocks[i] >> 32) as u16);
        let mut leaf = vec![0u8; BLOCK as usize];
        let these = &ext[first..(first + PER_LEAF).min(ext.len())];
        header(&mut leaf, these.len(), PER_LEAF, 0);
        for (j, r) in these.iter().enumerate() {
            extent(&mut leaf[12 + 12 * j..], starts[first + j], *r);
        }
        leaves.push(leaf);
    }
    (iblock, leaves)
}

impl Inode {
    /// The 256 bytes of the inode; `leaf_blocks` as for [`extent_tree`].
    pub fn encode(&self, leaf_blocks: &[u64]) -> ([u8; INODE_SIZE as usize], Vec<Vec<u8>>) {
        let mut b = [0u8; INODE_SIZE as usize];
        put16(&mut b, 0x00, self.mode);
        put32(&mut b, 0x04, self.size as u32);
        put32(&mut b, 0x08, self.mtime); // atime: as Nix sets it, equal to mtime
        put32(&mut b, 0x0C, self.ctime);
        put32(&mut b, 0x10, self.mtime);
        put16(&mut b, 0x1A, self.links);
        put32(&mut b, 0x6C, (self.size >> 32) as u32);
        put16(&mut b, 0x80, 32); // extra inode size
        put32(&mut b, 0x90, self.ctime); // creation time
        let leaves = match &self.data {
            Data::InlineLink(target) => {
                b[0x28..0x28 + target.len()].copy_from_slice(target);
                Vec::new()
            }
            Data::Blocks(runs) => {
                let (iblock, leaves) = extent_tree(runs, leaf_blocks);
                b[0x28..0x28 + 60].copy_from_slice(&iblock);
                put32(&mut b, 0x20, EXTENTS_FL);
                let blocks: u64 = runs.iter().map(|r| r.len).sum::<u64>() + leaves.len() as u64;
                put32(&mut b, 0x1C, (blocks * (BLOCK / 512)) as u32);
                leaves
            }
        };
        (b, leaves)
    }
}

/// The seed of an inode's own checksums (the inode, its extent and directory blocks): the
/// file system's seed continued over the inode number and generation (always 0 here).
pub fn inode_seed(fs_seed: u32, ino: u32) -> u32 {
    crc32c(crc32c(fs_seed, &ino.to_le_bytes()), &0u32.to_le_bytes())
}

/// Sets an inode's checksum: the CRC of all its bytes with the checksum as zero, its low
/// half in `l_i_checksum_lo` and, when the inode's extra fields reach `i_checksum_hi` (an
/// empty reserved inode's do not), its high half there.
pub fn set_inode_checksum(b: &mut [u8], inode_seed: u32) {
    let has_hi = u16::from_le_bytes([b[0x80], b[0x81]]) >= 4;
    put16(b, 0x7C, 0);
    if has_hi {
        put16(b, 0x82, 0);
    }
    let crc = crc32c(inode_seed, &b[..INODE_SIZE as usize]);
    put16(b, 0x7C, crc as u16);
    if has_hi {
        put16(b, 0x82, (crc >> 16) as u16);
    }
}

/// Sets an extent leaf block's checksum, in the four bytes after its last possible extent.
pub fn set_leaf_checksum(leaf: &mut [u8], inode_seed: u32) {
    let tail = 12 + 12 * PER_LEAF;
    let crc = crc32c(inode_seed, &leaf[..tail]);
    put32(leaf, tail, crc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_runs_split_into_extents_and_many_extents_need_leaves() {
        let runs = [Run {
            start: 100,
            len: 70000,
        }];
        let e = extents(&runs);
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[2],
            Run {
                start: 100 + 65536,
                len: 70000 - 65536
            }
        );
        assert_eq!(leaves_needed(&runs), 0);
        let many: Vec<Run> = (0..400)
            .map(|i| Run {
                start: i * 10,
                len: 1,
            })
            .collect();
        assert_eq!(leaves_needed(&many), 2);
        let (iblock, leaves) = extent_tree(&many, &[7, 8]);
        assert_eq!(&iblock[..8], &[0x0A, 0xF3, 2, 0, 4, 0, 1, 0]);
        assert_eq!(leaves.len(), 2);
        // The second leaf starts at file block 340.
        assert_eq!(u32::from_le_bytes(iblock[24..28].try_into().unwrap()), 340);
        assert_eq!(u16::from_le_bytes(leaves[1][2..4].try_into().unwrap()), 60);
    }
}
