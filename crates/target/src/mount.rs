//! Mounting the new file systems under the install root, and taking down whatever an earlier
//! attempt left mounted there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use manifest::profile::Format;

/// One file system to mount: `what` on `root/at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub device: PathBuf,
    /// Absolute path inside the installed system (`/`, `/boot`, `/nix`).
    pub at: String,
    pub fstype: &'static str,
    /// File-system options, comma-joined as mount(8) takes them (e.g. `subvol=@nix`).
    pub options: String,
}

/// The kernel's name for a file-system format.
pub fn fstype(format: Format) -> Option<&'static str> {
    match format {
        Format::Vfat => Some("vfat"),
        Format::Ext4 => Some("ext4"),
        Format::Btrfs => Some("btrfs"),
        Format::Xfs => Some("xfs"),
        Format::Swap | Format::None => None,
    }
}

/// The order to mount in: parents before children (`/` before `/boot` before `/boot/efi`).
pub fn mount_order(specs: &mut [MountSpec]) {
    specs.sort_by_key(|s| {
        (
            s.at.trim_end_matches('/').matches('/').count(),
            s.at.clone(),
        )
    });
}

/// `root` joined with an absolute path inside the installed system.
pub fn under(root: &Path, at: &str) -> PathBuf {
    root.join(at.trim_start_matches('/'))
}

/// Mounts `spec` under `root`, creating the mount point.
pub fn mount_one(root: &Path, spec: &MountSpec) -> io::Result<()> {
    let target = under(root, &spec.at);
    fs::create_dir_all(&target)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", target.display())))?;
    let data = (!spec.options.is_empty()).then_some(spec.options.as_str());
    mount(
        Some(&spec.device),
        &target,
        Some(spec.fstype),
        MsFlags::empty(),
        data,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "mounting {} ({}) on {}: {}",
                spec.device.display(),
                spec.fstype,
                target.display(),
                e.desc()
            ),
        )
    })
}

/// Binds `source` onto `root/at` (recursively), for the chroot.
pub fn bind(source: &Path, root: &Path, at: &str) -> io::Result<()> {
    let target = under(root, at);
    fs::create_dir_all(&target)?;
    mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "binding {} on {}: {}",
                source.display(),
                target.display(),
                e.desc()
            ),
        )
    })
}

/// Mount points at or under `root`, deepest first, from a mountinfo text.
pub fn mounts_under(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let root = root.to_string_lossy();
    let root = root.trim_end_matches('/');
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m == root || m.starts_with(&format!("{root}/")))
        .map(PathBuf::from)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes back every file system mounted at or under `root` (`syncfs` each), and reports the
/// first that fails: `sync(2)` says nothing of errors, and a failed writeback must never end
/// in "installed".
pub fn sync_all_under(root: &Path) -> io::Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    for m in mounts_under(&info, root) {
        let f = fs::File::open(&m)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", m.display())))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "writing {} back to its disk: {}; the disk reported an error",
                    m.display(),
                    e.desc()
                ),
            )
        })?;
    }
    Ok(())
}

/// Unmounts everything at or under `root`, deepest first. A mount that stays busy is
/// detached lazily, so a killed earlier run never blocks the next.
pub fn unmount_all(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    // Stacked mounts show up once per layer: go round until nothing is left.
    for _ in 0..8 {
        let info = fs::read_to_string("/proc/self/mountinfo")?;
        let found = mounts_under(&info, root);
        if found.is_empty() {
            return Ok(done);
        }
        for m in found {
            if umount2(&m, MntFlags::empty()).is_err() {
                umount2(&m, MntFlags::MNT_DETACH).map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("unmounting {}: {}", m.display(), e.desc()),
                    )
                })?;
            }
            done.push(m);
        }
    }
    Err(io::Error::other(format!(
        "{} still has mounts after 8 rounds of unmounting",
        root.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_mount_after_parents() {
        let spec = |at: &str| MountSpec {
            device: "/dev/x".into(),
            at: at.into(),
            fstype: "ext4",
            options: String::new(),
        };
        let mut v = vec![spec("/boot/efi"), spec("/nix"), spec("/"), spec("/boot")];
        mount_order(&mut v);
        let order: Vec<&str> = v.iter().map(|s| s.at.as_str()).collect();
        assert_eq!(order, ["/", "/boot", "/nix", "/boot/efi"]);
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
