//! btrfs subvolumes, made on the new file system before its subvolumes are mounted.

use std::fs;
use std::io;
use std::path::Path;

use crate::format::{run, tool};
use crate::mount::{MountSpec, Mounted};

/// Creates the subvolumes `names` on the btrfs file system on `node`, mounting its top level
/// at `scratch` for the while (unmounted again whatever happens).
pub fn create_subvolumes(node: &Path, names: &[&str], scratch: &Path) -> io::Result<()> {
    fs::create_dir_all(scratch)?;
    let top = Mounted::under(scratch);
    top.mount(&MountSpec {
        device: node.to_path_buf(),
        at: "/".into(),
        fstype: "btrfs",
        options: String::new(),
    })?;
    let btrfs = tool("btrfs")?;
    for name in names {
        let path = scratch.join(name);
        let path = path
            .to_str()
            .ok_or_else(|| io::Error::other("a subvolume path that is not UTF-8"))?;
        run(&btrfs, &["subvolume", "create", path])?;
    }
    top.sync_and_unmount()?;
    let _ = fs::remove_dir(scratch);
    Ok(())
}
