//! ISO output: one hybrid file that is an ISO 9660 volume (Rock Ridge + Joliet, level 3, so
//! files over 4 GiB fit) carrying the payload tree, and at the same time a GPT disk whose
//! second partition is the ESP, with an El Torito UEFI entry pointing at that partition. The
//! same file boots as a CD, as BMC virtual media, and after `dd` to a stick.
//!
//! Writing ISO 9660, Rock Ridge, Joliet, El Torito and the hybrid GPT by hand is a format
//! project of its own; no crate on crates.io writes all of them (hybrid GPT and El Torito
//! pointing into an appended partition least of all). xorriso does, is in every distribution
//! and is what NixOS's own ISOs use. It sits behind [`IsoBackend`], so another writer can take
//! its place without touching the caller.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fat32::{Source, Tree};
use crate::usb::ESP_TYPE_GUID;

/// What an ISO writer is asked to do.
pub struct IsoJob<'a> {
    /// The payload tree, as `path-in-image=path-on-host` pairs (every file, in tree order).
    pub files: &'a [(String, PathBuf)],
    /// Directories that must exist even if empty (`autoinstall/reports`, say).
    pub empty_dirs: &'a [String],
    /// A FAT image holding the ESP, appended as GPT partition 2.
    pub esp_image: &'a Path,
    /// A file of the tree that is GRUB's El Torito image for BIOS, booted from a CD.
    pub bios_boot: Option<&'a str>,
    /// With `bios_boot`: GRUB's MBR code that starts it when the ISO is written to a disk.
    pub bios_mbr: Option<&'a Path>,
    /// The ISO 9660 volume ID (at most 32 of A–Z, 0–9 and `_`).
    pub volume_id: &'a str,
    /// Seconds since the epoch for every date in the image (SOURCE_DATE_EPOCH).
    pub epoch: u64,
    pub output: &'a Path,
    /// Scratch space for the writer (a directory that exists).
    pub scratch: &'a Path,
}

/// An ISO writer.
pub trait IsoBackend {
    fn write_iso(&self, job: &IsoJob) -> io::Result<()>;
}

/// The xorriso backend (Debian: `apt-get install xorriso`).
pub struct Xorriso {
    pub program: PathBuf,
}

impl Default for Xorriso {
    fn default() -> Self {
        Xorriso {
            program: PathBuf::from("xorriso"),
        }
    }
}

impl IsoBackend for Xorriso {
    fn write_iso(&self, job: &IsoJob) -> io::Result<()> {
        // Graft points in a path list (not on the command line: a fleet has thousands of
        // files): `=` and `\` in names are escaped with `\`.
        let escape = |s: &str| s.replace('\\', "\\\\").replace('=', "\\=");
        let list = job.scratch.join("path-list");
        let empty = job.scratch.join("empty-dir");
        fs::create_dir_all(&empty)?;
        {
            let mut w = io::BufWriter::new(fs::File::create(&list)?);
            for (inside, host) in job.files {
                let host = host.to_str().ok_or_else(|| {
                    io::Error::other(format!("{}: not a UTF-8 path", host.display()))
                })?;
                writeln!(w, "/{}={}", escape(inside), escape(host))?;
            }
            for d in job.empty_dirs {
                writeln!(w, "/{}={}", escape(d), escape(&empty.to_string_lossy()))?;
            }
            w.flush()?;
        }
        let esp = job.esp_image.to_string_lossy();
        let out = Command::new(&self.program)
            .env("SOURCE_DATE_EPOCH", job.epoch.to_string())
            .args(["-as", "mkisofs", "-quiet", "-iso-level", "3"])
            .args(["-joliet", "-joliet-long", "-rational-rock"])
            .args(["-V", job.volume_id])
            // SOURCE_DATE_EPOCH fixes the volume's dates but leaves each file's its mtime (the
            // NAR cache's files are as new as the run that compressed them): fix those too.
            // xorriso ignores "=0" here, so the epoch itself becomes one second after it.
            .arg("--set_all_file_dates")
            .arg(format!("={}", job.epoch.max(1)))
            // Hybrid GPT: the ISO keeps the first 16 blocks for the partition tables, the ESP
            // is appended as partition 2, and the UEFI El Torito entry boots it.
            .args(["-partition_offset", "16"])
            .args(["-append_partition", "2", ESP_TYPE_GUID, &esp])
            .arg("-appended_part_as_gpt")
            // A BIOS entry first (with GRUB's boot information patched in), then UEFI's.
            .args(job.bios_boot.map_or(vec![], |b| {
                vec![
                    "-b",
                    b,
                    "-no-emul-boot",
                    "-boot-load-size",
                    "4",
                    "-boot-info-table",
                    "--grub2-boot-info",
                ]
            }))
            .args(match (job.bios_boot, job.bios_mbr) {
                (Some(_), Some(mbr)) => vec!["--grub2-mbr".into(), mbr.as_os_str().to_owned()],
                _ => vec![],
            })
            .args([
                "-eltorito-alt-boot",
                "-e",
                "--interval:appended_partition_2:all::",
            ])
            .arg("-no-emul-boot")
            .arg("--boot-catalog-hide")
            .args(["-graft-points", "-path-list"])
            .arg(&list)
            .arg("-o")
            .arg(job.output)
            .output()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "running {}: {e}; ISO output needs xorriso (apt-get install xorriso)",
                        self.program.display()
                    ),
                )
            })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "xorriso failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// A tree laid out on the host: `(path in the image, file on the host)` and empty directories.
pub struct Staged {
    pub files: Vec<(String, PathBuf)>,
    pub empty_dirs: Vec<String>,
}

/// Lays `tree` out for an [`IsoJob`]: files that live on the host are grafted from where they
/// are (the NAR cache: nothing is copied), files made in memory are written under `scratch`.
pub fn stage(tree: &Tree, scratch: &Path) -> io::Result<Staged> {
    let mut files = Vec::new();
    let mut empty_dirs = Vec::new();
    let staged = scratch.join("files");
    for (path, node) in tree.plain_walk()? {
        match node {
            None => empty_dirs.push(path),
            Some(Source::File { path: host, .. }) => files.push((path, host.clone())),
            Some(Source::Bytes(bytes)) => {
                let host = staged.join(&path);
                fs::create_dir_all(host.parent().expect("a file has a parent"))?;
                fs::write(&host, bytes)?;
                files.push((path, host));
            }
        }
    }
    Ok(Staged { files, empty_dirs })
}
