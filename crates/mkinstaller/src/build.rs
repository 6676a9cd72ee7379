//! `mkinstaller` building an image: fleet → closures → compressed NARs → manifest → image.
//! Everything that can be refused is checked before the output is opened, and a regular file
//! is written under a temporary name and renamed at the end, so a failed run writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use manifest::hosts::{AfterInstall, Defaults, Fleet, Host, SystemSource, UnknownSerial};
use manifest::media::{
    ExtraFile, HostEntry, Kind, Manifest, Mode, EXTRA_FILES_DIR, FORMAT_NAME, FORMAT_VERSION,
};
use manifest::size::human;
use media::esp::{esp_tree, kernel_options, InstallerEnv};
use media::narcache::{CachedNar, NarCache};
use media::payload::{payload_tree, PayloadFile, PayloadPath};
use media::{ids, usb};
use nixstore::closure::{self, PathInfo};
use nixstore::StorePath;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ui::Ui;
use crate::{output, profiles};

/// A failed build, as a sentence.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

/// What the image is built from.
pub enum Source {
    /// A fleet file; with `host`, a per-host stick that installs that host whatever the serial.
    Mass { file: PathBuf, host: Option<String> },
    /// No fleet: boot media for the online installer, which fetches from the cache site at
    /// `url` (made by `--mass … --format cache`).
    Online { url: String },
    /// One toplevel, installed whatever the serial.
    System {
        path: String,
        name: Option<String>,
        profile: Option<String>,
    },
}

/// What kind of image to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A GPT disk image (or a stick written in place): ESP + FAT32 payload partition.
    Usb,
    /// A hybrid ISO 9660 image (CD, BMC virtual media, or dd to a stick).
    Iso,
    /// A directory: the payload tree as a static site (a Nix binary cache with the manifest
    /// and per-serial lookups), for the online installer behind any HTTP server.
    Cache,
    /// A directory for a TFTP/HTTP boot server: kernel, initrd (with the payload in it, or
    /// with `--online`, without), an iPXE script and a UKI.
    Netboot,
}

impl Format {
    /// `--format`, or else the output's extension: `.iso` is an ISO, anything else a disk.
    pub fn for_output(given: Option<&str>, output: &Path) -> Result<Format, String> {
        match given {
            Some("usb") | Some("img") => Ok(Format::Usb),
            Some("iso") => Ok(Format::Iso),
            Some("cache") => Ok(Format::Cache),
            Some("netboot") => Ok(Format::Netboot),
            Some(other) => Err(format!(
                "--format {other}: expected usb, iso, cache or netboot"
            )),
            None => Ok(
                match output
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_lowercase)
                {
                    Some(e) if e == "iso" => Format::Iso,
                    _ => Format::Usb,
                },
            ),
        }
    }
}

pub struct BuildOptions {
    pub source: Source,
    pub output: PathBuf,
    pub format: Format,
    pub size: Option<u64>,
    pub installer: PathBuf,
    pub cache_dir: PathBuf,
    pub profiles_dir: Option<PathBuf>,
    pub level: i32,
    pub threads: usize,
    /// Appended to the installer's kernel command line.
    pub kernel_args: String,
    /// Signs every narinfo and the manifest (`--sign-key`).
    pub sign_key: Option<PathBuf>,
    /// `--public-extra-files`: a cache site may serve the hosts' extra files in the clear.
    pub public_extra_files: bool,
    /// `--verify`: read the output back and check every hash on it.
    pub verify: bool,
}

/// The end-of-run figures (`--json` prints them).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub output: PathBuf,
    pub hosts: usize,
    pub paths: usize,
    pub nar_bytes: u64,
    pub compressed_bytes: u64,
    pub paths_compressed: usize,
    pub paths_from_cache: usize,
    pub image_bytes: u64,
    pub seconds: f64,
    /// Where the time went: closure queries, compression, writing the image.
    pub phase_seconds: Phases,
}

#[derive(Debug, Default, Serialize)]
pub struct Phases {
    pub plan: f64,
    pub compress: f64,
    pub write: f64,
}

/// The fleet as planned: hosts with their systems realised and profiles resolved.
struct Planned {
    mode: Mode,
    defaults: Defaults,
    hosts: Vec<(Host, StorePath, manifest::Profile)>,
}

fn plan_fleet(opts: &BuildOptions, ui: &Ui) -> Result<Planned, Error> {
    let (fleet, mode, base_dir) = match &opts.source {
        Source::Online { .. } => unreachable!("online boot media plan no fleet"),
        Source::Mass { file, host } => {
            let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut fleet = Fleet::parse(file, &text).map_err(|e| e.to_string())?;
            let mode = match host {
                Some(name) => {
                    let h = fleet.host(name).cloned().ok_or_else(|| {
                        let names: Vec<&str> =
                            fleet.hosts.iter().map(|h| h.name.as_str()).collect();
                        format!(
                            "{}: there is no host {name:?} (hosts: {})",
                            file.display(),
                            names.join(", ")
                        )
                    })?;
                    fleet.hosts = vec![h];
                    Mode::Single
                }
                None => Mode::Mass,
            };
            let base = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            (fleet, mode, base)
        }
        Source::System {
            path,
            name,
            profile,
        } => {
            let sp = StorePath::parse(path).map_err(|e| format!("--system: {e}"))?;
            let name = match name {
                Some(n) => n.clone(),
                None => host_name_of(&sp),
            };
            manifest::hosts::check_host_name(&name).map_err(|e| format!("--name: {e}"))?;
            let profile = profile
                .clone()
                .unwrap_or_else(|| manifest::hosts::DEFAULT_PROFILE.to_string());
            let fleet = Fleet {
                file: PathBuf::from("--system"),
                defaults: Defaults {
                    profile: profile.clone(),
                    on_unknown_serial: UnknownSerial::Ask,
                    after_install: AfterInstall::Reboot,
                    confirm_seconds: 10,
                    fleet: None,
                    generation: None,
                },
                hosts: vec![Host {
                    name,
                    serials: Vec::new(),
                    system: SystemSource::StorePath(sp),
                    profile,
                    disk: None,
                    extra_files: None,
                    line: 0,
                }],
            };
            (
                fleet,
                Mode::Single,
                std::env::current_dir().unwrap_or_default(),
            )
        }
    };
    let mut hosts = Vec::new();
    for h in fleet.hosts {
        let profile = profiles::resolve(&h.profile, &base_dir, opts.profiles_dir.as_deref())
            .map_err(|e| format!("host {:?}: {e}", h.name))?;
        let toplevel = match &h.system {
            SystemSource::StorePath(p) => p.clone(),
            SystemSource::Flake(f) => {
                ui.say(&format!("building {f} for host {}", h.name));
                build_flake(f, &base_dir).map_err(|e| format!("host {:?}: {e}", h.name))?
            }
        };
        if let Some(dir) = &h.extra_files {
            if !dir.is_dir() {
                return Err(format!(
                    "host {:?}: extra-files {} is not a directory",
                    h.name,
                    dir.display()
                )
                .into());
            }
        }
        hosts.push((h, toplevel, profile));
    }
    Ok(Planned {
        mode,
        defaults: fleet.defaults,
        hosts,
    })
}

/// `nixos-system-dev-365-25.05.20250101.abcdef` → `dev-365`: NixOS appends one version
/// component, and host names may themselves end in `-<digits>`, so only the last goes.
fn host_name_of(p: &StorePath) -> String {
    let name = p.name().strip_prefix("nixos-system-").unwrap_or(p.name());
    match name.rsplit_once('-') {
        Some((host, version))
            if !host.is_empty() && version.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            host.to_string()
        }
        _ => name.to_string(),
    }
}

/// Builds `REF#NAME` as `REF#nixosConfigurations.NAME.config.system.build.toplevel`.
fn build_flake(flake: &str, dir: &Path) -> Result<StorePath, String> {
    let (reference, name) = flake
        .split_once('#')
        .ok_or_else(|| format!("flake {flake:?} must be REF#NAME"))?;
    let attr = format!("{reference}#nixosConfigurations.{name}.config.system.build.toplevel");
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "build",
            "--no-link",
            "--json",
            &attr,
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running nix build {attr}: {e} (is Nix installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "nix build {attr} failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("nix build {attr}: unreadable --json output: {e}"))?;
    let path = json[0]["outputs"]["out"]
        .as_str()
        .ok_or_else(|| format!("nix build {attr}: no output path in {json}"))?;
    StorePath::parse(path).map_err(|e| e.to_string())
}

fn extra_files(host: &Host) -> Result<(Vec<ExtraFile>, Vec<PayloadFile>), String> {
    let Some(dir) = &host.extra_files else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut entries = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let mut children: Vec<_> = fs::read_dir(&d)
            .map_err(|e| format!("extra-files {}: {e}", d.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("extra-files {}: {e}", d.display()))?;
        children.sort_by_key(|e| e.file_name());
        for e in children {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let rel = p
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let data = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let source = format!("{EXTRA_FILES_DIR}/{}/{rel}", host.name);
                entries.push(ExtraFile {
                    target: rel,
                    source: source.clone(),
                    mode: meta.permissions().mode() & 0o7777,
                    sha256: format!("{:x}", Sha256::digest(&data)),
                    size: data.len() as u64,
                });
                files.push(PayloadFile {
                    payload_path: source,
                    source: p,
                    size: meta.len(),
                });
            } else {
                return Err(format!(
                    "extra-files: {} is neither a file nor a directory; only those are copied",
                    p.display()
                ));
            }
        }
    }
    Ok((entries, files))
}

/// Runs `f` on every item with `threads` workers; returns the first error.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R, String> + Sync,
) -> Result<Vec<R>, String> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let failed: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                if failed.lock().unwrap().is_some() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                match f(item) {
                    Ok(r) => results.lock().unwrap()[i] = Some(r),
                    Err(e) => {
                        failed.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect())
}

/// Builds the image `opts` describes; with `--verify`, then reads it back and checks it.
pub fn build(opts: &BuildOptions, ui: &Ui) -> Result<Summary, Error> {
    if opts.verify
        && (matches!(opts.source, Source::Online { .. }) || opts.format == Format::Netboot)
    {
        return Err(Error(
            "--verify reads back a payload: online boot media and netboot directories carry none that can be read back; build a usb, iso or cache output to verify"
                .into(),
        ));
    }
    let summary = build_output(opts, ui)?;
    if opts.verify {
        let payload = media::read::open_image_payload(&opts.output)
            .map_err(|e| format!("--verify: reading {} back: {e}", opts.output.display()))?;
        let bar = ui.bytes(summary.compressed_bytes, "verifying");
        let v = media::read::verify(payload.as_ref(), &mut |n| bar.inc(n))
            .map_err(|e| format!("--verify: {}: {e}", opts.output.display()))?;
        bar.finish_and_clear();
        if !v.problems.is_empty() {
            return Err(format!(
                "--verify: {} does not hold what was meant to be written:\n  {}",
                opts.output.display(),
                v.problems.join("\n  ")
            )
            .into());
        }
    }
    Ok(summary)
}

fn build_output(opts: &BuildOptions, ui: &Ui) -> Result<Summary, Error> {
    let started = Instant::now();
    output::check_not_in_use(&opts.output)?;
    if opts.format != Format::Usb {
        if opts.size.is_some() {
            return Err(Error(
                "--size pads a USB image; an ISO or a directory is just as large as it needs"
                    .into(),
            ));
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
        return build_online_boot(opts, url, started, ui);
    }
    // A cache site boots nothing: it needs no installer environment.
    let env = match opts.format {
        Format::Cache => None,
        Format::Usb | Format::Iso | Format::Netboot => Some(InstallerEnv::load(&opts.installer)?),
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

    // Closures: the union in one query, its metadata in another, and each host's closure
    // walked from the references (every nix-store call costs tens of milliseconds).
    let tops: Vec<StorePath> = planned.hosts.iter().map(|(_, t, _)| t.clone()).collect();
    let union =
        closure::requisites(&tops).map_err(|e| format!("closures of the hosts' systems: {e}"))?;
    let infos = closure::path_infos(&union).map_err(|e| e.to_string())?;
    let closures: Vec<Vec<StorePath>> = tops.iter().map(|t| closure::walk(&infos, t)).collect();
    let by_path: BTreeMap<&StorePath, &PathInfo> = infos.iter().map(|i| (&i.path, i)).collect();

    let planned_at = started.elapsed().as_secs_f64();

    // Extra files and the manifest.
    let mut payload_files = Vec::new();
    let mut entries = Vec::new();
    for ((h, top, profile), closure) in planned.hosts.iter().zip(&closures) {
        let (extra, files) = extra_files(h).map_err(|e| format!("host {:?}: {e}", h.name))?;
        if opts.format == Format::Cache && !files.is_empty() && !opts.public_extra_files {
            return Err(format!(
                "host {:?}: its extra files ({}) would be served to anyone who can reach the site, in the clear; keep secrets off cache sites (or pass --public-extra-files if these are not secret)",
                h.name,
                h.extra_files.as_deref().map(|d| d.display().to_string()).unwrap_or_default()
            )
            .into());
        }
        payload_files.extend(files);
        entries.push(HostEntry {
            name: h.name.clone(),
            serials: h.serials.clone(),
            toplevel: top.to_string(),
            closure: closure.iter().map(|p| p.to_string()).collect(),
            closure_nar_bytes: closure.iter().map(|p| by_path[p].nar_size).sum(),
            layout: profile.clone(),
            disk: h.disk.clone(),
            extra_files: extra,
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
        after_install: planned.defaults.after_install,
        confirm_seconds: planned.defaults.confirm_seconds,
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
        parallel(&missing, opts.threads, |i| {
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
    let payload_uuid = ids::uuid(&seed, "payload");
    let title = match manifest.mode {
        Mode::Mass => format!("NixOS autoinstall ({} hosts)", manifest.hosts.len()),
        Mode::Single => format!("NixOS autoinstall: {}", manifest.hosts[0].name),
    };
    let volume_id = format!("AIPAYLOAD_{:08X}", ids::volume_id(&seed, "iso"));
    let payload_spec = match opts.format {
        // A cache site has no ESP of its own (the online installer's medium is another one).
        Format::Usb | Format::Cache => format!("PARTUUID={payload_uuid}"),
        Format::Iso => format!("LABEL={volume_id}"),
        Format::Netboot => media::netboot::EMBEDDED_PAYLOAD_DIR.to_string(),
    };
    let options = env.as_ref().map(|env| {
        kernel_options(
            env,
            &format!("autoinstall.payload={payload_spec}"),
            &opts.kernel_args,
        )
    });
    let esp = match (&env, &options) {
        (Some(env), Some(options)) if opts.format != Format::Netboot => {
            esp_tree(env, &title, options)?
        }
        _ => media::fat32::Tree::new(),
    };
    let payload = payload_tree(&manifest, &paths, &payload_files, key.as_ref());
    let timestamp = source_date_epoch();
    let other_bytes = match opts.format {
        Format::Usb => None,
        Format::Cache => {
            let mut payload = payload.clone();
            add_host_lookups(&mut payload, &manifest, key.as_ref());
            Some(write_cache_dir(opts, &payload, ui)?)
        }
        Format::Iso => Some(write_iso(
            opts, &esp, &payload, &volume_id, &seed, timestamp, ui,
        )?),
        Format::Netboot => {
            let nb = media::netboot::Netboot {
                env: env.as_ref().expect("netboot loads the environment"),
                options: options.as_deref().expect("netboot has options"),
                title: &title,
                embedded: Some(&payload),
                mtime: timestamp.max(1) as u32,
            };
            Some(write_netboot(opts, &nb, ui)?)
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
    let disk_bytes = write_usb(opts, &esp, &payload, &seed, timestamp, size, ui)?;
    Ok(summary(
        opts,
        &manifest,
        &paths,
        &infos,
        paths_compressed,
        disk_bytes,
        started,
        planned_at,
        compressed_at,
    ))
}

/// Writes the USB image: a device in place, a file under a temporary name renamed at the end.
/// Returns the disk's size.
fn write_usb(
    opts: &BuildOptions,
    esp: &media::fat32::Tree,
    payload: &media::fat32::Tree,
    seed: &[u8],
    timestamp: u64,
    size: Option<u64>,
    ui: &Ui,
) -> Result<u64, Error> {
    let layout = usb::plan(esp, payload, size).map_err(|e| e.to_string())?;
    let ids = usb::Ids {
        disk: ids::uuid(seed, "disk"),
        esp: ids::uuid(seed, "esp"),
        payload: ids::uuid(seed, "payload"),
        esp_volume: ids::volume_id(seed, "esp"),
        payload_volume: ids::volume_id(seed, "payload"),
        timestamp,
    };

    // Write: a device in place, a file under a temporary name.
    let is_device = is_block_device(&opts.output);
    let target = if is_device {
        opts.output.clone()
    } else {
        let name = opts
            .output
            .file_name()
            .ok_or_else(|| format!("-o {}: not a file name", opts.output.display()))?;
        opts.output
            .with_file_name(format!(".{}.partial", name.to_string_lossy()))
    };
    if !is_device {
        // A leftover of an interrupted run.
        let _ = fs::remove_file(&target);
    }
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(!is_device)
        .truncate(false)
        .open(&target)
        .map_err(|e| format!("opening {} for writing: {e}", target.display()))?;
    let total = esp.content_bytes() + payload.content_bytes();
    let bar = ui.bytes(total, "writing");
    let written = usb::write(&mut out, &layout, esp, payload, &ids, &mut |n| bar.inc(n));
    bar.finish_and_clear();
    if let Err(e) = written {
        if !is_device {
            let _ = fs::remove_file(&target);
        }
        return Err(format!("writing {}: {e}", opts.output.display()).into());
    }
    drop(out);
    if !is_device {
        fs::rename(&target, &opts.output).map_err(|e| {
            format!(
                "renaming {} to {}: {e}",
                target.display(),
                opts.output.display()
            )
        })?;
    }

    Ok(layout.disk_bytes)
}

fn is_block_device(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

/// The output's size, if it is fixed: a device's, or `--size` (which must fit the device).
fn output_size(opts: &BuildOptions) -> Result<Option<u64>, Error> {
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

/// `--online URL`: boot media that carry only the installer environment, with
/// `autoinstall.url=URL` on its kernel command line. No fleet is read: the site is the fleet.
fn build_online_boot(
    opts: &BuildOptions,
    url: &str,
    started: Instant,
    ui: &Ui,
) -> Result<Summary, Error> {
    check_online_url(url)?;
    if opts.format == Format::Cache {
        return Err(Error(
            "--online makes boot media that fetch from a cache site; make the site itself with --mass HOSTS.TOML --format cache -o DIR".into(),
        ));
    }
    let env = InstallerEnv::load(&opts.installer)?;
    let options = kernel_options(&env, &format!("autoinstall.url={url}"), &opts.kernel_args);
    let title = format!("NixOS autoinstall (online: {url})");
    let seed = Sha256::digest(options.as_bytes());
    let timestamp = source_date_epoch();
    let empty = media::fat32::Tree::new();
    let bytes = match opts.format {
        Format::Usb => {
            let size = output_size(opts)?;
            let esp = esp_tree(&env, &title, &options)?;
            write_usb(opts, &esp, &empty, &seed, timestamp, size, ui)?
        }
        Format::Iso => {
            let esp = esp_tree(&env, &title, &options)?;
            let volume_id = format!("AIONLINE_{:08X}", ids::volume_id(&seed, "iso"));
            write_iso(opts, &esp, &empty, &volume_id, &seed, timestamp, ui)?
        }
        Format::Netboot => {
            let nb = media::netboot::Netboot {
                env: &env,
                options: &options,
                title: &title,
                embedded: None,
                mtime: timestamp.max(1) as u32,
            };
            write_netboot(opts, &nb, ui)?
        }
        Format::Cache => unreachable!("refused above"),
    };
    Ok(Summary {
        output: opts.output.clone(),
        hosts: 0,
        paths: 0,
        nar_bytes: 0,
        compressed_bytes: 0,
        paths_compressed: 0,
        paths_from_cache: 0,
        image_bytes: bytes,
        seconds: started.elapsed().as_secs_f64(),
        phase_seconds: Phases::default(),
    })
}

/// A URL the installer can use, and that survives the kernel command line (no spaces or
/// quotes, which would split or end the option).
fn check_online_url(url: &str) -> Result<(), Error> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !url.contains(|c: char| c.is_whitespace() || c == '"' || c.is_control()) => Ok(()),
        _ => Err(format!("--online {url:?}: expected the cache site's http:// or https:// URL, without spaces or quotes (e.g. http://10.0.0.1/fleet)").into()),
    }
}

/// `SOURCE_DATE_EPOCH`, else 0: every time written into an image (reproducible builds).
fn source_date_epoch() -> u64 {
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
    for h in &manifest.hosts {
        for serial in &h.serials {
            // Each lookup says which serial it answers for, inside its signature: served
            // under another serial's name, it is refused.
            let entry = Manifest {
                kind: Kind::Lookup,
                lookup_key: Some(manifest::serial::key(serial)),
                hosts: vec![h.clone()],
                ..manifest.clone()
            }
            .to_json();
            let at = manifest::media::host_lookup_path(serial);
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

/// Writes the payload as a directory (`--format cache`): built beside the output under a
/// temporary name, then swapped in. An existing output is replaced only if it is one of ours
/// (it has a manifest) or empty, so a mistyped -o never empties someone's directory. Returns
/// the bytes of file contents.
fn write_cache_dir(
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

/// Fills a fresh directory with `fill`, then swaps it in for `out`. An existing `out` is
/// replaced only if it is one of ours (a manifest or an iPXE script of ours) or empty, so a
/// mistyped -o never empties someone's directory. Returns what `fill` returns (bytes).
fn replace_dir(out: &Path, fill: impl FnOnce(&Path) -> Result<u64, String>) -> Result<u64, Error> {
    if out.exists() {
        let ours =
            out.join(manifest::media::MANIFEST_PATH).is_file() || media::netboot::written_here(out);
        let empty = fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !out.is_dir() || !(ours || empty) {
            return Err(format!(
                "-o {}: exists and is not a directory written by mkinstaller; name a new or empty directory",
                out.display()
            )
            .into());
        }
    }
    let name = out
        .file_name()
        .ok_or_else(|| format!("-o {}: not a directory name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let partial = out.with_file_name(format!(".{name}.partial"));
    let old = out.with_file_name(format!(".{name}.old"));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(|e| format!("creating {}: {e}", partial.display()))?;
    let bytes = match fill(&partial) {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e.into());
        }
    };
    let _ = fs::remove_dir_all(&old);
    if out.exists() {
        fs::rename(out, &old)
            .map_err(|e| format!("moving the old {} aside: {e}", out.display()))?;
    }
    fs::rename(&partial, out)
        .map_err(|e| format!("renaming {} to {}: {e}", partial.display(), out.display()))?;
    let _ = fs::remove_dir_all(&old);
    Ok(bytes)
}

/// Writes the hybrid ISO: the ESP as a FAT image, the payload tree grafted from the NAR cache
/// (nothing copied), xorriso in between; under a temporary name, renamed at the end. Returns
/// the image's size.
#[allow(clippy::too_many_arguments)]
fn write_iso(
    opts: &BuildOptions,
    esp: &media::fat32::Tree,
    payload: &media::fat32::Tree,
    volume_id: &str,
    seed: &[u8],
    timestamp: u64,
    ui: &Ui,
) -> Result<u64, Error> {
    let name = opts
        .output
        .file_name()
        .ok_or_else(|| format!("-o {}: not a file name", opts.output.display()))?
        .to_string_lossy()
        .into_owned();
    let partial = opts.output.with_file_name(format!(".{name}.partial"));
    let scratch = opts.output.with_file_name(format!(".{name}.partial.d"));
    let _ = fs::remove_file(&partial);
    let _ = fs::remove_dir_all(&scratch);
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
        let job = media::iso::IsoJob {
            files: &staged.files,
            empty_dirs: &staged.empty_dirs,
            esp_image: &esp_image,
            volume_id,
            epoch: timestamp,
            output: &partial,
            scratch: &scratch,
        };
        use media::iso::IsoBackend;
        media::iso::Xorriso::default()
            .write_iso(&job)
            .map_err(|e| format!("writing {}: {e}", opts.output.display()))?;
        spinner.finish_and_clear();
        fs::rename(&partial, &opts.output).map_err(|e| {
            format!(
                "renaming {} to {}: {e}",
                partial.display(),
                opts.output.display()
            )
        })?;
        fs::metadata(&opts.output)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", opts.output.display()))
    })();
    let _ = fs::remove_dir_all(&scratch);
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_toplevels() {
        let p = |s: &str| StorePath::parse(&format!("/nix/store/{}-{s}", "0".repeat(32))).unwrap();
        assert_eq!(
            host_name_of(&p("nixos-system-dev-365-25.05.20250101.abcdef")),
            "dev-365"
        );
        assert_eq!(host_name_of(&p("nixos-system-web1-24.11")), "web1");
        assert_eq!(host_name_of(&p("my-system")), "my-system");
        assert_eq!(host_name_of(&p("nixos-system-host-1-1")), "host-1");
    }
}
