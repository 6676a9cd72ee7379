//! FAT directory entries: 8.3 short names (as given when valid, generated otherwise), long
//! names (VFAT LFN entries with their checksum), DOS dates, volume labels, and the writer of
//! a directory's entries.

use super::ATTR_LFN;

fn valid_short_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || "!#$%&'()-@^_`{}~".contains(c)
}

/// The 11-byte short name if `name` is already a valid upper-case 8.3 name.
pub(super) fn short_name_as_is(name: &str) -> Option<[u8; 11]> {
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
pub(super) fn generated_short_name(name: &str, index: u32) -> [u8; 11] {
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

pub(super) fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| (sum >> 1 | (sum & 1) << 7).wrapping_add(b))
}

/// DOS date and time of a Unix timestamp (clamped to 1980..2107).
pub(super) fn dos_datetime(unix: u64) -> (u16, u16) {
    let (year, month, day, hour, minute, second) = util::time::civil(unix);
    let year = year.clamp(1980, 2107);
    let date = (((year - 1980) as u16) << 9) | ((month as u16) << 5) | day as u16;
    let time = ((hour as u16) << 11) | ((minute as u16) << 5) | (second / 2) as u16;
    (date, time)
}

pub(super) struct EntryWriter<'a> {
    pub(super) buf: &'a mut Vec<u8>,
    pub(super) date: u16,
    pub(super) time: u16,
}

impl EntryWriter<'_> {
    pub(super) fn short(&mut self, name: &[u8; 11], attr: u8, cluster: u32, size: u32) {
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

    pub(super) fn long(&mut self, name: &str, short: &[u8; 11]) {
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

/// A FAT volume label from a name: upper case, only the characters every tool takes in a
/// label (letters, digits, `_`, `-`), cut to the 11 bytes FAT allows, padded with spaces.
/// One rule for the sticks' labels and the targets' ESPs (`/dev/disk/by-label/` shows it).
pub fn volume_label(label: &str) -> [u8; 11] {
    // No label: the FAT specification's "NO NAME", which blkid and fsck read as none (an
    // all-blank label entry is invalid).
    if !label
        .bytes()
        .any(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return *b"NO NAME    ";
    }
    let mut out = [b' '; 11];
    for (o, c) in out.iter_mut().zip(
        label
            .bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'),
    ) {
        *o = c.to_ascii_uppercase();
    }
    out
}
