//! disko layouts: the `disko.devices` tree as `nix eval --json` prints it (disko's internal
//! attributes, whose names start with `_`, left out), read into a [`Devices`] graph. Every
//! refusal names the place in the tree (`disk.main.content.partitions.luks.content`) and
//! what to do instead. Options this reader does not know are passed over (disko adds options
//! often, and `nix eval` prints every default); options it knows and cannot honour (ZFS,
//! bcachefs, FIDO2 enrolment, thin or RAID logical volumes…) are refused, never ignored.

use serde_json::{Map, Value};

use crate::devices::{
    check_uuid, Content, Devices, Disk, DiskContent, Extent, Fs, Layout, LayoutSource,
    LogicalVolume, Luks, LvSize, MdArray, Nodev, Partition, PercentOf, Subvol, Swap, Tpm2,
    VolumeGroup,
};
use crate::profile::{DiskRules, Filesystem};

mod values;
pub use values::type_guid;
use values::{
    bytes, expect_type, is_empty, object, opt_str, str_field, str_list, type_of, visible,
};

/// A place in the disko tree and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskoError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for DiskoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disko.devices.{}: {}", self.path, self.message)
    }
}

type R<T> = Result<T, DiskoError>;

fn err<T>(path: &str, message: impl Into<String>) -> R<T> {
    Err(DiskoError {
        path: path.to_string(),
        message: message.into(),
    })
}

/// Reads a `disko.devices` JSON tree (`name` says where it came from) into a layout whose
/// disks, when the machine does not have the devices it names, are chosen by `rules`.
pub fn parse(json: &str, name: &str, rules: DiskRules) -> R<Layout> {
    let root: Value = serde_json::from_str(json).map_err(|e| DiskoError {
        path: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    let devices = devices(&root)?;
    devices.check().map_err(|message| DiskoError {
        path: String::new(),
        message,
    })?;
    Ok(Layout {
        name: name.to_string(),
        description: format!("disko layout {name}"),
        source: LayoutSource::Disko,
        rules,
        devices,
    })
}

/// The graph from the tree's top: `disk`, `mdadm`, `lvm_vg`, `nodev`.
pub fn devices(root: &Value) -> R<Devices> {
    let top = object(root, "")?;
    let mut d = Devices::default();
    for (key, v) in visible(top) {
        match key {
            "disk" => {
                for (name, disk) in visible(object(v, "disk")?) {
                    d.disks.push(parse_disk(name, disk, &format!("disk.{name}"))?);
                }
            }
            "mdadm" => {
                for (name, md) in visible(object(v, "mdadm")?) {
                    d.mdadm.push(parse_md(name, md, &format!("mdadm.{name}"))?);
                }
            }
            "lvm_vg" => {
                for (name, vg) in visible(object(v, "lvm_vg")?) {
                    d.lvm_vgs.push(parse_vg(name, vg, &format!("lvm_vg.{name}"))?);
                }
            }
            "nodev" => {
                for (name, n) in visible(object(v, "nodev")?) {
                    d.nodev.push(parse_nodev(name, n, &format!("nodev.\"{name}\""))?);
                }
            }
            "zpool" | "zfs" if !is_empty(v) => {
                return err(key, "ZFS is not supported: the installer environment carries no ZFS module or tools; use LUKS, LVM or mdadm, or install this host another way")
            }
            "bcachefs" | "bcachefs_filesystems" if !is_empty(v) => {
                return err(key, "bcachefs is not supported: the installer environment's kernel has no bcachefs")
            }
            "zpool" | "zfs" | "bcachefs" | "bcachefs_filesystems" => {}
            other => return err(other, "is not a kind of device this installer knows (disk, mdadm, lvm_vg, nodev)"),
        }
    }
    d.disks.sort_by(|a, b| a.name.cmp(&b.name));
    if d.disks.is_empty() {
        return err("disk", "no disk is defined");
    }
    Ok(d)
}

fn parse_disk(name: &str, v: &Value, path: &str) -> R<Disk> {
    let o = object(v, path)?;
    expect_type(o, path, &["disk"])?;
    let device = opt_str(o, "device", path)?.filter(|d| !d.is_empty());
    let c = o
        .get("content")
        .filter(|c| !c.is_null())
        .ok_or_else(|| DiskoError {
            path: path.into(),
            message: "has no content".into(),
        })?;
    let cpath = format!("{path}.content");
    let content = match type_of(c, &cpath)? {
        "gpt" => DiskContent::Gpt {
            partitions: parse_gpt(name, c, &cpath)?,
        },
        "table" => return err(&cpath, "the old `table` type (MBR/GPT by list) is not supported; use `type = \"gpt\"` with named partitions"),
        _ => DiskContent::Whole {
            content: parse_content(c, &cpath)?,
        },
    };
    Ok(Disk {
        name: name.to_string(),
        device,
        content,
    })
}

fn parse_gpt(disk: &str, v: &Value, path: &str) -> R<Vec<Partition>> {
    let o = object(v, path)?;
    let mut parts = Vec::new();
    let ppath = format!("{path}.partitions");
    let empty = Map::new();
    let partitions = match o.get("partitions") {
        Some(p) => object(p, &ppath)?,
        None => &empty,
    };
    for (key, p) in visible(partitions) {
        let at = format!("{ppath}.{key}");
        let po = object(p, &at)?;
        let name = opt_str(po, "name", &at)?.unwrap_or_else(|| key.to_string());
        let label = opt_str(po, "label", &at)?.unwrap_or_else(|| format!("disk-{disk}-{name}"));
        let type_guid = type_guid(&opt_str(po, "type", &at)?.unwrap_or_else(|| "8300".into()))
            .map_err(|m| DiskoError {
                path: format!("{at}.type"),
                message: m,
            })?;
        let size = opt_str(po, "size", &at)?.unwrap_or_else(|| "0".into());
        let end = opt_str(po, "end", &at)?;
        let extent = if size == "100%" {
            Extent::ToEnd { reserve: 0 }
        } else if size != "0" {
            Extent::Bytes(bytes(&size, &format!("{at}.size"))?)
        } else {
            match end.as_deref() {
                Some(e) if e.starts_with('+') => {
                    Extent::Bytes(bytes(&e[1..], &format!("{at}.end"))?)
                }
                Some(e) if e.starts_with('-') => Extent::ToEnd {
                    reserve: if &e[1..] == "0" {
                        0
                    } else {
                        bytes(&e[1..], &format!("{at}.end"))?
                    },
                },
                Some(e) if !e.is_empty() && e != "0" => {
                    Extent::EndAt(bytes(e, &format!("{at}.end"))?)
                }
                _ => return err(&at, "has no size: give size (\"512M\", \"100%\") or end (\"+512M\", \"-8G\", \"128M\")"),
            }
        };
        // disko prints `end` derived from `size`; an explicit negative end with a fixed size
        // is its own request: from the size's start to that far before the disk's end.
        let extent = match (extent, end.as_deref()) {
            (Extent::Bytes(_), Some(e)) if e.starts_with('-') && e != "-0" && size != "0" => {
                return err(
                    &at,
                    "both a size and an end relative to the disk's end: give one",
                )
            }
            (x, _) => x,
        };
        let start = match opt_str(po, "start", &at)?.as_deref() {
            None | Some("0") | Some("") => None,
            Some(s) => Some(bytes(s, &format!("{at}.start"))?),
        };
        let priority = match po.get("priority") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(1000),
            Some(Value::Null) | None => {
                if size == "100%" {
                    9001
                } else {
                    1000
                }
            }
            Some(_) => return err(&format!("{at}.priority"), "is not a number"),
        };
        if matches!(po.get("hybrid"), Some(h) if !h.is_null()) {
            return err(&format!("{at}.hybrid"), "hybrid MBRs are not supported");
        }
        let content = match po.get("content") {
            None | Some(Value::Null) => Content::None,
            Some(c) => parse_content(c, &format!("{at}.content"))?,
        };
        parts.push((
            priority,
            Partition {
                name,
                label,
                type_guid,
                start,
                size: extent,
                content,
            },
        ));
    }
    parts.sort_by(|(pa, a), (pb, b)| pa.cmp(pb).then_with(|| a.name.cmp(&b.name)));
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

fn parse_content(v: &Value, path: &str) -> R<Content> {
    let o = object(v, path)?;
    Ok(match type_of(v, path)? {
        "filesystem" => {
            let format = match str_field(o, "format", path)?.as_str() {
                "vfat" | "fat32" => Filesystem::Vfat,
                "ext4" => Filesystem::Ext4,
                "xfs" => Filesystem::Xfs,
                "btrfs" => Filesystem::Btrfs,
                other => {
                    return err(
                        &format!("{path}.format"),
                        format!("file system {other:?} is not supported (vfat, ext4, xfs, btrfs)"),
                    )
                }
            };
            Content::Filesystem(fs(o, format, path)?)
        }
        "btrfs" => {
            let mut f = fs(o, Filesystem::Btrfs, path)?;
            let spath = format!("{path}.subvolumes");
            if let Some(subs) = o.get("subvolumes").filter(|s| !s.is_null()) {
                for (key, sv) in visible(object(subs, &spath)?) {
                    let at = format!("{spath}.\"{key}\"");
                    let so = object(sv, &at)?;
                    if matches!(so.get("swap"), Some(s) if !is_empty(s)) {
                        return err(&format!("{at}.swap"), "swap files in subvolumes are not supported");
                    }
                    f.subvolumes.push(Subvol {
                        name: key.trim_start_matches('/').to_string(),
                        mountpoint: opt_str(so, "mountpoint", &at)?,
                        mount_options: str_list(so, "mountOptions", &at)?,
                    });
                }
            }
            f.subvolumes.sort_by(|a, b| a.name.cmp(&b.name));
            Content::Filesystem(f)
        }
        "swap" => {
            let args = str_list(o, "extraArgs", path)?;
            let (label, uuid, rest) = label_and_uuid(&args, Filesystem::Swap);
            if !rest.is_empty() {
                return err(&format!("{path}.extraArgs"), "mkswap takes no other arguments here than -L and -U");
            }
            Content::Swap(Swap { label, uuid })
        }
        "luks" => {
            let settings = match o.get("settings") {
                Some(s) if !s.is_null() => object(s, &format!("{path}.settings"))?.clone(),
                _ => Map::new(),
            };
            if o.get("enrollFido2") == Some(&Value::Bool(true)) {
                return err(&format!("{path}.enrollFido2"), "FIDO2 enrolment is not supported yet; unlock with the TPM2 (settings.crypttabExtraOpts = [\"tpm2-device=auto\"]), a key file or a passphrase");
            }
            if matches!(o.get("additionalKeyFiles"), Some(k) if !is_empty(k)) {
                return err(&format!("{path}.additionalKeyFiles"), "additional key files are not supported; give one key");
            }
            let key_file = settings
                .get("keyFile")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(opt_str(o, "keyFile", path)?);
            let inner = match o.get("content") {
                None | Some(Value::Null) => Content::None,
                Some(c) => parse_content(c, &format!("{path}.content"))?,
            };
            let extra_format_args = str_list(o, "extraFormatArgs", path)?;
            let uuid = flag_value(&extra_format_args, "--uuid");
            if let Some(u) = &uuid {
                check_uuid(u).map_err(|m| DiskoError {
                    path: format!("{path}.extraFormatArgs"),
                    message: m,
                })?;
            }
            let tpm2 = tpm2_of(&settings, &format!("{path}.settings"))?;
            Content::Luks(Box::new(Luks {
                name: str_field(o, "name", path)?,
                tpm2,
                key_file,
                allow_discards: settings.get("allowDiscards") == Some(&Value::Bool(true)),
                extra_format_args: without_flag(&extra_format_args, "--uuid"),
                extra_open_args: str_list(o, "extraOpenArgs", path)?,
                uuid,
                content: inner,
            }))
        }
        "lvm_pv" => Content::LvmPv {
            vg: str_field(o, "vg", path)?,
        },
        "mdraid" => Content::Mdraid {
            name: str_field(o, "name", path)?,
        },
        "gpt" | "table" => {
            return err(path, "a partition table is supported only on a disk (not on a partition, an array or a volume)")
        }
        "zfs" => return err(path, "ZFS is not supported: the installer environment carries no ZFS module or tools"),
        "bcachefs" => return err(path, "bcachefs is not supported: the installer environment's kernel has no bcachefs"),
        other => {
            return err(
                path,
                format!("content type {other:?} is not supported (filesystem, btrfs, swap, luks, lvm_pv, mdraid)"),
            )
        }
    })
}

/// A file system's common options, its label and UUID taken out of `extraArgs`.
/// A LUKS volume's TPM2 unlock, from the options its configuration gives systemd-cryptsetup
/// (`settings.crypttabExtraOpts`, as NixOS's `boot.initrd.luks.devices.<name>` takes them):
/// `tpm2-device=auto` (or a device) asks for it, `tpm2-pcrs=7+11` names the PCRs (7 if not).
/// A FIDO2 or PKCS#11 unlock is refused rather than installed without it.
fn tpm2_of(settings: &Map<String, Value>, settings_path: &str) -> R<Option<Tpm2>> {
    let opts = str_list(settings, "crypttabExtraOpts", settings_path)?;
    let path = &format!("{settings_path}.crypttabExtraOpts");
    let mut device = false;
    let mut pcrs = None;
    for o in &opts {
        let (key, value) = o.split_once('=').unwrap_or((o, ""));
        match key {
            "tpm2-device" => device = true,
            "tpm2-pcrs" => {
                let list = value
                    .split(['+', ','])
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse::<u8>().ok().filter(|n| *n < 24))
                    .collect::<Option<Vec<u8>>>();
                match list {
                    Some(l) if !l.is_empty() => pcrs = Some(l),
                    _ => return err(path, format!("{o:?}: PCRs are numbers 0 to 23 joined by + (tpm2-pcrs=7+11); PCR names are not supported")),
                }
            }
            "fido2-device" | "pkcs11-uri" => {
                return err(path, format!("{o:?}: FIDO2 and PKCS#11 unlocking is not enrolled by the installer yet; unlock with the TPM2 (tpm2-device=auto), a key file or a passphrase"))
            }
            _ => {}
        }
    }
    match (device, pcrs) {
        (true, pcrs) => Ok(Some(Tpm2 {
            pcrs: pcrs.unwrap_or_else(|| vec![7]),
        })),
        (false, Some(_)) => err(
            path,
            "tpm2-pcrs without tpm2-device=auto: say which TPM unlocks it",
        ),
        (false, None) => Ok(None),
    }
}

fn fs(o: &Map<String, Value>, format: Filesystem, path: &str) -> R<Fs> {
    let args = str_list(o, "extraArgs", path)?;
    let (label, uuid, extra_args) = label_and_uuid(&args, format);
    if let Some(u) = &uuid {
        check_uuid(u).map_err(|m| DiskoError {
            path: format!("{path}.extraArgs"),
            message: m,
        })?;
    }
    Ok(Fs {
        format,
        mountpoint: opt_str(o, "mountpoint", path)?,
        mount_options: str_list(o, "mountOptions", path)?,
        subvolumes: Vec::new(),
        label,
        uuid,
        extra_args,
    })
}

/// mkfs's label and UUID options, as disko users write them in `extraArgs` (`-L nixos`,
/// `-n ESP` for vfat, `-U …`, `-i XXXXXXXX` for a vfat volume ID), and the other arguments.
fn label_and_uuid(
    args: &[String],
    format: Filesystem,
) -> (Option<String>, Option<String>, Vec<String>) {
    let label_flag = if format == Filesystem::Vfat {
        "-n"
    } else {
        "-L"
    };
    let uuid_flag = if format == Filesystem::Vfat {
        "-i"
    } else {
        "-U"
    };
    let label = flag_value(args, label_flag);
    let uuid = flag_value(args, uuid_flag).map(|u| match format {
        // mkfs.fat -i takes the volume ID as 8 hex digits; it shows as XXXX-XXXX.
        Filesystem::Vfat if u.len() == 8 => format!("{}-{}", &u[..4], &u[4..]).to_uppercase(),
        _ => u,
    });
    let rest = without_flag(&without_flag(args, label_flag), uuid_flag);
    (label, uuid, rest)
}

/// The value after `flag` in `args` (`--uuid X` or `--uuid=X`).
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_string)
        }
    })
}

/// `args` without `flag` and its value.
fn without_flag(args: &[String], flag: &str) -> Vec<String> {
    let eq = format!("{flag}=");
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a == flag {
            skip = true;
        } else if !a.starts_with(&eq) {
            out.push(a.clone());
        }
    }
    out
}

fn parse_md(name: &str, v: &Value, path: &str) -> R<MdArray> {
    let o = object(v, path)?;
    expect_type(o, path, &["mdadm"])?;
    let level = match o.get("level") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0) as u32,
        _ => return err(&format!("{path}.level"), "needs a RAID level (0, 1, 5…)"),
    };
    let metadata = match o.get("metadata") {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return err(&format!("{path}.metadata"), "is not a version"),
    };
    let content = match o.get("content") {
        None | Some(Value::Null) => Content::None,
        Some(c) => {
            let cpath = format!("{path}.content");
            if type_of(c, &cpath)? == "gpt" {
                return err(&cpath, "partitions on an md array are not supported; put the file system (or LUKS, or a PV) on the array itself");
            }
            parse_content(c, &cpath)?
        }
    };
    Ok(MdArray {
        name: opt_str(o, "name", path)?.unwrap_or_else(|| name.to_string()),
        level,
        metadata,
        content,
    })
}

fn parse_vg(name: &str, v: &Value, path: &str) -> R<VolumeGroup> {
    let o = object(v, path)?;
    expect_type(o, path, &["lvm_vg"])?;
    let lpath = format!("{path}.lvs");
    let mut lvs = Vec::new();
    if let Some(l) = o.get("lvs").filter(|l| !l.is_null()) {
        for (key, lv) in visible(object(l, &lpath)?) {
            let at = format!("{lpath}.{key}");
            let lo = object(lv, &at)?;
            if matches!(lo.get("lvm_type"), Some(t) if !t.is_null()) {
                return err(&format!("{at}.lvm_type"), "thin pools and mirrored or RAID logical volumes are not supported; use plain logical volumes (over mdadm for redundancy)");
            }
            if matches!(lo.get("extraArgs"), Some(a) if !is_empty(a)) {
                return err(
                    &format!("{at}.extraArgs"),
                    "extra lvcreate arguments are not supported",
                );
            }
            let size_text = str_field(lo, "size", &at)?;
            let size = lv_size(&size_text, &format!("{at}.size"))?;
            let priority = match lo.get("priority") {
                Some(Value::Number(n)) => n.as_i64().unwrap_or(1000),
                _ if size_text.contains("100%") => 9001,
                _ => 1000,
            };
            let content = match lo.get("content") {
                None | Some(Value::Null) => Content::None,
                Some(c) => parse_content(c, &format!("{at}.content"))?,
            };
            let lv_name = opt_str(lo, "name", &at)?.unwrap_or_else(|| key.to_string());
            lvs.push((
                priority,
                LogicalVolume {
                    name: lv_name,
                    size,
                    content,
                },
            ));
        }
    }
    lvs.sort_by(|(pa, a), (pb, b)| pa.cmp(pb).then_with(|| a.name.cmp(&b.name)));
    Ok(VolumeGroup {
        name: opt_str(o, "name", path)?.unwrap_or_else(|| name.to_string()),
        lvs: lvs.into_iter().map(|(_, l)| l).collect(),
    })
}

fn parse_nodev(key: &str, v: &Value, path: &str) -> R<Nodev> {
    let o = object(v, path)?;
    Ok(Nodev {
        mountpoint: opt_str(o, "mountpoint", path)?.unwrap_or_else(|| key.to_string()),
        fs_type: opt_str(o, "fsType", path)?.unwrap_or_else(|| "tmpfs".into()),
        mount_options: str_list(o, "mountOptions", path)?,
    })
}

/// An LVM size: `100G`, `512M`, `N%VG`, `N%FREE`, `N%PVS`, `N%` (of the volume group).
fn lv_size(s: &str, path: &str) -> R<LvSize> {
    if let Some((n, of)) = s.split_once('%') {
        let percent: u32 = n.trim().parse().map_err(|_| DiskoError {
            path: path.into(),
            message: format!("{s:?} is not a percentage"),
        })?;
        let of = match of.to_ascii_uppercase().as_str() {
            "" | "VG" => PercentOf::Vg,
            "FREE" => PercentOf::Free,
            "PVS" => PercentOf::Pvs,
            other => {
                return err(
                    path,
                    format!("{s:?}: %{other} is not supported (%VG, %FREE, %PVS)"),
                )
            }
        };
        return Ok(LvSize::Percent { percent, of });
    }
    Ok(LvSize::Bytes(bytes(s, path)?))
}
