//! Every argument is parsed into its type before anything happens: a bad value is a usage
//! error (exit 2) that touches nothing, whatever else was asked; the completions and the man
//! page come from the same definitions.

use std::process::Command;

fn installer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_values_are_usage_errors_before_anything_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let d = disk.to_str().unwrap();
    for args in [
        &["--finish", "reboots", "--disk", d, "--yes"][..],
        &["--dry-run", "--finish", "reboots", "--disk", d][..],
        &["--retries", "many", "--disk", d, "--yes"][..],
        &["--min-generation", "seven", "--disk", d, "--yes"][..],
    ] {
        let out = installer(args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains("invalid value"), "{args:?}: {said}");
    }
    let out = installer(&["--finish", "reboots"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("auto, reboot, poweroff, none"));
    let meta = std::fs::metadata(&disk).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.blocks(), 0, "the disk image was written");
}

#[test]
fn completions_and_man_page_come_from_the_definitions() {
    for args in [&["--completions", "bash"][..], &["--man"][..]] {
        let out = installer(args);
        assert!(out.status.success(), "{args:?}");
        assert!(out.stdout.len() > 1000, "{args:?}");
    }
    let help = installer(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit status"));
}

/// `kexec` given what is no kernel (as a machine whose kernel refuses would answer): exit 1,
/// the reason, and this system left running. `--load-only`: even a load that succeeded would
/// not reboot the machine running the tests.
#[test]
fn kexec_refused_leaves_the_system_running() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_kernel = dir.path().join("vmlinuz");
    std::fs::write(&not_a_kernel, b"not a kernel").unwrap();
    let k = not_a_kernel.to_str().unwrap();
    let out = installer(&["kexec", k, k, "--cmdline", "console=ttyS0", "--load-only"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("kexec_file_load of")
            && err.contains("this system keeps running, nothing was changed"),
        "{err}"
    );
    // A file that is not there: the same, before the kernel is asked.
    let out = installer(&["kexec", "/nonexistent/vmlinuz", k, "--load-only"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vmlinuz"));
}

/// `kexec --print-cmdline`: the command line the installer would get, for a bundle that boots
/// with kexec-tools; nothing is loaded (what is no kernel is not even read).
#[test]
fn kexec_prints_the_command_line_it_would_pass() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_kernel = dir.path().join("vmlinuz");
    std::fs::write(&not_a_kernel, b"not a kernel").unwrap();
    let k = not_a_kernel.to_str().unwrap();
    let args = [
        "kexec",
        k,
        k,
        "--cmdline",
        "console=ttyS0",
        "--print-cmdline",
    ];
    let out = installer(&args);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.starts_with("console=ttyS0"), "{said}");
    // This machine's own addresses may follow, as autoinstall.net= words only.
    assert!(
        said.split_whitespace()
            .skip(1)
            .all(|w| w.starts_with("autoinstall.net=") || w.starts_with("autoinstall.dns=")),
        "{said}"
    );
    let out = installer(&[&args[..], &["--no-keep-network"]].concat());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "console=ttyS0\n");
}
