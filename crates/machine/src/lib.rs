//! The machine being installed: what it has, what to do with it, and the mechanism that does
//! it. `layout` and `graph` are pure: from facts about the machine's disks and a host's
//! device graph they decide which disk plays each of the layout's disks, where every
//! partition goes and in which order arrays, LUKS and LVM are built on them, or say precisely
//! why they cannot. The executors carry it out, each taking plain rows (partitions, builds,
//! mounts), never the installer's run or report: `blank` tells a disk that holds nothing, `disks` (with the pure `disk_ids` parsers and
//! `util::mountinfo`) gathers facts from sysfs and procfs, `blockdev` holds, wipes and
//! re-reads a disk, `partition` writes the GPT, `stack` builds (and takes down) md, LUKS and
//! LVM with the real tools, `format` runs mkfs, `esp` makes and fills the ESP natively,
//! `store` writes an ext4 store directly, `btrfs` makes subvolumes, `mount` mounts (and
//! unmounts on drop), `system` sets the profile and extra files, `bootloader` runs the
//! system's own installer in a chroot.

pub mod blank;
pub mod blockdev;
pub mod bootloader;
pub mod btrfs;
pub mod device_alias;
pub mod disk_ids;
pub mod disks;
pub mod efi;
pub mod esp;
pub mod format;
pub mod graph;
pub mod inventory;
pub mod layout;
pub mod luks;
pub mod mount;
pub mod partition;
pub mod stack;
pub mod store;
pub mod system;
pub mod tpm;
