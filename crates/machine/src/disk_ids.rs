//! What identifies a disk, parsed from what the kernel exposes (pure: functions of bytes and
//! text, tested without hardware): the SCSI VPD serial page, ATA IDENTIFY strings, the
//! transport from a sysfs path, and the `/dev/disk/by-id` names udev would give.

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

/// `ata3` and the like.
pub(crate) fn is_numbered(component: &str, prefix: &str) -> bool {
    component
        .strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::ata_dev_name;

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
}
