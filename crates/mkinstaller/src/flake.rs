//! `--flake REF`: the fleet a flake declares, without hosts.toml. Every NixOS configuration
//! whose `autoinstall.serials` (nixosModules.host) is not empty is a host; the flake's
//! `autoinstall.defaults` output, if any, is `[defaults]`. The hosts.toml is made by the same
//! Nix function as the flake's `lib.mkInstaller` uses (images/nixos/fleet.nix, compiled in),
//! so a stick from either is the same stick. One evaluation for the whole fleet, then one
//! `nix-store --realise` that builds every toplevel.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::fleet::nix_json;

/// The Nix function that turns `nixosConfigurations` into hosts.toml.
const FLEET_NIX: &str = include_str!("../../../images/nixos/fleet.nix");

/// The fleet of the flake at `reference` as a hosts.toml written into `dir` (kept there, so
/// that messages naming its lines can be followed), with every host's toplevel built (with
/// `only`, that host's alone).
pub fn hosts_file(reference: &str, dir: &Path, only: Option<&str>) -> Result<PathBuf, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
    // The URL `nix flake metadata` resolved: the evaluation then reads exactly that. A git
    // checkout with uncommitted changes resolves to an unlocked URL, which getFlake takes
    // only in impure evaluation (as `nix build .#…` builds such a tree): hence --impure.
    let meta = nix_json(
        &["flake", "metadata", "--json", reference],
        &cwd,
        &format!("nix flake metadata {reference}"),
    )?;
    let url = meta["url"]
        .as_str()
        .ok_or_else(|| format!("nix flake metadata {reference}: no url in {meta}"))?;
    let expr = format!(
        "let flake = builtins.getFlake {url}; in ({FLEET_NIX}) {{ nixosConfigurations = flake.nixosConfigurations or {{ }}; defaults = flake.autoinstall.defaults or {{ }}; }}",
        url = serde_json::Value::from(url),
    );
    let fleet = nix_json(
        &["eval", "--impure", "--json", "--expr", &expr],
        &cwd,
        &format!("evaluating the fleet of flake {reference} (nixosConfigurations with autoinstall.serials)"),
    )?;
    let toml = fleet["toml"]
        .as_str()
        .ok_or_else(|| format!("flake {reference}: the fleet's evaluation gave no hosts.toml"))?;
    let names = fleet["hosts"].as_array().cloned().unwrap_or_default();
    let drvs: Vec<&str> = fleet["drvPaths"]
        .as_array()
        .map(|a| {
            a.iter()
                .zip(&names)
                .filter(|(_, n)| only.is_none_or(|o| n.as_str() == Some(o)))
                .filter_map(|(d, _)| d.as_str())
                .collect()
        })
        .unwrap_or_default();
    realise(&drvs, reference)?;
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join("hosts.toml");
    fs::write(&file, toml).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(file)
}

/// Builds every host's toplevel in one `nix-store --realise` (Nix shows its own progress).
fn realise(drvs: &[&str], reference: &str) -> Result<(), String> {
    if drvs.is_empty() {
        return Ok(());
    }
    let status = Command::new("nix-store")
        .arg("--realise")
        .args(drvs)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running nix-store --realise: {e} (is Nix installed?)"))?;
    if !status.success() {
        return Err(format!(
            "building the toplevels of flake {reference} failed (nix-store --realise: {status}); its messages are above"
        ));
    }
    Ok(())
}
