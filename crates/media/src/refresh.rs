//! Refreshing a stick of ours (or a USB image file) in place: both FAT32 volumes are read
//! back, and each is refreshed by [`crate::fat32::refresh`] (what stays stays, what is new
//! goes into free clusters, one sector commits), the ESP first and the payload last, so the
//! manifest that says what the stick holds is the last thing to change. The GPT and the
//! partitions stay as they are: a stick that needs another layout is written whole.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use manifest::document::REPORTS_DIR;

use crate::fat32::refresh::{self as volume, OnDisk};
use crate::fat32::{Source, Tree};
use crate::fatread::FatVolume;
use crate::image::{Extent, Image};
use crate::usb::Ids;

/// Bytes of reports carried from the old stick into the new tree, at most: the payload keeps
/// 16 MiB for them, so more than this is not a stick of ours in use.
const MAX_REPORT_BYTES: u64 = 256 << 20;

/// A stick of ours, read back.
pub struct Stick {
    pub disk_bytes: u64,
    guids: [uuid::Uuid; 3],
    esp: (Extent, FatVolume, OnDisk),
    payload: (Extent, FatVolume, OnDisk),
}

/// What reading `path` back found.
pub enum Found {
    /// Not a stick of ours (no GPT with our partitions): it is written whole.
    Other,
    /// A stick of ours.
    Ours(Box<Stick>),
    /// Our partitions, but a volume that does not read back cleanly (the reason): it is
    /// written whole.
    Damaged(String),
}

/// Reads `path` back as a stick of ours.
pub fn read_stick(path: &Path) -> Found {
    let Ok(img) = Image::open(path) else {
        return Found::Other;
    };
    let volume = |extent: Extent, what: &str| -> io::Result<(Extent, FatVolume, OnDisk)> {
        let file = File::open(path)?;
        let vol = FatVolume::open(
            file,
            extent.start,
            extent.len,
            format!("{} ({what})", path.display()),
        )?;
        let on_disk = vol.on_disk()?;
        Ok((extent, vol, on_disk))
    };
    match (volume(img.esp, "ESP"), volume(img.payload, "payload")) {
        (Ok(esp), Ok(payload)) => Found::Ours(Box::new(Stick {
            disk_bytes: img.disk_bytes,
            guids: img.guids,
            esp,
            payload,
        })),
        (Err(e), _) | (_, Err(e)) => Found::Damaged(e.to_string()),
    }
}

impl Stick {
    /// The stick's identifiers (GPT GUIDs, FAT volume IDs): a refresh keeps them, so what
    /// names the payload (the loader entry's `PARTUUID=`) must be made from them.
    pub fn ids(&self, timestamp: u64) -> Ids {
        let volume_id = |(_, _, on_disk): &(Extent, FatVolume, OnDisk)| {
            u32::from_le_bytes(on_disk.boot[67..71].try_into().expect("4 bytes"))
        };
        Ids {
            disk: self.guids[0],
            esp: self.guids[1],
            payload: self.guids[2],
            esp_volume: volume_id(&self.esp),
            payload_volume: volume_id(&self.payload),
            timestamp,
        }
    }

    /// Adds the reports installers wrote back to the stick to `payload` (the tree that will
    /// replace it), so a refresh or a rewrite loses none. Returns how many.
    pub fn carry_reports(&self, payload: &mut Tree) -> io::Result<usize> {
        let (_, vol, on_disk) = &self.payload;
        let prefix = format!("{REPORTS_DIR}/");
        let mut total = 0u64;
        let mut n = 0;
        for (path, f) in &on_disk.entries {
            let Some(f) = f.as_ref().filter(|_| path.starts_with(&prefix)) else {
                continue;
            };
            total += f.size;
            if total > MAX_REPORT_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the reports on it take more than {} MiB; copy them off \
                         (mkinstaller reports) and write the stick with --rewrite",
                        vol.what(),
                        MAX_REPORT_BYTES >> 20
                    ),
                ));
            }
            let mut bytes = Vec::with_capacity(f.size as usize);
            vol.open_file(path)?.read_to_end(&mut bytes)?;
            payload.add_file(path, Source::Bytes(bytes));
            n += 1;
        }
        Ok(n)
    }
}

/// A refresh of both volumes, worked out.
pub struct Refresh<'t> {
    esp: (u64, volume::Plan<'t>),
    payload: (u64, volume::Plan<'t>),
}

/// What a refresh keeps and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub kept_files: usize,
    pub kept_bytes: u64,
    pub new_files: usize,
    pub new_bytes: u64,
}

/// Works out how `esp` and `payload` replace what `stick` holds. Files already on it are
/// kept when their bytes are the same: NARs by their name (which is the hash of their bytes)
/// and size, everything else by reading them back. A `StorageFull` error means the new
/// files do not fit beside the old: the stick must be written whole.
pub fn plan<'t>(
    stick: &'t Stick,
    esp: &'t Tree,
    payload: &'t Tree,
    timestamp: u64,
) -> io::Result<Refresh<'t>> {
    let one = |(extent, vol, on_disk): &'t (Extent, FatVolume, OnDisk), tree: &'t Tree| {
        let p = volume::plan(
            on_disk,
            tree,
            timestamp,
            &mut |path, source| same_bytes(vol, path, source),
            &clear_secret,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", vol.what())))?;
        Ok::<_, io::Error>((extent.start, p))
    };
    Ok(Refresh {
        esp: one(&stick.esp, esp)?,
        payload: one(&stick.payload, payload)?,
    })
}

/// Whether the old file at `path` held a secret in the clear (hosts.toml `secrets =
/// "clear"`): once a refresh frees it, its bytes are overwritten, so a stick refreshed to
/// sealed secrets (or a rotated key) keeps no old key in its free space.
fn clear_secret(path: &str) -> bool {
    [
        manifest::document::EXTRA_FILES_DIR,
        manifest::document::LUKS_KEYS_DIR,
    ]
    .iter()
    .any(|dir| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Whether the file at `path` on the volume holds the bytes of `source` (same size already).
fn same_bytes(vol: &FatVolume, path: &str, source: &Source) -> io::Result<bool> {
    if content_addressed(path) {
        return Ok(true);
    }
    let mut on_disk = vol.open_file(path)?;
    let mut theirs = vec![0u8; 1 << 20];
    let mut check = |ours: &[u8]| -> io::Result<bool> {
        on_disk.read_exact(&mut theirs[..ours.len()])?;
        Ok(theirs[..ours.len()] == *ours)
    };
    match source {
        Source::Bytes(b) => {
            for chunk in b.chunks(1 << 20) {
                if !check(chunk)? {
                    return Ok(false);
                }
            }
        }
        Source::File { path: src, size } => {
            let mut f = File::open(src)
                .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", src.display())))?;
            let mut ours = vec![0u8; 1 << 20];
            let mut left = *size;
            while left > 0 {
                let n = left.min(ours.len() as u64) as usize;
                f.read_exact(&mut ours[..n])?;
                if !check(&ours[..n])? {
                    return Ok(false);
                }
                left -= n as u64;
            }
        }
    }
    Ok(true)
}

/// A compressed NAR, whose name is the hash of its bytes (`nar/<filehash>.nar.zst`): the same
/// name and size is the same file.
fn content_addressed(path: &str) -> bool {
    path.strip_prefix("nar/")
        .and_then(|n| n.strip_suffix(".nar.zst"))
        .is_some_and(|h| h.len() == 52 && !h.contains('/'))
}

impl Refresh<'_> {
    /// Nothing on the stick would change.
    pub fn unchanged(&self) -> bool {
        self.esp.1.unchanged && self.payload.1.unchanged
    }

    /// What is kept and what is written, both volumes together.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for p in [&self.esp.1, &self.payload.1] {
            c.kept_files += p.kept.0;
            c.kept_bytes += p.kept.1;
            c.new_files += p.new.0;
            c.new_bytes += p.new.1;
        }
        c
    }

    /// Carries the refresh out on `out` (the stick or image `stick` was read from): the ESP,
    /// then the payload. Returns the bytes written.
    pub fn write(&self, out: &File, progress: &mut dyn FnMut(u64)) -> io::Result<u64> {
        let mut written = 0;
        for (start, plan) in [&self.esp, &self.payload] {
            written += plan.write(out, *start, progress)?;
        }
        Ok(written)
    }
}
