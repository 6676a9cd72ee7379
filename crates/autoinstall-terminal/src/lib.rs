//! The on-target installer, as a library the thin binary drives: `settings` (what it trusts),
//! `identify` (who is this machine), `source` (where the payload is: a stick, an ISO, a directory), `online` (a cache site
//! over HTTP), `choose` (which host, pure), `plan` (which disks, where everything goes), `keys` (LUKS keys),
//! `install` (the state machine up to the confirmation) with `step` (the steps as a type),
//! `write` (the steps that write, through `machine`), `copy` and `direct` (the two ways of
//! copying the closure), `report`, `status` (the run's state for others, and their answers), `kexec` (booting the
//! installer from a running Linux) and `ui`.

pub mod boot;
pub mod choose;
pub mod copy;
pub mod direct;
pub mod firmware_keys;
pub mod follow;
pub mod identify;
pub mod install;
pub mod kexec;
pub mod keys;
pub mod mdns;
pub mod netkeep;
pub mod online;
pub mod plan;
pub mod remote;
pub mod report;
pub mod settings;
pub mod source;
pub mod status;
pub mod step;
#[cfg(test)]
mod testing;
pub mod ui;
pub mod unlock;
pub mod write;

/// Whether this runs inside an installer environment (marked by /etc/nixos-autoinstall):
/// only there does the installer act on the machine itself (reboot, an SSH server, its boot
/// mode); run on a workstation (tests, --root), it never does.
pub fn in_installer_environment() -> bool {
    std::path::Path::new("/etc/nixos-autoinstall").is_dir()
}
