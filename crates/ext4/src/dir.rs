//! Directory contents in ext4's linear format. Pure: no I/O.

use crate::layout::{put16, put32, BLOCK};

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
/// ext4 wants them). Entries never cross a block; the last of each block stretches to its end.
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
    let block = BLOCK as usize;
    let mut out = vec![0u8; block];
    let mut last_at = 0usize; // where the block's last entry starts
    let mut at = 0usize;
    for e in dots.iter().chain(entries) {
        let len = entry_len(e.name.len());
        if at + len > out.len() {
            // Stretch the block's last entry to the block's end, then start a new block.
            let end = out.len();
            put16(&mut out, last_at + 4, (end - last_at) as u16);
            at = end;
            out.resize(end + block, 0);
        }
        put32(&mut out, at, e.ino);
        put16(&mut out, at + 4, len as u16);
        out[at + 6] = e.name.len() as u8;
        out[at + 7] = e.file_type;
        out[at + 8..at + 8 + e.name.len()].copy_from_slice(&e.name);
        last_at = at;
        at += len;
    }
    let end = out.len();
    put16(&mut out, last_at + 4, (end - last_at) as u16);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fill_blocks_and_the_last_stretches() {
        let one = encode(2, 2, &[]);
        assert_eq!(one.len(), 4096);
        assert_eq!(u16::from_le_bytes([one[16], one[17]]), 4096 - 12);
        let many: Vec<Entry> = (0..300)
            .map(|i| Entry {
                name: format!("{i:0>40}").into_bytes(),
                ino: 20 + i,
                file_type: FT_REG,
            })
            .collect();
        let blocks = encode(12, 2, &many);
        // 48 bytes per entry: 85 in the first block after the dots, 85 per block after.
        assert_eq!(blocks.len(), 4 * 4096);
        // Walk every block: the rec_lens of each add up to exactly one block.
        for b in blocks.chunks(4096) {
            let mut at = 0;
            while at < 4096 {
                at += u16::from_le_bytes([b[at + 4], b[at + 5]]) as usize;
            }
            assert_eq!(at, 4096);
        }
    }
}
