//! Test fixtures shared by the unit tests of several modules.

use manifest::document::{HostEntry, Mode, FORMAT_NAME, FORMAT_VERSION};
use manifest::{AfterInstall, Manifest, UnknownSerial};

/// A fleet of two hosts on the built-in profile uefi-ext4 (web-1: SN-1, db-1: SN-2).
pub fn manifest(policy: UnknownSerial) -> Manifest {
    let layout = manifest::Profile::parse(
        "uefi-ext4",
        std::path::Path::new("uefi-ext4.toml"),
        include_str!("../../../installer-profiles/uefi-ext4.toml"),
    )
    .expect("the profile parses")
    .to_layout();
    let host = |name: &str, serial: &str| HostEntry {
        name: name.into(),
        serials: vec![serial.into()],
        toplevel: format!("/nix/store/00000000000000000000000000000000-{name}"),
        closure: vec![],
        closure_nar_bytes: 0,
        layout: layout.clone(),
        disk: None,
        extra_files: vec![],
        luks_keys: vec![],
        bootable: true,
        sealed: None,
        system: None,
    };
    Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        kind: manifest::document::Kind::Fleet,
        lookup_key: None,
        fleet: None,
        generation: 0,
        generator: "test".into(),
        mode: Mode::Mass,
        on_unknown_serial: policy,
        enrol_layout: None,
        after_install: AfterInstall::Poweroff,
        reinstall: manifest::Reinstall::Ask,
        ssh_authorized_keys: vec![],
        confirm_seconds: 10,
        verify: manifest::Verify::Auto,
        recovery_recipients: vec![],
        without_tpm: Default::default(),
        secure_boot: None,
        hosts: vec![host("web-1", "SN-1"), host("db-1", "SN-2")],
    }
}
