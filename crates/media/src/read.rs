//! Reading installer media back: partitions found by type GUID, FAT read with the fatfs
//! crate (an implementation independent of our writer), and a `Payload` view shared by images,
//! partition devices and plain directories. `verify` re-checks every hash.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use manifest::media::{limits, Manifest, MANIFEST_PATH};
use nixstore::hash::HashingReader;
use nixstore::narinfo::NarInfo;
use nixstore::StorePath;

use crate::fatread::FatVolume;
use crate::usb::{ESP_TYPE_GUID, PAYLOAD_TYPE_GUID};

/// A window onto part of a file or block device, as fatfs wants its storage.
///
/// fatfs reads one cluster (4 KiB here) or one FAT entry (4 bytes) per call, so reads go
/// through a few cached windows: a 600 MiB payload is then read in 256 KiB preads rather than
/// 300,000 tiny ones. There are several because reading a file alternates between its data
/// and the FAT (the next cluster's number): with one window, each would evict the other and
/// every 4 KiB cluster would cost two 256 KiB reads (measured: a third of an install's time).
/// Writes go straight through and drop the windows.
pub struct Slice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
    windows: Vec<Window>,
    /// Bumped on every window hit, to find the least recently used one.
    clock: u64,
}

struct Window {
    /// Offset in the slice of `bytes[0]`.
    at: u64,
    bytes: Vec<u8>,
    used: u64,
}

const WINDOW: usize = 256 * 1024;
/// Data, FAT, and a directory or two.
const WINDOWS: usize = 4;

impl Slice {
    pub fn new(file: File, start: u64, len: u64) -> Slice {
        Slice {
            file,
            start,
            len,
            pos: 0,
            windows: Vec::new(),
            clock: 0,
        }
    }

    /// The index of a window holding `self.pos`, reading one (in place of the least recently
    /// used) if none does; `None` at the end of the slice.
    fn window_for_pos(&mut self) -> io::Result<Option<usize>> {
        self.clock += 1;
        let pos = self.pos;
        if let Some(i) = self
            .windows
            .iter()
            .position(|w| pos >= w.at && pos < w.at + w.bytes.len() as u64)
        {
            self.windows[i].used = self.clock;
            return Ok(Some(i));
        }
        let i = if self.windows.len() < WINDOWS {
            self.windows.push(Window {
                at: 0,
                bytes: Vec::new(),
                used: 0,
            });
            self.windows.len() - 1
        } else {
            (0..self.windows.len())
                .min_by_key(|&i| self.windows[i].used)
                .expect("windows exist")
        };
        let at = pos - pos % 4096;
        let want = (WINDOW as u64).min(self.len - at) as usize;
        let w = &mut self.windows[i];
        w.bytes.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self
                .file
                .read_at(&mut w.bytes[got..], self.start + at + got as u64)
            {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    w.bytes.clear();
                    return Err(e);
                }
            }
        }
        w.bytes.truncate(got);
        w.at = at;
        w.used = self.clock;
        Ok((pos < at + got as u64).then_some(i))
    }
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        if n >= WINDOW {
            let n = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
            self.pos += n as u64;
            return Ok(n);
        }
        let Some(i) = self.window_for_pos()? else {
            return Ok(0);
        };
        let w = &self.windows[i];
        let off = (self.pos - w.at) as usize;
        let n = n.min(w.bytes.len() - off);
        buf[..n].copy_from_slice(&w.bytes[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Slice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.windows.clear();
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let n = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Slice {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => p as i64,
            SeekFrom::End(d) => self.len as i64 + d,
            SeekFrom::Current(d) => self.pos as i64 + d,
        };
        if pos < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            ));
        }
        self.pos = pos as u64;
        Ok(self.pos)
    }
}

/// Where a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub len: u64,
}

/// An installer image (or stick) opened for reading.
pub struct Image {
    pub path: PathBuf,
    pub disk_bytes: u64,
    pub esp: Extent,
    pub payload: Extent,
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl Image {
    /// Opens an image file or device and finds its ESP and payload partitions.
    pub fn open(path: &Path) -> io::Result<Image> {
        let mut file =
            File::open(path).map_err(|e| other(format!("opening {}: {e}", path.display())))?;
        let disk_bytes = file.seek(SeekFrom::End(0))?;
        file.seek(SeekFrom::Start(0))?;
        let disk = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .open_from_device(file)
            .map_err(|e| {
                other(format!(
                    "{}: no valid GPT partition table ({e}); is this an installer image?",
                    path.display()
                ))
            })?;
        let find = |guid: &str, what: &str| {
            disk.partitions()
                .values()
                .find(|p| p.part_type_guid.guid.to_string().eq_ignore_ascii_case(guid))
                .map(|p| Extent {
                    start: p.first_lba * 512,
                    len: (p.last_lba + 1 - p.first_lba) * 512,
                })
                .ok_or_else(|| {
                    other(format!(
                        "{}: no {what} partition (type {guid}); is this an installer image?",
                        path.display()
                    ))
                })
        };
        Ok(Image {
            path: path.to_path_buf(),
            disk_bytes,
            esp: find(ESP_TYPE_GUID, "EFI system")?,
            payload: find(PAYLOAD_TYPE_GUID, "payload")?,
        })
    }

    /// The FAT file system of one of the image's partitions.
    pub fn fat(&self, extent: Extent) -> io::Result<FatPayload> {
        FatPayload::open(&self.path, extent)
    }
}

/// The payload of an installer image: the FAT payload partition of a USB image (or stick), the
/// ISO 9660 volume of an ISO, or a payload directory.
pub fn open_image_payload(path: &Path) -> io::Result<Box<dyn Payload>> {
    if path.is_dir() {
        // A `--format cache` site, or a payload tree copied off a stick.
        return Ok(Box::new(DirPayload(path.to_path_buf())));
    }
    match Image::open(path) {
        Ok(img) => Ok(Box::new(img.fat(img.payload)?)),
        Err(_) if crate::isoread::is_iso(path) => {
            Ok(Box::new(crate::isoread::IsoPayload::open(path)?))
        }
        Err(e) => Err(e),
    }
}

/// Read access to a payload tree, wherever it lives.
pub trait Payload {
    /// Opens a file by its `/`-separated path in the tree.
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>>;
    /// Names of the entries of a directory of the tree (`""` for the top).
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Where it is, for messages.
    fn describe(&self) -> String;

    /// A whole small file of at most `cap` bytes (see `manifest::media::limits`); a longer
    /// one is an error, read no further: no medium or server can fill the memory.
    fn read_capped(&self, path: &str, cap: u64) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open(path)?
            .take(cap.saturating_add(1))
            .read_to_end(&mut v)
            .map_err(|e| other(format!("reading {path} in {}: {e}", self.describe())))?;
        if v.len() as u64 > cap {
            return Err(other(format!(
                "{}: {path} is longer than {cap} bytes, which no such file is; the payload is damaged or hostile",
                self.describe()
            )));
        }
        Ok(v)
    }

    fn manifest(&self) -> io::Result<Manifest> {
        let text = self.read_capped(MANIFEST_PATH, limits::MANIFEST)?;
        let text = String::from_utf8(text)
            .map_err(|_| other(format!("{}: {MANIFEST_PATH} is not UTF-8", self.describe())))?;
        Manifest::parse(&text)
            .map_err(|e| other(format!("{}: {MANIFEST_PATH}: {e}", self.describe())))
    }

    fn narinfo(&self, path: &StorePath) -> io::Result<NarInfo> {
        let name = format!("{}.narinfo", path.hash_part());
        let text = self.read_capped(&name, limits::NARINFO)?;
        let text = String::from_utf8(text)
            .map_err(|_| other(format!("{}: {name} is not UTF-8", self.describe())))?;
        let info = NarInfo::parse(&text)
            .map_err(|e| other(format!("{}: {name}: {e}", self.describe())))?;
        if info.store_path != *path {
            return Err(other(format!(
                "{}: {name} describes {}, not {path}",
                self.describe(),
                info.store_path
            )));
        }
        Ok(info)
    }
}

/// A payload on a FAT partition of an image or device, read with our own FAT32 reader
/// ([`crate::fatread`]), whose every cluster-chain walk is bounded: a hostile stick with a
/// looping chain yields an error, never a hang.
pub struct FatPayload {
    volume: FatVolume,
}

impl FatPayload {
    pub fn open(path: &Path, extent: Extent) -> io::Result<FatPayload> {
        let file =
            File::open(path).map_err(|e| other(format!("opening {}: {e}", path.display())))?;
        let volume = FatVolume::open(file, extent.start, extent.len, path.display().to_string())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the partition at byte {} is not a FAT32 payload: {e}",
                        extent.start
                    ),
                )
            })?;
        Ok(FatPayload { volume })
    }

    pub fn volume(&self) -> &FatVolume {
        &self.volume
    }
}

impl Payload for FatPayload {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.volume.open_file(path)?))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.volume.list(dir)
    }

    fn describe(&self) -> String {
        self.volume.what().to_string()
    }
}

/// A payload tree in a directory (a `--format cache` output or a mounted stick).
pub struct DirPayload(pub PathBuf);

impl Payload for DirPayload {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        let p = self.0.join(path);
        let f = File::open(&p)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        std::fs::read_dir(self.0.join(dir))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// Per-host and whole-payload figures for `inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub format_version: u32,
    pub generator: String,
    pub mode: String,
    pub on_unknown_serial: manifest::UnknownSerial,
    pub after_install: manifest::AfterInstall,
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
    pub profile: String,
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
            profile: h.layout.name.clone(),
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

/// What `verify` found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Verification {
    pub paths: usize,
    pub compressed_bytes: u64,
    pub nar_bytes: u64,
    pub problems: Vec<String>,
}

/// Re-checks every hash on the payload: each closure path has a narinfo for itself, whose
/// references lie in the closure, whose compressed file matches FileHash and FileSize, and
/// whose decompressed NAR matches NarHash and NarSize. `progress` hears compressed bytes.
pub fn verify(p: &dyn Payload, progress: &mut dyn FnMut(u64)) -> io::Result<Verification> {
    let m = p.manifest()?;
    let mut v = Verification::default();
    let mut all: BTreeSet<String> = BTreeSet::new();
    for h in &m.hosts {
        let closure: BTreeSet<&String> = h.closure.iter().collect();
        if !closure.contains(&h.toplevel) {
            v.problems.push(format!(
                "host {}: its closure does not contain its toplevel {}",
                h.name, h.toplevel
            ));
        }
        for path in &h.closure {
            all.insert(path.clone());
        }
        for path in &h.closure {
            let Ok(sp) = StorePath::parse(path) else {
                v.problems
                    .push(format!("host {}: {path:?} is not a store path", h.name));
                continue;
            };
            match p.narinfo(&sp) {
                Ok(info) => {
                    for r in &info.references {
                        if !closure.contains(&r.to_string()) {
                            v.problems.push(format!(
                                "host {}: {path} refers to {r}, which is not in the closure",
                                h.name
                            ));
                        }
                    }
                }
                Err(e) => v.problems.push(format!("{path}: {e}")),
            }
        }
    }
    for path in &all {
        let Ok(sp) = StorePath::parse(path) else {
            continue;
        };
        let Ok(info) = p.narinfo(&sp) else { continue };
        v.paths += 1;
        match check_nar(p, &info, progress) {
            Ok((c, n)) => {
                v.compressed_bytes += c;
                v.nar_bytes += n;
            }
            Err(e) => v.problems.push(format!("{path}: {e}")),
        }
    }
    Ok(v)
}

fn check_nar(
    p: &dyn Payload,
    info: &NarInfo,
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, u64), String> {
    if info.compression != "zstd" {
        return Err(format!("compression {:?} is not zstd", info.compression));
    }
    let file = p.open(&info.url).map_err(|e| e.to_string())?;
    let mut file_hashing = HashingReader::new(ProgressRead {
        inner: file,
        progress,
    });
    let mut decoder =
        zstd::stream::read::Decoder::new(&mut file_hashing).map_err(|e| e.to_string())?;
    let mut nar_hashing = HashingReader::new(&mut decoder);
    io::copy(&mut nar_hashing, &mut io::sink())
        .map_err(|e| format!("{}: cannot be decompressed: {e}", info.url))?;
    let (_, nar_hash, nar_size) = nar_hashing.finish();
    drop(decoder);
    io::copy(&mut file_hashing, &mut io::sink()).map_err(|e| e.to_string())?;
    let (_, file_hash, file_size) = file_hashing.finish();
    if Some(file_hash) != info.file_hash || Some(file_size) != info.file_size {
        return Err(format!(
            "{}: FileHash/FileSize mismatch (found {file_hash}, {file_size} bytes)",
            info.url
        ));
    }
    if nar_hash != info.nar_hash || nar_size != info.nar_size {
        return Err(format!(
            "NAR hash mismatch: found {nar_hash} ({nar_size} bytes), narinfo says {} ({} bytes)",
            info.nar_hash, info.nar_size
        ));
    }
    Ok((file_size, nar_size))
}

struct ProgressRead<'a, R> {
    inner: R,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for ProgressRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads that hop between regions (as fatfs does between the FAT and a file's clusters)
    /// and reads after a write return exactly the bytes of the underlying file.
    #[test]
    fn slice_reads_match_the_file_across_windows_and_writes() {
        let mut tmp = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        tmp.write_all(&bytes).unwrap();
        let start = 4096u64;
        let len = bytes.len() as u64 - start - 100;
        let mut s = Slice::new(tmp.try_clone().unwrap(), start, len);
        let view = &bytes[start as usize..(start + len) as usize];
        // FAT-like 4-byte reads near the start, cluster reads far away, a few other places.
        for k in 0..2000u64 {
            for at in [
                k * 4,
                1_000_000 + k * 512,
                2_500_000 + (k % 7) * 9_000,
                len - 3,
            ] {
                let mut buf = [0u8; 700];
                s.seek(SeekFrom::Start(at)).unwrap();
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0 && n <= 700);
                assert_eq!(&buf[..n], &view[at as usize..at as usize + n], "at {at}");
            }
        }
        // A write is visible to the next read.
        s.seek(SeekFrom::Start(10)).unwrap();
        s.write_all(b"fresh").unwrap();
        s.seek(SeekFrom::Start(8)).unwrap();
        let mut buf = [0u8; 9];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[2..7], b"fresh");
        // The end of the slice reads as the end.
        s.seek(SeekFrom::Start(len)).unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }
}
