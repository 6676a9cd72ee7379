//! `mkinstaller` building an image: fleet → closures → compressed NARs → manifest → trees →
//! output. Everything that can be refused is checked before the output is opened
//! (`output`, `fleet`), and a failed write leaves nothing behind (`outputs::Partial`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Instant;

use manifest::document::{HostEntry, Kind, Manifest, Mode, FORMAT_NAME, FORMAT_VERSION};
use media::esp::{esp_tree, kernel_options, EnvBoot};
use media::ids;
use media::narcache::{CachedNar, NarCache};
use media::payload::{payload_tree, PayloadPath};
use nixstore::closure::{self, PathInfo};
use nixstore::StorePath;
use sha2::{Digest, Sha256};

use crate::fleet::plan_fleet;
pub use crate::options::{BuildOptions, Error, ErrorKind, OutputFormat, Phases, Source, Summary};
use crate::output;
use crate::outputs::{
    check_free_space, is_block_device, output_size, write_boot_dir, write_cache_dir, write_iso,
    write_usb,
};
use crate::refresh::usb_ids;
use crate::ui::Ui;

/// Builds the image `opts` describes; with `--verify`, then reads it back and checks it.
pub fn build(opts: &BuildOptions, ui: &Ui) -> Result<Summary, Error> {
    if opts.verify
        && (matches!(opts.source, Source::Online { .. })
            || matches!(opts.format, OutputFormat::Netboot | OutputFormat::Kexec))
    {
        return Err("--verify reads back a payload: online boot media and netboot directories carry none that can be read back; build a usb, iso or cache output to verify".into());
    }
    let summary = build_output(opts, ui)?;
    if opts.verify {
        let bar = ui.bytes(summary.compressed_bytes, "verifying");
        let image = media::image::ImagePath(opts.output.clone());
        let v = media::verify::verify_payload(&image, &[], opts.threads, &|n| bar.inc(n))
            .map_err(|e| Error::failed(format!("--verify: {}: {e}", opts.output.display())))?;
        bar.finish_and_clear();
        if !v.problems.is_empty() {
            return Err(Error::failed(format!(
                "--verify: {} does not hold what was meant to be written:\n  {}",
                opts.output.display(),
                v.problems.join("\n  ")
            )));
        }
    }
    Ok(summary)
}

fn build_output(opts: &BuildOptions, ui: &Ui) -> Result<Summary, Error> {
    let started = Instant::now();
    output::check_not_in_use(&opts.output)?;
    output::check_kind(&opts.output, opts.format)?;
    if opts.format != OutputFormat::Usb {
        if opts.size.is_some() {
            return Err(
                "--size pads a USB image; an ISO or a directory is just as large as it needs"
                    .into(),
            );
        }
        if is_block_device(&opts.output) {
            return Err(format!(
                "-o {}: an ISO or a directory cannot go on a device; write a USB image straight to it: -o {} --format usb",
                opts.output.display(),
                opts.output.display()
            )
            .into());
        }
    }
    if let Source::Online { url } = &opts.source {
        return crate::online::build_online_boot(opts, url, started, ui);
    }
    // A cache site boots nothing: it needs no installer environment. The ones given are
    // checked before the fleet is planned, and completed for its hosts' architectures after.
    let given = match opts.format {
        OutputFormat::Cache => Vec::new(),
        _ => crate::envs::load_given(&opts.installers, opts.boot_loader)?,
    };
    let key = match &opts.sign_key {
        None => None,
        Some(file) => {
            let text = fs::read_to_string(file)
                .map_err(|e| format!("--sign-key {}: {e}", file.display()))?;
            Some(nixstore::keys::SecretKey::parse(text.trim()).map_err(|e| {
                format!(
                    "--sign-key {}: {e} (make one with `nix key generate-secret --key-name NAME`)",
                    file.display()
                )
            })?)
        }
    };
    let planned = plan_fleet(opts, ui)?;
    let envs = match opts.format {
        OutputFormat::Cache => given,
        _ => crate::envs::for_fleet(given, opts.boot_loader, &planned)?,
    };
    // Netboot files and kexec bundles boot one environment: refused before anything is done.
    match opts.format {
        OutputFormat::Netboot => _ = crate::envs::single(&envs, "netboot files")?,
        OutputFormat::Kexec => _ = crate::envs::single(&envs, "a kexec bundle")?,
        _ => {}
    }
    let passphrase = crate::seal::passphrase(opts, &planned)?;

    // Closures: the union in one query, its metadata in another, and each host's closure
    // walked from the references (every nix-store call costs tens of milliseconds).
    let tops: Vec<StorePath> = planned.hosts.iter().map(|p| p.toplevel.clone()).collect();
    let union =
        closure::requisites(&tops).map_err(|e| format!("closures of the hosts' systems: {e}"))?;
    let infos = closure::path_infos(&union).map_err(|e| e.to_string())?;
    let closures: Vec<Vec<StorePath>> = tops.iter().map(|t| closure::walk(&infos, t)).collect();
    let by_path: BTreeMap<&StorePath, &PathInfo> = infos.iter().map(|i| (&i.path, i)).collect();

    let planned_at = started.elapsed().as_secs_f64();

    // Secrets (extra files, LUKS keys) as the fleet says they travel, and the manifest.
    let mut payload_files = Vec::new();
    let secure_boot =
        match crate::secure_boot::keys(planned.defaults.secure_boot.as_ref(), &planned.file)? {
            Some((keys, files)) => {
                payload_files.extend(files);
                Some(keys)
            }
            None => None,
        };
    let mut sealed_files = Vec::new();
    let mut entries = Vec::new();
    for (p, closure) in planned.hosts.iter().zip(&closures) {
        let h = &p.host;
        let travel = crate::seal::host_secrets(opts, &planned, p, passphrase.as_deref())?;
        payload_files.extend(travel.files);
        let sealed = travel.sealed.map(|(entry, bytes)| {
            sealed_files.push((entry.source.clone(), bytes));
            entry
        });
        entries.push(HostEntry {
            name: h.name.clone(),
            serials: h.serials.clone(),
            toplevel: p.toplevel.to_string(),
            closure: closure.iter().map(|p| p.to_string()).collect(),
            closure_nar_bytes: closure.iter().map(|p| by_path[p].nar_size).sum(),
            layout: p.layout.clone(),
            disk: h.disk.clone(),
            extra_files: travel.extra_files,
            luks_keys: travel.luks_keys,
            bootable: h.bootable,
            sealed,
            system: p.system.clone(),
        });
    }
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        kind: Kind::Fleet,
        lookup_key: None,
        fleet: planned.defaults.fleet.clone(),
        generation: planned
            .defaults
            .generation
            .unwrap_or_else(source_date_epoch),
        generator: format!("mkinstaller {}", env!("CARGO_PKG_VERSION")),
        mode: planned.mode,
        on_unknown_serial: planned.defaults.on_unknown_serial.clone(),
        enrol_layout: planned.enrol_layout.clone(),
        after_install: planned.defaults.after_install,
        reinstall: planned.defaults.reinstall,
        ssh_authorized_keys: planned.ssh_authorized_keys.clone(),
        confirm_seconds: planned.defaults.confirm_seconds,
        verify: planned.defaults.verify,
        recovery_recipients: planned.defaults.recovery_recipients.clone(),
        without_tpm: planned.defaults.without_tpm,
        secure_boot,
        hosts: entries,
    };

    let size = output_size(opts)?;

    // Compress what the cache lacks (the output is not touched yet: a --size found too small
    // below still writes nothing but the cache, which the next run reuses), largest first so the threads finish together.
    let cache = NarCache::open(&opts.cache_dir, opts.level).map_err(|e| e.to_string())?;
    // Distinct paths can have identical contents (two empty packages, say): one NAR for both.
    let mut seen = BTreeSet::new();
    let mut missing: Vec<&PathInfo> = infos
        .iter()
        .filter(|i| seen.insert(i.nar_hash) && cache.get(i).is_none())
        .collect();
    missing.sort_by_key(|i| std::cmp::Reverse(i.nar_size));
    let missing_bytes: u64 = missing.iter().map(|i| i.nar_size).sum();
    let paths_compressed = missing.len();
    if !missing.is_empty() {
        let bar = ui.bytes(missing_bytes, "compressing");
        util::pool::for_each(&missing, opts.threads, |i| {
            cache
                .compress(i, &|n| bar.inc(n))
                .map_err(|e| e.to_string())
        })?;
        bar.finish_and_clear();
    }
    let compressed_at = started.elapsed().as_secs_f64();
    let paths: Vec<PayloadPath> = infos
        .iter()
        .map(|i| {
            let nar: CachedNar = cache
                .get(i)
                .ok_or_else(|| format!("{}: the compressed NAR vanished from the cache", i.path))?;
            Ok(PayloadPath {
                info: i.clone(),
                nar,
            })
        })
        .collect::<Result<_, String>>()?;

    // Trees, layout, identifiers.
    let manifest_json = manifest.to_json();
    let seed = Sha256::digest(manifest_json.as_bytes());
    let timestamp = source_date_epoch();
    let existing = crate::refresh::existing(opts, ui);
    let usb_ids = usb_ids(existing.as_deref(), opts.rewrite, &seed, timestamp);
    let payload_uuid = usb_ids.payload;
    let title = match manifest.mode {
        Mode::Mass => format!("NixOS autoinstall ({} hosts)", manifest.hosts.len()),
        Mode::Single => format!("NixOS autoinstall: {}", manifest.hosts[0].name),
    };
    let volume_id = format!("AIPAYLOAD_{:08X}", ids::volume_id(&seed, "iso"));
    let payload_spec = match opts.format {
        // A cache site has no ESP of its own (the online installer's medium is another one).
        OutputFormat::Usb | OutputFormat::Cache => format!("PARTUUID={payload_uuid}"),
        OutputFormat::Iso => format!("LABEL={volume_id}"),
        OutputFormat::Netboot | OutputFormat::Kexec => {
            media::netboot::EMBEDDED_PAYLOAD_DIR.to_string()
        }
    };
    let boots: Vec<EnvBoot> = envs
        .iter()
        .map(|env| EnvBoot {
            env,
            options: kernel_options(
                env,
                &format!("autoinstall.payload={payload_spec}"),
                &opts.kernel_args,
            ),
        })
        .collect();
    let esp = match opts.format {
        OutputFormat::Usb | OutputFormat::Iso => esp_tree(&boots, &title)?,
        _ => media::fat32::Tree::new(),
    };
    let mut payload = payload_tree(&manifest, &paths, &payload_files, key.as_ref());
    for (at, bytes) in sealed_files {
        payload.add_file(&at, media::fat32::Source::Bytes(bytes));
    }
    let other_bytes = match opts.format {
        OutputFormat::Usb => None,
        OutputFormat::Cache => {
            let mut payload = payload.clone();
            add_host_lookups(&mut payload, &manifest, key.as_ref());
            check_free_space(&opts.output, payload.content_bytes())?;
            Some(write_cache_dir(opts, &payload, ui)?)
        }
        OutputFormat::Iso => {
            let mut tree = payload.clone();
            media::esp::add_cd_boot(&mut tree, &boots, &title)?;
            let mbr = envs.iter().find_map(|e| e.bios_hybrid.as_deref());
            Some(write_iso(
                opts, &esp, &tree, &volume_id, &seed, timestamp, mbr, ui,
            )?)
        }
        OutputFormat::Kexec if opts.plan_kit => Some(crate::outputs::write_plan_kit(
            opts, &envs[0], &payload, timestamp,
        )?),
        OutputFormat::Netboot | OutputFormat::Kexec => {
            let nb = media::netboot::Netboot {
                env: &envs[0],
                options: &boots[0].options,
                title: &title,
                embedded: Some(&payload),
                mtime: timestamp.max(1) as u32,
            };
            Some(write_boot_dir(opts, &nb, ui)?)
        }
    };
    if let Some(bytes) = other_bytes {
        return Ok(summary(
            opts,
            &manifest,
            &paths,
            &infos,
            paths_compressed,
            bytes,
            started,
            planned_at,
            compressed_at,
        ));
    }
    let (disk_bytes, refreshed) = write_usb(
        opts,
        &esp,
        &payload,
        &usb_ids,
        existing.as_deref(),
        size,
        envs.iter().find_map(|e| e.bios.as_ref()),
        ui,
    )?;
    Ok(Summary {
        refreshed,
        ..summary(
            opts,
            &manifest,
            &paths,
            &infos,
            paths_compressed,
            disk_bytes,
            started,
            planned_at,
            compressed_at,
        )
    })
}

/// `SOURCE_DATE_EPOCH`, else 0: every time written into an image (reproducible builds).
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn summary(
    opts: &BuildOptions,
    manifest: &Manifest,
    paths: &[PayloadPath],
    infos: &[PathInfo],
    paths_compressed: usize,
    image_bytes: u64,
    started: Instant,
    planned_at: f64,
    compressed_at: f64,
) -> Summary {
    Summary {
        output: opts.output.clone(),
        hosts: manifest.hosts.len(),
        paths: paths.len(),
        nar_bytes: infos.iter().map(|i| i.nar_size).sum(),
        compressed_bytes: paths.iter().map(|p| p.nar.file_size).sum(),
        paths_compressed,
        paths_from_cache: paths.len() - paths_compressed,
        image_bytes,
        seconds: started.elapsed().as_secs_f64(),
        phase_seconds: Phases {
            plan: planned_at,
            compress: compressed_at - planned_at,
            write: started.elapsed().as_secs_f64() - compressed_at,
        },
        refreshed: None,
    }
}

/// The per-serial lookup files of a cache site (and their signatures, with a key): each is
/// the manifest cut down to that one host, so the online installer reads and checks it as
/// it reads a whole manifest, and fetches a few KiB however large the fleet.
fn add_host_lookups(
    payload: &mut media::fat32::Tree,
    manifest: &Manifest,
    key: Option<&nixstore::keys::SecretKey>,
) {
    // The fleet's settings without its hosts, cloned per lookup: cloning the whole manifest
    // for each serial cost O(hosts²) (24 s for a fleet of 1,000).
    let settings = Manifest {
        hosts: Vec::new(),
        ..manifest.clone()
    };
    for h in &manifest.hosts {
        for serial in &h.serials {
            // Each lookup says which serial it answers for, inside its signature: served
            // under another serial's name, it is refused.
            let entry = Manifest {
                kind: Kind::Lookup,
                lookup_key: Some(manifest::serial::key(serial)),
                hosts: vec![h.clone()],
                ..settings.clone()
            }
            .to_json();
            let at = manifest::document::host_lookup_path(serial);
            if let Some(k) = key {
                let sig = format!("{}\n", k.sign(&entry));
                payload.add_file(
                    &format!("{at}.sig"),
                    media::fat32::Source::Bytes(sig.into_bytes()),
                );
            }
            payload.add_file(&at, media::fat32::Source::Bytes(entry.clone().into_bytes()));
        }
    }
}
