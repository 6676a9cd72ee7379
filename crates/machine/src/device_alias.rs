//! Making a device path that an installed system's configuration names lead to the disk
//! chosen on this machine, for the time of its boot loader step. NixOS's GRUB installer
//! writes to `boot.loader.grub.devices` (disko: the `device` of each disk holding a BIOS
//! boot partition), a path like `/dev/sda` or `/dev/disk/by-id/ata-…` written on another
//! machine: here it may not exist, or be another disk (the stick). The installer's own /dev
//! is changed only where the path is missing (a symlink, removed on drop); a path that
//! exists and leads elsewhere is covered inside the boot loader's private mount namespace
//! only (`Aliases::overlays`), never in the installer's.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A path the installed system names and the disk it must reach here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAlias {
    pub configured: String,
    pub actual: PathBuf,
}

/// What to do for one alias, decided from what the paths lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The path already leads to the disk.
    Same,
    /// The path is missing: a symlink to the disk.
    Link,
    /// The path leads to another device (`resolved`): the disk's node is bound over it in
    /// the boot loader's namespace.
    Cover { resolved: PathBuf },
}

/// Decides from the resolved paths (`None`: the configured path does not exist).
pub fn decide(configured: Option<&Path>, actual: &Path) -> Action {
    match configured {
        None => Action::Link,
        Some(c) if c == actual => Action::Same,
        Some(c) => Action::Cover {
            resolved: c.to_path_buf(),
        },
    }
}

/// The aliases set up for one boot loader step. Drop removes the symlinks and directories
/// it made, newest first.
#[derive(Debug, Default)]
pub struct Aliases {
    made: Vec<PathBuf>,
    /// (device node to bind, path it covers), both as the installer sees them.
    pub overlays: Vec<(PathBuf, PathBuf)>,
    /// One line per alias, for the report.
    pub notes: Vec<String>,
}

impl Aliases {
    /// Sets up every alias; a configured path outside /dev is refused (the step would write
    /// to a file, not a disk).
    pub fn set_up(aliases: &[DeviceAlias]) -> io::Result<Aliases> {
        let mut out = Aliases::default();
        for a in aliases {
            let path = Path::new(&a.configured);
            if !path.starts_with("/dev/") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the host's configuration names {} as a boot loader disk, which is not under /dev; set the layout's device to the disk's path",
                        a.configured
                    ),
                ));
            }
            let actual = fs::canonicalize(&a.actual)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", a.actual.display())))?;
            let resolved = fs::canonicalize(path).ok();
            match decide(resolved.as_deref(), &actual) {
                Action::Same => {}
                Action::Link => {
                    out.make_parents(path)?;
                    symlink(&actual, path).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("linking {} to {}: {e}", a.configured, actual.display()),
                        )
                    })?;
                    out.made.push(path.to_path_buf());
                    out.notes.push(format!(
                        "{} (the host's boot loader disk) leads to {} for the boot loader step",
                        a.configured,
                        actual.display()
                    ));
                }
                Action::Cover { resolved } => {
                    out.notes.push(format!(
                        "{} (the host's boot loader disk) is {} on this machine; the boot loader step sees {} there instead",
                        a.configured,
                        resolved.display(),
                        actual.display()
                    ));
                    out.overlays.push((actual, resolved));
                }
            }
        }
        Ok(out)
    }

    fn make_parents(&mut self, path: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d.exists() {
                break;
            }
            missing.push(d.to_path_buf());
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            fs::create_dir(&d)
                .map_err(|e| io::Error::new(e.kind(), format!("making {}: {e}", d.display())))?;
            self.made.push(d);
        }
        Ok(())
    }
}

impl Drop for Aliases {
    fn drop(&mut self) {
        for p in self.made.iter().rev() {
            // A directory someone else filled meanwhile stays.
            let _ = fs::remove_file(p).or_else(|_| fs::remove_dir(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_linked_when_missing_covered_when_another_disk_and_left_when_right() {
        let vdb = Path::new("/dev/vdb");
        assert_eq!(decide(None, vdb), Action::Link);
        assert_eq!(decide(Some(vdb), vdb), Action::Same);
        assert_eq!(
            decide(Some(Path::new("/dev/vda")), vdb),
            Action::Cover {
                resolved: "/dev/vda".into()
            }
        );
    }

    #[test]
    fn links_and_their_directories_go_with_the_aliases() {
        // A stand-in for /dev would need a mount; the paths here are under a scratch
        // directory, so set_up's /dev check is exercised on its own.
        let e = Aliases::set_up(&[DeviceAlias {
            configured: "/tmp/sda".into(),
            actual: "/dev/null".into(),
        }])
        .unwrap_err();
        assert!(e.to_string().contains("not under /dev"), "{e}");

        let dir = std::env::temp_dir().join(format!("alias-test-{}", std::process::id()));
        let mut a = Aliases::default();
        let link = dir.join("disk/by-id/ata-X");
        a.make_parents(&link).unwrap();
        symlink("/dev/null", &link).unwrap();
        a.made.push(link.clone());
        assert!(link.exists());
        drop(a);
        assert!(
            !dir.join("disk").exists(),
            "the directories it made are gone"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
