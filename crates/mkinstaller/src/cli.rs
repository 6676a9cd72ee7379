//! mkinstaller's command line, as clap parses it; `main.rs` turns it into a build or a
//! reading of an image, and the same definitions make its completions and man page.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::options::{BootLoaderArg, OutputFormat};

/// Default installer environment: where images/debian/build puts it.
pub const DEFAULT_INSTALLER: &str = "/var/lib/nixos-autoinstall/installer";
/// Default installer environment for arm64 machines: `images/debian/build --arch arm64`.
pub const DEFAULT_INSTALLER_ARM64: &str = "/var/lib/nixos-autoinstall/installer-arm64";

fn parse_size(s: &str) -> Result<u64, String> {
    util::size::parse(s)
}

#[derive(Parser)]
#[command(
    name = "mkinstaller",
    version,
    about = "Write bootable installer images that carry the NixOS closures of one host or a fleet",
    long_about = "Write bootable installer images that carry the NixOS closures of one host or of a \
                  whole fleet keyed by SMBIOS serial. Boot a machine from the image and \
                  autoinstall-terminal installs the host whose serial it reads.",
    after_help = "Exit status: 0 done; 1 failed while writing (the partial output is removed); 2 bad usage; 3 refused by a check before anything was written.\n\nExamples:\n  mkinstaller --mass hosts.toml -o usb.img\n  mkinstaller --flake . -o usb.img\n  mkinstaller --mass hosts.toml --host web-1 -o web-1.img\n  mkinstaller --system /nix/store/…-nixos-system-x -o x.img\n  mkinstaller --mass hosts.toml --sign-key k.sec --format cache -o site/\n  mkinstaller --online http://10.0.0.1/site --format netboot -o tftp/\n  mkinstaller --mass hosts.toml --format netboot -o tftp/\n  mkinstaller --mass hosts.toml --format kexec -o bundle/   (then on the machine, as root: sh autoinstall.run)\n  mkinstaller --mass hosts.toml --ssh root@203.0.113.7 --ssh-identity ~/.ssh/id_ed25519\n  mkinstaller inspect usb.img --json\n  mkinstaller verify usb.img",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show what an image carries: hosts, serials, closure sizes, the format version,
    /// whether it is signed and by which key, its policies and the installer's kernel
    /// command line. A summary of at most 40 hosts unless --all.
    Inspect {
        /// A USB image or stick, an ISO, or a payload directory (a cache site).
        image: PathBuf,
        /// Every host, however many.
        #[arg(long)]
        all: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Re-check every hash in an image, as the installer would before installing from it:
    /// the manifest, each host's closure, every compressed file and NAR (hashes, sizes, and
    /// the structure of every NAR); with --trusted-key, every signature too.
    Verify {
        /// A USB image or stick, an ISO, or a payload directory (a cache site).
        image: PathBuf,
        /// Require the manifest and every store path to be signed by this Nix public key
        /// (`name:base64`); may be repeated.
        #[arg(long, value_name = "KEY")]
        trusted_key: Vec<String>,
        /// Worker threads [default: all cores].
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        /// Print the findings as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// No progress bar, and nothing printed when all is well.
        #[arg(short, long)]
        quiet: bool,
    },
    /// The fleet's state from the reports installers wrote back: which machine, which host,
    /// when, how it ended and why, and what the machine is; one row per machine (its newest
    /// report) unless --all.
    Reports {
        /// Sticks or images (their payload's reports), payload directories, or directories of
        /// report files; as many as were collected.
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// Every report, not only each machine's newest.
        #[arg(long)]
        all: bool,
        /// The reports as written, a JSON array.
        #[arg(long, group = "shape")]
        json: bool,
        /// One line per machine, comma-separated.
        #[arg(long, group = "shape")]
        csv: bool,
        /// An HTML page with a sortable table.
        #[arg(long, group = "shape")]
        html: bool,
        /// The machines that enrolled (on-unknown-serial = "enrol") as [[host]] blocks for
        /// hosts.toml.
        #[arg(long, group = "shape")]
        pending: bool,
        /// Open the recovery keys the reports escrowed with this identity (an age identity
        /// file, or an unprotected OpenSSH private key): machine, host, volume, LUKS UUID,
        /// key per line (JSON with --json).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["csv", "html", "pending"])]
        identity: Option<PathBuf>,
    },
    /// Print shell completions for mkinstaller (e.g. `mkinstaller completions bash >
    /// /usr/share/bash-completion/completions/mkinstaller`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print mkinstaller's man page (roff), made from this help.
    Man,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The fleet file (see README: hosts.toml).
    #[arg(
        long,
        value_name = "HOSTS.TOML",
        group = "fleet",
        conflicts_with = "system"
    )]
    pub mass: Option<PathBuf>,
    /// The fleet a flake declares: every nixosConfigurations entry with autoinstall.serials
    /// (nixosModules.host), the flake's autoinstall.defaults as [defaults]; hosts.toml is
    /// generated by the function lib.mkInstaller uses, and every toplevel built.
    #[arg(long, value_name = "REF", group = "fleet", conflicts_with_all = ["mass", "system"])]
    pub flake: Option<String>,
    /// With --mass or --flake: a stick for this host only, installed whatever the machine's
    /// serial.
    #[arg(long, value_name = "NAME", requires = "fleet")]
    pub host: Option<String>,
    /// One NixOS toplevel (a /nix/store path), installed whatever the machine's serial.
    #[arg(long, value_name = "STORE-PATH")]
    pub system: Option<String>,
    /// No fleet: boot media (usb, iso or netboot) for the online installer, which finds its
    /// host by serial at this cache site (made with --mass … --format cache --sign-key) and
    /// installs from it over HTTP(S).
    #[arg(long, value_name = "URL", conflicts_with_all = ["mass", "flake", "system"])]
    pub online: Option<String>,
    /// With --system: the host's name (default: from the toplevel's name).
    #[arg(long, value_name = "NAME", requires = "system")]
    pub name: Option<String>,
    /// With --system: the disk layout (default: uefi-ext4).
    #[arg(long, value_name = "PROFILE", requires = "system")]
    pub profile: Option<String>,
    /// With --system: the system is a bare closure, not a bootable NixOS toplevel; the
    /// installer installs it without a boot loader (hosts.toml: bootable = false).
    #[arg(long, requires = "system")]
    pub not_bootable: bool,
    /// The image file or block device to write.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Sign every narinfo and the manifest with this Nix secret key (the format `nix key
    /// generate-secret` writes); installers that trust its public key refuse anything else.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// What to write [default: iso if the output ends in .iso, else usb]
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Pad the image to this size (e.g. 32G, the stick's size); default: just large enough.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,
    /// The installer environment (kernel, initrd, cmdline, systemd-bootx64.efi) [default:
    /// $MKINSTALLER_INSTALLER (the flake's wrapper sets it to the NixOS one), else
    /// /var/lib/nixos-autoinstall/installer, where images/debian/build puts it]. Once per
    /// architecture for a stick or ISO that boots several: with hosts built for
    /// aarch64-linux, the arm64 one (systemd-bootaa64.efi) [default:
    /// $MKINSTALLER_INSTALLER_ARM64, else /var/lib/nixos-autoinstall/installer-arm64, from
    /// images/debian/build --arch arm64]
    #[arg(long, value_name = "DIR")]
    pub installer: Vec<PathBuf>,
    /// Cache of compressed NARs, reused across builds [default: $XDG_CACHE_HOME/mkinstaller]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Directory searched first for profiles named in hosts.toml.
    #[arg(long, value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// Extra kernel command line for the installer, e.g. 'autoinstall.args="--dry-run"' or
    /// console settings ('console=ttyS1,115200').
    #[arg(long, value_name = "ARGS", default_value = "")]
    pub kernel_args: String,
    /// The stick's (or ISO's) boot loader: the environment's signed shim and GRUB, which
    /// boot with Secure Boot on, or systemd-boot [default: auto, signed where the
    /// environment has it]
    #[arg(long, value_enum, default_value_t = BootLoaderArg::Auto)]
    pub boot_loader: BootLoaderArg,
    /// zstd level for the NARs. 2 compresses about a fifth faster than 3 (Nix's default) for
    /// about 4% more bytes; 3 and up trade build time for a smaller stick.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Compression threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// With --format cache: publish the hosts' extra files on the site anyway. They are
    /// served to anyone who can reach the site, in the clear (SSH host keys and other
    /// secrets included); without this, a fleet with extra files is refused for a site.
    #[arg(long)]
    pub public_extra_files: bool,
    /// The fleet's passphrase, for hosts.toml `secrets = "passphrase"`: its first line seals
    /// each host's extra files and LUKS keys (age, scrypt); the installer asks for it on
    /// each machine. Keep the file out of the repository and the Nix store.
    #[arg(long, value_name = "FILE")]
    pub secrets_passphrase_file: Option<PathBuf>,
    /// Read the output back when it is written and check every hash on it, as `mkinstaller
    /// verify` does (the build fails if anything differs from what was meant).
    #[arg(long)]
    pub verify: bool,
    /// Write the whole stick even when it already holds one of ours. Without this, a stick
    /// (or USB image file) of ours is refreshed in place: only new files, directories and the
    /// FAT sectors that change are written, and an interruption leaves the old stick or the
    /// new one. Reports on it are kept either way.
    #[arg(long)]
    pub rewrite: bool,
    /// Install this machine, which runs some Linux and answers SSH as root, with no stick and
    /// no PXE: the kexec bundle is built, streamed into its RAM and booted, and the installer
    /// is followed over SSH until its report; the exit status is the installer's. The
    /// installer must take an SSH key of yours ([defaults] ssh-authorized-keys, or
    /// --ssh-identity). -o keeps the bundle; without it, it is built in the cache dir and
    /// removed.
    #[arg(long, value_name = "[USER@]HOST", conflicts_with_all = ["verify", "size"])]
    pub ssh: Option<crate::ssh::Target>,
    /// With --ssh: the private key ssh logs in with; its .pub is added to the keys the
    /// installer takes (not for --online: the site's manifest decides those).
    #[arg(long, value_name = "FILE", requires = "ssh")]
    pub ssh_identity: Option<PathBuf>,
    /// With --ssh: an option for ssh (as ssh -o takes it, e.g. ProxyJump=bastion); may be
    /// repeated. The installer's host key is pinned whatever they say.
    #[arg(long = "ssh-option", value_name = "OPTION", requires = "ssh")]
    pub ssh_options: Vec<String>,
    /// With --ssh: print the plan the installer would make on that machine (its host, disks,
    /// layout) and change nothing. The running system runs the installer's planner (the
    /// static autoinstall-terminal, into a tmpfs, removed after) on the payload's manifest
    /// and narinfos (no NARs, no extra files, no keys), taking its disks as the installer
    /// started by kexec will find them: free.
    #[arg(long, requires = "ssh")]
    pub dry_run: bool,
    /// With --ssh: how long to wait for the installer to answer after the kexec reboot.
    #[arg(long, value_name = "SECONDS", default_value_t = 900, requires = "ssh")]
    pub ssh_wait: u64,
    /// Print the summary as JSON on stdout (with --ssh: the installer's report).
    #[arg(long)]
    pub json: bool,
    /// No progress bars, no summary.
    #[arg(short, long)]
    pub quiet: bool,
}
