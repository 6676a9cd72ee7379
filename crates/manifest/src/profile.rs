//! Installer profiles: declarative disk layouts (partitions, file systems, mounts) and the
//! rules that pick the target disk, in the spirit of systemd-repart and disko. A profile is
//! resolved at build time and embedded in the manifest, so a stick is self-contained.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::devices::{
    Content, Devices, Disk, DiskContent, Extent, Fs, Layout, LayoutSource,
    Partition as DevPartition, Subvol, Swap,
};
use crate::location::{from_toml, LocatedError};
use util::size::{self, human, MIB};

/// The profile file format version this build reads.
pub const PROFILE_VERSION: u32 = 1;

/// A resolved profile: what the manifest carries and the installer executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The profile's name (its file stem).
    pub name: String,
    pub description: String,
    pub disk: DiskRules,
    pub partitions: Vec<Partition>,
}

/// How the target disk is chosen when the host does not name one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskRules {
    pub select: Select,
    /// Disks smaller than this are never candidates.
    pub min_size: u64,
    pub allow_removable: bool,
    /// If not empty, only disks on these transports (nvme, sata, virtio, scsi, usb, mmc).
    pub transports: Vec<String>,
    /// If set, only disks whose model contains this text (case-insensitive).
    pub model: Option<String>,
}

/// Any disk that is not removable, the largest first.
impl Default for DiskRules {
    fn default() -> DiskRules {
        DiskRules {
            select: Select::Largest,
            min_size: 0,
            allow_removable: false,
            transports: Vec::new(),
            model: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    Largest,
    Smallest,
}

/// One GPT partition and what goes on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// GPT partition name (label), also the file system label.
    pub label: String,
    /// The partition type GUID (Discoverable Partitions Specification where one fits).
    pub type_guid: String,
    pub size: PartSize,
    pub format: Filesystem,
    /// Where it is mounted in the installed system (none for swap and unformatted).
    pub mount: Option<String>,
    pub mount_options: Vec<String>,
    /// btrfs only: subvolumes and where each is mounted.
    pub subvolumes: Vec<Subvolume>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filesystem {
    Vfat,
    Ext4,
    Btrfs,
    Xfs,
    Swap,
    None,
}

impl Filesystem {
    /// Its name as profiles, plans and reports write it (`-` for an unformatted partition).
    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Vfat => "vfat",
            Filesystem::Ext4 => "ext4",
            Filesystem::Btrfs => "btrfs",
            Filesystem::Xfs => "xfs",
            Filesystem::Swap => "swap",
            Filesystem::None => "-",
        }
    }

    /// The kernel's file system type, for those that are mounted.
    pub fn fs_type(self) -> Option<&'static str> {
        match self {
            Filesystem::Swap | Filesystem::None => None,
            f => Some(f.name()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subvolume {
    pub name: String,
    pub mount: String,
}

/// A partition size: a fixed number of bytes, or whatever is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartSize {
    Bytes(u64),
    Rest,
}

impl fmt::Display for PartSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartSize::Bytes(b) => f.write_str(&human(*b)),
            PartSize::Rest => f.write_str("rest of the disk"),
        }
    }
}

/// The EFI system partition's type GUID (UEFI spec), for the targets' ESPs and the sticks'.
pub const ESP_TYPE_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// Named partition types: the Discoverable Partitions Specification's GUIDs for x86-64.
pub const PARTITION_TYPES: &[(&str, &str)] = &[
    ("esp", ESP_TYPE_GUID),
    ("xbootldr", "BC13C2FF-59E6-4262-A352-B275FD6F7172"),
    ("root", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
    ("usr", "8484680C-9521-48C6-9C11-B0720656F69E"),
    ("home", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"),
    ("srv", "3B8F8425-20E0-4F3B-907F-1A25A76F98E8"),
    ("var", "4D21B016-B534-45C2-A9FB-5C16E091FD2D"),
    ("swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
    ("linux", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
];

// The file as written: strict, kebab-case, sizes as text.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ProfileFile {
    version: toml::Spanned<u32>,
    description: Option<String>,
    #[serde(default)]
    disk: DiskFile,
    #[serde(default)]
    partition: Vec<toml::Spanned<PartitionFile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DiskFile {
    select: Option<Select>,
    min_size: Option<toml::Spanned<String>>,
    #[serde(default)]
    allow_removable: bool,
    #[serde(default)]
    transports: Vec<String>,
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PartitionFile {
    label: toml::Spanned<String>,
    #[serde(rename = "type")]
    kind: toml::Spanned<String>,
    size: toml::Spanned<String>,
    format: Filesystem,
    mount: Option<toml::Spanned<String>>,
    #[serde(default)]
    mount_options: Vec<String>,
    #[serde(default)]
    subvolumes: Vec<Subvolume>,
}

impl Profile {
    /// Parses and validates a profile file; `name` is what hosts.toml calls it.
    pub fn parse(name: &str, file: &Path, text: &str) -> Result<Profile, LocatedError> {
        let raw: ProfileFile = toml::from_str(text).map_err(|e| from_toml(file, text, &e))?;
        let at =
            |span: std::ops::Range<usize>, msg: String| LocatedError::at(file, text, span, msg);
        if *raw.version.get_ref() != PROFILE_VERSION {
            return Err(at(
                raw.version.span(),
                format!(
                    "profile format version {} is not supported; this mkinstaller reads version {PROFILE_VERSION}",
                    raw.version.get_ref()
                ),
            ));
        }
        let min_size = match &raw.disk.min_size {
            Some(s) => size::parse(s.get_ref()).map_err(|e| at(s.span(), e))?,
            None => 0,
        };
        let mut partitions = Vec::new();
        let mut labels = BTreeSet::new();
        let mut mounts = BTreeSet::new();
        let mut rest_seen = false;
        for p in &raw.partition {
            let span = p.span();
            let p = p.get_ref();
            let label = p.label.get_ref().clone();
            check_label(&label).map_err(|e| at(p.label.span(), e))?;
            if !labels.insert(label.clone()) {
                return Err(at(
                    p.label.span(),
                    format!("two partitions are labelled {label:?}"),
                ));
            }
            let kind = p.kind.get_ref();
            let type_guid = PARTITION_TYPES
                .iter()
                .find(|(n, _)| n == kind)
                .map(|(_, g)| g.to_string())
                .or_else(|| is_guid(kind).then(|| kind.to_uppercase()))
                .ok_or_else(|| {
                    let names: Vec<&str> = PARTITION_TYPES.iter().map(|(n, _)| *n).collect();
                    at(
                        p.kind.span(),
                        format!(
                            "unknown partition type {kind:?}: use one of {} or a GUID",
                            names.join(", ")
                        ),
                    )
                })?;
            let size = if p.size.get_ref() == "rest" {
                if rest_seen {
                    return Err(at(
                        p.size.span(),
                        "only one partition can take the rest of the disk".into(),
                    ));
                }
                rest_seen = true;
                PartSize::Rest
            } else {
                let bytes = size::parse(p.size.get_ref()).map_err(|e| at(p.size.span(), e))?;
                // Partitions start and end on MiB boundaries.
                PartSize::Bytes(bytes.div_ceil(MIB) * MIB)
            };
            let mount = p.mount.as_ref().map(|m| m.get_ref().clone());
            let mut claim = |m: &str, span: std::ops::Range<usize>| {
                check_mount_point(m).map_err(|e| at(span.clone(), e))?;
                if !mounts.insert(m.to_string()) {
                    return Err(at(span, format!("two file systems are mounted at {m}")));
                }
                Ok(())
            };
            match (p.format, &p.mount) {
                (Filesystem::Swap | Filesystem::None, Some(m)) => {
                    return Err(at(
                        m.span(),
                        format!("a {:?} partition cannot be mounted", p.format).to_lowercase(),
                    ))
                }
                (_, Some(m)) => claim(m.get_ref(), m.span())?,
                _ => {}
            }
            if !p.subvolumes.is_empty() {
                if p.format != Filesystem::Btrfs {
                    return Err(at(
                        span,
                        format!("partition {label:?} has subvolumes but is not btrfs"),
                    ));
                }
                if mount.is_some() {
                    return Err(at(span, format!("partition {label:?} has subvolumes: mount the subvolumes, not the partition")));
                }
                for s in &p.subvolumes {
                    check_subvolume_name(&s.name).map_err(|e| at(span.clone(), e))?;
                    claim(&s.mount, span.clone())?;
                }
            }
            for o in &p.mount_options {
                check_mount_option(o).map_err(|e| at(span.clone(), e))?;
            }
            partitions.push(Partition {
                label,
                type_guid,
                size,
                format: p.format,
                mount,
                mount_options: p.mount_options.clone(),
                subvolumes: p.subvolumes.clone(),
            });
        }
        let whole = |msg: &str| LocatedError::whole(file, msg.to_string());
        if !mounts.contains("/") {
            return Err(whole("no partition or subvolume is mounted at /"));
        }
        let esp = partitions
            .iter()
            .find(|p| p.type_guid == PARTITION_TYPES[0].1)
            .ok_or_else(|| whole("a UEFI profile needs a partition of type \"esp\""))?;
        if esp.format != Filesystem::Vfat || esp.mount.as_deref() != Some("/boot") {
            return Err(whole("the ESP must be vfat and mounted at /boot (where systemd-boot and NixOS expect it)"));
        }
        Ok(Profile {
            name: name.to_string(),
            description: raw.description.unwrap_or_default(),
            disk: DiskRules {
                select: raw.disk.select.unwrap_or(Select::Largest),
                min_size,
                allow_removable: raw.disk.allow_removable,
                transports: raw.disk.transports,
                model: raw.disk.model,
            },
            partitions,
        })
    }

    /// The profile as a device graph: one disk (`main`, chosen by the profile's rules) with
    /// a GPT whose partitions are named and labelled as the profile says, each file system
    /// labelled as its partition.
    pub fn to_layout(&self) -> Layout {
        let partitions = self
            .partitions
            .iter()
            .map(|p| {
                let content = match p.format {
                    Filesystem::Swap => Content::Swap(Swap {
                        label: Some(p.label.clone()),
                        uuid: None,
                    }),
                    Filesystem::None => Content::None,
                    format => Content::Filesystem(Fs {
                        format,
                        mountpoint: p.mount.clone(),
                        mount_options: p.mount_options.clone(),
                        subvolumes: p
                            .subvolumes
                            .iter()
                            .map(|s| Subvol {
                                name: s.name.clone(),
                                mountpoint: Some(s.mount.clone()),
                                mount_options: p.mount_options.clone(),
                            })
                            .collect(),
                        label: Some(p.label.clone()),
                        uuid: None,
                        extra_args: Vec::new(),
                    }),
                };
                DevPartition {
                    name: p.label.clone(),
                    label: p.label.clone(),
                    type_guid: p.type_guid.clone(),
                    start: None,
                    size: match p.size {
                        PartSize::Bytes(b) => Extent::Bytes(b),
                        PartSize::Rest => Extent::ToEnd { reserve: 0 },
                    },
                    content,
                }
            })
            .collect();
        Layout {
            name: self.name.clone(),
            description: self.description.clone(),
            source: LayoutSource::Profile,
            rules: self.disk.clone(),
            devices: Devices {
                disks: vec![Disk {
                    name: "main".into(),
                    device: None,
                    content: DiskContent::Gpt { partitions },
                }],
                ..Devices::default()
            },
        }
    }
}

/// A GPT partition name that is also a file system label: 1 to 36 printable ASCII characters.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty()
        || label.len() > 36
        || !label.chars().all(|c| c.is_ascii_graphic() || c == ' ')
    {
        return Err(format!(
            "partition label {label:?} must be 1 to 36 printable ASCII characters"
        ));
    }
    Ok(())
}

/// An absolute mount point made of plain components: never `..` or `.`, which would take a
/// mount (and what is written under it) out of the installed system's root.
pub fn check_mount_point(m: &str) -> Result<(), String> {
    let plain = m
        .split('/')
        .skip(1)
        .all(|c| c != ".." && c != "." && !c.contains('\0'));
    if !m.starts_with('/') || !plain || (m != "/" && m.split('/').skip(1).any(str::is_empty)) {
        return Err(format!(
            "mount point {m:?} must be an absolute path of plain components (no `.`, `..` or `//`)"
        ));
    }
    Ok(())
}

/// A btrfs subvolume name: one plain path component.
pub fn check_subvolume_name(name: &str) -> Result<(), String> {
    let plain = name
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\0', ',']));
    if !plain {
        return Err(format!(
            "subvolume name {name:?} must be a relative path of plain components (no `.`, `..`, `//`, `,`)"
        ));
    }
    Ok(())
}

/// One mount option: no comma (it would smuggle in another option) and nothing unprintable.
pub fn check_mount_option(o: &str) -> Result<(), String> {
    if o.is_empty() || !o.chars().all(|c| c.is_ascii_graphic() && c != ',') {
        return Err(format!(
            "mount option {o:?} must be one printable option without a comma"
        ));
    }
    Ok(())
}

pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT4: &str = r#"
version = 1
description = "UEFI, ext4 root"
[disk]
select = "largest"
min-size = "8G"
[[partition]]
label = "ESP"
type = "esp"
size = "1G"
format = "vfat"
mount = "/boot"
mount-options = ["umask=0077"]
[[partition]]
label = "root"
type = "root"
size = "rest"
format = "ext4"
mount = "/"
"#;

    fn parse(text: &str) -> Result<Profile, LocatedError> {
        Profile::parse("t", Path::new("t.toml"), text)
    }

    #[test]
    fn parses_and_resolves() {
        let p = parse(EXT4).unwrap();
        assert_eq!(p.partitions.len(), 2);
        assert_eq!(
            p.partitions[0].type_guid,
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!(p.partitions[1].size, PartSize::Rest);
        assert_eq!(p.disk.min_size, 8 << 30);
        // As a device graph: one disk, the partitions named and labelled as the profile
        // says, the store on the root file system.
        let layout = p.to_layout();
        layout.devices.check().unwrap();
        let store = layout.devices.store_mount().unwrap();
        assert_eq!(store.mountpoint, "/");
        assert_eq!(
            store.holder,
            Some(crate::devices::Holder::Partition {
                disk: "main".into(),
                partition: "root".into()
            })
        );
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = parse(&EXT4.replace("type = \"root\"", "type = \"rooot\"")).unwrap_err();
        assert_eq!(e.line, 16, "{e}");
        assert!(e.message.contains("unknown partition type"), "{e}");
        let e =
            parse(&EXT4.replace("format = \"ext4\"", "format = \"ext4\"\ncolour = 1")).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        let e = parse(&EXT4.replace("size = \"1G\"", "size = \"rest\"")).unwrap_err();
        assert!(e.message.contains("only one partition"), "{e}");
        let e = parse(&EXT4.replace("mount = \"/\"", "mount = \"/boot\"")).unwrap_err();
        assert!(e.message.contains("two file systems"), "{e}");
    }
}
