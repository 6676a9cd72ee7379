//! What makes the installed root a NixOS system besides its store: the system profile as
//! nixos-install leaves it, and the host's extra files.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};

/// Generation 1 and the `system` link, the gcroot that keeps profiles alive, and /etc/NIXOS,
/// which marks a NixOS root.
pub fn set_profile(root: &Path, toplevel: &str) -> io::Result<()> {
    let profiles = root.join("nix/var/nix/profiles");
    fs::create_dir_all(&profiles)?;
    let replace = |link: &Path, to: &str| -> io::Result<()> {
        let _ = fs::remove_file(link);
        symlink(to, link)
    };
    replace(&profiles.join("system-1-link"), toplevel)?;
    replace(&profiles.join("system"), "system-1-link")?;
    let gcroots = root.join("nix/var/nix/gcroots");
    fs::create_dir_all(&gcroots)?;
    let profiles_root = gcroots.join("profiles");
    if fs::symlink_metadata(&profiles_root).is_err() {
        symlink("/nix/var/nix/profiles", profiles_root)?;
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc)?;
    fs::write(etc.join("NIXOS"), b"")
}

/// Writes `bytes` as `target` (relative, plain components) under `root` with `mode`. A
/// target that would leave the root, or pass through anything but a directory (a symlink
/// planted by the closure or an earlier file), is refused.
pub fn write_file(root: &Path, target: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let rel = Path::new(target);
    let plain = target
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..");
    if !plain || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{target:?}: the target must be a relative path without `..`"),
        ));
    }
    let mut dir = root.to_path_buf();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{target}: {} is not a directory",
                    dir.display()
                )))
            }
            Err(_) => fs::create_dir(&dir).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
            })?,
        }
    }
    let dest = root.join(rel);
    let _ = fs::remove_file(&dest);
    fs::write(&dest, bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", dest.display())))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setting the mode of {}: {e}", dest.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_files_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        write_file(root.path(), "etc/ssh/key", b"k", 0o600).unwrap();
        let meta = fs::metadata(root.path().join("etc/ssh/key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        for bad in ["../x", "/etc/x", "", "etc/./x"] {
            assert!(write_file(root.path(), bad, b"k", 0o600).is_err(), "{bad}");
        }
        // Through a symlink the closure or an earlier file planted: refused.
        symlink("/tmp", root.path().join("var")).unwrap();
        assert!(write_file(root.path(), "var/x", b"k", 0o600).is_err());
    }
}
