//! Finding a host's profile: a path (relative to hosts.toml), a file in `--profiles DIR`, in
//! `installer-profiles/` beside hosts.toml, or one of the profiles built into mkinstaller.

use std::path::{Path, PathBuf};

use manifest::profile::Profile;

/// The profiles shipped in installer-profiles/, built in so the binary stands alone.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "uefi-ext4",
        include_str!("../../../installer-profiles/uefi-ext4.toml"),
    ),
    (
        "uefi-ext4-swap",
        include_str!("../../../installer-profiles/uefi-ext4-swap.toml"),
    ),
    (
        "uefi-btrfs",
        include_str!("../../../installer-profiles/uefi-btrfs.toml"),
    ),
];

/// A layout's name from its file: the file name without `suffix`, and without the hash of a
/// Nix store path (`/nix/store/<hash>-lab.toml` is `lab`: files a flake's fleet names are
/// copied into the store).
pub fn name_of_file(file: &Path, suffix: &str) -> Option<String> {
    let name = file.file_name()?.to_string_lossy();
    let name = name.strip_suffix(suffix).unwrap_or(&name);
    let in_store = file
        .parent()
        .is_some_and(|p| p == Path::new(nixstore::store_path::STORE_DIR));
    let name = match name.split_once('-') {
        Some((hash, rest)) if in_store && hash.len() == 32 && !rest.is_empty() => rest,
        _ => name,
    };
    Some(name.to_string())
}

/// Resolves `name` for a fleet file in `base_dir`.
pub fn resolve(
    name: &str,
    base_dir: &Path,
    profiles_dir: Option<&Path>,
) -> Result<Profile, String> {
    let load = |file: PathBuf, stem: &str| -> Result<Profile, String> {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("profile {}: {e}", file.display()))?;
        Profile::parse(stem, &file, &text).map_err(|e| e.to_string())
    };
    if name.contains('/') || name.ends_with(".toml") {
        let file = base_dir.join(name);
        let stem = name_of_file(&file, ".toml").unwrap_or_else(|| name.to_string());
        if !file.is_file() {
            return Err(format!(
                "profile {name:?}: {} does not exist",
                file.display()
            ));
        }
        return load(file, &stem);
    }
    let mut searched = Vec::new();
    for dir in profiles_dir
        .into_iter()
        .map(Path::to_path_buf)
        .chain([base_dir.join("installer-profiles")])
    {
        let file = dir.join(format!("{name}.toml"));
        if file.is_file() {
            return load(file, name);
        }
        searched.push(dir.display().to_string());
    }
    if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) {
        return Profile::parse(name, Path::new(&format!("<built-in {name}.toml>")), text)
            .map_err(|e| e.to_string());
    }
    let built_in: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
    Err(format!(
        "profile {name:?} not found: looked in {} and among the built-in profiles ({})",
        searched.join(", "),
        built_in.join(", ")
    ))
}
