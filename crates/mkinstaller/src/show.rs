//! Reading an image back for the admin: `inspect` (what it carries) and `verify` (every hash
//! and, with keys, every signature).

use std::fmt::Write;
use std::path::Path;

use util::size::human;

use crate::ui::Ui;

/// `mkinstaller inspect`: what an image carries, as a table (a summary past 40 hosts unless
/// `all`) or JSON.
pub fn inspect(image: &Path, all: bool, json: bool) -> Result<(), String> {
    let payload = media::image::open_payload(image).map_err(|e| e.to_string())?;
    let s = media::summary::summarise(payload.as_ref()).map_err(|e| e.to_string())?;
    let options = media::image::kernel_options(image);
    let mut out = String::new();
    // Writing to a String cannot fail.
    macro_rules! say {
        ($($arg:tt)*) => { writeln!(out, $($arg)*).expect("a String takes any text") };
    }
    if json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            summary: &'a media::summary::Summary,
            kernel_options: Option<String>,
            boot_loader: Option<&'static str>,
            /// The platforms whose machines boot it (one installer environment each).
            boots_on: Vec<&'static str>,
        }
        let shown = Shown {
            summary: &s,
            kernel_options: options,
            boot_loader: media::image::boot_loader(image),
            boots_on: media::image::boot_platforms(image),
        };
        let text = serde_json::to_string_pretty(&shown).expect("serialises");
        return util::out::stdout(&format!("{text}\n"));
    }
    say!(
        "{}: media format {}, {} mode, written by {}",
        image.display(),
        s.format_version,
        s.mode,
        s.generator
    );
    say!(
        "signed: {}",
        if s.signed_by.is_empty() {
            "no (installers that trust a key refuse it)".to_string()
        } else {
            format!(
                "by {} (check with verify --trusted-key)",
                s.signed_by.join(", ")
            )
        }
    );
    say!(
        "fleet: {}, generation {}",
        s.fleet.as_deref().unwrap_or("(unnamed)"),
        s.generation
    );
    say!(
        "unknown serial: {}, after install: {}, countdown: {} s, verify: {}",
        match &s.on_unknown_serial {
            manifest::UnknownSerial::Ask => "ask".to_string(),
            manifest::UnknownSerial::Refuse => "refuse".to_string(),
            manifest::UnknownSerial::Enrol => "enrol".to_string(),
            manifest::UnknownSerial::Host(h) => format!("install {h}"),
        },
        format!("{:?}", s.after_install).to_lowercase(),
        s.confirm_seconds,
        s.verify.name()
    );
    if let Some(b) = media::image::boot_loader(image) {
        say!("boot loader: {b}");
    }
    let platforms = media::image::boot_platforms(image);
    if !platforms.is_empty() {
        say!("boots on: {} machines", platforms.join(" and "));
    }
    if let Some(o) = &options {
        say!("installer kernel command line: {o}");
    }
    say!();
    say!(
        "{:<20} {:<24} {:>6} {:>10} {:>10} {:>10}  layout",
        "host",
        "serials",
        "paths",
        "NAR",
        "on stick",
        "unique"
    );
    const SHOWN: usize = 40;
    let shown = if all {
        s.hosts.len()
    } else {
        SHOWN.min(s.hosts.len())
    };
    for h in &s.hosts[..shown] {
        let serials = if h.serials.is_empty() {
            "-".to_string()
        } else {
            h.serials.join(",")
        };
        say!(
            "{:<20} {:<24} {:>6} {:>10} {:>10} {:>10}  {}",
            h.name,
            serials,
            h.closure_paths,
            human(h.closure_nar_bytes),
            human(h.closure_compressed_bytes),
            human(h.unique_nar_bytes),
            match (h.disks, h.luks_keys) {
                (1, 0) => h.layout.clone(),
                (d, 0) => format!("{} ({d} disks)", h.layout),
                (d, k) => format!(
                    "{} ({d} disk{}, {k} LUKS key{})",
                    h.layout,
                    if d == 1 { "" } else { "s" },
                    if k == 1 { "" } else { "s" }
                ),
            } + if h.tpm2_volumes > 0 { ", TPM2" } else { "" }
                + if !h.bootable {
                    ", no boot loader"
                } else if h.boot.bios {
                    if h.boot.uefi {
                        ", UEFI or BIOS"
                    } else {
                        ", BIOS"
                    }
                } else {
                    ""
                }
                + match (h.sealed, h.sealed_to_tpm) {
                    (true, true) => ", secrets sealed to its TPM",
                    (true, false) => ", secrets sealed",
                    _ => "",
                }
                + &h.system
                    .as_ref()
                    .map(|s| format!(", {s}"))
                    .unwrap_or_default()
        );
    }
    if shown < s.hosts.len() {
        say!(
            "… and {} more hosts (--all lists them, --json gives everything)",
            s.hosts.len() - shown
        );
    }
    say!();
    say!(
        "{} distinct store paths, {} of NAR stored as {}; {} of NAR shared by several hosts",
        s.paths,
        human(s.nar_bytes),
        human(s.compressed_bytes),
        human(s.shared_nar_bytes)
    );
    util::out::stdout(&out)
}

/// `mkinstaller verify`: every hash (and with keys, every signature) checked, every problem
/// listed.
pub fn verify(
    image: &Path,
    trusted_keys: &[String],
    jobs: usize,
    json: bool,
    quiet: bool,
) -> Result<(), String> {
    let keys = trusted_keys
        .iter()
        .map(|k| {
            nixstore::keys::PublicKey::parse(k)
                .map_err(|e| format!("--trusted-key {k:?}: {e}; a key reads name:base64"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opener = media::image::ImagePath(image.to_path_buf());
    let total = media::image::open_payload(image)
        .and_then(|p| media::summary::summarise(p.as_ref()))
        .map(|s| s.compressed_bytes)
        .unwrap_or(0);
    let ui = Ui {
        quiet: quiet || json,
    };
    let bar = ui.bytes(total, "verifying");
    let v = media::verify::verify_payload(&opener, &keys, jobs, &|n| bar.inc(n))
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    if json {
        let text = serde_json::to_string_pretty(&v).expect("serialises");
        util::out::stdout(&format!("{text}\n"))?;
    }
    if !v.problems.is_empty() {
        if !json {
            for p in &v.problems {
                eprintln!("{}: {p}", image.display());
            }
        }
        return Err(format!(
            "{}: {} problem(s) found; the image is damaged, rebuild it",
            image.display(),
            v.problems.len()
        ));
    }
    if !json && !quiet {
        let signed = if v.signed_by.is_empty() {
            String::new()
        } else {
            format!(", signed by {}", v.signed_by.join(", "))
        };
        eprintln!(
            "{}: {} hosts, {} store paths, {} of NAR: every hash matches{signed}",
            image.display(),
            v.hosts,
            v.paths,
            human(v.nar_bytes)
        );
    }
    Ok(())
}
