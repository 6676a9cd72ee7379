//! Load payload: where the stick's payload is, opened as many times as there are workers (a
//! fatfs handle is single-threaded), and where reports go back to.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use manifest::document::REPORTS_DIR;
use media::image::Image;
use media::isoread::{self, IsoPayload};
use media::read::{DirPayload, FatPayload, Payload};
use media::slice::{Extent, Slice};
use media::verify::Opener;

use crate::online::Site;

/// A payload, by location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A payload tree in a directory (`--payload DIR`).
    Dir(PathBuf),
    /// The FAT file system at `extent` of `device` (a stick, an image file, or the payload
    /// partition itself).
    Fat { device: PathBuf, extent: Extent },
    /// The ISO 9660 volume of a CD, BMC virtual medium, ISO file, or hybrid ISO on a stick:
    /// read-only.
    Iso(PathBuf),
    /// A `--format cache` site over HTTP(S) (`--url`, `autoinstall.url=`): read-only, and
    /// no disk of this machine carries it.
    Http(Site),
}

impl Opener for Source {
    fn open(&self) -> io::Result<Box<dyn Payload + '_>> {
        Source::open(self)
    }

    fn describe(&self) -> String {
        Source::describe(self)
    }

    fn remote(&self) -> bool {
        self.is_online()
    }
}

impl Source {
    /// A fresh read handle.
    pub fn open(&self) -> io::Result<Box<dyn Payload>> {
        Ok(match self {
            Source::Dir(d) => Box::new(DirPayload(d.clone())),
            Source::Fat { device, extent } => Box::new(FatPayload::open(device, *extent)?),
            Source::Iso(device) => Box::new(IsoPayload::open(device)?),
            Source::Http(site) => Box::new(site.clone()),
        })
    }

    /// Reads the payload file `path`, which the manifest says is `size` bytes with hash
    /// `sha256` (`sha256:` hex), and checks both; never more than `size` (+1 to see a longer
    /// file), so a medium or server that sends without end cannot fill the memory. `what`
    /// names it in errors.
    pub fn read_checked(
        &self,
        path: &str,
        size: u64,
        sha256: &str,
        what: &str,
    ) -> Result<Vec<u8>, String> {
        let p = self.open().map_err(|e| e.to_string())?;
        let bytes = p
            .read_capped(path, size)
            .map_err(|e| format!("{what}: {e}"))?;
        let found = nixstore::hash::Sha256Hash::of(&bytes);
        if bytes.len() as u64 != size || found.to_hex() != sha256.trim_start_matches("sha256:") {
            return Err(format!(
                "{what} ({path}): its hash or size does not match the manifest; the payload is damaged or was tampered with"
            ));
        }
        Ok(bytes)
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Dir(d) => d.display().to_string(),
            Source::Fat { device, extent } => {
                format!("{} (FAT at byte {})", device.display(), extent.start)
            }
            Source::Iso(device) => format!("{} (ISO 9660)", device.display()),
            Source::Http(site) => site.base().to_string(),
        }
    }

    /// A site over HTTP(S), read once and fetched, rather than a medium at hand.
    pub fn is_online(&self) -> bool {
        matches!(self, Source::Http(_))
    }

    /// The device or file that carries the payload: never an install target. None online.
    pub fn carrier(&self) -> Option<&Path> {
        match self {
            Source::Dir(d) => Some(d),
            Source::Fat { device, .. } => Some(device),
            Source::Iso(device) => Some(device),
            Source::Http(_) => None,
        }
    }

    /// Writes `name` into the payload's reports folder; returns where it went.
    pub fn write_report(&self, name: &str, bytes: &[u8]) -> io::Result<String> {
        match self {
            Source::Dir(d) => {
                let dir = d.join(REPORTS_DIR);
                fs::create_dir_all(&dir)?;
                let path = dir.join(name);
                fs::write(&path, bytes)?;
                Ok(path.display().to_string())
            }
            Source::Fat { device, extent } => {
                // fatfs writes the report, and walks the directories on the way without a
                // loop check: our reader walks their chains first, bounded, so a hostile stick
                // fails here instead of hanging the installer after its work is done.
                let volume = FatPayload::open(device, *extent)?;
                let checked = ["autoinstall/reports", "autoinstall", ""]
                    .into_iter()
                    .map(|d| volume.volume().check_dir_chains(d))
                    .find(|r| !matches!(r, Err(e) if e.kind() == io::ErrorKind::NotFound));
                checked.unwrap_or(Ok(()))?;
                drop(volume);
                let file = OpenOptions::new().read(true).write(true).open(device)?;
                let fs = fatfs::FileSystem::new(
                    Slice::new(file, extent.start, extent.len),
                    fatfs::FsOptions::new(),
                )?;
                {
                    let root = fs.root_dir();
                    let dir = match root.open_dir(REPORTS_DIR) {
                        Ok(d) => d,
                        Err(_) => root
                            .create_dir("autoinstall")
                            .or_else(|_| root.open_dir("autoinstall"))?
                            .create_dir("reports")?,
                    };
                    let mut f = dir.create_file(name)?;
                    f.truncate()?;
                    f.write_all(bytes)?;
                    f.flush()?;
                }
                fs.unmount()?;
                Ok(format!("{}:{REPORTS_DIR}/{name}", self.describe()))
            }
            Source::Iso(_) => Err(io::Error::new(
                io::ErrorKind::ReadOnlyFilesystem,
                format!("{} is read-only", self.describe()),
            )),
            // Online, the report goes back to the site (nginx with WebDAV PUT takes it); a
            // site that does not take reports loses nothing but the report.
            Source::Http(site) => site.put(&format!("{REPORTS_DIR}/{name}"), bytes),
        }
    }
}

/// `--payload DIR|DEVICE|IMAGE`: a directory is a payload tree; a disk or image file with a
/// GPT is searched for the payload partition; an ISO 9660 volume (a CD, an ISO file, a hybrid
/// ISO on a stick) is read as one; anything else is taken as the payload partition itself
/// (e.g. /dev/sdb2).
pub fn from_arg(path: &Path) -> io::Result<Source> {
    let meta = fs::metadata(path)
        .map_err(|e| io::Error::new(e.kind(), format!("--payload {}: {e}", path.display())))?;
    if meta.is_dir() {
        return Ok(Source::Dir(path.to_path_buf()));
    }
    if let Ok(img) = Image::open(path) {
        return Ok(Source::Fat {
            device: path.to_path_buf(),
            extent: img.payload,
        });
    }
    if isoread::is_iso(path) {
        let source = Source::Iso(path.to_path_buf());
        source.open()?;
        return Ok(source);
    }
    let len = device_len(path)?;
    let source = Source::Fat {
        device: path.to_path_buf(),
        extent: Extent { start: 0, len },
    };
    source.open().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{} holds neither an installer image (GPT with a payload partition) nor a payload file system: {e}",
                path.display()
            ),
        )
    })?;
    Ok(source)
}

fn device_len(path: &Path) -> io::Result<u64> {
    use std::io::Seek;
    let mut f = fs::File::open(path)?;
    f.seek(io::SeekFrom::End(0))
}

/// Finds the payload without being told: the device the boot environment found
/// (`AUTOINSTALL_PAYLOAD_DEVICE`, set by the installer's init from `autoinstall.payload=`), else
/// every whole disk and CD whose GPT has the payload partition.
pub fn find() -> io::Result<Source> {
    if let Some(dev) = std::env::var_os("AUTOINSTALL_PAYLOAD_DEVICE") {
        if !dev.is_empty() {
            return from_arg(Path::new(&dev));
        }
    }
    let mut found = Vec::new();
    let mut names: Vec<String> = fs::read_dir("/sys/block")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["ram", "zram", "dm-", "md", "fd"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    names.sort();
    for name in names {
        let dev = PathBuf::from("/dev").join(&name);
        let source = match Image::open(&dev) {
            Ok(img) => Source::Fat {
                device: dev,
                extent: img.payload,
            },
            Err(_) if isoread::is_iso(&dev) => Source::Iso(dev),
            Err(_) => continue,
        };
        if source.open().and_then(|p| p.manifest()).is_ok() {
            found.push(source);
        }
    }
    match found.len() {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no installer payload on any disk or CD (no GPT partition of type ED140608-3A53-493D-9175-A012CF428C95, nor an ISO 9660 volume, holding autoinstall/manifest.json); plug the stick in, or name it with --payload",
        )),
        1 => Ok(found.remove(0)),
        _ => Err(io::Error::other(format!(
            "several disks carry an installer payload ({}); unplug all but one, or name it with --payload",
            found
                .iter()
                .filter_map(|s| s.carrier().map(|c| c.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
