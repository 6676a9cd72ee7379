//! `mkinstaller --ssh HOST --dry-run`: the plan the installer would make on that machine,
//! made there by the installer's own planner, with nothing changed. The kit (the static
//! autoinstall-terminal and a FAT image of the payload's manifest and narinfos, see
//! `outputs::write_plan_kit`) goes into a tmpfs of ours on the machine, runs there as
//! `autoinstall-terminal --dry-run --after-kexec` (the disks taken as the installer started
//! by kexec will find them: free of the running system), and goes with its tmpfs.

use std::fs;
use std::process::Stdio;

use super::{clean_up, make_room, send, Ssh, SshInstall, REMOTE_DIR};
use crate::build::{self, BuildOptions, Error};
use crate::outputs::{PLAN_KIT_HELPER, PLAN_KIT_PAYLOAD};
use crate::ui::Ui;

/// Builds the kit into `opts.output`, plans on the machine, and returns the planner's exit
/// status with a line that says how it ended. Its plan goes to stdout.
pub fn plan(opts: &BuildOptions, s: &SshInstall, ui: &Ui) -> Result<(u8, String), Error> {
    let t = &s.ssh.target;
    build::build(opts, ui)?;
    let files: Vec<(&str, u64)> = [PLAN_KIT_HELPER, PLAN_KIT_PAYLOAD]
        .into_iter()
        .map(|n| {
            let at = opts.output.join(n);
            fs::metadata(&at)
                .map(|m| (n, m.len()))
                .map_err(|e| Error::failed(format!("{}: {e}", at.display())))
        })
        .collect::<Result<_, _>>()?;
    let total = files.iter().map(|(_, n)| n).sum();
    make_room(&s.ssh, total)?;
    // Whatever happens next, the kit goes with its tmpfs.
    let planned = send_and_plan(&s.ssh, opts, &files, total, s.json, ui);
    clean_up(&s.ssh);
    let (code, stdout, stderr) = planned?;
    let said = String::from_utf8_lossy(&stderr);
    match code {
        0 => {
            util::out::stdout(&String::from_utf8_lossy(&stdout)).map_err(Error::failed)?;
            for line in said.lines() {
                ui.say(&format!("  {t}: {line}"));
            }
            Ok((0, format!("{t}: planned; nothing on it was changed")))
        }
        code => {
            let why = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no word from the planner")
                .trim_start_matches("autoinstall-terminal: ");
            Ok((
                if code == 3 { 3 } else { 1 },
                format!("{t}: the installer would not install: {why}"),
            ))
        }
    }
}

/// Sends the kit and runs the planner; its status and output.
fn send_and_plan(
    ssh: &Ssh,
    opts: &BuildOptions,
    files: &[(&str, u64)],
    total: u64,
    json: bool,
    ui: &Ui,
) -> Result<(u8, Vec<u8>, Vec<u8>), Error> {
    let bar = ui.bytes(total, "sending the planner");
    for (name, _) in files {
        let at = opts.output.join(name);
        let mut from =
            fs::File::open(&at).map_err(|e| Error::failed(format!("{}: {e}", at.display())))?;
        send(ssh, &mut from, &format!("{REMOTE_DIR}/{name}"), &|n| {
            bar.inc(n)
        })
        .map_err(|e| Error::failed(format!("sending {name} to {}: {e}", ssh.target)))?;
    }
    bar.finish_and_clear();
    let out = ssh
        .command(&format!(
            "chmod 0755 {REMOTE_DIR}/{PLAN_KIT_HELPER} && {REMOTE_DIR}/{PLAN_KIT_HELPER} --payload {REMOTE_DIR}/{PLAN_KIT_PAYLOAD} --dry-run --after-kexec{}",
            if json { " --json" } else { "" }
        ))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::failed(format!("running ssh: {e}")))?;
    // ssh's own failure is 255; anything else is the planner's.
    match out.status.code() {
        Some(255) | None => Err(Error::failed(format!(
            "{}: the planner did not run ({}): {}",
            ssh.target,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Some(code) => Ok((code as u8, out.stdout, out.stderr)),
    }
}
