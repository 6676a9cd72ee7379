//! Mounting the new file systems under the install root, and taking down whatever an earlier
//! attempt left mounted there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use manifest::devices::{Holder, Mount};

use util::mountinfo::mounts_under;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

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

/// What to mount for the installed system's `mounts` (the plan's, parents first), their
/// devices in `nodes`: each file system, each btrfs subvolume by `subvol=` (with the
/// layout's compression, so the store is written compressed as it will be used). A tmpfs
/// of the installed system is not mounted: nothing is installed into it.
pub fn mount_specs(
    mounts: &[Mount],
    nodes: &BTreeMap<Holder, PathBuf>,
) -> io::Result<Vec<MountSpec>> {
    let mut specs = Vec::new();
    for m in mounts {
        let (Some(h), Some(format)) = (&m.holder, m.format) else {
            continue;
        };
        let Some(fstype) = format.fs_type() else {
            continue;
        };
        let device = nodes
            .get(h)
            .ok_or_else(|| io::Error::other(format!("{h} has no device node")))?;
        let mut options: Vec<String> = m.subvol.iter().map(|v| format!("subvol={v}")).collect();
        if fstype == "btrfs" {
            options.extend(
                m.options
                    .iter()
                    .filter(|o| o.starts_with("compress"))
                    .cloned(),
            );
        }
        specs.push(MountSpec {
            device: device.clone(),
            at: m.mountpoint.clone(),
            fstype,
            options: options.join(","),
        });
    }
    mount_order(&mut specs);
    Ok(specs)
}

/// Mounts `specs` (in order) under `root`. On a
/// kernel that cannot mount FAT, a vfat file system is staged instead: a tmpfs at its mount
/// point, whose contents the caller writes into the partition afterwards
/// (`esp::write_staged`); its device comes back. Everything mounted is in the returned guard.
pub fn mount_all(
    root: &Path,
    specs: &[MountSpec],
    log: &mut dyn FnMut(String),
) -> io::Result<(Mounted, Option<PathBuf>)> {
    fs::create_dir_all(root)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", root.display())))?;
    if specs.first().map(|s| s.at.as_str()) != Some("/") {
        return Err(io::Error::other("the layout mounts nothing at /"));
    }
    let mounted = Mounted::under(root);
    let mut staged = None;
    for s in specs {
        if s.fstype == "vfat" && !crate::esp::vfat_available() {
            log(format!(
                "this kernel cannot mount FAT: {} is staged on a tmpfs and written into its partition after the boot loader step",
                s.at
            ));
            let at = under(root, &s.at);
            fs::create_dir_all(&at)?;
            mount(
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("mode=0755"),
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("mounting a tmpfs on {}: {}", at.display(), e.desc()),
                )
            })?;
            staged = Some(s.device.clone());
            continue;
        }
        mounted.mount(s)?;
    }
    Ok((mounted, staged))
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
    fn subvolumes_and_file_systems_become_mounts_in_order() {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../installer-profiles/uefi-btrfs.toml");
        let layout =
            manifest::Profile::parse("uefi-btrfs", &file, &fs::read_to_string(&file).unwrap())
                .unwrap()
                .to_layout();
        let mut nodes = BTreeMap::new();
        for (i, (h, _)) in layout.devices.contents().into_iter().enumerate() {
            nodes.insert(h, PathBuf::from(format!("/dev/sda{}", i + 1)));
        }
        let specs = mount_specs(&layout.devices.mounts(), &nodes).unwrap();
        let got: Vec<(&str, &str, &str, &str)> = specs
            .iter()
            .map(|s| {
                (
                    s.at.as_str(),
                    s.device.to_str().unwrap(),
                    s.fstype,
                    s.options.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/", "/dev/sda2", "btrfs", "subvol=@,compress=zstd"),
                ("/boot", "/dev/sda1", "vfat", ""),
                ("/home", "/dev/sda2", "btrfs", "subvol=@home,compress=zstd"),
                ("/nix", "/dev/sda2", "btrfs", "subvol=@nix,compress=zstd"),
            ]
        );
    }

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
}

/// Whatever is mounted at or under a root, unmounted when this is dropped (deepest first;
/// busy mounts detached lazily), so that no error path leaves the target mounted. The
/// path that ends well calls [`Mounted::sync_and_unmount`], which reports what fails.
#[derive(Debug)]
pub struct Mounted {
    root: PathBuf,
    armed: bool,
}

impl Mounted {
    /// Takes charge of everything mounted under `root` from now on.
    pub fn under(root: &Path) -> Mounted {
        Mounted {
            root: root.to_path_buf(),
            armed: true,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Mounts `spec` under the root.
    pub fn mount(&self, spec: &MountSpec) -> io::Result<()> {
        mount_one(&self.root, spec)
    }

    /// Writes every file system under the root back to its disk (reporting writeback
    /// errors), then unmounts them all.
    pub fn sync_and_unmount(mut self) -> io::Result<Vec<PathBuf>> {
        self.armed = false;
        sync_all_under(&self.root)?;
        unmount_all(&self.root)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.armed {
            let _ = unmount_all(&self.root);
        }
    }
}
