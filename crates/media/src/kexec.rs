//! The kexec bundle (`mkinstaller --format kexec`): the installer booted from a running
//! Linux, with no stick and no PXE. A directory holding the installer's `vmlinuz` and
//! `initrd` (the payload inside it, as netboot's, or none for the online installer), its
//! kernel command line, the environment's static `autoinstall-terminal` (which loads them
//! with kexec_file_load), a `run` script, and `autoinstall.run`: the same in one
//! self-extracting file to copy to the machine and run as root (`sh autoinstall.run`).
//!
//! The script needs only a POSIX shell, `tail`, `head`, `wc` and `mkdir`; the files go to
//! /run (RAM; `AUTOINSTALL_KEXEC_DIR` elsewhere, `AUTOINSTALL_KEXEC_UNPACK_ONLY=1` to unpack
//! and stop). With no helper, or a kernel without kexec_file_load, it uses kexec-tools' `kexec`
//! if the system has it (with the network words the helper still reads, when it runs).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::netboot::{in_file, write_initrd, Netboot, INITRD, KERNEL};

pub const CMDLINE: &str = "cmdline";
pub const HELPER: &str = "autoinstall-terminal";
pub const SCRIPT: &str = "run";
pub const BUNDLE: &str = "autoinstall.run";
/// How every script of ours begins.
const HEAD: &str = "#!/bin/sh\n# nixos-autoinstall kexec bundle";
/// The single file's header is padded to this many bytes, so the offsets it names do not
/// change its own length.
const HEADER_BYTES: usize = 8192;

/// Writes the bundle into `dir` (which exists); returns the bytes written.
pub fn write(dir: &Path, nb: &Netboot, progress: &mut dyn FnMut(u64)) -> io::Result<u64> {
    let ctx = in_file;
    let kernel = dir.join(KERNEL);
    fs::copy(&nb.env.kernel, &kernel).map_err(ctx(&kernel))?;
    let initrd = dir.join(INITRD);
    write_initrd(&initrd, nb, progress).map_err(ctx(&initrd))?;
    let cmdline = dir.join(CMDLINE);
    fs::write(&cmdline, format!("{}\n", nb.options)).map_err(ctx(&cmdline))?;
    let mut files = vec![KERNEL, INITRD, CMDLINE];
    if let Some(helper) = &nb.env.helper {
        let at = dir.join(HELPER);
        fs::copy(helper, &at).map_err(ctx(&at))?;
        fs::set_permissions(&at, fs::Permissions::from_mode(0o755)).map_err(ctx(&at))?;
        files.push(HELPER);
    }
    let script = dir.join(SCRIPT);
    fs::write(&script, run_script(nb.title)).map_err(ctx(&script))?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).map_err(ctx(&script))?;

    // The single file: a header that extracts what follows it, then the files in order.
    let sizes: Vec<(&str, u64)> = files
        .iter()
        .map(|f| Ok((*f, fs::metadata(dir.join(f))?.len())))
        .collect::<io::Result<_>>()?;
    let bundle = dir.join(BUNDLE);
    let mut out = io::BufWriter::new(fs::File::create(&bundle).map_err(ctx(&bundle))?);
    out.write_all(&header(nb.title, &sizes)?)?;
    for (f, _) in &sizes {
        io::copy(&mut fs::File::open(dir.join(f))?, &mut out)?;
    }
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .map_err(ctx(&bundle))?;
    fs::set_permissions(&bundle, fs::Permissions::from_mode(0o755)).map_err(ctx(&bundle))?;
    let mut bytes = 0;
    for f in files.iter().chain(&[SCRIPT, BUNDLE]) {
        bytes += fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    }
    Ok(bytes)
}

/// Whether `dir` holds a bundle written here, so that a rebuild may replace it.
pub fn written_here(dir: &Path) -> bool {
    fs::read_to_string(dir.join(SCRIPT)).is_ok_and(|s| s.starts_with(HEAD))
}

/// What both scripts do once the files are in `$dir`: load the installer and boot it.
fn boot_part() -> &'static str {
    r#"cmdline=$(cat "$dir/cmdline")
if [ "$(id -u)" != 0 ]; then
  echo "autoinstall.run: run me as root: kexec boots another kernel" >&2
  exit 1
fi
echo "autoinstall.run: booting the installer (this system stops here; the installer installs by serial)" >&2
sync
if [ -x "$dir/autoinstall-terminal" ]; then
  "$dir/autoinstall-terminal" kexec "$dir/vmlinuz" "$dir/initrd" --cmdline "$cmdline" && exit 0
  echo "autoinstall.run: kexec_file_load refused (above); trying kexec-tools" >&2
fi
if command -v kexec >/dev/null 2>&1; then
  # The helper still reads this system's network for the installer, if it runs at all.
  if [ -x "$dir/autoinstall-terminal" ]; then
    full=$("$dir/autoinstall-terminal" kexec "$dir/vmlinuz" "$dir/initrd" --cmdline "$cmdline" --print-cmdline) && [ -n "$full" ] && cmdline=$full
  fi
  kexec -l "$dir/vmlinuz" --initrd="$dir/initrd" --command-line="$cmdline" && exec kexec -e
fi
echo "autoinstall.run: this system cannot kexec (see above); it keeps running, nothing was changed" >&2
exit 1
"#
}

/// The directory's `run`: boots the files beside it.
fn run_script(title: &str) -> String {
    format!(
        "{HEAD}: {title}\n# Run as root on the machine to install: sh run\nset -eu\ndir=$(cd \"$(dirname \"$0\")\" && pwd)\n{}",
        boot_part()
    )
}

/// The single file's header: extracts the files that follow it into /run, then boots them.
/// Padded with a comment to [`HEADER_BYTES`].
fn header(title: &str, files: &[(&str, u64)]) -> io::Result<Vec<u8>> {
    let mut s = format!(
        "{HEAD}: {title}\n# Run as root on the machine to install: sh autoinstall.run\n\
         # It unpacks into /run (RAM), then boots the installer with kexec.\n\
         set -eu\nself=$0\ndir=${{AUTOINSTALL_KEXEC_DIR:-/run/nixos-autoinstall-kexec}}\n\
         rm -rf \"$dir\" && mkdir -p \"$dir\"\noffset={HEADER_BYTES}\n\
         unpack() {{\n  tail -c +$((offset + 1)) \"$self\" | head -c \"$2\" >\"$dir/$1\"\n  \
         [ \"$(wc -c <\"$dir/$1\")\" -eq \"$2\" ] || {{ echo \"autoinstall.run: $self is cut short ($1)\" >&2; exit 1; }}\n  \
         offset=$((offset + $2))\n}}\n"
    );
    for (name, size) in files {
        s += &format!("unpack {name} {size}\n");
    }
    s += "[ ! -e \"$dir/autoinstall-terminal\" ] || chmod 0755 \"$dir/autoinstall-terminal\"\n";
    // To look before booting: AUTOINSTALL_KEXEC_UNPACK_ONLY=1 sh autoinstall.run
    s += "if [ -n \"${AUTOINSTALL_KEXEC_UNPACK_ONLY:-}\" ]; then echo \"unpacked into $dir\"; exit 0; fi\n";
    s += boot_part();
    // The files start right after the header: nothing of it may run into them.
    s += "exit 1\n";
    if s.len() + 2 > HEADER_BYTES {
        return Err(io::Error::other(
            "the kexec bundle's header outgrew its room",
        ));
    }
    let pad = HEADER_BYTES - s.len() - 1;
    s += &format!("#{}", " ".repeat(pad - 1));
    s.push('\n');
    debug_assert_eq!(s.len(), HEADER_BYTES);
    Ok(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_has_its_fixed_size_and_names_every_file() {
        let h = header(
            "NixOS autoinstall (2 hosts)",
            &[("vmlinuz", 123), ("initrd", 4567)],
        )
        .unwrap();
        assert_eq!(h.len(), HEADER_BYTES);
        let text = String::from_utf8(h).unwrap();
        assert!(text.starts_with(HEAD));
        assert!(text.contains("unpack vmlinuz 123\nunpack initrd 4567\n"));
        assert!(text.contains(&format!("offset={HEADER_BYTES}\n")));
        // The last line is a comment: the shell reads past it only into `exit 1` above.
        assert!(text.trim_end().lines().last().unwrap().starts_with('#'));
    }
}
