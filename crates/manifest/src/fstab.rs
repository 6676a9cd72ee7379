//! The host's own view of its disks, checked against the layout before a stick is written: a
//! NixOS toplevel carries `etc/fstab` (from `fileSystems` and `swapDevices`), and a flake
//! host's configuration its LUKS devices (`boot.initrd.luks.devices`). Every device they name
//! must be one the layout creates, or the installed machine stops in stage 1. A `by-uuid`
//! name is honoured instead of refused: the layout then makes that file system, swap or
//! LUKS header with that UUID, so a `hardware-configuration.nix` made on the machine before
//! keeps working.

use crate::devices::{Content, Devices, DiskContent, Holder, Mount};

/// One line of an fstab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub spec: String,
    pub mountpoint: String,
    pub fs_type: String,
    pub options: Vec<String>,
    /// 1-based, for messages.
    pub line: usize,
}

/// Parses fstab text (fields separated by blanks, `\040`-style escapes undone, comments and
/// blank lines skipped).
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let f: Vec<String> = l.split_whitespace().map(unescape).collect();
            Some(Entry {
                spec: f.first()?.clone(),
                mountpoint: f.get(1)?.clone(),
                fs_type: f.get(2).cloned().unwrap_or_else(|| "auto".into()),
                options: f
                    .get(3)
                    .map(|o| o.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                line: i + 1,
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    util::mountinfo::unescape(s)
}

/// What a device name in an fstab or a LUKS setting means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spec {
    PartLabel(String),
    Label(String),
    Uuid(String),
    Mapper(String),
    Lv(String, String),
    Md(String),
    /// A name that depends on the machine (`/dev/sda2`, `/dev/md0`) or on nothing we make.
    Other(String),
}

fn spec(s: &str) -> Spec {
    let after = |p: &str| s.strip_prefix(p).map(str::to_string);
    if let Some(x) = after("/dev/disk/by-partlabel/").or_else(|| after("PARTLABEL=")) {
        return Spec::PartLabel(x);
    }
    if let Some(x) = after("/dev/disk/by-label/").or_else(|| after("LABEL=")) {
        return Spec::Label(x);
    }
    if let Some(x) = after("/dev/disk/by-uuid/").or_else(|| after("UUID=")) {
        return Spec::Uuid(x);
    }
    if let Some(x) = after("/dev/mapper/") {
        return Spec::Mapper(x);
    }
    if let Some(x) = after("/dev/md/") {
        return Spec::Md(x);
    }
    if let Some(rest) = after("/dev/") {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [vg, lv] = parts.as_slice() {
            if !["disk", "mapper", "md", "block", "char"].contains(vg) {
                return Spec::Lv(vg.to_string(), lv.to_string());
            }
        }
    }
    Spec::Other(s.to_string())
}

/// The device-mapper name LVM gives a logical volume: `VG-LV`, each `-` in either doubled.
fn lvm_mapper_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Whether `s` names the device `h` of `devices` (given that device's file system label);
/// a `by-uuid` name is recorded as a UUID to honour.
fn names(devices: &Devices, s: &Spec, h: &Holder, label: Option<&str>) -> bool {
    match (s, h) {
        (Spec::PartLabel(l), Holder::Partition { disk, partition }) => devices
            .partition(disk, partition)
            .is_some_and(|p| &p.label == l),
        (Spec::Label(l), _) => label == Some(l.as_str()),
        (Spec::Mapper(m), Holder::Luks { name }) => m == name,
        (Spec::Mapper(m), Holder::Lv { vg, lv }) => *m == lvm_mapper_name(vg, lv),
        (Spec::Lv(v, l), Holder::Lv { vg, lv }) => v == vg && l == lv,
        (Spec::Md(m), Holder::Md { name }) => m == name,
        _ => false,
    }
}

/// What the layout makes a device with a holder, for messages.
fn describe(devices: &Devices, h: &Holder, label: Option<&str>) -> String {
    let mut ways = Vec::new();
    match h {
        Holder::Partition { disk, partition } => {
            if let Some(p) = devices.partition(disk, partition) {
                ways.push(format!("/dev/disk/by-partlabel/{}", p.label));
            }
        }
        other => ways.extend(other.stable_path()),
    }
    if let Holder::Lv { vg, lv } = h {
        ways.push(format!("/dev/mapper/{}", lvm_mapper_name(vg, lv)));
    }
    if let Some(l) = label {
        ways.push(format!("/dev/disk/by-label/{l}"));
    }
    ways.push("/dev/disk/by-uuid/… (any UUID: it is made with that one)".into());
    ways.join(" or ")
}

/// Checks the host's fstab `entries` and its LUKS devices (`luks`: name → device, empty when
/// unknown) against `devices`, and records in `devices` the UUIDs they name. Returns every
/// problem, each naming the mount point (or LUKS device), the name given and what the layout
/// makes instead.
pub fn reconcile(
    devices: &mut Devices,
    entries: &[Entry],
    luks: &[(String, String)],
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mounts = devices.mounts();
    for e in entries {
        let s = spec(&e.spec);
        if matches!(s, Spec::Other(_)) && !e.spec.starts_with("/dev/") {
            continue; // not a block device: tmpfs, a network file system, a bind mount
        }
        let at = format!("fstab line {}: {} ({})", e.line, e.mountpoint, e.spec);
        if e.fs_type == "swap" {
            check_swap(devices, &s, &at, &mut problems);
            continue;
        }
        let Some(m) = mounts.iter().find(|m| m.mountpoint == e.mountpoint) else {
            problems.push(format!(
                "{at}: the layout mounts nothing at {}",
                e.mountpoint
            ));
            continue;
        };
        check_mount(devices, e, &s, m, &at, &mut problems);
    }
    for (name, device) in luks {
        let at = format!("LUKS device {name} ({device})");
        let Some(h) = devices
            .contents()
            .into_iter()
            .find(|(_, c)| matches!(c, Content::Luks(l) if &l.name == name))
            .map(|(h, _)| h)
        else {
            problems.push(format!("{at}: the layout has no LUKS device named {name}"));
            continue;
        };
        match spec(device) {
            Spec::Uuid(u) => set_uuid(devices, &h, Target::LuksOn, &u, &at, &mut problems),
            s if names(devices, &s, &h, None) => {}
            _ => problems.push(format!(
                "{at}: the layout puts it on {}, which is named {}",
                h,
                describe(devices, &h, None)
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_mount(
    devices: &mut Devices,
    e: &Entry,
    s: &Spec,
    m: &Mount,
    at: &str,
    problems: &mut Vec<String>,
) {
    let Some(h) = &m.holder else {
        problems.push(format!("{at}: the layout mounts a tmpfs there"));
        return;
    };
    if e.fs_type != "auto" && e.fs_type != m.fs_type {
        problems.push(format!(
            "{at}: the fstab says {}, the layout makes {}",
            e.fs_type, m.fs_type
        ));
    }
    let want_subvol = e
        .options
        .iter()
        .find_map(|o| o.strip_prefix("subvol="))
        .map(|v| v.trim_start_matches('/').to_string());
    if want_subvol.is_some() && want_subvol != m.subvol {
        problems.push(format!(
            "{at}: the fstab mounts subvolume {}, the layout {}",
            want_subvol.as_deref().unwrap_or("-"),
            m.subvol.as_deref().unwrap_or("no subvolume")
        ));
    }
    let label = fs_label(devices, h);
    match s {
        Spec::Uuid(u) => set_uuid(devices, h, Target::Content, u, at, problems),
        s if names(devices, s, h, label.as_deref()) => {}
        _ => problems.push(format!(
            "{at}: the layout puts {} on {}, which is named {}",
            e.mountpoint,
            h,
            describe(devices, h, label.as_deref())
        )),
    }
}

fn check_swap(devices: &mut Devices, s: &Spec, at: &str, problems: &mut Vec<String>) {
    let swaps: Vec<(Holder, Option<String>)> = devices
        .contents()
        .into_iter()
        .filter_map(|(h, c)| match c {
            Content::Swap(sw) => Some((h, sw.label.clone())),
            _ => None,
        })
        .collect();
    if let Spec::Uuid(u) = s {
        match swaps.as_slice() {
            [(h, _)] => set_uuid(devices, &h.clone(), Target::Content, u, at, problems),
            [] => problems.push(format!("{at}: the layout makes no swap")),
            _ => {
                // Several swaps: the one already made with this UUID, else refuse.
                let known = devices.contents().into_iter().any(|(_, c)| {
                    matches!(c, Content::Swap(sw) if sw.uuid.as_deref() == Some(u.as_str()))
                });
                if !known {
                    problems.push(format!(
                        "{at}: the layout makes several swaps; say which by partition label"
                    ));
                }
            }
        }
        return;
    }
    if !swaps
        .iter()
        .any(|(h, l)| names(devices, s, h, l.as_deref()))
    {
        let made: Vec<String> = swaps
            .iter()
            .map(|(h, l)| describe(devices, h, l.as_deref()))
            .collect();
        problems.push(format!(
            "{at}: the layout makes no swap by that name (it makes: {})",
            if made.is_empty() {
                "no swap".to_string()
            } else {
                made.join("; ")
            }
        ));
    }
}

/// The label of the file system (or swap) held by `h`.
fn fs_label(devices: &Devices, h: &Holder) -> Option<String> {
    devices
        .contents()
        .into_iter()
        .find(|(x, _)| x == h)
        .and_then(|(_, c)| match c {
            Content::Filesystem(f) => f.label.clone(),
            Content::Swap(s) => s.label.clone(),
            _ => None,
        })
}

/// What a UUID is given to: the content held by a holder (a file system or swap), or the
/// LUKS container on it.
enum Target {
    Content,
    LuksOn,
}

fn set_uuid(
    devices: &mut Devices,
    h: &Holder,
    target: Target,
    uuid: &str,
    at: &str,
    problems: &mut Vec<String>,
) {
    if let Err(e) = crate::devices::check_uuid(uuid) {
        problems.push(format!("{at}: {e}"));
        return;
    }
    let Some(content) = content_mut(devices, h) else {
        problems.push(format!("{at}: {h} is not in the layout"));
        return;
    };
    let slot = match (target, content) {
        (Target::Content, Content::Filesystem(f)) => {
            let fat = uuid.len() == 9;
            if fat != (f.format == crate::profile::Filesystem::Vfat) {
                problems.push(format!(
                    "{at}: {uuid} cannot be the UUID of the {} file system made there",
                    f.format.name()
                ));
                return;
            }
            &mut f.uuid
        }
        (Target::Content, Content::Swap(s)) => &mut s.uuid,
        (Target::LuksOn, c) => match find_luks(c) {
            Some(l) => &mut l.uuid,
            None => {
                problems.push(format!("{at}: {h} holds no LUKS container"));
                return;
            }
        },
        (Target::Content, _) => {
            problems.push(format!("{at}: {h} holds no file system or swap"));
            return;
        }
    };
    match slot {
        Some(had) if !had.eq_ignore_ascii_case(uuid) => problems.push(format!(
            "{at}: the layout gives it UUID {had}, the host's configuration {uuid}"
        )),
        _ => *slot = Some(uuid.to_string()),
    }
}

fn find_luks(c: &mut Content) -> Option<&mut crate::devices::Luks> {
    match c {
        Content::Luks(l) => Some(l),
        _ => None,
    }
}

/// The content held by `h` (the LUKS container itself for a partition holding one; its
/// inside for `Holder::Luks`).
fn content_mut<'a>(d: &'a mut Devices, h: &Holder) -> Option<&'a mut Content> {
    fn inside<'a>(c: &'a mut Content, name: &str) -> Option<&'a mut Content> {
        match c {
            Content::Luks(l) => {
                if l.name == name {
                    Some(&mut l.content)
                } else {
                    inside(&mut l.content, name)
                }
            }
            _ => None,
        }
    }
    if let Holder::Luks { name } = h {
        for disk in &mut d.disks {
            match &mut disk.content {
                DiskContent::Gpt { partitions } => {
                    for p in partitions {
                        if let Some(c) = inside(&mut p.content, name) {
                            return Some(c);
                        }
                    }
                }
                DiskContent::Whole { content } => {
                    if let Some(c) = inside(content, name) {
                        return Some(c);
                    }
                }
            }
        }
        for m in &mut d.mdadm {
            if let Some(c) = inside(&mut m.content, name) {
                return Some(c);
            }
        }
        for vg in &mut d.lvm_vgs {
            for lv in &mut vg.lvs {
                if let Some(c) = inside(&mut lv.content, name) {
                    return Some(c);
                }
            }
        }
        return None;
    }
    match h {
        Holder::Partition { disk, partition } => d
            .disks
            .iter_mut()
            .filter(|x| &x.name == disk)
            .find_map(|x| match &mut x.content {
                DiskContent::Gpt { partitions } => partitions
                    .iter_mut()
                    .find(|p| &p.name == partition)
                    .map(|p| &mut p.content),
                DiskContent::Whole { .. } => None,
            }),
        Holder::Disk { disk } => {
            d.disks
                .iter_mut()
                .find(|x| &x.name == disk)
                .and_then(|x| match &mut x.content {
                    DiskContent::Whole { content } => Some(content),
                    DiskContent::Gpt { .. } => None,
                })
        }
        Holder::Md { name } => d
            .mdadm
            .iter_mut()
            .find(|m| &m.name == name)
            .map(|m| &mut m.content),
        Holder::Lv { vg, lv } => d
            .lvm_vgs
            .iter_mut()
            .find(|v| &v.name == vg)
            .and_then(|v| v.lvs.iter_mut().find(|l| &l.name == lv))
            .map(|l| &mut l.content),
        Holder::Luks { .. } => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DiskRules;

    fn layout() -> Devices {
        let json = r#"{"disk":{"main":{"type":"disk","content":{"type":"gpt","partitions":{
            "ESP":{"type":"EF00","size":"256M","content":{"type":"filesystem","format":"vfat","mountpoint":"/boot"}},
            "swap":{"size":"1G","content":{"type":"swap"}},
            "luks":{"size":"100%","content":{"type":"luks","name":"crypted",
                "content":{"type":"lvm_pv","vg":"pool"}}}}}}},
          "lvm_vg":{"pool":{"type":"lvm_vg","lvs":{
            "root":{"size":"20G","content":{"type":"filesystem","format":"ext4","mountpoint":"/"}},
            "home":{"size":"100%FREE","content":{"type":"btrfs","subvolumes":{
                "/home":{"mountpoint":"/home"}}}}}}}}"#;
        crate::disko::parse(json, "t", DiskRules::default())
            .unwrap()
            .devices
    }

    #[test]
    fn parses_fstab_lines_with_escapes_and_comments() {
        let e = parse("# comment\n\n/dev/x /mnt\\040point ext4 rw,noatime 0 2\nLABEL=y /a\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].mountpoint, "/mnt point");
        assert_eq!(e[0].options, ["rw", "noatime"]);
        assert_eq!(e[0].line, 3);
        assert_eq!(e[1].fs_type, "auto");
    }

    #[test]
    fn what_the_layout_makes_passes() {
        let mut d = layout();
        let fstab = parse(
            "/dev/disk/by-partlabel/disk-main-ESP /boot vfat umask=0077 0 2\n\
             /dev/pool/root / ext4 defaults 0 1\n\
             /dev/mapper/pool-home /home btrfs subvol=/home 0 0\n\
             /dev/disk/by-partlabel/disk-main-swap none swap defaults 0 0\n\
             tmpfs /tmp tmpfs mode=1777 0 0\n",
        );
        let luks = [(
            "crypted".to_string(),
            "/dev/disk/by-partlabel/disk-main-luks".to_string(),
        )];
        reconcile(&mut d, &fstab, &luks).unwrap();
        assert_eq!(d, layout(), "nothing to record");
    }

    #[test]
    fn by_uuid_is_honoured_by_making_that_uuid() {
        let mut d = layout();
        let fstab = parse(
            "/dev/disk/by-uuid/1A2B-3C4D /boot vfat defaults 0 2\n\
             /dev/disk/by-uuid/5c3a9f1e-7d2b-4e8a-9c61-0b7f3e2a4d11 / ext4 defaults 0 1\n\
             UUID=0b1c2d3e-0000-4000-8000-000000000001 none swap\n",
        );
        let luks = [(
            "crypted".to_string(),
            "/dev/disk/by-uuid/0b1c2d3e-0000-4000-8000-000000000002".to_string(),
        )];
        reconcile(&mut d, &fstab, &luks).unwrap();
        let root = d
            .mounts()
            .into_iter()
            .find(|m| m.mountpoint == "/")
            .unwrap();
        assert_eq!(root.holder.as_ref().unwrap().to_string(), "/dev/pool/root");
        let mut uuids = Vec::new();
        for (_, c) in d.contents() {
            match c {
                Content::Filesystem(f) => uuids.extend(f.uuid.clone()),
                Content::Swap(s) => uuids.extend(s.uuid.clone()),
                Content::Luks(l) => uuids.extend(l.uuid.clone()),
                _ => {}
            }
        }
        uuids.sort();
        assert_eq!(
            uuids,
            [
                "0b1c2d3e-0000-4000-8000-000000000001",
                "0b1c2d3e-0000-4000-8000-000000000002",
                "1A2B-3C4D",
                "5c3a9f1e-7d2b-4e8a-9c61-0b7f3e2a4d11"
            ]
        );
        // A FAT volume ID cannot be an ext4 UUID.
        let mut d = layout();
        let err = reconcile(&mut d, &parse("UUID=1A2B-3C4D / ext4\n"), &[]).unwrap_err();
        assert!(err[0].contains("cannot be the UUID of the ext4"), "{err:?}");
    }

    #[test]
    fn mismatches_name_the_line_mount_spec_and_what_the_layout_makes() {
        let mut d = layout();
        let fstab = parse(
            "/dev/disk/by-label/nixos / ext4 defaults 0 1\n\
             /dev/disk/by-partlabel/disk-main-ESP /boot ext4 defaults 0 2\n\
             /dev/mapper/pool-home /home btrfs subvol=@home\n\
             /dev/disk/by-partlabel/data /data ext4\n\
             /dev/disk/by-label/swap none swap\n",
        );
        let luks = [("cryptroot".to_string(), "/dev/sda2".to_string())];
        let err = reconcile(&mut d, &fstab, &luks).unwrap_err();
        let text = err.join("\n");
        assert_eq!(err.len(), 6, "{text}");
        assert!(
            text.contains("fstab line 1: / (/dev/disk/by-label/nixos): the layout puts / on /dev/pool/root, which is named /dev/pool/root or /dev/mapper/pool-root"),
            "{text}"
        );
        assert!(
            text.contains("fstab line 2: /boot (/dev/disk/by-partlabel/disk-main-ESP): the fstab says ext4, the layout makes vfat"),
            "{text}"
        );
        assert!(
            text.contains("the fstab mounts subvolume @home, the layout home"),
            "{text}"
        );
        assert!(
            text.contains("the layout mounts nothing at /data"),
            "{text}"
        );
        assert!(
            text.contains(
                "makes no swap by that name (it makes: /dev/disk/by-partlabel/disk-main-swap"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "LUKS device cryptroot (/dev/sda2): the layout has no LUKS device named cryptroot"
            ),
            "{text}"
        );
    }
}
