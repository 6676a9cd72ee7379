//! What a build is asked to do, what it reports, and how it fails.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Whether a failed build wrote anything: refused by a check before the output was opened
/// (exit 3), or failed while writing it (exit 1; the partial output is removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Refused,
    Failed,
}

/// A failed build, as a sentence, and whether anything was written.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    /// A failure while writing the output.
    pub fn failed(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Failed,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Most errors are checks that refuse before anything is written.
impl From<String> for Error {
    fn from(message: String) -> Self {
        Error {
            kind: ErrorKind::Refused,
            message,
        }
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::from(message.to_string())
    }
}

/// What the image is built from.
pub enum Source {
    /// A fleet file; with `host`, a per-host stick that installs that host whatever the serial.
    Mass { file: PathBuf, host: Option<String> },
    /// The fleet a flake declares (`--flake REF`): its hosts.toml is generated, then read as
    /// `Mass` reads one.
    Flake {
        reference: String,
        host: Option<String>,
    },
    /// No fleet: boot media for the online installer, which fetches from the cache site at
    /// `url` (made by `--mass … --format cache`).
    Online { url: String },
    /// One toplevel, installed whatever the serial.
    System {
        path: String,
        name: Option<String>,
        profile: Option<String>,
        /// `--not-bootable`: a bare closure, installed without a boot loader.
        not_bootable: bool,
    },
}

/// The boot loader of a stick's or an ISO's ESP (`--boot-loader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BootLoaderArg {
    /// The signed chain (shim, GRUB) where the installer environment has it, else systemd-boot.
    #[default]
    Auto,
    /// Debian's signed shim and GRUB: boots with Secure Boot on, under the vendors' keys.
    Signed,
    /// systemd-boot, unsigned: Secure Boot off; for TPM2 layouts sealed to PCR 7 (shim
    /// extends it, and GRUB gives the kernel no event log to predict it from).
    SystemdBoot,
}

impl From<BootLoaderArg> for media::esp::BootLoader {
    fn from(b: BootLoaderArg) -> Self {
        match b {
            BootLoaderArg::Auto => media::esp::BootLoader::Auto,
            BootLoaderArg::Signed => media::esp::BootLoader::Signed,
            BootLoaderArg::SystemdBoot => media::esp::BootLoader::SystemdBoot,
        }
    }
}

/// What kind of image to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
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
    /// A directory to run on a machine's running Linux, as root: it boots the installer with
    /// kexec (no stick, no PXE). `autoinstall.run` is the same in one self-extracting file.
    Kexec,
}

impl OutputFormat {
    /// `--format`, or else the output's extension: `.iso` is an ISO, anything else a disk.
    pub fn for_output(given: Option<OutputFormat>, output: &Path) -> OutputFormat {
        given.unwrap_or_else(|| {
            match output
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_lowercase)
            {
                Some(e) if e == "iso" => OutputFormat::Iso,
                _ => OutputFormat::Usb,
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Usb => "usb",
            OutputFormat::Iso => "iso",
            OutputFormat::Cache => "cache",
            OutputFormat::Netboot => "netboot",
            OutputFormat::Kexec => "kexec",
        }
    }
}

pub struct BuildOptions {
    pub source: Source,
    pub output: PathBuf,
    pub format: OutputFormat,
    pub size: Option<u64>,
    /// The installer environments given (one per architecture; `envs`).
    pub installers: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    pub profiles_dir: Option<PathBuf>,
    pub level: i32,
    pub threads: usize,
    /// Appended to the installer's kernel command line.
    pub kernel_args: String,
    /// The ESP's boot loader (`--boot-loader`).
    pub boot_loader: media::esp::BootLoader,
    /// Signs every narinfo and the manifest (`--sign-key`).
    pub sign_key: Option<PathBuf>,
    /// `--public-extra-files`: a cache site may serve the hosts' extra files in the clear.
    pub public_extra_files: bool,
    /// `--secrets-passphrase-file`: seals the hosts' secrets (`secrets = "passphrase"`).
    pub secrets_passphrase_file: Option<PathBuf>,
    /// `--verify`: read the output back and check every hash on it.
    pub verify: bool,
    /// `--rewrite`: write a stick of ours whole instead of refreshing it in place.
    pub rewrite: bool,
    /// Keys the live installer also takes over SSH, beside `[defaults] ssh-authorized-keys`
    /// (`--ssh --ssh-identity`: the admin's own, to follow the install).
    pub extra_ssh_keys: Vec<String>,
    /// With `--format kexec`: instead of the bundle, the kit `--ssh --dry-run` plans with
    /// (the static autoinstall-terminal and the payload's manifest and narinfos).
    pub plan_kit: bool,
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
    /// A stick of ours refreshed in place: what was kept and written (`null`: written whole).
    pub refreshed: Option<crate::refresh::Refreshed>,
}

#[derive(Debug, Default, Serialize)]
pub struct Phases {
    pub plan: f64,
    pub compress: f64,
    pub write: f64,
}
