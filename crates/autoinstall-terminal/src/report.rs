//! Report: what happened, as JSON for the fleet's records (written back to the stick), with
//! the step log beside it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use manifest::inventory::{Cpu, Inventory};

use crate::identify::Identity;
use crate::step::Step;

pub const REPORT_FORMAT: &str = "nixos-autoinstall-report";
pub const REPORT_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Installed,
    /// The disk already held this host from this fleet, and it was not reinstalled.
    AlreadyInstalled,
    /// An unknown machine recorded as pending (`on-unknown-serial = "enrol"`); no disk
    /// touched.
    Enrolled,
    Refused,
    Failed,
    DryRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    pub step: Step,
    pub seconds: f64,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepError {
    pub step: Step,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskSummary {
    pub path: String,
    pub model: String,
    pub serial: String,
    pub size: u64,
    pub transport: String,
}

/// What an enrolled machine's report says of its disks.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// A stable name (`/dev/disk/by-id/…`) of the disk the rules choose, else its path;
    /// none when no disk fits.
    pub disk: Option<String>,
    /// How the rules chose it, or why no disk fits.
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionSummary {
    /// The disk it is on.
    pub disk: String,
    pub number: u32,
    pub label: String,
    /// What is on it (`ext4 /`, `LUKS crypted (…)`, `md member of root`).
    pub holds: String,
    pub bytes: u64,
}

/// The machine's inventory, with the CPU and memory as sysinfo measures them, and the kernel
/// the installer runs on.
pub fn probe() -> (Inventory, String) {
    let (cpu, memory) = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            let cpu = Cpu {
                model: sys
                    .cpus()
                    .first()
                    .map(|c| c.brand().trim().to_string())
                    .unwrap_or_default(),
                threads: sys.cpus().len(),
            };
            (cpu, sys.total_memory())
        }
        Err(_) => (Cpu::default(), 0),
    };
    let disks = machine::disks::scan().unwrap_or_default();
    (
        machine::inventory::collect(&disks, cpu, memory),
        sysinfo::System::kernel_version().unwrap_or_default(),
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub version: u32,
    pub installer: String,
    /// Seconds since the Unix epoch when the run started.
    pub started: u64,
    pub outcome: Outcome,
    pub error: Option<StepError>,
    pub host: Option<String>,
    /// How the host was chosen.
    pub chosen_by: Option<String>,
    pub serial: Option<String>,
    pub identity: Identity,
    pub payload: Option<String>,
    pub toplevel: Option<String>,
    pub closure_paths: usize,
    pub closure_nar_bytes: u64,
    /// When the payload was checked: `first` (the whole closure before any disk was touched)
    /// or `streaming` (each NAR in full as it was written; online installs always are).
    pub verify: Option<manifest::Verify>,
    /// The first of the plan's disks (the one a one-disk layout installs on).
    pub disk: Option<DiskSummary>,
    /// Every disk of the plan, in the layout's order.
    pub disks: Vec<DiskSummary>,
    pub partitions: Vec<PartitionSummary>,
    /// The firmware's next boot, set to the installed disk (`Boot0003`), or why it was not.
    pub boot_next: Option<String>,
    /// An enrolled machine: the disk the stick's rules would install it on.
    pub pending: Option<Pending>,
    /// How each LUKS volume is unlocked on the installed system.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unlock: Vec<crate::unlock::Enrolled>,
    /// Each LUKS volume's recovery key, encrypted to the fleet's recovery recipients
    /// (`mkinstaller reports --identity` opens them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<crate::unlock::Escrowed>,
    /// What became of the fleet's Secure Boot keys (`secure-boot`), if it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot_keys: Option<String>,
    /// What the installed system will do that its owner should know (a boot loader disk its
    /// configuration names by a path this machine gives another disk).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub steps: Vec<StepTime>,
    pub seconds: f64,
    /// What the machine is: SMBIOS, firmware, CPU, memory, disks, NICs, TPM.
    pub inventory: Inventory,
    /// The installer environment's kernel.
    pub installer_kernel: String,
    #[serde(skip)]
    pub log: Vec<String>,
    #[serde(skip)]
    clock: Option<Instant>,
}

impl Report {
    pub fn new(identity: Identity) -> Report {
        let (inventory, installer_kernel) = probe();
        Report {
            format: REPORT_FORMAT,
            version: REPORT_VERSION,
            installer: format!("autoinstall-terminal {}", env!("CARGO_PKG_VERSION")),
            started: now(),
            outcome: Outcome::Failed,
            error: None,
            host: None,
            chosen_by: None,
            serial: identity.serial.clone(),
            identity,
            payload: None,
            toplevel: None,
            closure_paths: 0,
            closure_nar_bytes: 0,
            verify: None,
            disk: None,
            disks: Vec::new(),
            partitions: Vec::new(),
            boot_next: None,
            pending: None,
            unlock: Vec::new(),
            recovery: Vec::new(),
            secure_boot_keys: None,
            steps: Vec::new(),
            seconds: 0.0,
            inventory,
            installer_kernel,
            log: Vec::new(),
            warnings: Vec::new(),
            clock: Some(Instant::now()),
        }
    }

    pub fn log(&mut self, line: impl Into<String>) {
        let t = self.clock.map(|c| c.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.log.push(format!("[{t:8.3}] {}", line.into()));
    }

    pub fn finish(&mut self, outcome: Outcome) {
        self.outcome = outcome;
        self.seconds = self.clock.map(|c| c.elapsed().as_secs_f64()).unwrap_or(0.0);
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises") + "\n"
    }

    /// `<serial>-<host>-<start time>`, safe on FAT and in shells.
    pub fn file_stem(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        // The process id keeps two runs in the same second apart.
        format!(
            "{}-{}-{}-{}",
            clean(self.serial.as_deref().unwrap_or("no-serial")),
            clean(self.host.as_deref().unwrap_or("no-host")),
            self.started,
            std::process::id()
        )
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
