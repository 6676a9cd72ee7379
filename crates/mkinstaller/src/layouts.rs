//! Each host's layout, from the host's own configuration where it has one: a `disko` file
//! (the host's, else `[defaults]`), a flake host's `config.disko.devices` (all flake hosts of
//! one flake evaluated in a single `nix eval`), else its profile's partitions; the profile's
//! disk rules always. Then the check that makes the stick refuse a host that would not boot:
//! every device the host's `etc/fstab` (and, for flake hosts, `boot.initrd.luks.devices`)
//! names must be one the layout makes; `by-uuid` names are honoured by making that UUID.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use manifest::devices::{Content, Layout};
use manifest::document::{LuksKey, LUKS_KEYS_DIR, MAX_LUKS_KEY};
use manifest::hosts::{Defaults, Host, SystemSource};
use manifest::{disko, fstab, Profile};
use media::payload::PayloadFile;
use nixstore::StorePath;
use sha2::{Digest, Sha256};

/// What a flake host's configuration says of its disks.
#[derive(Debug, Clone, Default)]
pub struct FlakeDisks {
    /// `config.disko.devices` without disko's internal (`_`) attributes, if disko is imported.
    pub disko: Option<serde_json::Value>,
    /// `config.boot.initrd.luks.devices`: name → device.
    pub luks: Vec<(String, String)>,
}

/// Evaluates the disks of every flake host, one `nix eval` per flake reference.
pub fn flake_disks(hosts: &[Host], dir: &Path) -> Result<BTreeMap<String, FlakeDisks>, String> {
    let mut by_ref: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for h in hosts {
        if let SystemSource::Flake(f) = &h.system {
            let (reference, name) = f.split_once('#').expect("checked when parsed");
            by_ref.entry(reference).or_default().push((&h.name, name));
        }
    }
    let mut out = BTreeMap::new();
    for (reference, hosts) in by_ref {
        let names: Vec<String> = hosts.iter().map(|(_, n)| format!("{n:?}")).collect();
        // disko's own attributes (`_create`, `_config`, …) hold functions and derivations;
        // what `nix eval --json` can print, and all the layout needs, is the rest.
        let apply = format!(
            r#"cs: let
  strip = v: if builtins.isAttrs v
    then builtins.mapAttrs (_: strip) (removeAttrs v (builtins.filter (n: builtins.substring 0 1 n == "_") (builtins.attrNames v)))
    else if builtins.isList v then map strip v else v;
  one = n: let c = cs.${{n}}.config; in {{
    disko = if c ? disko && c.disko ? devices then strip c.disko.devices else null;
    luks = if c ? boot && c.boot ? initrd && c.boot.initrd ? luks
      then builtins.mapAttrs (_: d: d.device) c.boot.initrd.luks.devices else {{}};
  }};
in builtins.listToAttrs (map (n: {{ name = n; value = one n; }}) [ {} ])"#,
            names.join(" ")
        );
        let attr = format!("{reference}#nixosConfigurations");
        let json = crate::fleet::nix_json(
            &["eval", "--json", &attr, "--apply", &apply],
            dir,
            &format!("nix eval {attr} (the hosts' disko.devices and boot.initrd.luks.devices)"),
        )?;
        for (host, name) in hosts {
            let v = &json[name];
            let luks = v["luks"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, d)| Some((k.clone(), d.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let disko = Some(v["disko"].clone()).filter(|d| !d.is_null());
            out.insert(host.to_string(), FlakeDisks { disko, luks });
        }
    }
    Ok(out)
}

/// The host's layout: its disko file, its flake's disko devices, `[defaults] disko`, or its
/// profile; with the profile's disk rules.
pub fn layout_of(
    h: &Host,
    defaults: &Defaults,
    profile: &Profile,
    flake: Option<&FlakeDisks>,
) -> Result<Layout, String> {
    let rules = profile.disk.clone();
    let from_file = |file: &PathBuf| -> Result<Layout, String> {
        let text =
            fs::read_to_string(file).map_err(|e| format!("disko {}: {e}", file.display()))?;
        let name = crate::profiles::name_of_file(file, ".json")
            .map(|n| n.trim_end_matches(".disko").to_string())
            .unwrap_or_else(|| h.name.clone());
        disko::parse(&text, &name, rules.clone())
            .map_err(|e| format!("disko {}: {e}", file.display()))
    };
    if let Some(file) = &h.disko {
        return from_file(file);
    }
    if let Some(devices) = flake.and_then(|f| f.disko.as_ref()) {
        let text = devices.to_string();
        let what = match &h.system {
            SystemSource::Flake(f) => f.clone(),
            SystemSource::StorePath(_) => h.name.clone(),
        };
        return disko::parse(&text, &h.name, rules)
            .map_err(|e| format!("{what}: config.disko.devices: {e}"));
    }
    if let Some(file) = &defaults.disko {
        return from_file(file);
    }
    Ok(profile.to_layout())
}

/// Checks the host's mounts against `layout` (recording the UUIDs they name), from the
/// system's `etc/fstab` and the flake's LUKS devices. `Ok(false)`: the system has no fstab
/// to check (a bare closure).
pub fn check_mounts(
    layout: &mut Layout,
    toplevel: &StorePath,
    luks: &[(String, String)],
) -> Result<bool, String> {
    let file = PathBuf::from(toplevel.to_string()).join("etc/fstab");
    let text = match fs::read_to_string(&file) {
        Ok(t) => Some(t),
        // No fstab: a bare closure (whose toplevel may be a plain file).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            None
        }
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    if text.is_none() && luks.is_empty() {
        return Ok(false);
    }
    let entries = fstab::parse(text.as_deref().unwrap_or(""));
    fstab::reconcile(&mut layout.devices, &entries, luks).map_err(|problems| {
        format!(
            "the system would not find its disks: its configuration names devices the layout {:?} does not make (the installed machine would stop in stage 1):\n  {}\nmake the host's fileSystems (or boot.initrd.luks.devices) and its layout agree; {} is what NixOS wrote",
            layout.name,
            problems.join("\n  "),
            file.display()
        )
    })?;
    Ok(true)
}

/// The host's LUKS key files: each for a LUKS container of the layout, 1 byte to 64 KiB;
/// their manifest entries and payload files.
pub fn luks_keys(h: &Host, layout: &Layout) -> Result<(Vec<LuksKey>, Vec<PayloadFile>), String> {
    let names: Vec<String> = layout
        .devices
        .contents()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Content::Luks(l) => Some(l.name.clone()),
            _ => None,
        })
        .collect();
    let mut keys = Vec::new();
    let mut files = Vec::new();
    for (name, file) in &h.luks_keys {
        if !names.contains(name) {
            return Err(format!(
                "luks-keys: {name:?} is not a LUKS device of the layout {:?} (it has {})",
                layout.name,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        let data =
            fs::read(file).map_err(|e| format!("luks-keys {name}: {}: {e}", file.display()))?;
        if data.is_empty() || data.len() as u64 > MAX_LUKS_KEY {
            return Err(format!(
                "luks-keys {name}: {} is {} bytes; a key file is 1 byte to 64 KiB",
                file.display(),
                data.len()
            ));
        }
        let source = format!("{LUKS_KEYS_DIR}/{}/{name}", h.name);
        keys.push(LuksKey {
            name: name.clone(),
            source: source.clone(),
            sha256: format!("{:x}", Sha256::digest(&data)),
            size: data.len() as u64,
        });
        files.push(PayloadFile {
            payload_path: source,
            source: file.clone(),
            size: data.len() as u64,
        });
    }
    Ok((keys, files))
}

/// The LUKS containers of `layout` that have no key: the installer asks for a passphrase.
pub fn keyless(layout: &Layout, keys: &[LuksKey]) -> Vec<String> {
    layout
        .devices
        .contents()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Content::Luks(l) if l.tpm2.is_none() && !keys.iter().any(|k| k.name == l.name) => {
                Some(l.name.clone())
            }
            _ => None,
        })
        .collect()
}

/// The layout's LUKS volumes that the TPM2 unlocks.
pub fn tpm2_volumes(layout: &Layout) -> Vec<String> {
    layout
        .devices
        .contents()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Content::Luks(l) if l.tpm2.is_some() => Some(l.name.clone()),
            _ => None,
        })
        .collect()
}
