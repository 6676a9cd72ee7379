//! Writing each kind of output: a USB image (a device in place, or a file), a hybrid ISO, a
//! cache site or a netboot directory. Files and directories are written under a temporary
//! name beside the output ([`Partial`]) and renamed into place at the end, so a failed run
//! leaves nothing behind; an existing directory is replaced only if it is ours.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use media::{ids, usb};
use util::size::human;

use crate::options::{BuildOptions, Error};
use crate::refresh::{before_writing, Before, Refreshed};
use crate::ui::Ui;
use media::refresh::Stick;

/// An output written under a temporary name beside its final one (`.NAME.partial`), renamed
/// into place by [`Partial::commit`]. Dropped uncommitted (a failed or interrupted build), it
/// is removed, file or directory: a failed run leaves nothing behind.
pub struct Partial {
    temp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Partial {
    /// The temporary name for `dest` with `suffix` (`partial`, `partial.d`), clear of any
    /// leftover of an interrupted run.
    pub fn new(dest: &Path, suffix: &str) -> Result<Partial, Error> {
        let name = dest
            .file_name()
            .ok_or_else(|| format!("-o {}: not a file or directory name", dest.display()))?;
        let temp = dest.with_file_name(format!(".{}.{suffix}", name.to_string_lossy()));
        remove(&temp);
        Ok(Partial {
            temp,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Renames it to its final name (replacing a file there).
    pub fn commit(mut self) -> Result<(), Error> {
        fs::rename(&self.temp, &self.dest).map_err(|e| {
            Error::failed(format!(
                "renaming {} to {}: {e}",
                self.temp.display(),
                self.dest.display()
            ))
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            remove(&self.temp);
        }
    }
}

/// Removes a file or a directory tree, if there is one.
fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

pub fn is_block_device(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

/// The output's size, if it is fixed: a device's, or `--size` (which must fit the device).
pub fn output_size(opts: &BuildOptions) -> Result<Option<u64>, Error> {
    let device_bytes = if is_block_device(&opts.output) {
        let mut f =
            File::open(&opts.output).map_err(|e| format!("{}: {e}", opts.output.display()))?;
        Some(
            f.seek(SeekFrom::End(0))
                .map_err(|e| format!("{}: {e}", opts.output.display()))?,
        )
    } else {
        None
    };
    if let (Some(size), Some(dev)) = (opts.size, device_bytes) {
        if size > dev {
            return Err(format!(
                "--size {} is larger than {} ({})",
                human(size),
                opts.output.display(),
                human(dev)
            )
            .into());
        }
    }
    Ok(opts.size.or(device_bytes))
}

/// Refuses an output whose file system lacks `needed` bytes of free space (devices and
/// outputs that do not exist yet are measured at their directory).
pub fn check_free_space(output: &Path, needed: u64) -> Result<(), Error> {
    if is_block_device(output) {
        return Ok(());
    }
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(()); // a missing directory is said by the write itself
    };
    let free = st.blocks_available() * st.fragment_size();
    if free < needed {
        return Err(format!(
            "-o {}: the output needs about {}, and {} has {} free; free some space or write elsewhere (nothing was written)",
            output.display(),
            human(needed),
            dir.display(),
            human(free)
        )
        .into());
    }
    Ok(())
}

/// Writes the USB image: a stick of ours refreshed in place, else a device written whole, or a
/// file under a temporary name renamed at the end. Returns the disk's size, and what a
/// refresh kept and wrote.
#[allow(clippy::too_many_arguments)]
pub fn write_usb(
    opts: &BuildOptions,
    esp: &media::fat32::Tree,
    payload: &media::fat32::Tree,
    ids: &usb::Ids,
    existing: Option<&Stick>,
    size: Option<u64>,
    bios: Option<&media::bios::BiosBoot>,
    ui: &Ui,
) -> Result<(u64, Option<Refreshed>), Error> {
    for tree in [esp, payload] {
        if let Some((path, size)) = tree.file_over_fat_limit() {
            return Err(format!(
                "{path} is {size} bytes ({}), and a stick's FAT32 holds files under 4 GiB: write this fleet as an ISO (-o fleet.iso; ISO 9660 holds files of any size, and dd'ed to a stick it boots as one) or serve it online (--format cache, then --online URL); nothing was written",
                human(size)
            )
            .into());
        }
    }
    let payload = match before_writing(opts, existing, esp, payload, size, ids.timestamp, ui)? {
        Before::Done {
            disk_bytes,
            refreshed,
        } => {
            // A stick refreshed in place gets the environment's BIOS boot code as well.
            if let Some(b) = bios {
                let out = OpenOptions::new()
                    .write(true)
                    .open(&opts.output)
                    .and_then(|f| b.install(&f).and_then(|()| f.sync_all()))
                    .map_err(|e| {
                        Error::failed(format!(
                            "writing the BIOS boot code to {}: {e}",
                            opts.output.display()
                        ))
                    });
                out?;
            }
            return Ok((disk_bytes, Some(refreshed)));
        }
        Before::WriteWhole(payload) => payload,
    };
    let payload = payload.as_ref();
    let is_device = is_block_device(&opts.output);
    let layout = usb::plan(esp, payload, size).map_err(|e| match e {
        usb::LayoutError::TooSmall { needed, given } if is_device => format!(
            "{} is {}, and the image needs {}: use a larger stick (nothing was written)",
            opts.output.display(),
            human(given),
            human(needed)
        ),
        e => e.to_string(),
    })?;
    check_free_space(&opts.output, esp.content_bytes() + payload.content_bytes())?;
    let partial = if is_device {
        None
    } else {
        Some(Partial::new(&opts.output, "partial")?)
    };
    let target = partial.as_ref().map_or(opts.output.as_path(), |p| p.path());
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(!is_device)
        .truncate(false)
        .open(target)
        .map_err(|e| Error::failed(format!("opening {} for writing: {e}", target.display())))?;
    let total = esp.content_bytes() + payload.content_bytes();
    let bar = ui.bytes(total, "writing");
    let written = usb::write(&mut out, &layout, esp, payload, ids, bios, &mut |n| {
        bar.inc(n)
    });
    bar.finish_and_clear();
    written.map_err(|e| Error::failed(format!("writing {}: {e}", opts.output.display())))?;
    drop(out);
    if let Some(p) = partial {
        p.commit()?;
    }
    Ok((layout.disk_bytes, None))
}

/// Writes the payload as a directory (`--format cache`): built beside the output under a
/// temporary name, then swapped in. An existing output is replaced only if it is one of ours
/// (it has a manifest) or empty, so a mistyped -o never empties someone's directory. Returns
/// the bytes of file contents.
pub fn write_cache_dir(
    opts: &BuildOptions,
    payload: &media::fat32::Tree,
    ui: &Ui,
) -> Result<u64, Error> {
    replace_dir(&opts.output, |partial| {
        let bar = ui.bytes(payload.content_bytes(), "writing");
        let written = media::dirout::write_tree(payload, partial, &mut |n| bar.inc(n));
        bar.finish_and_clear();
        written.map_err(|e| format!("writing {}: {e}", opts.output.display()))
    })
}

/// Writes a directory that boots the installer: netboot files, or a kexec bundle, as
/// `--format` says.
pub fn write_boot_dir(
    opts: &BuildOptions,
    nb: &media::netboot::Netboot,
    ui: &Ui,
) -> Result<u64, Error> {
    match opts.format {
        crate::options::OutputFormat::Kexec => write_kexec(opts, nb, ui),
        _ => write_netboot(opts, nb, ui),
    }
}

/// Writes the netboot directory (`--format netboot`).
fn write_netboot(opts: &BuildOptions, nb: &media::netboot::Netboot, ui: &Ui) -> Result<u64, Error> {
    let written = replace_dir(&opts.output, |partial| {
        let bar = ui.bytes(
            nb.embedded.map_or(0, |t| t.content_bytes()),
            "writing the initrd",
        );
        let w = media::netboot::write(partial, nb, &mut |n| bar.inc(n));
        bar.finish_and_clear();
        let w = w.map_err(|e| format!("writing {}: {e}", opts.output.display()))?;
        if !w.uki {
            ui.say(&format!(
                "no {} (UKI): the installer environment {} has no linuxx64.efi.stub; iPXE boots without it",
                media::netboot::UKI,
                nb.env.dir.display()
            ));
        }
        Ok(w.bytes)
    })?;
    Ok(written)
}

/// Writes the kexec bundle (`--format kexec`).
fn write_kexec(opts: &BuildOptions, nb: &media::netboot::Netboot, ui: &Ui) -> Result<u64, Error> {
    replace_dir(&opts.output, |partial| {
        let bar = ui.bytes(
            nb.embedded.map_or(0, |t| t.content_bytes()),
            "writing the initrd",
        );
        let w = media::kexec::write(partial, nb, &mut |n| bar.inc(n));
        bar.finish_and_clear();
        if nb.env.helper.is_none() {
            ui.warn(&format!(
                "the installer environment {} has no static autoinstall-terminal: the bundle needs kexec-tools on the machine (images/debian/build puts one there)",
                nb.env.dir.display()
            ));
        }
        w.map_err(|e| format!("writing {}: {e}", opts.output.display()))
    })
}

/// The files of the plan kit (`--ssh --dry-run`).
pub const PLAN_KIT_HELPER: &str = "autoinstall-terminal";
pub const PLAN_KIT_PAYLOAD: &str = "payload.img";

/// `--ssh --dry-run`'s kit, in place of the bundle: the environment's static
/// autoinstall-terminal and a FAT image of the payload's manifest (and its signature) and
/// narinfos, all the planner reads. No NARs, and no extra files or keys: a dry run sends
/// nothing secret to the running system.
pub fn write_plan_kit(
    opts: &BuildOptions,
    env: &media::esp::InstallerEnv,
    payload: &media::fat32::Tree,
    timestamp: u64,
) -> Result<u64, Error> {
    let helper = env.helper.as_ref().ok_or_else(|| {
        Error::from(format!(
            "--dry-run: the installer environment {} has no static autoinstall-terminal to plan with on the machine (images/debian/build puts one there)",
            env.dir.display()
        ))
    })?;
    let mut meta = media::fat32::Tree::new();
    for (path, source) in payload.walk() {
        let planned = path.ends_with(".narinfo")
            || path == nixstore::binary_cache::CACHE_INFO
            || path == manifest::document::MANIFEST_PATH
            || path == manifest::document::MANIFEST_SIG_PATH;
        match source {
            Some(s) if planned => meta.add_file(&path, s.clone()),
            Some(_) => {}
            None => meta.add_dir(&path),
        }
    }
    replace_dir(&opts.output, |partial| {
        let copied = fs::copy(helper, partial.join(PLAN_KIT_HELPER))
            .map_err(|e| format!("copying {}: {e}", helper.display()))?;
        let at = partial.join(PLAN_KIT_PAYLOAD);
        let f = File::create(&at).map_err(|e| format!("{}: {e}", at.display()))?;
        let geometry = media::fat32::min_geometry(&meta, 0);
        let vol = media::fat32::VolumeOptions {
            label: usb::PAYLOAD_FS_LABEL.into(),
            volume_id: 0,
            hidden_sectors: 0,
            timestamp,
        };
        // The writer leaves the free clusters unwritten: the file gets its full length.
        media::fat32::write(&f, 0, &geometry, &meta, &vol, &mut |_| {})
            .and_then(|_| f.set_len(geometry.bytes()))
            .map_err(|e| format!("writing {}: {e}", at.display()))?;
        Ok(copied + geometry.bytes())
    })
}

/// Fills a fresh directory with `fill`, then swaps it in for `out`. An existing `out` is
/// replaced only if it is one of ours (a manifest or an iPXE script of ours) or empty, so a
/// mistyped -o never empties someone's directory. Returns what `fill` returns (bytes).
fn replace_dir(out: &Path, fill: impl FnOnce(&Path) -> Result<u64, String>) -> Result<u64, Error> {
    check_dir_output(out)?;
    let partial = Partial::new(out, "partial")?;
    fs::create_dir_all(partial.path())
        .map_err(|e| Error::failed(format!("creating {}: {e}", partial.path().display())))?;
    let bytes = fill(partial.path()).map_err(Error::failed)?;
    // The old output aside, the new one in, the old one gone: never a moment without one.
    let old = Partial::new(out, "old")?;
    if out.exists() {
        fs::rename(out, old.path())
            .map_err(|e| Error::failed(format!("moving the old {} aside: {e}", out.display())))?;
    }
    partial.commit()?;
    drop(old);
    Ok(bytes)
}

/// An existing directory output is replaced only if it is one of ours or empty.
pub fn check_dir_output(out: &Path) -> Result<(), Error> {
    if !out.exists() {
        return Ok(());
    }
    let ours = out.join(manifest::document::MANIFEST_PATH).is_file()
        || media::netboot::written_here(out)
        || media::kexec::written_here(out);
    let empty = fs::read_dir(out)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !out.is_dir() || !(ours || empty) {
        return Err(format!(
            "-o {}: exists and is not a directory written by mkinstaller; name a new or empty directory (nothing was written)",
            out.display()
        )
        .into());
    }
    Ok(())
}

/// Writes the hybrid ISO: the ESP as a FAT image, the payload tree grafted from the NAR cache
/// (nothing copied), xorriso in between; under a temporary name, renamed at the end. Returns
/// the image's size.
#[allow(clippy::too_many_arguments)]
pub fn write_iso(
    opts: &BuildOptions,
    esp: &media::fat32::Tree,
    payload: &media::fat32::Tree,
    volume_id: &str,
    seed: &[u8],
    timestamp: u64,
    bios_mbr: Option<&std::path::Path>,
    ui: &Ui,
) -> Result<u64, Error> {
    let partial = Partial::new(&opts.output, "partial")?;
    let scratch_dir = Partial::new(&opts.output, "partial.d")?;
    let scratch = scratch_dir.path().to_path_buf();
    let partial_path = partial.path().to_path_buf();
    let result = (|| -> Result<u64, String> {
        fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
        // The ESP, as small as its files allow (the installer never writes to it).
        let esp_image = scratch.join("esp.img");
        let geometry = media::fat32::min_geometry(esp, 0);
        let f = File::create(&esp_image)
            .map_err(|e| format!("creating {}: {e}", esp_image.display()))?;
        let esp_opts = media::fat32::VolumeOptions {
            label: usb::ESP_FS_LABEL.into(),
            volume_id: ids::volume_id(seed, "esp"),
            hidden_sectors: 0,
            timestamp,
        };
        let bar = ui.bytes(esp.content_bytes(), "writing the ESP");
        media::fat32::write(&f, 0, &geometry, esp, &esp_opts, &mut |n| bar.inc(n))
            .map_err(|e| format!("writing {}: {e}", esp_image.display()))?;
        bar.finish_and_clear();
        f.set_len(geometry.bytes())
            .map_err(|e| format!("sizing {}: {e}", esp_image.display()))?;
        drop(f);

        let staged = media::iso::stage(payload, &scratch)
            .map_err(|e| format!("staging the payload in {}: {e}", scratch.display()))?;
        let spinner = ui.bytes(payload.content_bytes(), "writing the ISO (xorriso)");
        let bios_boot = media::esp::CD_BIOS_IMAGE;
        let job = media::iso::IsoJob {
            files: &staged.files,
            empty_dirs: &staged.empty_dirs,
            esp_image: &esp_image,
            bios_boot: staged
                .files
                .iter()
                .any(|(p, _)| p == bios_boot)
                .then_some(bios_boot),
            bios_mbr,
            volume_id,
            epoch: timestamp,
            output: &partial_path,
            scratch: &scratch,
        };
        use media::iso::IsoBackend;
        media::iso::Xorriso::default()
            .write_iso(&job)
            .map_err(|e| format!("writing {}: {e}", opts.output.display()))?;
        spinner.finish_and_clear();
        fs::metadata(&partial_path)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", partial_path.display()))
    })();
    let bytes = result.map_err(Error::failed)?;
    partial.commit()?;
    drop(scratch_dir);
    Ok(bytes)
}
