//! The kernel's views of what is mounted and swapped on (`/proc/self/mountinfo`,
//! `/proc/swaps`), parsed in one place with one unescaping rule.

use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted device (anonymous for btrfs, hence `source` too).
    pub dev: String,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
}

/// Parses /proc/self/mountinfo (see proc(5)): `id parent major:minor root mountpoint
/// options [optional fields…] - fstype source superoptions`, octal escapes undone.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            if sep < 6 || f.len() < sep + 3 {
                return None;
            }
            Some(Mount {
                dev: f[2].to_string(),
                mount_point: unescape(f[4]),
                fstype: f[sep + 1].to_string(),
                source: unescape(f[sep + 2]),
            })
        })
        .collect()
}

/// Mount points of device `dev` (`major:minor`) or of file systems whose source is `node`
/// (btrfs reports an anonymous device number, but its source is the real node).
pub fn mounts_of(mounts: &[Mount], dev: &str, node: &str) -> Vec<String> {
    mounts
        .iter()
        .filter(|m| (!dev.is_empty() && m.dev == dev) || m.source == node)
        .map(|m| m.mount_point.clone())
        .collect()
}

/// The paths of active swap areas in /proc/swaps, octal escapes undone.
pub fn swap_paths(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

/// Undoes the kernel's `\ooo` escapes (space, tab, newline, backslash) in procfs paths.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `root`, deepest first, from a mountinfo text.
pub fn mounts_under(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let root = root.to_string_lossy();
    let root = root.trim_end_matches('/');
    let mut found: Vec<PathBuf> = parse_mountinfo(mountinfo)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m == root || m.starts_with(&format!("{root}/")))
        .map(PathBuf::from)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_optional_fields() {
        let info = "\
36 25 7:1 / /mnt/with\\040space rw shared:5 master:1 - ext4 /dev/loop0p1 rw
37 25 8:1 / / rw - ext4 /dev/sda1 rw
38 37 0:45 /@home /home rw,relatime shared:2 - btrfs /dev/nvme0n1p2 rw,ssd
39 25 0:22 / /sys rw - sysfs sysfs rw
";
        let m = parse_mountinfo(info);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].mount_point, "/mnt/with space");
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[2].source, "/dev/nvme0n1p2");
        assert_eq!(
            mounts_of(&m, "7:1", "/dev/loop0p1"),
            vec!["/mnt/with space"]
        );
        assert!(mounts_of(&m, "7:2", "/dev/loop0p2").is_empty());
        // btrfs: an anonymous device number, found by its source.
        assert_eq!(mounts_of(&m, "259:3", "/dev/nvme0n1p2"), vec!["/home"]);
        assert!(parse_mountinfo("garbage\n1 2 3\n").is_empty());
    }
    #[test]
    fn swaps_and_escapes() {
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
/dev/nvme0n1p3                          partition\t8388604\t\t0\t\t-2\n\
/swap\\040file                           file\t\t1048572\t\t0\t\t-3\n";
        assert_eq!(swap_paths(swaps), vec!["/dev/nvme0n1p3", "/swap file"]);
        assert_eq!(unescape("a\\011b\\134c\\012"), "a\tb\\c\n");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn finds_mounts_under_a_root_deepest_first() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 7:1 / /mnt/install rw - ext4 /dev/loop0p2 rw
31 30 7:1 / /mnt/install/boot rw - vfat /dev/loop0p1 rw
32 30 0:5 / /mnt/install/dev rw - devtmpfs dev rw
33 22 0:6 / /mnt/installer rw - tmpfs t rw
34 22 0:7 / /mnt/with\\040space rw - tmpfs t rw
";
        let m = mounts_under(info, Path::new("/mnt/install"));
        assert_eq!(m.len(), 3);
        assert_eq!(m[2], PathBuf::from("/mnt/install"));
        assert!(!m.contains(&PathBuf::from("/mnt/installer")));
        assert_eq!(
            mounts_under(info, Path::new("/mnt/with space")),
            vec![PathBuf::from("/mnt/with space")]
        );
    }
}
