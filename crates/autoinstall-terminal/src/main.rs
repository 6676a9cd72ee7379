use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use autoinstall_terminal::choose::Overrides;
use autoinstall_terminal::identify;
use autoinstall_terminal::install::{self, Options};
use autoinstall_terminal::report::Outcome;
use autoinstall_terminal::settings::{self, Asked, Settings};
use autoinstall_terminal::status::{self, StatusFile};
use autoinstall_terminal::ui::Ui;
use manifest::AfterInstall;

#[derive(Parser)]
#[command(
    name = "autoinstall-terminal",
    version,
    about = "Install this machine's NixOS host from an installer stick",
    long_about = "Install this machine's NixOS host from an installer stick: read the machine's \
                  serial, pick its host from the stick, verify its closure, partition and format \
                  the disk, copy and register the closure, install the boot loader, write a \
                  report back to the stick. Nothing on any disk is written before the host and \
                  the disk are chosen, the closure verified and the plan confirmed.",
    after_help = "Exit status: 0 installed (or a dry run); 1 failed after writing began (the disk is left with no boot entry; run again); 2 bad usage or an unreadable setting; 3 refused (nothing was written).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Print the machine's SMBIOS serial, UUID and MAC addresses, and exit.
    #[arg(long)]
    identify: bool,
    /// The payload: an installer image or stick, its payload partition, an ISO or CD
    /// (/dev/sr0), or a payload directory. Default: $AUTOINSTALL_PAYLOAD_DEVICE, else the disk
    /// or CD that carries one.
    #[arg(long, value_name = "DIR|DEVICE|IMAGE|ISO")]
    payload: Option<PathBuf>,
    /// Install from a `mkinstaller --format cache` site over HTTP(S) instead of a stick: the
    /// host is looked up by serial there, and every file must be signed by a trusted key.
    /// Default: $AUTOINSTALL_URL (the kernel's `autoinstall.url=`), when no --payload is given.
    #[arg(long, value_name = "URL", conflicts_with = "payload")]
    url: Option<String>,
    /// Online without signatures: anyone who can answer for the URL chooses what this machine
    /// runs. For labs only.
    #[arg(long)]
    insecure: bool,
    /// Online: attempts per file before the install fails (a refused connection, a server
    /// error or a dropped download is retried after a pause that doubles up to 8 s; a
    /// download resumes where it stopped).
    #[arg(long, value_name = "N", default_value_t = 6)]
    retries: u32,
    /// Online over HTTPS: trust the server's certificate only if it chains to a certificate
    /// in this PEM file (a fleet's private CA) [default: /etc/nixos-autoinstall/ca.pem when
    /// it exists, else Mozilla's public roots].
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Install this host, whatever the serial.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Use this serial instead of the firmware's.
    #[arg(long, value_name = "SERIAL")]
    serial: Option<String>,
    /// Install onto this whole disk (a /dev node, a by-id link, or a loop device). Once per
    /// disk of a layout with several, in the layout's disk order, or as NAME=DEVICE for the
    /// layout's disk NAME.
    #[arg(long, value_name = "[NAME=]DEVICE")]
    disk: Vec<String>,
    /// Print the plan and stop; touch nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run, on a running system that is to boot the installer by kexec: plan as
    /// the installer will find this machine, its disks free (the running system's mounts and
    /// holders gone) and its boot mode checked. `mkinstaller --ssh --dry-run` runs this.
    #[arg(long, requires = "dry_run", hide = true)]
    after_kexec: bool,
    /// Do not wait for confirmation (unattended use).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print the report (or with --identify, the identity) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Only errors on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Where the new system is mounted while it is installed.
    #[arg(long, value_name = "DIR", default_value = "/mnt/autoinstall")]
    root: PathBuf,
    /// Worker threads for verifying and copying (default: all cores).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Install the closure and profile but no boot loader (for closures that are not
    /// bootable systems).
    #[arg(long)]
    no_bootloader: bool,
    /// Format the store's ext4 file system with mkfs.ext4 and copy the closure through the
    /// mounted file system, instead of writing the file system with the closure in it
    /// directly (the default for ext4; slower, kept for comparison).
    #[arg(long)]
    kernel_copy: bool,
    /// When the payload is checked: `first` reads the whole closure before any disk is
    /// touched; `streaming` checks each NAR in full as it is written (one read instead of
    /// two; a bad NAR fails the install with no boot entry); `auto` streams only onto disks
    /// that hold nothing. Default: the stick's `verify`, else auto.
    #[arg(long, value_enum, value_name = "WHEN")]
    verify: Option<VerifyArg>,
    /// After a successful install: `auto` does what the stick says (reboot, poweroff or
    /// shell) when running in the installer environment, and nothing elsewhere.
    #[arg(long, value_enum, default_value_t = Finish::Auto)]
    finish: Finish,
    /// Before the reboot or power-off that ends an install, wait up to SECONDS for someone
    /// following over SSH (`status --follow`, as `mkinstaller --ssh` does) to have read how
    /// it ended [default: $AUTOINSTALL_AWAIT_FOLLOWER, the kernel's
    /// `autoinstall.await-follower=`, which mkinstaller --ssh sets].
    #[arg(long, value_name = "SECONDS")]
    await_follower: Option<u64>,
    /// Install only from manifests of this fleet (hosts.toml's `[defaults] fleet`), which
    /// are signed with it [default: $AUTOINSTALL_FLEET, the kernel's `autoinstall.fleet=`].
    #[arg(long, value_name = "NAME")]
    fleet: Option<String>,
    /// Refuse manifests and lookups older than this generation (hosts.toml's `[defaults]
    /// generation`), so an old site or stick cannot roll a machine back [default:
    /// $AUTOINSTALL_MIN_GENERATION, the kernel's `autoinstall.min-generation=`].
    #[arg(long, value_name = "N")]
    min_generation: Option<u64>,
    /// Trust this Nix public key (`name:base64`, as `nix key convert-secret-to-public`
    /// prints); may be repeated. With any trusted key (here or in
    /// /etc/nixos-autoinstall/trusted-keys, one per line), the manifest and every store path
    /// must carry a valid signature by one of them, or nothing is installed.
    #[arg(long, value_name = "KEY")]
    trusted_key: Vec<String>,
    /// The file of trusted keys (one per line). Only its absence means "no keys": a file that
    /// cannot be read stops the installer.
    #[arg(long, value_name = "FILE", default_value = settings::TRUSTED_KEYS_FILE)]
    trusted_keys_file: PathBuf,
    /// The fleet's passphrase for the host's sealed secrets (hosts.toml `secrets =
    /// "passphrase"`), the first line of FILE, instead of asking for it on the console.
    #[arg(long, value_name = "FILE")]
    secrets_passphrase_file: Option<PathBuf>,
    /// Print shell completions for autoinstall-terminal and exit.
    #[arg(long, value_name = "SHELL", value_enum, hide_short_help = true)]
    completions: Option<clap_complete::Shell>,
    /// Print the man page (roff), made from this help, and exit.
    #[arg(long, hide_short_help = true)]
    man: bool,
}

/// Commands for someone looking at a running installer from elsewhere (over SSH).
#[derive(clap::Subcommand)]
enum Sub {
    /// Show the running installer's step, progress, plan and the question it waits on.
    Status {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
        /// Print one JSON line each time it changes, until the run has ended and its report
        /// is in the status (what `mkinstaller --ssh` follows); the installer waits a little
        /// for a follower to read the end before it reboots.
        #[arg(long, conflicts_with = "json")]
        follow: bool,
    },
    /// Answer the question the running installer waits on: a menu's NUMBER, yes or no, or
    /// at the confirmation go or stop.
    Answer { value: String },
    /// Boot KERNEL with INITRD from this running Linux (kexec_file_load, then a kexec reboot):
    /// how a kexec bundle (mkinstaller --format kexec) starts the installer. Refused by the
    /// kernel, this system keeps running.
    Kexec {
        kernel: PathBuf,
        initrd: PathBuf,
        /// The kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Load only; do not reboot into it.
        #[arg(long)]
        load_only: bool,
        /// Do not hand this system's static network configuration (addresses by MAC,
        /// default routes, DNS) to the installer on its command line; it then asks DHCP.
        #[arg(long)]
        no_keep_network: bool,
        /// Print the command line the installer would get (with this system's network) and
        /// load nothing: for a bundle that boots with kexec-tools instead.
        #[arg(long, conflicts_with = "load_only")]
        print_cmdline: bool,
    },
}

/// What `--finish` asks for after a successful install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Finish {
    /// What the stick says, inside the installer environment; nothing elsewhere.
    Auto,
    Reboot,
    Poweroff,
    None,
}

/// `--verify` (manifest::Verify, which knows no clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VerifyArg {
    Auto,
    First,
    Streaming,
}

impl From<VerifyArg> for manifest::Verify {
    fn from(v: VerifyArg) -> manifest::Verify {
        match v {
            VerifyArg::Auto => manifest::Verify::Auto,
            VerifyArg::First => manifest::Verify::First,
            VerifyArg::Streaming => manifest::Verify::Streaming,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Sub::Status { follow: true, .. }) => {
            use autoinstall_terminal::follow;
            let path = std::path::Path::new(status::STATUS_FILE);
            let followers = std::path::Path::new(follow::FOLLOWERS_DIR);
            let poll = std::time::Duration::from_millis(500);
            let appear = std::time::Duration::from_secs(120);
            return match follow::follow(path, followers, &mut std::io::stdout(), poll, appear) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("autoinstall-terminal: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Some(Sub::Status { json, .. }) => {
            return match status::read(std::path::Path::new(status::STATUS_FILE)) {
                Ok(s) if *json => {
                    print_out(serde_json::to_string_pretty(&s).expect("serialises") + "\n")
                }
                Ok(s) => print_out(status::describe(&s, autoinstall_terminal::report::now())),
                Err(e) => {
                    eprintln!("autoinstall-terminal: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Sub::Kexec {
            kernel,
            initrd,
            cmdline,
            load_only,
            no_keep_network,
            print_cmdline,
        }) => {
            let mut cmdline = cmdline.clone();
            if !no_keep_network {
                let (ifaces, dns) = autoinstall_terminal::netkeep::read();
                let words = autoinstall_terminal::netkeep::cmdline_words(&ifaces, &dns);
                if !words.is_empty() {
                    eprintln!(
                        "autoinstall-terminal: keeping this system's network for the installer: {}",
                        words.join(" ")
                    );
                    cmdline = format!("{} {}", cmdline.trim(), words.join(" "));
                }
            }
            if *print_cmdline {
                return print_out(format!("{cmdline}\n"));
            }
            if let Err(e) = autoinstall_terminal::kexec::load(kernel, initrd, &cmdline) {
                eprintln!("autoinstall-terminal: {e}");
                return ExitCode::from(1);
            }
            if *load_only {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "autoinstall-terminal: {}",
                autoinstall_terminal::kexec::boot()
            );
            return ExitCode::from(1);
        }
        Some(Sub::Answer { value }) => {
            return match status::answer(std::path::Path::new(status::ANSWER_FILE), value) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("autoinstall-terminal: {e}");
                    ExitCode::from(1)
                }
            }
        }
        None => {}
    }
    if let Some(shell) = cli.completions {
        let mut cmd = Cli::command();
        clap_complete::generate(
            shell,
            &mut cmd,
            "autoinstall-terminal",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if cli.man {
        return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("autoinstall-terminal: {e}");
                ExitCode::from(1)
            }
        };
    }
    let id = identify::identify();
    if cli.identify {
        return print_identity(&id, cli.json);
    }
    let mut ui = Ui::new(cli.quiet || cli.json);
    if !cli.dry_run {
        ui.status = Some(StatusFile::new(std::path::Path::new(status::STATUS_FILE)));
    }
    match &id.serial {
        Some(s) => ui.say(&format!("serial: {s}")),
        None => ui.say(&format!(
            "serial: none ({})",
            id.serial_rejected
                .as_deref()
                .unwrap_or("the firmware reports none")
        )),
    }
    let asked = Asked {
        trusted_keys: &cli.trusted_key,
        trusted_keys_file: &cli.trusted_keys_file,
        ca_file: cli.ca_file.as_deref(),
        fleet: cli.fleet.as_deref(),
        min_generation: cli.min_generation,
    };
    let settings = match Settings::read(&asked) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("autoinstall-terminal: {e}");
            return ExitCode::from(2);
        }
    };
    let url = cli.url.clone().or_else(|| {
        std::env::var("AUTOINSTALL_URL")
            .ok()
            .filter(|u| !u.is_empty() && cli.payload.is_none())
    });
    let insecure = cli.insecure || std::env::var("AUTOINSTALL_INSECURE").as_deref() == Ok("1");
    if insecure {
        eprintln!("autoinstall-terminal: WARNING: --insecure: signatures are NOT checked; whoever answers for the URL decides what this machine runs");
    }
    // Read now: a file named and unreadable stops the installer before anything else.
    let secrets_passphrase = match &cli.secrets_passphrase_file {
        None => None,
        Some(f) => match std::fs::read_to_string(f) {
            Ok(text) => Some(text.lines().next().unwrap_or("").to_string()),
            Err(e) => {
                eprintln!(
                    "autoinstall-terminal: --secrets-passphrase-file {}: {e}; nothing was touched",
                    f.display()
                );
                return ExitCode::from(3);
            }
        },
    };
    let opts = Options {
        secrets_passphrase,
        trusted_keys: settings.trusted_keys,
        fleet: settings.fleet,
        min_generation: settings.min_generation,
        payload: cli.payload.clone(),
        url,
        insecure,
        retries: cli.retries.max(1),
        ca_pem: settings.ca_pem,
        overrides: Overrides {
            host: cli.host.clone(),
            serial: cli.serial.clone(),
        },
        disks: cli.disk.clone(),
        dry_run: cli.dry_run,
        after_kexec: cli.after_kexec,
        yes: cli.yes,
        root: cli.root.clone(),
        jobs: cli
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        bootloader: !cli.no_bootloader,
        kernel_copy: cli.kernel_copy,
        verify: cli.verify.map(VerifyArg::into),
    };
    let awaited = cli
        .await_follower
        .or_else(|| {
            std::env::var("AUTOINSTALL_AWAIT_FOLLOWER")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .map(std::time::Duration::from_secs);
    let ended = install::run(&opts, &ui, id);
    let r = &ended.report;

    if cli.dry_run {
        if let Some(plan) = &ended.plan {
            return print_out(if cli.json {
                serde_json::to_string_pretty(plan).expect("a plan serialises") + "\n"
            } else {
                plan.describe()
            });
        }
    }

    // The report goes back to the stick (not for dry runs: nothing happened).
    let mut written = None;
    if !cli.dry_run {
        if let Some(source) = &ended.source {
            let stem = r.file_stem();
            let log = r.log.join("\n") + "\n";
            match source
                .write_report(&format!("{stem}.json"), r.to_json().as_bytes())
                .and_then(|w| {
                    source
                        .write_report(&format!("{stem}.log"), log.as_bytes())
                        .map(|_| w)
                }) {
                Ok(w) => written = Some(w),
                // A CD or ISO: the installed disk keeps the report (written before unmounting).
                Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                    if r.outcome == Outcome::Installed {
                        written = Some(format!(
                            "{}/{stem}.json on the installed disk ({e})",
                            autoinstall_terminal::write::TARGET_REPORTS_DIR
                        ));
                    } else {
                        eprintln!(
                            "autoinstall-terminal: {e}: this report is kept nowhere but here"
                        );
                    }
                }
                Err(e) => eprintln!(
                    "autoinstall-terminal: could not write the report to the payload: {e}"
                ),
            }
        }
    }
    // Whoever follows the run (status --follow) ends with the report.
    ui.status(|s| s.report = serde_json::to_value(r).ok());
    if cli.json {
        // The outcome decides the exit status; a report nobody could read is said on stderr.
        if let Err(e) = util::out::stdout(&r.to_json()) {
            eprintln!("autoinstall-terminal: {e}");
        }
    }
    match (&r.outcome, &r.error) {
        (Outcome::Installed, _) => {
            ui.say(&format!(
                "installed {} on {} in {:.1} s{}",
                r.host.as_deref().unwrap_or("?"),
                r.disk.as_ref().map(|d| d.path.as_str()).unwrap_or("?"),
                r.seconds,
                written
                    .map(|w| format!("; report: {w}"))
                    .unwrap_or_default()
            ));
            finish(cli.finish, ended.after_install, awaited, &ui)
        }
        (Outcome::Enrolled, _) => {
            ui.say("this machine is recorded on the stick as pending (mkinstaller reports --pending); no disk was touched");
            finish(cli.finish, ended.after_install, awaited, &ui)
        }
        (Outcome::AlreadyInstalled, _) => {
            ui.say(&format!(
                "{} is already installed on {}: not installed again",
                r.host.as_deref().unwrap_or("?"),
                r.disk.as_ref().map(|d| d.path.as_str()).unwrap_or("?"),
            ));
            finish(cli.finish, ended.after_install, awaited, &ui)
        }
        (outcome, Some(e)) => {
            let what = if *outcome == Outcome::Refused {
                "refused"
            } else {
                "install failed"
            };
            eprintln!(
                "autoinstall-terminal: {what} at step {}: {}",
                e.step, e.message
            );
            if *outcome == Outcome::Failed {
                eprintln!("autoinstall-terminal: the disk has no boot entry; fix the cause and run the installer again (it starts over)");
            }
            ExitCode::from(if *outcome == Outcome::Refused { 3 } else { 1 })
        }
        _ => ExitCode::SUCCESS,
    }
}

/// The stick's after-install action. `auto` acts only inside the installer environment
/// (marked by /etc/nixos-autoinstall), so running the tool on a workstation never reboots it.
fn finish(
    mode: Finish,
    after: Option<AfterInstall>,
    awaited: Option<std::time::Duration>,
    ui: &Ui,
) -> ExitCode {
    let action = match mode {
        Finish::Auto if autoinstall_terminal::in_installer_environment() => after,
        Finish::Auto | Finish::None => {
            if let Some(a) = after {
                ui.say(&format!("(the stick says {a:?} after install; not in the installer environment, so doing nothing)").to_lowercase());
            }
            None
        }
        Finish::Reboot => Some(AfterInstall::Reboot),
        Finish::Poweroff => Some(AfterInstall::Poweroff),
    };
    nix::unistd::sync();
    let mode = match action {
        None | Some(AfterInstall::Shell) => return ExitCode::SUCCESS,
        Some(AfterInstall::Reboot) => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
        Some(AfterInstall::Poweroff) => nix::sys::reboot::RebootMode::RB_POWER_OFF,
    };
    // An admin following over SSH reads how it ended before the connection goes.
    use autoinstall_terminal::follow;
    if let Some(limit) = awaited {
        ui.say(&format!(
            "waiting up to {} s for the admin following over SSH to read the end",
            limit.as_secs()
        ));
    }
    let (left, read) = follow::wait_for_followers(
        std::path::Path::new(follow::FOLLOWERS_DIR),
        follow::WAIT_FOR_FOLLOWERS,
        awaited,
    );
    if left > 0 || (awaited.is_some() && !read) {
        ui.say("the end was not read over SSH; going on (the report is on the disk)");
    }
    ui.say(&format!("{:?} now", action.expect("an action")).to_lowercase());
    // Under systemd, let it stop services; in the initramfs, PID 1 is a shell: go directly.
    if std::path::Path::new("/run/systemd/system").exists() {
        let verb = if mode == nix::sys::reboot::RebootMode::RB_AUTOBOOT {
            "reboot"
        } else {
            "poweroff"
        };
        let _ = std::process::Command::new("systemctl").arg(verb).status();
        return ExitCode::SUCCESS;
    }
    match nix::sys::reboot::reboot(mode) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("autoinstall-terminal: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_identity(id: &identify::Identity, json: bool) -> ExitCode {
    if json {
        return print_out(serde_json::to_string_pretty(id).expect("serialises") + "\n");
    }
    let mut text = match (&id.serial, &id.serial_rejected) {
        (Some(s), _) => format!("serial: {s} (from {})\n", id.source.unwrap_or("?")),
        (None, Some(why)) => format!("serial: none ({why})\n"),
        (None, None) => "serial: none (the firmware reports no system serial)\n".to_string(),
    };
    text += &format!("uuid: {}\n", id.uuid.as_deref().unwrap_or("none"));
    for m in &id.macs {
        text += &format!("mac: {m}\n");
    }
    print_out(text)
}

/// Standard output for a subcommand whose output is all it does: a reader that closed the
/// pipe early (`| grep -q`) is fine, any other write error fails the command.
fn print_out(text: String) -> ExitCode {
    match util::out::stdout(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoinstall-terminal: {e}");
            ExitCode::from(1)
        }
    }
}
