//! Facts about the machine's whole disks, from sysfs and procfs alone: the installer runs
//! without udev, so by-id names are read where /dev/disk/by-id exists and otherwise made the
//! way udev makes the common ones (see [`synthesised_by_id`]).
//!
//! The parsing is pure (functions of the text of mountinfo, /proc/swaps, a sysfs path or an
//! ATA IDENTIFY dump) and unit-tested; the rest only reads files.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::disk_ids::{
    ata_model_serial, is_numbered, synthesised_by_id, transport, vpd_pg80_serial, Ids,
};
use crate::layout::DiskFacts;
use util::mountinfo::{mounts_of, parse_mountinfo, swap_paths, Mount};

/// Kernel name prefixes that [`scan`] never lists: virtual, optical, floppy and network block
/// devices. [`facts`] still describes a loop device named explicitly (`--disk /dev/loop3`).
const SKIP: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];

/// Every whole disk worth considering (no virtual, optical or empty ones), sorted by path.
pub fn scan() -> io::Result<Vec<DiskFacts>> {
    let env = Env::read();
    let mut out = Vec::new();
    let entries = fs::read_dir("/sys/block")
        .map_err(|e| annotate(e, "listing /sys/block (is sysfs mounted?)"))?;
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        if SKIP.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let sys = match fs::canonicalize(Path::new("/sys/block").join(&name)) {
            Ok(s) => s,
            Err(_) => continue, // gone since the listing
        };
        let f = facts_of(&name, &sys, &env);
        if f.size > 0 {
            out.push(f);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Facts for the whole disk `dev` names (a /dev node or a link to one, loop devices
/// included). A partition, a missing node or anything else is an error that says what to
/// name instead.
pub fn facts(dev: &Path) -> io::Result<DiskFacts> {
    let (name, sys) = resolve(dev)?;
    if sys.join("partition").exists() {
        let disk = parent_disk(&sys, dev)?;
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a partition, not a whole disk: name the disk ({})",
                dev.display(),
                disk.display()
            ),
        ));
    }
    Ok(facts_of(&name, &sys, &Env::read()))
}

/// The whole disk a partition node belongs to (`/dev/nvme0n1p2` → `/dev/nvme0n1`); a whole
/// disk is its own.
pub fn whole_disk_of(dev: &Path) -> io::Result<PathBuf> {
    let (name, sys) = resolve(dev)?;
    if sys.join("partition").exists() {
        parent_disk(&sys, dev)
    } else {
        Ok(PathBuf::from("/dev").join(name))
    }
}

/// The node of partition `n` of `disk`: a `p` goes between when the disk's name ends in a
/// digit (nvme0n1p1, loop0p1, mmcblk0p1), as the kernel names them; sda1 otherwise.
pub fn partition_node(disk: &Path, n: u32) -> PathBuf {
    let s = disk.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// The kernel name and canonical sysfs directory of the block device `dev` names, found by
/// its device number (so any node or link to it works, whatever its file name).
pub(crate) fn resolve(dev: &Path) -> io::Result<(String, PathBuf)> {
    let meta = fs::metadata(dev).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: no such block device ({e}); the disks here are: {}",
                dev.display(),
                disk_names().join(", ")
            ),
        )
    })?;
    if !meta.file_type().is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a block device: name a disk ({}), or attach an image first \
                 (`losetup -f --show IMAGE`)",
                dev.display(),
                disk_names().join(", ")
            ),
        ));
    }
    let (major, minor) = (
        nix::sys::stat::major(meta.rdev()),
        nix::sys::stat::minor(meta.rdev()),
    );
    let sys = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{} is device {major}:{minor}, which the kernel does not have (a stale node?): {e}",
                dev.display()
            ),
        )
    })?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::other(format!("{}: odd sysfs path", sys.display())))?;
    Ok((name, sys))
}

fn parent_disk(part_sys: &Path, dev: &Path) -> io::Result<PathBuf> {
    part_sys
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| PathBuf::from("/dev").join(n))
        .ok_or_else(|| {
            io::Error::other(format!(
                "{}: the kernel shows no disk above this partition",
                dev.display()
            ))
        })
}

/// `/dev/<name>` of every disk [`scan`] would consider, for error messages.
fn disk_names() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !SKIP.iter().any(|p| n.starts_with(p)))
        .map(|n| format!("/dev/{n}"))
        .collect();
    v.sort();
    if v.is_empty() {
        v.push("none".into());
    }
    v
}

fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A sysfs attribute, trimmed; empty when absent.
fn read(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What every disk's facts are checked against: the mount table, active swap, and the
/// /dev/disk/by-id links udev made (when it ran).
struct Env {
    mounts: Vec<Mount>,
    /// Device numbers of active swap devices.
    swaps: Vec<u64>,
    /// (link path, its canonical target) in /dev/disk/by-id, or None when the directory is
    /// missing (no udev).
    by_id_links: Option<Vec<(String, PathBuf)>>,
}

impl Env {
    fn read() -> Env {
        let mounts =
            parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let swaps = swap_paths(&fs::read_to_string("/proc/swaps").unwrap_or_default())
            .into_iter()
            .filter_map(|p| fs::metadata(p).ok())
            .filter(|m| m.file_type().is_block_device())
            .map(|m| m.rdev())
            .collect();
        let dir = Path::new("/dev/disk/by-id");
        let by_id_links = dir.is_dir().then(|| {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let target = fs::canonicalize(e.path()).ok()?;
                    Some((e.path().to_string_lossy().into_owned(), target))
                })
                .collect()
        });
        Env {
            mounts,
            swaps,
            by_id_links,
        }
    }
}

/// The disk (name, sysfs dir) and each of its partitions.
fn members(sys: &Path, name: &str) -> Vec<(String, PathBuf)> {
    let mut v = vec![(name.to_string(), sys.to_path_buf())];
    let mut parts: Vec<(String, PathBuf)> = fs::read_dir(sys)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(_, p)| p.join("partition").exists())
        .collect();
    parts.sort();
    v.extend(parts);
    v
}

fn facts_of(name: &str, sys: &Path, env: &Env) -> DiskFacts {
    let size = read(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
    let logical_block_size = read(&sys.join("queue/logical_block_size"))
        .parse()
        .unwrap_or(512);
    let transport = transport(&sys.to_string_lossy()).to_string();
    let ata = if transport == "sata" {
        ata_identify(sys).and_then(|text| ata_model_serial(&text))
    } else {
        None
    };
    let (model, serial) = match ata {
        Some(ms) => ms,
        None => (read(&sys.join("device/model")), serial_of(sys)),
    };

    let mut mounted = Vec::new();
    let mut holders = Vec::new();
    let mut swap = false;
    for (member, dir) in members(sys, name) {
        let dev = read(&dir.join("dev"));
        mounted.extend(mounts_of(&env.mounts, &dev, &format!("/dev/{member}")));
        for h in fs::read_dir(dir.join("holders"))
            .into_iter()
            .flatten()
            .flatten()
        {
            holders.push(h.file_name().to_string_lossy().into_owned());
        }
        if let Some((ma, mi)) = dev.split_once(':') {
            if let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) {
                swap |= env.swaps.contains(&nix::sys::stat::makedev(ma, mi));
            }
        }
    }
    let mut seen = BTreeSet::new();
    mounted.retain(|m| seen.insert(m.clone()));
    holders.sort();
    holders.dedup();

    let path = format!("/dev/{name}");
    let by_id = match &env.by_id_links {
        Some(links) => {
            let mut v: Vec<String> = links
                .iter()
                .filter(|(_, target)| target == Path::new(&path))
                .map(|(link, _)| link.clone())
                .collect();
            v.sort();
            v
        }
        None => synthesised_by_id(&Ids {
            transport: &transport,
            model: &model,
            serial: &serial,
            wwid: &wwid_of(sys),
            nsid: &read(&sys.join("nsid")),
        }),
    };
    DiskFacts {
        path,
        by_id,
        size,
        logical_block_size,
        removable: read(&sys.join("removable")) == "1",
        rotational: read(&sys.join("queue/rotational")) == "1",
        read_only: read(&sys.join("ro")) == "1",
        transport,
        model,
        serial,
        boot_medium: false,
        mounted,
        swap,
        holders,
    }
}

/// The serial: `device/serial` (NVMe, some SCSI and USB), the disk's own `serial` (virtio),
/// the SCSI unit serial number page (`device/vpd_pg80`), else the world-wide id.
fn serial_of(sys: &Path) -> String {
    for attr in ["device/serial", "serial"] {
        let s = read(&sys.join(attr));
        if !s.is_empty() {
            return s;
        }
    }
    if let Ok(page) = fs::read(sys.join("device/vpd_pg80")) {
        let s = vpd_pg80_serial(&page);
        if !s.is_empty() {
            return s;
        }
    }
    wwid_of(sys)
}

fn wwid_of(sys: &Path) -> String {
    let w = read(&sys.join("wwid"));
    if w.is_empty() {
        read(&sys.join("device/wwid"))
    } else {
        w
    }
}

/// The text of the ATA IDENTIFY data of an ATA disk (`/sys/class/ata_device/devN.M/id`), found
/// from the `ataN` port in its sysfs path and its SCSI address.
fn ata_identify(sys: &Path) -> Option<String> {
    // …/ata1/host0/target0:0:0/0:0:0:0/block/sda
    let comps: Vec<String> = sys
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let port_idx = comps.iter().position(|c| is_numbered(c, "ata"))?;
    let port_dir: PathBuf = comps[..=port_idx].iter().collect();
    let scsi = comps
        .iter()
        .find(|c| c.split(':').count() == 4 && c.split(':').all(|p| p.parse::<u32>().is_ok()))?;
    let addr: Vec<u32> = scsi.split(':').filter_map(|p| p.parse().ok()).collect();
    let port = &comps[port_idx][3..];
    // Every ATA device under this port: link*/dev*/ata_device/dev*/id.
    let mut devs = Vec::new();
    for link in fs::read_dir(&port_dir).ok()?.flatten() {
        if !link.file_name().to_string_lossy().starts_with("link") {
            continue;
        }
        for dev in fs::read_dir(link.path()).into_iter().flatten().flatten() {
            let n = dev.file_name().to_string_lossy().into_owned();
            if n.starts_with("dev") {
                devs.push((n.clone(), dev.path().join("ata_device").join(&n).join("id")));
            }
        }
    }
    let want = ata_dev_name(port, addr[1], addr[2]);
    let id = if devs.len() == 1 {
        devs.pop().map(|(_, id)| id)
    } else {
        devs.into_iter()
            .find(|(n, _)| want.contains(n))
            .map(|(_, id)| id)
    }?;
    fs::read_to_string(id).ok().filter(|t| !t.trim().is_empty())
}

/// The names libata gives the ATA device at SCSI channel/id of port `port`: `devP.I` on a
/// plain port (master 0, slave 1), `devP.C.0` behind a port multiplier (channel = PMP port).
pub(crate) fn ata_dev_name(port: &str, channel: u32, id: u32) -> [String; 2] {
    [format!("dev{port}.{id}"), format!("dev{port}.{channel}.0")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_nodes_follow_the_kernel_rule() {
        for (disk, n, node) in [
            ("/dev/sda", 2, "/dev/sda2"),
            ("/dev/vdb", 1, "/dev/vdb1"),
            ("/dev/nvme0n1", 1, "/dev/nvme0n1p1"),
            ("/dev/loop7", 3, "/dev/loop7p3"),
            ("/dev/mmcblk0", 1, "/dev/mmcblk0p1"),
        ] {
            assert_eq!(partition_node(Path::new(disk), n), PathBuf::from(node));
        }
    }
}
