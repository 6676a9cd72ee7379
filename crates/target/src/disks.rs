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

use crate::plan::DiskFacts;

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

/// The serial in a SCSI VPD page 0x80 (4-byte header, then the length-prefixed ASCII
/// serial; libata answers it with the ATA serial).
pub fn vpd_pg80_serial(page: &[u8]) -> String {
    if page.len() < 4 || page[1] != 0x80 {
        return String::new();
    }
    let len = page[3] as usize;
    let body = &page[4..page.len().min(4 + len)];
    String::from_utf8_lossy(body)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string()
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

/// `ata3` and the like.
fn is_numbered(component: &str, prefix: &str) -> bool {
    component
        .strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The names libata gives the ATA device at SCSI channel/id of port `port`: `devP.I` on a
/// plain port (master 0, slave 1), `devP.C.0` behind a port multiplier (channel = PMP port).
fn ata_dev_name(port: &str, channel: u32, id: u32) -> [String; 2] {
    [format!("dev{port}.{id}"), format!("dev{port}.{channel}.0")]
}

/// Model and serial from the text of an ATA IDENTIFY dump as libata shows it in sysfs (256
/// words in hex, high byte first in each word's two characters): words 27–46 hold the model,
/// 10–19 the serial.
pub fn ata_model_serial(identify: &str) -> Option<(String, String)> {
    let words: Vec<u16> = identify
        .split_whitespace()
        .map(|w| u16::from_str_radix(w, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if words.len() < 47 {
        return None;
    }
    let text = |range: std::ops::Range<usize>| -> String {
        let bytes: Vec<u8> = words[range]
            .iter()
            .flat_map(|w| [(w >> 8) as u8, (w & 0xff) as u8])
            .collect();
        String::from_utf8_lossy(&bytes)
            .trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    };
    let (model, serial) = (text(27..47), text(10..20));
    (!model.is_empty()).then_some((model, serial))
}

/// The transport of a disk from its canonical sysfs path (`readlink -f /sys/block/X`): the
/// bus nearest the host decides, so a SATA disk in a USB enclosure is `usb` and a disk on
/// virtio-scsi is `scsi`. One of usb, nvme, sata, mmc, scsi, virtio, loop, or "".
pub fn transport(sys_path: &str) -> &'static str {
    let comps: Vec<&str> = sys_path.split('/').filter(|c| !c.is_empty()).collect();
    let any = |f: &dyn Fn(&str) -> bool| comps.iter().any(|c| f(c));
    if any(&|c| is_numbered(c, "usb")) {
        "usb"
    } else if any(&|c| c == "nvme" || c == "nvme-subsystem" || c == "nvme-fabrics") {
        "nvme"
    } else if any(&|c| is_numbered(c, "ata")) {
        "sata"
    } else if any(&|c| c == "mmc_host" || is_numbered(c, "mmc")) {
        "mmc"
    } else if any(&|c| is_numbered(c, "host")) && any(&|c| c.starts_with("target")) {
        "scsi"
    } else if any(&|c| is_numbered(c, "virtio")) {
        "virtio"
    } else if comps.last().is_some_and(|n| is_numbered(n, "loop")) {
        "loop"
    } else {
        ""
    }
}

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

/// What udev's by-id names are made of.
pub struct Ids<'a> {
    pub transport: &'a str,
    pub model: &'a str,
    pub serial: &'a str,
    /// `wwid` in sysfs: `naa.…`, `eui.…`, `t10.…`, `nvme.…`.
    pub wwid: &'a str,
    /// NVMe namespace id.
    pub nsid: &'a str,
}

/// The /dev/disk/by-id names udev (systemd's 60-persistent-storage.rules) would give a disk,
/// for machines where it does not run, so a hosts.toml `disk = "/dev/disk/by-id/…"` still
/// matches. Synthesised:
/// - NVMe: `nvme-<model>_<serial>`, `nvme-<model>_<serial>_<nsid>` (systemd ≥ 254) and
///   `nvme-<wwid>` (`nvme-eui.…`);
/// - SATA (libata): `ata-<model>_<serial>` with the full 40-character IDENTIFY model, and
///   `wwn-0x<naa>` when the disk has an NAA world-wide name;
/// - virtio-blk: `virtio-<serial>`.
///
/// Not synthesised (they depend on scsi_id/usb_id probing we do not repeat): `scsi-…`,
/// `usb-…`, `mmc-…`, `wwn-` of SCSI/SAS disks, `*-partN`. Name those disks by /dev path, or
/// by an NVMe/ATA/virtio id. Values are escaped as udev does ([`udev_escape`]).
pub fn synthesised_by_id(ids: &Ids) -> Vec<String> {
    let (model, serial) = (udev_escape(ids.model), udev_escape(ids.serial));
    let mut names = Vec::new();
    match ids.transport {
        "nvme" => {
            if !model.is_empty() && !serial.is_empty() {
                names.push(format!("nvme-{model}_{serial}"));
                if !ids.nsid.is_empty() {
                    names.push(format!("nvme-{model}_{serial}_{}", udev_escape(ids.nsid)));
                }
            }
            if !ids.wwid.is_empty() {
                names.push(format!("nvme-{}", udev_escape(ids.wwid)));
            }
        }
        "sata" => {
            if !model.is_empty() && !serial.is_empty() {
                names.push(format!("ata-{model}_{serial}"));
            }
            if let Some(naa) = ids.wwid.strip_prefix("naa.") {
                names.push(format!("wwn-0x{}", naa.to_ascii_lowercase()));
            }
        }
        "virtio" if !serial.is_empty() => names.push(format!("virtio-{serial}")),
        _ => {}
    }
    names
        .into_iter()
        .map(|n| format!("/dev/disk/by-id/{n}"))
        .collect()
}

/// udev's escaping of values in link names: trimmed, whitespace runs to one `_`, characters
/// that are not alphanumeric, `#+-.:=@_` or multi-byte UTF-8 to `_`.
pub fn udev_escape(s: &str) -> String {
    let mut out = String::new();
    let mut in_space = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push('_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    out
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

    #[test]
    fn transports_from_sysfs_paths() {
        for (path, t) in [
            (
                "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
                "usb",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                "sata",
            ),
            ("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda", "virtio"),
            (
                "/sys/devices/pci0000:00/0000:00:03.0/virtio2/host2/target2:0:0/2:0:0:0/block/sda",
                "scsi",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1",
                "nvme",
            ),
            ("/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1", "nvme"),
            (
                "/sys/devices/platform/fe320000.mmc/mmc_host/mmc1/mmc1:0001/block/mmcblk1",
                "mmc",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/host0/target0:2:0/0:2:0:0/block/sda",
                "scsi",
            ),
            ("/sys/devices/virtual/block/loop3", "loop"),
            ("/sys/devices/virtual/block/zram0", ""),
        ] {
            assert_eq!(transport(path), t, "{path}");
        }
    }

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
    fn ata_identify_strings() {
        // Words 10–19 "S3Z2NB0K123456X     ", 27–46 "Samsung SSD 860 EVO 500GB" padded.
        let mut words = [0u16; 256];
        let put = |words: &mut [u16; 256], at: usize, len: usize, s: &str| {
            let mut b = s.as_bytes().to_vec();
            b.resize(len * 2, b' ');
            for i in 0..len {
                words[at + i] = (b[2 * i] as u16) << 8 | b[2 * i + 1] as u16;
            }
        };
        put(&mut words, 10, 10, "    S3Z2NB0K123456X");
        put(&mut words, 27, 20, "Samsung SSD 860 EVO 500GB");
        let text: String = words
            .chunks(8)
            .map(|c| {
                c.iter()
                    .map(|w| format!("{w:04x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
                    + "\n"
            })
            .collect();
        assert_eq!(
            ata_model_serial(&text),
            Some(("Samsung SSD 860 EVO 500GB".into(), "S3Z2NB0K123456X".into()))
        );
        assert_eq!(ata_model_serial("zz"), None);
        assert_eq!(ata_dev_name("3", 0, 0)[0], "dev3.0");
    }

    #[test]
    fn vpd_page_80() {
        let mut page = vec![0, 0x80, 0, 12];
        page.extend_from_slice(b"  WD-WX12345");
        assert_eq!(vpd_pg80_serial(&page), "WD-WX12345");
        assert_eq!(vpd_pg80_serial(&[0, 0x83, 0, 0]), "");
    }

    #[test]
    fn by_id_names_as_udev_makes_them() {
        let ids = |transport, model, serial, wwid, nsid| Ids {
            transport,
            model,
            serial,
            wwid,
            nsid,
        };
        assert_eq!(
            synthesised_by_id(&ids(
                "nvme",
                "Samsung SSD 980 1TB",
                "S64ANS0T123456",
                "eui.002538b111b2c3d4",
                "1"
            )),
            vec![
                "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456",
                "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456_1",
                "/dev/disk/by-id/nvme-eui.002538b111b2c3d4",
            ]
        );
        assert_eq!(
            synthesised_by_id(&ids(
                "sata",
                "WDC  WD40EFRX-68N32N0",
                "WD-WCC7K1234567",
                "naa.50014EE2B1234567",
                ""
            )),
            vec![
                "/dev/disk/by-id/ata-WDC_WD40EFRX-68N32N0_WD-WCC7K1234567",
                "/dev/disk/by-id/wwn-0x50014ee2b1234567",
            ]
        );
        assert_eq!(
            synthesised_by_id(&ids("virtio", "", "my disk/1", "", "")),
            vec!["/dev/disk/by-id/virtio-my_disk_1"]
        );
        assert!(synthesised_by_id(&ids("usb", "Cruzer", "123", "", "")).is_empty());
        assert!(synthesised_by_id(&ids("virtio", "", "", "", "")).is_empty());
    }
}
