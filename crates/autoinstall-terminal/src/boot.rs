//! How the installed system will start: its own boot loader step, run with the disks its
//! configuration names leading to the disks chosen here, and the firmware's next boot.

use std::path::Path;

use machine::bootloader;
use machine::device_alias::DeviceAlias;

use crate::plan::{BootMode, Plan};
use crate::step::Run;

/// Runs the host's `switch-to-configuration boot` in a chroot of `root`; its output goes to
/// the report. GRUB for BIOS writes to the disks the host's configuration names
/// (`plan.grub_devices`): those paths lead to the chosen disks while it runs, and a warning
/// says when they are not this machine's names for them.
pub fn install_bootloader(
    r: &mut Run,
    plan: &Plan,
    root: &Path,
    toplevel: &str,
) -> Result<(), String> {
    let disks: Vec<DeviceAlias> = plan
        .grub_devices
        .iter()
        .filter_map(|g| {
            Some(DeviceAlias {
                configured: g.configured.clone()?,
                actual: g.path.clone().into(),
            })
        })
        .collect();
    let out = bootloader::install(root, toplevel, &disks).map_err(|e| e.to_string())?;
    for line in &out.aliases {
        r.report.log(line.clone());
    }
    if !out.aliases.is_empty() {
        let names: Vec<&str> = disks.iter().map(|d| d.configured.as_str()).collect();
        let warning = format!(
            "the host's configuration names its boot disk by a path that is another disk or none on this machine ({}): its next `nixos-rebuild boot` installs GRUB there; set boot.loader.grub.devices (disko: the disk's device) to a path this machine has",
            names.join(", ")
        );
        r.ui.say(&format!("warning: {warning}"));
        r.report.log(format!("warning: {warning}"));
        r.report.warnings.push(warning);
    }
    for line in out.activate_output.lines().chain(out.output.lines()) {
        r.report.log(format!("  | {line}"));
    }
    Ok(())
}

/// Makes the first disk's ESP the firmware's next boot (so a stick left in does not boot the
/// installer again); says which entry, or why not (a machine started by legacy BIOS, which
/// has no boot entries; a firmware that refuses): that is no reason to fail an install, only
/// to say so.
pub fn boot_next(plan: &Plan) -> String {
    if plan.boot_mode == BootMode::Bios {
        return "not set: a legacy BIOS has no boot entries, its boot order decides (take the stick out, or put the disk first)".into();
    }
    let d = plan.first_disk();
    let esp = machine::efi::read_gpt(Path::new(&d.path), d.logical_block_size)
        .map_err(|e| e.to_string())
        .and_then(|g| {
            g.and_then(|g| g.esp)
                .ok_or_else(|| format!("{} has no ESP", d.path))
        });
    let set = esp.and_then(|esp| {
        let option = machine::efi::load_option(
            &format!("NixOS {}", plan.host),
            &esp,
            machine::efi::FALLBACK_LOADER,
        );
        machine::efi::boot_next(&option).map_err(|e| e.to_string())
    });
    match set {
        Ok(entry) => format!("{entry} ({} on {})", machine::efi::FALLBACK_LOADER, d.path),
        Err(e) => format!("not set: {e}"),
    }
}
