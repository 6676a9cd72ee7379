//! Directory contents in ext4's linear format, each block ending in the checksum tail that
//! `metadata_csum` wants. Pure: no I/O.

use crate::crc32c::crc32c;
use crate::layout::{put16, put32, BLOCK};

/// The tail at the end of every directory block: a fake entry holding the block's checksum.
const TAIL: usize = 12;

pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_LNK: u8 = 7;

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: u32,
    pub file_type: u8,
}

fn entry_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// The blocks of a directory `ino` in `parent` holding `entries` (`.` and `..` first, as
/// ext4 wants them). Entries never cross a block; the last of each block stretches to the
/// block's checksum tail, which [`set_checksums`] fills in.
pub fn encode(ino: u32, parent: u32, entries: &[Entry]) -> Vec<u8> {
    let dots = [
        Entry {
            name: b".".to_vec(),
            ino,
            file_type: FT_DIR,
        },
        Entry {
            name: b"..".to_vec(),
            ino: parent,
            file_type: FT_DIR,
        },
    ];
    let mut out = empty_block();
    let mut last_at = 0usize; // where the block's last entry starts
    let mut at = 0usize;
    for e in dots.iter().chain(entries) {
        let len = entry_len(e.name.len());
        if at + len > out.len() - TAIL {
            // Stretch the block's last entry to the tail, then start a new block.
            let end = out.len() - TAIL;
            put16(&mut out, last_at + 4, (end - last_at) as u16);
            at = out.len();
            out.extend(empty_block());
        }
        put32(&mut out, at, e.ino);
        put16(&mut out, at + 4, len as u16);
        out[at + 6] = e.name.len() as u8;
        out[at + 7] = e.file_type;
        out[at + 8..at + 8 + e.name.len()].copy_from_slice(&e.name);
        last_at = at;
        at += len;
    }
    let end = out.len() - TAIL;
    put16(&mut out, last_at + 4, (end - last_at) as u16);
    out
}

/// A directory block with no entries: one unused entry up to the tail, and the tail.
pub fn empty_block() -> Vec<u8> {
    let block = BLOCK as usize;
    let mut b = vec![0u8; block];
    put16(&mut b, 4, (block - TAIL) as u16);
    put16(&mut b, block - TAIL + 4, TAIL as u16);
    b[block - TAIL + 7] = 0xDE; // the tail's marker
    b
}

/// Fills in the checksum tail of every block, with the directory inode's checksum seed.
pub fn set_checksums(blocks: &mut [u8], inode_seed: u32) {
    for b in blocks.chunks_mut(BLOCK as usize) {
        let crc = crc32c(inode_seed, &b[..BLOCK as usize - TAIL]);
        put32(b, BLOCK as usize - 4, crc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fill_blocks_and_the_last_stretches() {
        let one = encode(2, 2, &[]);
        assert_eq!(one.len(), 4096);
        // "..": from byte 12 to the tail at 4084.
        assert_eq!(u16::from_le_bytes([one[16], one[17]]), 4084 - 12);
        let many: Vec<Entry> = (0..300)
            .map(|i| Entry {
                name: format!("{i:0>40}").into_bytes(),
                ino: 20 + i,
                file_type: FT_REG,
            })
            .collect();
        let blocks = encode(12, 2, &many);
        // 48 bytes per entry: 84 in the first block after the dots, 85 per block after.
        assert_eq!(blocks.len(), 4 * 4096);
        // Walk every block: the rec_lens of each add up to exactly one block, the tail last.
        for b in blocks.chunks(4096) {
            let mut at = 0;
            while at < 4096 {
                at += u16::from_le_bytes([b[at + 4], b[at + 5]]) as usize;
            }
            assert_eq!(at, 4096);
        }
    }
}
