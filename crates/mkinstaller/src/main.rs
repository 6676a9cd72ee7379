use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use manifest::size::human;
use media::read;
use mkinstaller::build::{self, BuildOptions, Source};
use mkinstaller::ui::Ui;

/// Default installer environment: where images/debian/build puts it.
const DEFAULT_INSTALLER: &str = "/var/lib/nixos-autoinstall/installer";

#[derive(Parser)]
#[command(
    name = "mkinstaller",
    version,
    about = "Write bootable installer images that carry the NixOS closures of one host or a fleet",
    long_about = "Write bootable installer images that carry the NixOS closures of one host or of a \
                  whole fleet keyed by SMBIOS serial. Boot a machine from the image and \
                  autoinstall-terminal installs the host whose serial it reads.",
    after_help = "Examples:\n  mkinstaller --mass hosts.toml -o usb.img\n  mkinstaller --mass hosts.toml --host web-1 -o web-1.img\n  mkinstaller --system /nix/store/…-nixos-system-x -o x.img\n  mkinstaller --mass hosts.toml --sign-key k.sec --format cache -o site/\n  mkinstaller --online http://10.0.0.1/site --format netboot -o tftp/\n  mkinstaller --mass hosts.toml --format netboot -o tftp/\n  mkinstaller inspect usb.img --json\n  mkinstaller verify usb.img",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: BuildArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Show the hosts, serials, closure sizes and format version of an image.
    Inspect {
        image: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Re-check every hash in an image: narinfos, compressed files, NARs.
    Verify {
        image: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(short, long)]
        quiet: bool,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// The fleet file (see README: hosts.toml).
    #[arg(long, value_name = "HOSTS.TOML", conflicts_with = "system")]
    mass: Option<PathBuf>,
    /// With --mass: a stick for this host only, installed whatever the machine's serial.
    #[arg(long, value_name = "NAME", requires = "mass")]
    host: Option<String>,
    /// One NixOS toplevel (a /nix/store path), installed whatever the machine's serial.
    #[arg(long, value_name = "STORE-PATH")]
    system: Option<String>,
    /// No fleet: boot media (usb, iso or netboot) for the online installer, which finds its
    /// host by serial at this cache site (made with --mass … --format cache --sign-key) and
    /// installs from it over HTTP(S).
    #[arg(long, value_name = "URL", conflicts_with_all = ["mass", "system"])]
    online: Option<String>,
    /// With --system: the host's name (default: from the toplevel's name).
    #[arg(long, requires = "system")]
    name: Option<String>,
    /// With --system: the disk layout (default: uefi-ext4).
    #[arg(long, requires = "system")]
    profile: Option<String>,
    /// The image file or block device to write.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Sign every narinfo and the manifest with this Nix secret key (the format `nix key
    /// generate-secret` writes); installers that trust its public key refuse anything else.
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// usb (a GPT disk image, or a stick written in place), iso (a hybrid ISO for CDs and
    /// BMC virtual media, which can also be dd'ed to a stick), cache (a directory any
    /// static HTTP server can serve: a Nix binary cache with the manifest and per-serial
    /// lookups) or netboot (a directory for a TFTP/HTTP boot server: vmlinuz, initrd with the
    /// payload in it, boot.ipxe, autoinstall.efi) [default: iso if the output ends in .iso,
    /// else usb]
    #[arg(long, value_name = "usb|iso|cache|netboot")]
    format: Option<String>,
    /// Pad the image to this size (e.g. 32G, the stick's size); default: just large enough.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// The installer environment (kernel, initrd, cmdline, systemd-bootx64.efi) [default:
    /// $MKINSTALLER_INSTALLER (the flake's wrapper sets it to the NixOS one), else
    /// /var/lib/nixos-autoinstall/installer, where images/debian/build puts it]
    #[arg(long, value_name = "DIR")]
    installer: Option<PathBuf>,
    /// Cache of compressed NARs, reused across builds [default: $XDG_CACHE_HOME/mkinstaller]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Directory searched first for profiles named in hosts.toml.
    #[arg(long, value_name = "DIR")]
    profiles_dir: Option<PathBuf>,
    /// Extra kernel command line for the installer, e.g. 'autoinstall.args="--dry-run"' or
    /// console settings ('console=ttyS1,115200').
    #[arg(long, value_name = "ARGS", default_value = "")]
    kernel_args: String,
    /// zstd level for the NARs. 2 compresses about a fifth faster than 3 (Nix's default) for
    /// about 4% more bytes; 3 and up trade build time for a smaller stick.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Compression threads [default: all cores]
    #[arg(long)]
    jobs: Option<usize>,
    /// With --format cache: publish the hosts' extra files on the site anyway. They are
    /// served to anyone who can reach the site, in the clear (SSH host keys and other
    /// secrets included); without this, a fleet with extra files is refused for a site.
    #[arg(long)]
    public_extra_files: bool,
    /// Read the output back when it is written and check every hash on it, as `mkinstaller
    /// verify` does (the build fails if anything differs from what was meant).
    #[arg(long)]
    verify: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bars, no summary.
    #[arg(short, long)]
    quiet: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    manifest::size::parse(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Inspect { image, json }) => inspect(&image, json),
        Some(Command::Verify { image, json, quiet }) => verify(&image, json, quiet),
        None => run_build(cli.build),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkinstaller: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_build(a: BuildArgs) -> Result<(), String> {
    let source = match (a.mass, a.system, a.online) {
        (Some(file), None, None) => Source::Mass { file, host: a.host },
        (None, Some(path), None) => Source::System {
            path,
            name: a.name,
            profile: a.profile,
        },
        (None, None, Some(url)) => Source::Online { url },
        _ => {
            return Err(
                "say what to install: --mass HOSTS.TOML, --system STORE-PATH, or --online URL for boot media of the online installer (see --help)".into(),
            )
        }
    };
    let output = a
        .output
        .ok_or("say where to write the image: -o usb.img (see --help)")?;
    let format = build::Format::for_output(a.format.as_deref(), &output)?;
    let opts = BuildOptions {
        source,
        output,
        format,
        size: a.size,
        installer: a
            .installer
            .or_else(|| std::env::var_os("MKINSTALLER_INSTALLER").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_INSTALLER)),
        cache_dir: a.cache_dir.unwrap_or_else(media::narcache::default_dir),
        profiles_dir: a.profiles_dir,
        level: a.level,
        kernel_args: a.kernel_args,
        sign_key: a.sign_key,
        public_extra_files: a.public_extra_files,
        verify: a.verify,
        threads: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    };
    let ui = Ui {
        quiet: a.quiet || a.json,
    };
    let s = build::build(&opts, &ui).map_err(|e| e.to_string())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s).expect("serialises"));
    } else if !a.quiet && s.hosts == 0 {
        eprintln!(
            "{}: boot media for the online installer, {}, {:.1} s",
            s.output.display(),
            human(s.image_bytes),
            s.seconds
        );
    } else if !a.quiet {
        let ratio = s.compressed_bytes as f64 / s.nar_bytes.max(1) as f64;
        eprintln!(
            "{}: {} host{}, {} store paths ({} from cache), {} of NAR in {} ({:.0}%), image {}, {:.1} s",
            s.output.display(),
            s.hosts,
            if s.hosts == 1 { "" } else { "s" },
            s.paths,
            s.paths_from_cache,
            human(s.nar_bytes),
            human(s.compressed_bytes),
            ratio * 100.0,
            human(s.image_bytes),
            s.seconds
        );
    }
    Ok(())
}

fn inspect(image: &Path, json: bool) -> Result<(), String> {
    let payload = read::open_image_payload(image).map_err(|e| e.to_string())?;
    let s = read::summarise(payload.as_ref()).map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s).expect("serialises"));
        return Ok(());
    }
    println!(
        "{}: media format {}, {} mode, written by {}",
        image.display(),
        s.format_version,
        s.mode,
        s.generator
    );
    println!(
        "unknown serial: {}, after install: {}",
        match &s.on_unknown_serial {
            manifest::UnknownSerial::Ask => "ask".to_string(),
            manifest::UnknownSerial::Refuse => "refuse".to_string(),
            manifest::UnknownSerial::Host(h) => format!("install {h}"),
        },
        format!("{:?}", s.after_install).to_lowercase()
    );
    println!();
    println!(
        "{:<20} {:<24} {:>6} {:>10} {:>10} {:>10}  profile",
        "host", "serials", "paths", "NAR", "on stick", "unique"
    );
    for h in &s.hosts {
        let serials = if h.serials.is_empty() {
            "-".to_string()
        } else {
            h.serials.join(",")
        };
        println!(
            "{:<20} {:<24} {:>6} {:>10} {:>10} {:>10}  {}",
            h.name,
            serials,
            h.closure_paths,
            human(h.closure_nar_bytes),
            human(h.closure_compressed_bytes),
            human(h.unique_nar_bytes),
            h.profile
        );
    }
    println!();
    println!(
        "{} distinct store paths, {} of NAR stored as {}; {} of NAR shared by several hosts",
        s.paths,
        human(s.nar_bytes),
        human(s.compressed_bytes),
        human(s.shared_nar_bytes)
    );
    Ok(())
}

fn verify(image: &Path, json: bool, quiet: bool) -> Result<(), String> {
    let payload = read::open_image_payload(image).map_err(|e| e.to_string())?;
    let total = read::summarise(payload.as_ref())
        .map(|s| s.compressed_bytes)
        .unwrap_or(0);
    let ui = Ui {
        quiet: quiet || json,
    };
    let bar = ui.bytes(total, "verifying");
    let v = read::verify(payload.as_ref(), &mut |n| bar.inc(n)).map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    }
    if !v.problems.is_empty() {
        if !json {
            for p in &v.problems {
                eprintln!("{}: {p}", payload.describe());
            }
        }
        return Err(format!(
            "{}: {} problem(s) found; the image is damaged, rebuild it",
            image.display(),
            v.problems.len()
        ));
    }
    if !json && !quiet {
        eprintln!(
            "{}: {} store paths, {} of NAR: every hash matches",
            image.display(),
            v.paths,
            human(v.nar_bytes)
        );
    }
    Ok(())
}
