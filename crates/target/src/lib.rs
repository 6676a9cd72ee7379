//! The install target. `plan` is pure: from facts about the machine's disks and a host's
//! resolved layout it decides which disk to use and where every partition goes, or says
//! precisely why it cannot. The executors carry it out: `disks` gathers facts from sysfs,
//! `blockdev` locks, wipes and re-reads a disk, `partition` writes the GPT, `format` makes file
//! systems, `mount` mounts and tears down, `bootloader` runs the system's own installer in a
//! chroot.

pub mod blockdev;
pub mod bootloader;
pub mod disks;
pub mod format;
pub mod ids;
pub mod mount;
pub mod partition;
pub mod plan;
