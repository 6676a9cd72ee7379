//! The plan: which of the machine's disks plays each of the host's layout disks and why,
//! where every partition goes, what is built on them (arrays, LUKS, LVM), made and mounted;
//! shown before confirmation and printed by `--dry-run` (human and JSON). Made from the
//! machine's disk facts and the host's layout by the pure `machine::layout` and
//! `machine::graph`; only a tie between disks asks.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use machine::disks;
use machine::graph::{self, Build, DevicePlan};
use machine::layout::{self, DiskFacts, PlanError};
use machine::stack::Record;
use manifest::devices::{BootSupport, LayoutSource};
use manifest::document::{HostEntry, Manifest};
use manifest::profile::Filesystem;
use manifest::AfterInstall;
use media::verify::Closure;
use util::size::human;

use crate::install::Options;
use crate::source::Source;
use crate::ui::Ui;

/// The plan as shown before confirmation and printed by `--dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub host: String,
    pub chosen_by: String,
    pub serial: Option<String>,
    /// How this machine started the installer.
    pub boot_mode: BootMode,
    /// How the host starts, by its layout's partitions (ESP, BIOS boot partition).
    pub host_boot: BootSupport,
    /// The disks GRUB for BIOS goes to, and the names the host's configuration gives them.
    pub grub_devices: Vec<GrubDevice>,
    pub payload: String,
    pub toplevel: String,
    pub closure_paths: usize,
    pub closure_nar_bytes: u64,
    /// The layout's name (profile or disko file) and where it came from.
    pub layout: String,
    pub layout_source: LayoutSource,
    #[serde(flatten)]
    pub devices: DevicePlan,
    /// Disks that still carry mounts or devices an earlier attempt of ours left: Tear down
    /// removes them before the disks can be held exclusively.
    pub earlier_attempt: Vec<String>,
    /// Each LUKS container's key: from the payload, or asked for after the confirmation.
    pub luks_keys: Vec<KeyPlan>,
    /// The fleet the stick was built for (part of each disk's install marker).
    pub fleet: Option<String>,
    /// The first disk already holds this host installed from this fleet: its GPT's disk GUID
    /// is this host's install marker (`media::ids::install_marker`).
    pub already_installed: bool,
    /// The fleet's Secure Boot keys: enrolled at the end, or why not.
    pub secure_boot_keys: Option<crate::firmware_keys::KeysPlan>,
    pub after_install: AfterInstall,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyPlan {
    pub name: String,
    /// The key it is formatted and opened with.
    pub from: KeySource,
    /// Enrolled with this machine's TPM2, sealed to these PCRs.
    pub tpm2: Option<Vec<u8>>,
    /// PCR 7 as the next boot will measure it, when the fleet's Secure Boot keys are
    /// enrolled at the end of this install (they change it): sealed to this rather than to
    /// this boot's.
    #[serde(serialize_with = "hex_digest")]
    pub pcr7_next_boot: Option<[u8; 32]>,
    /// A recovery key is made here and escrowed to the fleet's recipients.
    pub recovery: bool,
    /// A TPM2 that refuses the enrolment leaves the volume to its recovery key alone
    /// (`without-tpm = "recovery-key"`) instead of failing the install.
    pub recovery_if_tpm_refuses: bool,
}

fn hex_digest<S: serde::Serializer>(d: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&util::hex::encode(d)),
        None => s.serialize_none(),
    }
}

impl KeyPlan {
    /// How the installed system unlocks it, for the plan and the report.
    pub fn unlocks(&self) -> String {
        let mut ways = Vec::new();
        if let Some(pcrs) = &self.tpm2 {
            let list = pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join("+");
            const NEXT: &str = "as the next boot under the fleet's Secure Boot keys measures it";
            ways.push(match (self.pcr7_next_boot.is_some(), pcrs.as_slice()) {
                (false, _) => format!("the TPM2 (PCR {list})"),
                (true, [7]) => format!("the TPM2 (PCR 7 {NEXT})"),
                (true, _) => format!("the TPM2 (PCR {list}, 7 {NEXT})"),
            });
        }
        match self.from {
            KeySource::Payload | KeySource::Sealed => ways.push("its key file".into()),
            KeySource::Prompt => ways.push("the passphrase typed here".into()),
            KeySource::Generated => {}
        }
        if self.recovery {
            ways.push("the escrowed recovery key".into());
        }
        ways.join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    /// A key file in the payload (hosts.toml `luks-keys`).
    Payload,
    /// A passphrase typed twice on this console.
    Prompt,
    /// The host's sealed secrets, opened with the fleet's passphrase.
    Sealed,
    /// Made here, only to format and open it, and removed from the volume once the TPM2
    /// and the recovery key are enrolled.
    Generated,
}

/// A disk that GRUB for BIOS is installed to: the disk chosen here, and the path the host's
/// configuration names it by (its layout's `device`), which the boot loader step makes lead
/// to the chosen disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrubDevice {
    pub disk: String,
    pub path: String,
    pub configured: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Uefi,
    Bios,
}

impl Plan {
    pub fn first_disk(&self) -> &DiskFacts {
        &self.devices.disks[0].facts
    }

    /// The GPT disk GUID that marks layout disk `disk` as holding this host from this fleet.
    pub fn marker(&self, disk: &str) -> uuid::Uuid {
        media::ids::install_marker(self.fleet.as_deref(), &self.host, disk)
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "host      {} ({})\nserial    {}\nboot      {} (the host starts by {})\npayload   {}\nsystem    {}\nclosure   {} paths, {}\nlayout    {} ({})\n",
            self.host,
            self.chosen_by,
            self.serial.as_deref().unwrap_or("none"),
            match self.boot_mode {
                BootMode::Uefi => "UEFI",
                BootMode::Bios => "legacy BIOS",
            },
            self.host_boot.describe(),
            self.payload,
            self.toplevel,
            self.closure_paths,
            human(self.closure_nar_bytes),
            self.layout,
            match self.layout_source {
                LayoutSource::Profile => "installer profile",
                LayoutSource::Disko => "disko",
            }
        );
        for d in &self.devices.disks {
            let f = &d.facts;
            s += &format!(
                "disk {}  {} {} {} serial {} via {}: {} (erased)\n",
                d.name,
                f.path,
                human(f.size),
                if f.model.is_empty() {
                    "(no model)"
                } else {
                    &f.model
                },
                if f.serial.is_empty() { "?" } else { &f.serial },
                if f.transport.is_empty() {
                    "?"
                } else {
                    &f.transport
                },
                d.why
            );
            for p in &d.partitions {
                s += &format!(
                    "  {:>2}  {:<20} {:>10}  {}\n",
                    p.number,
                    p.label,
                    human(p.bytes),
                    p.holds
                );
            }
            if let Some(w) = &d.whole {
                s += &format!("  whole disk: {w}\n");
            }
        }
        for g in &self.grub_devices {
            s += &format!("grub      {} (disk {}", g.path, g.disk);
            match &g.configured {
                Some(c) if c != &g.path => s += &format!("; the host's configuration names it {c}"),
                _ => {}
            }
            s += ")\n";
        }
        for b in &self.devices.build {
            s += &format!("build     {}\n", describe_build(b, &self.luks_keys));
        }
        for m in &self.devices.make {
            let mut line = format!("make      {} on {}", m.format.name(), m.holder);
            if let Some(l) = &m.label {
                line += &format!(" label {l}");
            }
            if let Some(u) = &m.uuid {
                line += &format!(" uuid {u}");
            }
            if !m.subvolumes.is_empty() {
                line += &format!(" subvolumes {}", m.subvolumes.join(" "));
            }
            s += &line;
            s += "\n";
        }
        s += &format!(
            "store     {} on {} (about {}; the closure needs {})\n",
            self.devices.store.mountpoint,
            self.devices.store.holder,
            human(self.devices.store.bytes),
            human(self.devices.store.needed)
        );
        if self.already_installed {
            s += &format!(
                "note      {} already holds {} installed from this fleet\n",
                self.first_disk().path,
                self.host
            );
        }
        match &self.secure_boot_keys {
            Some(crate::firmware_keys::KeysPlan::Enrol) => {
                s += "firmware  the fleet's Secure Boot keys (db, KEK, PK), at the end: the firmware is in setup mode\n"
            }
            Some(crate::firmware_keys::KeysPlan::Skip(why)) => {
                s += &format!("firmware  the fleet's Secure Boot keys are not enrolled: {why}\n")
            }
            None => {}
        }
        s += &format!("then      {:?}\n", self.after_install).to_lowercase();
        s
    }
}

fn describe_build(b: &Build, keys: &[KeyPlan]) -> String {
    let list = |hs: &[manifest::devices::Holder]| {
        hs.iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match b {
        Build::Md {
            name,
            level,
            metadata,
            members,
            bytes,
        } => format!(
            "/dev/md/{name}: RAID{level} (metadata {metadata}) over {}, about {}",
            list(members),
            human(*bytes)
        ),
        Build::Luks {
            name, on, bytes, ..
        } => format!(
            "/dev/mapper/{name}: LUKS2 on {on}, about {}, key {}",
            human(*bytes),
            match keys.iter().find(|k| &k.name == name) {
                Some(k) => format!(
                    "{}; unlocked by {}",
                    match k.from {
                        KeySource::Payload => "from the payload",
                        KeySource::Sealed => "from the sealed secrets",
                        KeySource::Prompt => "asked for on this console",
                        KeySource::Generated => "made here",
                    },
                    k.unlocks()
                ),
                None => "none".into(),
            }
        ),
        Build::Vg { name, pvs, bytes } => format!(
            "volume group {name} over {}, about {}",
            list(pvs),
            human(*bytes)
        ),
        Build::Lv {
            vg, name, bytes, ..
        } => format!("/dev/{vg}/{name}: about {}", human(*bytes)),
    }
}

/// A host installed for the other boot mode than the one this machine started the installer
/// by would not start: a UEFI host (an ESP) on a machine that runs legacy BIOS has no boot
/// entry its firmware reads, a BIOS host (a BIOS boot partition, no ESP) on a machine that
/// starts by UEFI has no EFI boot file. Refused before any disk is touched; a hybrid layout
/// (both) installs either way.
pub fn check_boot_mode(uefi: bool, host: &HostEntry, bootloader: bool) -> Result<(), String> {
    if !host.bootable || !bootloader {
        return Ok(());
    }
    let can = host.layout.boot_support();
    if uefi && !can.uefi {
        return Err(format!(
            "this machine started the installer by UEFI, and host {} boots by legacy BIOS only (its layout has a BIOS boot partition, EF02, and no ESP): installed, it would not start. Start the stick in the firmware's legacy (CSM) boot mode, or give the host's layout an ESP as well (disko's hybrid shape); nothing was touched",
            host.name
        ));
    }
    if !uefi && !can.bios {
        return Err(format!(
            "this machine started the installer by legacy BIOS (no /sys/firmware/efi), and host {} boots by UEFI: installed, it would not start. Switch the machine's firmware to UEFI boot (turn off CSM/legacy boot) and start the stick again, or give the host a BIOS boot partition (EF02) and GRUB for BIOS; nothing was touched",
            host.name
        ));
    }
    Ok(())
}

/// Plans the install of `host` (chosen as `chosen_by`) on this machine: the disks, from
/// `--disk`, the host's `disk`, the layout's own devices, or the layout's rules (a menu on
/// `ui` for a tie), never the payload's own; and where everything goes on them.
#[allow(clippy::too_many_arguments)]
pub fn make_plan(
    opts: &Options,
    ui: &Ui,
    serial: Option<String>,
    source: &Source,
    m: &Manifest,
    host: &HostEntry,
    chosen_by: &str,
    closure: &Closure,
) -> Result<Plan, String> {
    // Run on a workstation (tests, --root), this machine's boot mode says nothing about
    // the target's.
    if crate::in_installer_environment() || opts.after_kexec {
        check_boot_mode(machine::efi::booted_uefi(), host, opts.bootloader)?;
    }
    let mut named: Vec<String> = if opts.disks.is_empty() {
        host.disk.iter().cloned().collect()
    } else {
        opts.disks.clone()
    };
    let (facts, earlier) = machine_disks(opts, source, &named)?;
    let layout = &host.layout;
    let needs = graph::disk_needs(layout, closure.nar_bytes);
    let assigned = loop {
        match layout::assign_disks(layout, &facts, &named, &needs) {
            Ok(a) => break a,
            Err(PlanError::Ambiguous { disk, tied, paths }) => {
                let items: Vec<String> = paths
                    .iter()
                    .filter_map(|p| facts.iter().find(|d| &d.path == p))
                    .map(|d| {
                        format!(
                            "{:<16} {:>10}  {}  {}  {}",
                            d.path,
                            human(d.size),
                            d.model,
                            d.serial,
                            d.transport
                        )
                    })
                    .collect();
                let title = format!(
                    "Several disks fit equally well. Choose the one to erase for layout disk {disk}:"
                );
                match ui.menu(&title, &items) {
                    Some(i) => named.push(format!("{disk}={}", paths[i])),
                    None => {
                        let e = PlanError::Ambiguous { disk, tied, paths };
                        return Err(format!("{e}; nothing was touched"));
                    }
                }
            }
            Err(e) => return Err(format!("{e}\nnothing was touched")),
        }
    };
    let devices = graph::plan(layout, assigned, closure.nar_bytes)
        .map_err(|e| format!("{e}\nnothing was touched"))?;
    // Every tool the plan needs is here, or nothing is touched. (After kexec, here is the
    // installer environment, not the running system that plans for it.)
    if !opts.after_kexec {
        for t in devices.tools() {
            machine::format::tool(t)
                .map_err(|e| format!("the plan needs {t}: {e}; nothing was touched"))?;
        }
    }
    let mut this_machine = crate::unlock::Machine::probe();
    let no_one_to_ask = if opts.yes {
        Some("--yes")
    } else if !ui.interactive {
        Some("no terminal")
    } else {
        None
    };
    let secure_boot_keys = crate::firmware_keys::plan(m, machine::efi::setup_mode())
        .map_err(|e| format!("{e}; nothing was touched"))?;
    let luks = devices.build.iter().filter_map(|b| match b {
        Build::Luks { name, tpm2, .. } => Some((name.clone(), tpm2.as_ref())),
        _ => None,
    });
    // The fleet's keys change PCR 7 from the next boot on: a volume sealed to it is sealed
    // to the value predicted for that boot, or nothing is touched.
    let next_pcr7 = match (&secure_boot_keys, &m.secure_boot) {
        (Some(crate::firmware_keys::KeysPlan::Enrol), Some(keys))
            if this_machine.tpm
                && luks
                    .clone()
                    .any(|(_, t)| t.is_some_and(|t| t.pcrs.contains(&7))) =>
        {
            match crate::firmware_keys::next_boot_pcr7(keys, source).map_err(|e| {
                format!(
                    "a LUKS device is to be sealed to PCR 7, which the fleet's Secure Boot keys, enrolled at the end of this install, change: {e}; seal to other PCRs (tpm2-pcrs=), or enrol the keys in the firmware setup first; nothing was touched"
                )
            })? {
                Ok(v) => Some(v),
                // A TPM that refuses: the fleet's without-tpm, as for a machine without one.
                Err(why) => {
                    ui.say(&format!(
                        "the TPM refused to give PCR 7 ({why}): the fleet's without-tpm applies"
                    ));
                    this_machine.tpm = false;
                    this_machine.tpm_refused = true;
                    None
                }
            }
        }
        _ => None,
    };
    let luks_keys = luks
        .map(|(name, tpm2)| {
            crate::unlock::key_plan(name, tpm2, host, m, this_machine, no_one_to_ask, next_pcr7)
                .map_err(|e| format!("{e}; nothing was touched"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if luks_keys.iter().any(|k| k.tpm2.is_some()) {
        machine::format::tool("systemd-cryptenroll").map_err(|e| {
            format!("the plan enrols the TPM2 with systemd-cryptenroll: {e}; nothing was touched")
        })?;
    }
    // Someone must give the fleet's passphrase: a file, or a person at this console.
    let no_one_to_ask = opts.yes || !ui.interactive;
    if host.sealed.is_some() && opts.secrets_passphrase.is_none() && !opts.dry_run && no_one_to_ask
    {
        return Err(format!(
            "host {}'s secrets are sealed to the fleet's passphrase, and there is no one to type it ({}) and no --secrets-passphrase-file; nothing was touched",
            host.name,
            if opts.yes { "--yes" } else { "no terminal" }
        ));
    }
    let first = &devices.disks[0];
    let already_installed =
        machine::efi::read_gpt(Path::new(&first.facts.path), first.facts.logical_block_size)
            .ok()
            .flatten()
            .is_some_and(|g| {
                g.disk_guid
                    == media::ids::install_marker(m.fleet.as_deref(), &host.name, &first.name)
            });
    let earlier_attempt = devices
        .disks
        .iter()
        .filter(|d| earlier.contains(&d.facts.path))
        .map(|d| d.facts.path.clone())
        .collect();
    Ok(Plan {
        host: host.name.clone(),
        chosen_by: chosen_by.to_string(),
        serial,
        boot_mode: if machine::efi::booted_uefi() {
            BootMode::Uefi
        } else {
            BootMode::Bios
        },
        host_boot: layout.boot_support(),
        grub_devices: layout
            .grub_disks()
            .into_iter()
            .filter_map(|g| {
                let d = devices.disks.iter().find(|d| d.name == g.disk)?;
                Some(GrubDevice {
                    disk: g.disk,
                    path: d.facts.path.clone(),
                    configured: g.configured,
                })
            })
            .collect(),
        payload: source.describe(),
        toplevel: host.toplevel.clone(),
        closure_paths: closure.infos.len(),
        closure_nar_bytes: closure.nar_bytes,
        layout: layout.name.clone(),
        layout_source: layout.source,
        devices,
        earlier_attempt,
        luks_keys,
        fleet: m.fleet.clone(),
        already_installed,
        secure_boot_keys,
        after_install: m.after_install,
    })
}

/// The machine's disks as the planner sees them: every whole disk, those named with
/// `--disk` that the scan skips (loop devices), the payload's own marked, an earlier
/// attempt's leftovers forgiven. Also returns the disks with such leftovers.
pub fn machine_disks(
    opts: &Options,
    source: &Source,
    named: &[String],
) -> Result<(Vec<DiskFacts>, Vec<String>), String> {
    let mut facts = disks::scan().map_err(|e| format!("listing disks: {e}"))?;
    for n in named {
        let name = n.split_once('=').map_or(n.as_str(), |(_, p)| p);
        let resolved = fs::canonicalize(name).unwrap_or_else(|_| PathBuf::from(name));
        if !facts.iter().any(|d| d.is_named(name)) {
            if let Ok(mut f) = disks::facts(&resolved) {
                f.by_id.push(name.to_string());
                facts.push(f);
            }
        }
    }
    let earlier = mark_facts(opts, source, &mut facts)?;
    Ok((facts, earlier))
}

/// Marks the payload's own disk (never a target) and forgives what an earlier attempt of
/// ours left on a disk (mounts under our root; arrays, mappers and volumes in our record),
/// which Tear down removes. Returns the disks with such leftovers.
fn mark_facts(
    opts: &Options,
    source: &Source,
    facts: &mut [DiskFacts],
) -> Result<Vec<String>, String> {
    let carrier = source
        .carrier()
        .map(|c| fs::canonicalize(c).unwrap_or_else(|_| c.to_path_buf()));
    let carrier_disk = carrier
        .as_deref()
        .and_then(|c| disks::whole_disk_of(c).ok());
    let ours = Record::standard()
        .kernel_names()
        .map_err(|e| format!("{e}; nothing was touched"))?;
    let root = opts.root.to_string_lossy().to_string();
    let mut earlier = Vec::new();
    for d in facts {
        if carrier_disk.as_deref() == Some(Path::new(&d.path))
            || carrier.as_deref() == Some(Path::new(&d.path))
        {
            d.boot_medium = true;
        }
        if opts.after_kexec {
            // What the running system mounts and holds is gone once kexec starts the
            // installer.
            d.mounted.clear();
            d.holders.clear();
            continue;
        }
        let before = (d.mounted.len(), d.holders.len());
        d.mounted
            .retain(|m| !(m == &root || m.starts_with(&format!("{root}/"))));
        d.holders.retain(|h| !ours.contains(h));
        if (d.mounted.len(), d.holders.len()) != before {
            earlier.push(d.path.clone());
        }
    }
    Ok(earlier)
}

/// Whether the store's file system is written directly (machine::store): ext4, not a btrfs
/// subvolume, and its device of a size the writer handles (16 MiB to 64 TiB; else mkfs.ext4
/// and the copy through the kernel do it). Returns the store directory's path inside it.
pub fn direct_store(plan: &Plan, device_bytes: u64) -> Option<Vec<&'static str>> {
    let s = &plan.devices.store;
    if s.format != Filesystem::Ext4
        || s.subvol.is_some()
        || !(ext4::MIN_BYTES..=ext4::MAX_BYTES).contains(&device_bytes)
    {
        return None;
    }
    Some(if s.mountpoint == "/" {
        vec!["nix", "store"]
    } else {
        vec!["store"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uefi_host_is_refused_on_a_machine_started_by_bios() {
        let m = crate::testing::manifest(manifest::UnknownSerial::Refuse);
        let mut host = m.hosts[0].clone();
        assert!(check_boot_mode(true, &host, true).is_ok());
        let e = check_boot_mode(false, &host, true).unwrap_err();
        assert!(
            e.contains("legacy BIOS")
                && e.contains("host web-1")
                && e.contains("nothing was touched"),
            "{e}"
        );
        // No boot loader to install: nothing depends on the boot mode.
        assert!(check_boot_mode(false, &host, false).is_ok());
        host.bootable = false;
        assert!(check_boot_mode(false, &host, true).is_ok());
    }

    #[test]
    fn a_bios_host_is_refused_on_a_machine_started_by_uefi_and_a_hybrid_one_is_not() {
        let m = crate::testing::manifest(manifest::UnknownSerial::Refuse);
        let mut host = m.hosts[0].clone();
        let layout = |parts: &str| {
            manifest::disko::parse(
                &format!(
                    r#"{{"disk": {{"main": {{"type": "disk", "content": {{"type": "gpt", "partitions": {{
                    {parts} "root": {{"size": "100%", "content": {{"type": "filesystem", "format": "ext4", "mountpoint": "/"}}}}
                    }}}}}}}}}}"#
                ),
                "t.json",
                manifest::profile::DiskRules::default(),
            )
            .unwrap()
        };
        let bios = r#""boot": {"type": "EF02", "size": "1M"},"#;
        let esp = r#""ESP": {"type": "EF00", "size": "256M", "content": {"type": "filesystem", "format": "vfat", "mountpoint": "/boot"}},"#;
        host.layout = layout(bios);
        assert!(check_boot_mode(false, &host, true).is_ok());
        let e = check_boot_mode(true, &host, true).unwrap_err();
        assert!(
            e.contains("started the installer by UEFI")
                && e.contains("legacy (CSM)")
                && e.contains("nothing was touched"),
            "{e}"
        );
        host.layout = layout(&format!("{bios}{esp}"));
        assert!(check_boot_mode(false, &host, true).is_ok());
        assert!(check_boot_mode(true, &host, true).is_ok());
    }
}
