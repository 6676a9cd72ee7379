//! `autoinstall-terminal kexec KERNEL INITRD --cmdline …`: boots another kernel from the
//! running Linux, the kexec bundle's way in (`mkinstaller --format kexec`). The kernel and
//! initrd are handed over with kexec_file_load(2), so the running kernel applies its own
//! policy (lockdown, signature checks); refused, the system keeps running untouched. Then
//! the file systems are synced and the machine reboots into the loaded kernel.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::libc;

/// Loads `kernel` and `initrd` with `cmdline` for the next kexec.
pub fn load(kernel: &Path, initrd: &Path, cmdline: &str) -> Result<(), String> {
    let open = |p: &Path| File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let (k, i) = (open(kernel)?, open(initrd)?);
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    // SAFETY: two open descriptors, and a NUL-terminated buffer of the length given; the
    // kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            k.as_raw_fd(),
            i.as_raw_fd(),
            line.len() as libc::c_ulong,
            line.as_ptr(),
            0 as libc::c_ulong,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = Errno::last();
    let why = match e {
        Errno::EPERM => "not permitted: run as root; or this kernel is locked down, or kexec is disabled (sysctl kernel.kexec_load_disabled)",
        Errno::ENOSYS => "this kernel has no kexec_file_load (CONFIG_KEXEC_FILE)",
        Errno::EKEYREJECTED | Errno::EBADMSG | Errno::ENOKEY => "this kernel accepts only signed kernels (Secure Boot or lockdown), and the installer's is not signed for it",
        Errno::ENOEXEC => "not a kernel image this kernel can load",
        Errno::EBUSY => "another kexec is loaded or in progress",
        Errno::ENOMEM => "not enough memory for the installer's kernel and initrd",
        _ => "the kernel refused",
    };
    Err(format!(
        "kexec_file_load of {} and {}: {why} ({e}); this system keeps running, nothing was changed",
        kernel.display(),
        initrd.display()
    ))
}

/// Syncs the file systems and reboots into the loaded kernel; returns only on failure.
pub fn boot() -> String {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC) {
        Err(e) => format!("reboot into the loaded kernel: {e}"),
        Ok(never) => match never {},
    }
}
