//! Remote access to the live installer, when the stick names SSH keys
//! (`[defaults] ssh-authorized-keys`): the installer environment's own script
//! (`autoinstall-remote-access`: the network by DHCP, the static link-local `fe80::47`, host
//! keys made for this boot with their fingerprints, and an SSH server that takes only these
//! keys) is started, the machine answers mDNS for `autoinstall-<serial>.local`, and prompts
//! wait for `autoinstall-terminal answer` as well as the console. Without keys: nothing.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use crate::step::Run;

/// Where the keys go for the SSH server.
const KEYS_FILE: &str = "/run/nixos-autoinstall/authorized_keys";
/// The environment's script that brings the SSH server up.
const TOOL: &str = "autoinstall-remote-access";

/// Starts remote access for `keys`, inside an installer environment only (marked by
/// /etc/nixos-autoinstall): run on a workstation, the installer never starts a server.
pub fn start(run: &mut Run, keys: &[String]) {
    // A dry run starts nothing (it also runs on a machine's own system: --ssh --dry-run).
    if keys.is_empty() || !crate::in_installer_environment() || run.opts.dry_run {
        return;
    }
    let name = crate::mdns::hostname(run.report.identity.serial.as_deref());
    match serve(keys, &name) {
        Ok(lines) => {
            for l in lines {
                run.ui.say(&l);
                run.report.log(format!("remote access: {l}"));
            }
            match crate::mdns::spawn(&format!("{name}.local")) {
                Ok(()) => run
                    .ui
                    .say(&format!("remote access: {name}.local answers by mDNS")),
                Err(e) => run.ui.say(&format!("remote access: no mDNS ({e})")),
            }
            run.ui.remote.store(true, Ordering::Relaxed);
        }
        Err(e) => {
            let line = format!("remote access: not started: {e}");
            run.ui.say(&line);
            run.report.log(line);
        }
    }
}

fn serve(keys: &[String], name: &str) -> io::Result<Vec<String>> {
    let file = Path::new(KEYS_FILE);
    if let Some(d) = file.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(file, keys.join("\n") + "\n")?;
    fs::set_permissions(file, fs::Permissions::from_mode(0o600))?;
    let tool = machine::format::tool(TOOL)?;
    let out = Command::new(&tool).arg(file).arg(name).output()?;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} failed ({}): {}{}",
            tool.display(),
            out.status,
            said.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(said.lines().map(str::to_string).collect())
}
