//! Every profile shipped in installer-profiles/ parses and has the layout its name promises.

use std::path::Path;

use manifest::profile::PartSize;
use manifest::profile::{Filesystem, Profile};

fn load(name: &str) -> Profile {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../installer-profiles")
        .join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&file).unwrap();
    Profile::parse(name, &file, &text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn shipped_profiles() {
    let ext4 = load("uefi-ext4");
    assert_eq!(ext4.partitions.len(), 2);
    assert_eq!(ext4.partitions[1].format, Filesystem::Ext4);
    assert_eq!(ext4.partitions[1].size, PartSize::Rest);

    let swap = load("uefi-ext4-swap");
    assert!(swap
        .partitions
        .iter()
        .any(|p| p.format == Filesystem::Swap && p.size == PartSize::Bytes(8 << 30)));

    let btrfs = load("uefi-btrfs");
    let root = &btrfs.partitions[1];
    assert_eq!(root.format, Filesystem::Btrfs);
    let mounts: Vec<&str> = root.subvolumes.iter().map(|s| s.mount.as_str()).collect();
    assert_eq!(mounts, ["/", "/nix", "/home"]);
    let store = btrfs.to_layout().devices.store_mount().unwrap();
    assert_eq!(store.mountpoint, "/nix");
    assert_eq!(store.subvol.as_deref(), Some("@nix"));
    assert_eq!(
        store.holder.unwrap().to_string(),
        "partition nixos of disk main"
    );
}
