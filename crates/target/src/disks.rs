//! Facts about the machine's whole disks, from sysfs and procfs alone: the installer runs
//! without udev, so by-id names are read where /dev/disk/by-id exists and otherwise made the
//! way udev makes the common ones.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::plan::DiskFacts;

/// Kernel names that are never install targets.
const SKIP: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];

/// Every whole disk worth considering, sorted by path.
pub fn scan() -> io::Result<Vec<DiskFacts>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let swaps = swap_devices();
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block")? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if SKIP.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let f = facts_of(&name, &mountinfo, &swaps)?;
        if f.size > 0 {
            out.push(f);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Facts for one whole disk by its node (loop devices included).
pub fn facts(dev: &Path) -> io::Result<DiskFacts> {
    let real = fs::canonicalize(dev).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: no such block device ({e})", dev.display()),
        )
    })?;
    let meta = fs::metadata(&real)?;
    if !meta.file_type().is_block_device() {
        return Err(io::Error::other(format!(
            "{} is not a block device",
            dev.display()
        )));
    }
    let name = real
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if Path::new(&format!("/sys/class/block/{name}/partition")).exists() {
        let disk = whole_disk_of(&real)?;
        return Err(io::Error::other(format!(
            "{} is a partition, not a whole disk: name the disk ({})",
            dev.display(),
            disk.display()
        )));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    facts_of(&name, &mountinfo, &swap_devices())
}

/// The whole disk a partition node belongs to (a whole disk is its own).
pub fn whole_disk_of(dev: &Path) -> io::Result<PathBuf> {
    let real = fs::canonicalize(dev)?;
    let name = real
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let sys = fs::canonicalize(format!("/sys/class/block/{name}"))?;
    if sys.join("partition").exists() {
        let parent = sys
            .parent()
            .and_then(|p| p.file_name())
            .ok_or_else(|| io::Error::other("no parent disk"))?;
        Ok(PathBuf::from("/dev").join(parent))
    } else {
        Ok(PathBuf::from("/dev").join(name))
    }
}

/// The node of partition `n` of `disk`: a `p` goes between when the disk's name ends in a
/// digit (nvme0n1p1, loop0p1, mmcblk0p1), as the kernel names them.
pub fn partition_node(disk: &Path, n: u32) -> PathBuf {
    let s = disk.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// (major, minor) of the disk and its partitions, with their kernel names.
fn members(sys: &Path, name: &str) -> Vec<(String, String)> {
    let mut v = vec![(name.to_string(), read(&sys.join("dev")))];
    for e in fs::read_dir(sys).into_iter().flatten().flatten() {
        let p = e.path();
        if p.join("partition").exists() {
            v.push((
                e.file_name().to_string_lossy().into_owned(),
                read(&p.join("dev")),
            ));
        }
    }
    v
}

fn facts_of(name: &str, mountinfo: &str, swaps: &[u64]) -> io::Result<DiskFacts> {
    let sys = PathBuf::from("/sys/block").join(name);
    let sys = if sys.exists() {
        sys
    } else {
        PathBuf::from("/sys/class/block").join(name)
    };
    let size = read(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
    let lbs = read(&sys.join("queue/logical_block_size"))
        .parse()
        .unwrap_or(512);
    let device_path = fs::canonicalize(sys.join("device")).unwrap_or_default();
    let transport = transport(name, &device_path.to_string_lossy());
    let model = read(&sys.join("device/model"));
    let mut serial = read(&sys.join("device/serial"));
    if serial.is_empty() {
        serial = read(&sys.join("serial"));
    }
    let members = members(&sys, name);
    let mut mounted = Vec::new();
    let mut holders = Vec::new();
    let mut swap = false;
    for (member, dev) in &members {
        mounted.extend(mounts_of(mountinfo, dev));
        let base = if member == name {
            sys.clone()
        } else {
            sys.join(member)
        };
        for h in fs::read_dir(base.join("holders"))
            .into_iter()
            .flatten()
            .flatten()
        {
            holders.push(h.file_name().to_string_lossy().into_owned());
        }
        if let Some((ma, mi)) = dev.split_once(':') {
            if let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) {
                swap |= swaps.contains(&nix::sys::stat::makedev(ma, mi));
            }
        }
    }
    let path = format!("/dev/{name}");
    Ok(DiskFacts {
        by_id: by_id(&path, &transport, &model, &serial),
        path,
        size,
        logical_block_size: lbs,
        removable: read(&sys.join("removable")) == "1",
        read_only: read(&sys.join("ro")) == "1",
        transport,
        model,
        serial,
        boot_medium: false,
        mounted,
        swap,
        holders,
    })
}

/// The transport from the disk's kernel name and its resolved sysfs device path.
pub fn transport(name: &str, device_path: &str) -> String {
    let t = if name.starts_with("loop") {
        "loop"
    } else if device_path.contains("/usb") {
        "usb"
    } else if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("vd") || device_path.contains("/virtio") {
        "virtio"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if device_path.contains("/ata") {
        "sata"
    } else if name.starts_with("sd") {
        "scsi"
    } else {
        ""
    };
    t.to_string()
}

/// Mount points whose source is device `dev` (`major:minor`), from mountinfo text.
pub fn mounts_of(mountinfo: &str, dev: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && f[2] == dev).then(|| f[4].replace("\\040", " "))
        })
        .collect()
}

fn swap_devices() -> Vec<u64> {
    fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| fs::metadata(p.replace("\\040", " ")).ok())
        .filter(|m| m.file_type().is_block_device())
        .map(|m| m.rdev())
        .collect()
}

/// by-id names: the links in /dev/disk/by-id that resolve to `path` when udev made them,
/// else the names udev would make for NVMe, ATA and virtio disks (`nvme-<model>_<serial>`,
/// `ata-<model>_<serial>`, `virtio-<serial>`, spaces as `_`). Others (usb-, scsi-, wwn-) are
/// only known when udev made them.
fn by_id(path: &str, transport: &str, model: &str, serial: &str) -> Vec<String> {
    let dir = Path::new("/dev/disk/by-id");
    if dir.is_dir() {
        return fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| fs::canonicalize(e.path()).is_ok_and(|t| t == Path::new(path)))
            .map(|e| e.path().to_string_lossy().into_owned())
            .collect();
    }
    let clean = |s: &str| s.trim().replace(' ', "_");
    let name = match transport {
        "nvme" if !serial.is_empty() => format!("nvme-{}_{}", clean(model), clean(serial)),
        "sata" if !serial.is_empty() => format!("ata-{}_{}", clean(model), clean(serial)),
        "virtio" if !serial.is_empty() => format!("virtio-{}", clean(serial)),
        _ => return Vec::new(),
    };
    vec![format!("/dev/disk/by-id/{name}")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_nodes_follow_the_kernel_rule() {
        assert_eq!(
            partition_node(Path::new("/dev/sda"), 2),
            PathBuf::from("/dev/sda2")
        );
        assert_eq!(
            partition_node(Path::new("/dev/nvme0n1"), 1),
            PathBuf::from("/dev/nvme0n1p1")
        );
        assert_eq!(
            partition_node(Path::new("/dev/loop7"), 3),
            PathBuf::from("/dev/loop7p3")
        );
    }

    #[test]
    fn transports_from_names_and_device_paths() {
        assert_eq!(
            transport(
                "sda",
                "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0"
            ),
            "usb"
        );
        assert_eq!(
            transport(
                "sda",
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"
            ),
            "sata"
        );
        assert_eq!(
            transport("vda", "/sys/devices/pci0000:00/0000:00:04.0/virtio1"),
            "virtio"
        );
        assert_eq!(transport("nvme0n1", ""), "nvme");
        assert_eq!(transport("loop0", ""), "loop");
    }

    #[test]
    fn mounts_are_found_by_device_number() {
        let info = "36 25 7:1 / /mnt/with\\040space rw - ext4 /dev/loop0p1 rw\n37 25 8:1 / / rw - ext4 /dev/sda1 rw\n";
        assert_eq!(mounts_of(info, "7:1"), vec!["/mnt/with space".to_string()]);
        assert!(mounts_of(info, "7:2").is_empty());
    }

    #[test]
    fn by_id_names_as_udev_makes_them() {
        let n = by_id("/dev/nonexistent", "nvme", "Samsung SSD 980", "S64DNX0R");
        if !Path::new("/dev/disk/by-id").is_dir() {
            assert_eq!(
                n,
                vec!["/dev/disk/by-id/nvme-Samsung_SSD_980_S64DNX0R".to_string()]
            );
        }
    }
}
