//! `-o` that already holds a stick of ours: the stick is refreshed in place (only what changed
//! is written; see `media::refresh`), and the reports installers wrote on it are carried over
//! whether it is refreshed or written whole.

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io;

use media::fat32::Tree;
use media::refresh::{self, Found, Stick};
use media::{ids, usb};
use serde::Serialize;
use util::size::human;

use crate::options::{BuildOptions, Error, OutputFormat};
use crate::ui::Ui;

/// What a refresh in place kept and wrote (`--json`: `refreshed`).
#[derive(Debug, Clone, Serialize)]
pub struct Refreshed {
    pub kept_files: usize,
    pub kept_bytes: u64,
    pub new_files: usize,
    pub new_bytes: u64,
    /// Every byte written: new files, directories, FAT sectors, boot sectors.
    pub bytes_written: u64,
}

/// The outcome of looking at the output before writing it.
pub enum Before<'t> {
    /// Refreshed in place: nothing more to write.
    Done {
        disk_bytes: u64,
        refreshed: Refreshed,
    },
    /// Write it whole, with this payload (the given one, or it and the old stick's reports).
    WriteWhole(Cow<'t, Tree>),
}

/// The stick of ours that `opts.output` already holds, if it does (a USB output only). One
/// that does not read back cleanly is said and treated as none: it is written whole.
pub fn existing(opts: &BuildOptions, ui: &Ui) -> Option<Box<Stick>> {
    if opts.format != OutputFormat::Usb {
        return None;
    }
    match refresh::read_stick(&opts.output) {
        Found::Other => None,
        Found::Damaged(why) => {
            ui.say(&format!(
                "{}: holds a stick of ours that does not read back cleanly ({why}); writing it whole",
                opts.output.display()
            ));
            None
        }
        Found::Ours(stick) => Some(stick),
    }
}

/// The image's identifiers: the stick's own when it is refreshed (or rewritten without
/// `--rewrite`), so its loader entry keeps naming its payload partition; else derived from
/// `seed` (the same inputs give the same image).
pub fn usb_ids(existing: Option<&Stick>, rewrite: bool, seed: &[u8], timestamp: u64) -> usb::Ids {
    match existing {
        Some(stick) if !rewrite => stick.ids(timestamp),
        _ => usb::Ids {
            disk: ids::uuid(seed, "disk"),
            esp: ids::uuid(seed, "esp"),
            payload: ids::uuid(seed, "payload"),
            esp_volume: ids::volume_id(seed, "esp"),
            payload_volume: ids::volume_id(seed, "payload"),
            timestamp,
        },
    }
}

/// Refreshes `opts.output` in place if it holds a stick of ours (`existing`) whose layout can
/// take the new trees beside the old (the same size, room on both volumes), unless
/// `--rewrite`. The reports on it are carried into the payload either way.
pub fn before_writing<'t>(
    opts: &BuildOptions,
    existing: Option<&Stick>,
    esp: &Tree,
    payload: &'t Tree,
    size: Option<u64>,
    timestamp: u64,
    ui: &Ui,
) -> Result<Before<'t>, Error> {
    let out = &opts.output;
    let Some(stick) = existing else {
        return Ok(Before::WriteWhole(Cow::Borrowed(payload)));
    };
    let mut with_reports = payload.clone();
    stick.carry_reports(&mut with_reports).map_err(|e| {
        format!(
            "reading the reports on {}: {e} (nothing was written)",
            out.display()
        )
    })?;
    if opts.rewrite {
        return Ok(Before::WriteWhole(Cow::Owned(with_reports)));
    }
    if size.is_some_and(|s| s != stick.disk_bytes) {
        ui.say(&format!(
            "{}: --size {} differs from the stick's {}; writing it whole",
            out.display(),
            human(size.unwrap_or(0)),
            human(stick.disk_bytes)
        ));
        return Ok(Before::WriteWhole(Cow::Owned(with_reports)));
    }
    let plan = match refresh::plan(stick, esp, &with_reports, timestamp) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::StorageFull => {
            ui.say(&format!("{e}; writing the stick whole"));
            return Ok(Before::WriteWhole(Cow::Owned(with_reports)));
        }
        Err(e) => {
            return Err(format!(
                "reading back {}: {e} (nothing was written; --rewrite writes it whole)",
                out.display()
            )
            .into())
        }
    };
    let counts = plan.counts();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(out)
        .map_err(|e| format!("opening {} for writing: {e}", out.display()))?;
    let bar = ui.bytes(counts.new_bytes, "refreshing");
    let written = plan.write(&file, &mut |n| bar.inc(n));
    bar.finish_and_clear();
    let bytes_written = written.map_err(|e| {
        Error::failed(format!(
            "refreshing {} in place: {e} (the stick still reads as before, or as the new one; run it again)",
            out.display()
        ))
    })?;
    Ok(Before::Done {
        disk_bytes: stick.disk_bytes,
        refreshed: Refreshed {
            kept_files: counts.kept_files,
            kept_bytes: counts.kept_bytes,
            new_files: counts.new_files,
            new_bytes: counts.new_bytes,
            bytes_written,
        },
    })
}
