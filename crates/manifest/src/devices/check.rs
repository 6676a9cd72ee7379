//! The checks of a device graph, as mkinstaller builds it and as the installer reads it from
//! a medium (which it trusts no more than any other input).

use std::collections::{BTreeMap, BTreeSet};

use super::{Content, Devices, DiskContent, Extent, Fs, LvSize};

/// No size or place in a layout is past this (1 EiB): every sum the planner makes of them
/// stays far from overflowing, whatever a medium says.
const MAX_BYTES: u64 = 1 << 60;
use crate::profile::{
    check_label, check_mount_option, check_mount_point, check_subvolume_name, Filesystem,
};

impl Devices {
    /// Checks the graph as mkinstaller builds it and as the installer reads it from a medium:
    /// names, labels, mount points and options, UUIDs, and that every reference resolves.
    pub fn check(&self) -> Result<(), String> {
        let mut disks = BTreeSet::new();
        let mut labels = BTreeSet::new();
        for d in &self.disks {
            check_name("disk", &d.name)?;
            if !disks.insert(d.name.as_str()) {
                return Err(format!("two disks are named {:?}", d.name));
            }
            if let Some(dev) = &d.device {
                if !dev.starts_with("/dev/") || dev.split('/').any(|c| c == "..") {
                    return Err(format!(
                        "disk {}: device {dev:?} is not a path under /dev",
                        d.name
                    ));
                }
            }
            if let DiskContent::Gpt { partitions } = &d.content {
                let mut names = BTreeSet::new();
                for p in partitions {
                    let at = |e: String| format!("disk {} partition {}: {e}", d.name, p.name);
                    check_name("partition", &p.name).map_err(at)?;
                    if !names.insert(p.name.as_str()) {
                        return Err(at("two partitions have this name".into()));
                    }
                    check_label(&p.label).map_err(at)?;
                    let sizes = [
                        p.start.unwrap_or(0),
                        match p.size {
                            Extent::Bytes(b) | Extent::EndAt(b) => b,
                            Extent::ToEnd { reserve } => reserve,
                        },
                    ];
                    if sizes.iter().any(|b| *b > MAX_BYTES) {
                        return Err(at("a size or place past 1 EiB".into()));
                    }
                    if !labels.insert(p.label.as_str()) {
                        return Err(at(format!("partition label {:?} is used twice", p.label)));
                    }
                    if !crate::profile::is_guid(&p.type_guid) {
                        return Err(at(format!("type {:?} is not a GUID", p.type_guid)));
                    }
                }
            }
        }
        let mut luks = BTreeSet::new();
        let mut md = BTreeMap::new();
        let mut vgs = BTreeMap::new();
        for m in &self.mdadm {
            check_name("md array", &m.name)?;
            if md.insert(m.name.as_str(), 0usize).is_some() {
                return Err(format!("two md arrays are named {:?}", m.name));
            }
            if !matches!(m.level, 0 | 1 | 4 | 5 | 6 | 10) {
                return Err(format!(
                    "md array {}: RAID level {} is not one mdadm makes (0, 1, 4, 5, 6, 10)",
                    m.name, m.level
                ));
            }
            if !matches!(
                m.metadata.as_str(),
                "0.90" | "1.0" | "1.1" | "1.2" | "default"
            ) {
                return Err(format!(
                    "md array {}: metadata {:?} is not 0.90, 1.0, 1.1, 1.2 or default",
                    m.name, m.metadata
                ));
            }
        }
        for vg in &self.lvm_vgs {
            check_name("volume group", &vg.name)?;
            if vgs.insert(vg.name.as_str(), 0usize).is_some() {
                return Err(format!("two volume groups are named {:?}", vg.name));
            }
            let mut lvs = BTreeSet::new();
            for lv in &vg.lvs {
                check_name("logical volume", &lv.name)?;
                if !lvs.insert(lv.name.as_str()) {
                    return Err(format!(
                        "volume group {}: two logical volumes are named {:?}",
                        vg.name, lv.name
                    ));
                }
                if matches!(lv.size, LvSize::Bytes(b) if b > MAX_BYTES) {
                    return Err(format!(
                        "logical volume {}/{}: a size past 1 EiB",
                        vg.name, lv.name
                    ));
                }
                if let LvSize::Percent { percent, .. } = lv.size {
                    if percent == 0 || percent > 100 {
                        return Err(format!(
                            "logical volume {}/{}: {percent}% is not a size",
                            vg.name, lv.name
                        ));
                    }
                }
            }
        }
        for (h, c) in self.contents() {
            let at = |e: String| format!("{h}: {e}");
            match c {
                Content::Luks(l) => {
                    check_name("LUKS device", &l.name).map_err(at)?;
                    if !luks.insert(l.name.as_str()) {
                        return Err(at(format!("two LUKS devices are named {:?}", l.name)));
                    }
                    if let Some(u) = &l.uuid {
                        check_uuid(u).map_err(at)?;
                    }
                    check_args(&l.extra_format_args).map_err(at)?;
                    check_args(&l.extra_open_args).map_err(at)?;
                }
                Content::Mdraid { name } => {
                    *md.get_mut(name.as_str()).ok_or_else(|| {
                        at(format!(
                            "a member of md array {name:?}, which is not defined"
                        ))
                    })? += 1;
                }
                Content::LvmPv { vg } => {
                    *vgs.get_mut(vg.as_str()).ok_or_else(|| {
                        at(format!(
                            "a physical volume of volume group {vg:?}, which is not defined"
                        ))
                    })? += 1;
                }
                Content::Filesystem(fs) => check_fs(fs).map_err(at)?,
                Content::Swap(s) => {
                    if let Some(l) = &s.label {
                        check_label(l).map_err(at)?;
                    }
                    if let Some(u) = &s.uuid {
                        check_uuid(u).map_err(at)?;
                    }
                }
                Content::None => {}
            }
        }
        for m in &self.mdadm {
            let n = md[m.name.as_str()];
            let least = match m.level {
                0 | 1 => 2,
                4 | 5 => 3,
                6 | 10 => 4,
                _ => 2,
            };
            if n < least {
                return Err(format!(
                    "md array {} (RAID{}) has {n} member(s); it needs at least {least}",
                    m.name, m.level
                ));
            }
        }
        if let Some((vg, _)) = vgs.iter().find(|(_, n)| **n == 0) {
            return Err(format!("volume group {vg} has no physical volume"));
        }
        for n in &self.nodev {
            if n.fs_type != "tmpfs" {
                return Err(format!(
                    "{}: a nodev mount of type {:?}; only tmpfs is supported",
                    n.mountpoint, n.fs_type
                ));
            }
            for o in &n.mount_options {
                check_mount_option(o)?;
            }
        }
        let mut seen = BTreeSet::new();
        for m in self.mounts() {
            check_mount_point(&m.mountpoint)?;
            if !seen.insert(m.mountpoint.clone()) {
                return Err(format!("two file systems are mounted at {}", m.mountpoint));
            }
        }
        if !seen.contains("/") {
            return Err("nothing is mounted at /".into());
        }
        match self.store_mount() {
            Some(m) if m.holder.is_some() => Ok(()),
            _ => Err(
                "the Nix store (/nix, or /) would be on a tmpfs: give /nix a file system on a disk"
                    .into(),
            ),
        }
    }
}

/// A name the installer puts in device paths and on command lines: `[A-Za-z0-9_.+-]`, not
/// starting with `-` or `.`, at most 63 characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c));
    if !ok {
        return Err(format!(
            "{what} name {name:?} must be 1 to 63 letters, digits, _ . + - (not starting with - or .)"
        ));
    }
    Ok(())
}

/// A UUID (`8-4-4-4-12` hex) or a FAT volume ID (`XXXX-XXXX`).
pub fn check_uuid(u: &str) -> Result<(), String> {
    let parts: Vec<&str> = u.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let ok = match parts.as_slice() {
        [a, b] => hex(a, 4) && hex(b, 4),
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        _ => false,
    };
    if !ok {
        return Err(format!(
            "UUID {u:?} is neither a UUID (8-4-4-4-12 hex digits) nor a FAT volume ID (XXXX-XXXX)"
        ));
    }
    Ok(())
}

/// Arguments passed to a tool as they are (no shell): not empty, nothing unprintable.
fn check_args(args: &[String]) -> Result<(), String> {
    for a in args {
        if a.is_empty() || a.chars().any(|c| c.is_control()) {
            return Err(format!(
                "argument {a:?} is empty or holds a control character"
            ));
        }
    }
    Ok(())
}

fn check_fs(fs: &Fs) -> Result<(), String> {
    if matches!(fs.format, Filesystem::Swap | Filesystem::None) {
        return Err(format!("{:?} is not a file system format", fs.format).to_lowercase());
    }
    if !fs.subvolumes.is_empty() && fs.format != Filesystem::Btrfs {
        return Err("subvolumes need btrfs".into());
    }
    for o in &fs.mount_options {
        check_mount_option(o)?;
    }
    let mut names = BTreeSet::new();
    for sv in &fs.subvolumes {
        check_subvolume_name(&sv.name)?;
        if !names.insert(sv.name.as_str()) {
            return Err(format!("two subvolumes are named {:?}", sv.name));
        }
        for o in &sv.mount_options {
            check_mount_option(o)?;
        }
    }
    if let Some(l) = &fs.label {
        check_label(l)?;
    }
    if let Some(u) = &fs.uuid {
        check_uuid(u)?;
        let fat_id = u.len() == 9;
        if fat_id != (fs.format == Filesystem::Vfat) {
            return Err(format!(
                "UUID {u:?} does not fit {}: vfat takes a volume ID XXXX-XXXX, the others a UUID",
                fs.format.name()
            ));
        }
    }
    check_args(&fs.extra_args)
}
