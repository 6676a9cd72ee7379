//! `mkinstaller reports … --identity FILE`: the recovery keys the reports escrowed, opened
//! with the admin's identity (an age identity file, or an unprotected OpenSSH private key
//! whose public half is among the fleet's recovery recipients). One line per LUKS volume of
//! each machine's newest report (every report with `--all`), or JSON.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// One opened recovery key.
#[derive(Debug, Serialize)]
pub struct Opened {
    pub machine: String,
    pub host: Option<String>,
    pub started: u64,
    pub volume: String,
    pub luks_uuid: String,
    pub recovery_key: String,
}

/// The recovery keys of the reports under `sources`, opened with the identities in `identity`.
pub fn open(sources: &[PathBuf], all: bool, identity: &Path, json: bool) -> Result<String, String> {
    let what = identity.display().to_string();
    let text = std::fs::File::open(identity)
        .and_then(|f| util::io::read_limited(f, 1 << 20, "an identity file"))
        .map_err(|e| format!("{what}: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| format!("{what}: not a text file"))?;
    let ids = secrets::recovery::identities(&text, &what)?;
    let found = super::read(sources)?;
    let found = if all { found } else { super::newest(found) };
    let mut opened = Vec::new();
    let mut problems = Vec::new();
    for f in &found {
        for e in &f.report.recovery {
            match secrets::recovery::reveal(&e.key, &ids) {
                Ok(key) => opened.push(Opened {
                    machine: f.report.machine(),
                    host: f.report.host.clone(),
                    started: f.report.started,
                    volume: e.volume.clone(),
                    luks_uuid: e.luks_uuid.clone(),
                    recovery_key: key,
                }),
                Err(why) => problems.push(format!("{}: volume {}: {why}", f.from, e.volume)),
            }
        }
    }
    if opened.is_empty() {
        return Err(if problems.is_empty() {
            "no report holds a recovery key (the fleet names no recovery-recipients, or no host has a LUKS volume)".into()
        } else {
            problems.join("\n")
        });
    }
    for p in &problems {
        eprintln!("mkinstaller: {p}");
    }
    if json {
        return Ok(serde_json::to_string_pretty(&opened).expect("serialises") + "\n");
    }
    let mut s = String::new();
    for o in &opened {
        s += &format!(
            "{}  {}  {}  {}  {}\n",
            o.machine,
            o.host.as_deref().unwrap_or("-"),
            o.volume,
            o.luks_uuid,
            o.recovery_key
        );
    }
    Ok(s)
}
