//! What `mkinstaller inspect` shows of a payload: per host and in all, with what is shared.

use std::collections::BTreeMap;
use std::io;

use nixstore::narinfo::NarInfo;
use nixstore::StorePath;

use manifest::document::{limits, MANIFEST_SIG_PATH};

use crate::read::Payload;

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Per-host and whole-payload figures for `inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub format_version: u32,
    pub generator: String,
    pub mode: String,
    pub on_unknown_serial: manifest::UnknownSerial,
    pub after_install: manifest::AfterInstall,
    pub confirm_seconds: u32,
    pub verify: manifest::Verify,
    pub fleet: Option<String>,
    pub generation: u64,
    /// The names of the keys whose signatures the manifest carries (`name:…` lines of
    /// `manifest.json.sig`; checked by `verify --trusted-key`, not here). Empty: unsigned.
    pub signed_by: Vec<String>,
    pub hosts: Vec<HostSummary>,
    /// Distinct store paths on the payload.
    pub paths: usize,
    /// NAR bytes of all distinct paths (what the union of the closures takes installed).
    pub nar_bytes: u64,
    /// Compressed bytes of all distinct NARs (what the payload carries).
    pub compressed_bytes: u64,
    /// NAR bytes of paths in more than one host's closure: stored once, used by several.
    pub shared_nar_bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HostSummary {
    pub name: String,
    pub serials: Vec<String>,
    pub toplevel: String,
    /// The layout's name (a profile's, or a disko file's) and where it came from.
    pub layout: String,
    pub layout_source: manifest::devices::LayoutSource,
    /// How many disks the layout takes, and its LUKS devices with a key on the medium.
    pub disks: usize,
    pub luks_keys: usize,
    /// Its extra files and LUKS keys are sealed (to the fleet's passphrase, or its TPM).
    pub sealed: bool,
    /// Sealed to the host's TPM (`secrets = "tpm"`).
    pub sealed_to_tpm: bool,
    /// Its layout's LUKS volumes that the TPM2 unlocks.
    pub tpm2_volumes: usize,
    /// The platform its system is built for (`x86_64-linux`), if the stick says.
    pub system: Option<String>,
    pub bootable: bool,
    /// How it starts: by UEFI, by legacy BIOS, or either (from its layout).
    pub boot: manifest::devices::BootSupport,
    pub closure_paths: usize,
    pub closure_nar_bytes: u64,
    pub closure_compressed_bytes: u64,
    /// NAR bytes of paths no other host uses.
    pub unique_nar_bytes: u64,
}

/// Reads the manifest and every narinfo it needs.
pub fn summarise(p: &dyn Payload) -> io::Result<Summary> {
    let m = p.manifest()?;
    let mut infos: BTreeMap<String, NarInfo> = BTreeMap::new();
    let mut users: BTreeMap<String, usize> = BTreeMap::new();
    for h in &m.hosts {
        for path in &h.closure {
            *users.entry(path.clone()).or_default() += 1;
            if !infos.contains_key(path) {
                let sp = StorePath::parse(path)
                    .map_err(|e| other(format!("{}: manifest: {e}", p.describe())))?;
                infos.insert(path.clone(), p.narinfo(&sp)?);
            }
        }
    }
    let hosts = m
        .hosts
        .iter()
        .map(|h| HostSummary {
            name: h.name.clone(),
            serials: h.serials.clone(),
            toplevel: h.toplevel.clone(),
            layout: h.layout.name.clone(),
            layout_source: h.layout.source,
            disks: h.layout.devices.disks.len(),
            luks_keys: h.luks_keys.len() + h.sealed.as_ref().map_or(0, |s| s.luks_keys.len()),
            sealed: h.sealed.is_some(),
            sealed_to_tpm: h.sealed.as_ref().is_some_and(|s| s.tpm.is_some()),
            tpm2_volumes: h
                .layout
                .devices
                .contents()
                .into_iter()
                .filter(
                    |(_, c)| matches!(c, manifest::devices::Content::Luks(l) if l.tpm2.is_some()),
                )
                .count(),
            system: h.system.clone(),
            bootable: h.bootable,
            boot: h.layout.boot_support(),
            closure_paths: h.closure.len(),
            closure_nar_bytes: h.closure.iter().map(|c| infos[c].nar_size).sum(),
            closure_compressed_bytes: h
                .closure
                .iter()
                .map(|c| infos[c].file_size.unwrap_or(0))
                .sum(),
            unique_nar_bytes: h
                .closure
                .iter()
                .filter(|c| users[*c] == 1)
                .map(|c| infos[c].nar_size)
                .sum(),
        })
        .collect();
    Ok(Summary {
        format_version: m.version,
        generator: m.generator.clone(),
        mode: format!("{:?}", m.mode).to_lowercase(),
        on_unknown_serial: m.on_unknown_serial.clone(),
        after_install: m.after_install,
        confirm_seconds: m.confirm_seconds,
        verify: m.verify,
        fleet: m.fleet.clone(),
        generation: m.generation,
        signed_by: signers(p),
        hosts,
        paths: infos.len(),
        nar_bytes: infos.values().map(|i| i.nar_size).sum(),
        compressed_bytes: infos.values().map(|i| i.file_size.unwrap_or(0)).sum(),
        shared_nar_bytes: infos
            .iter()
            .filter(|(k, _)| users[*k] > 1)
            .map(|(_, i)| i.nar_size)
            .sum(),
    })
}

/// The key names of the manifest's signature lines, if it has any.
fn signers(p: &dyn Payload) -> Vec<String> {
    let Ok(sig) = p.read_capped(MANIFEST_SIG_PATH, limits::SIGNATURE) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&sig)
        .lines()
        .filter_map(|l| l.trim().split_once(':').map(|(name, _)| name.to_string()))
        .filter(|n| !n.is_empty())
        .collect()
}
