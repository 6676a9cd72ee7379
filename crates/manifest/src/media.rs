//! The manifest on the payload partition (`autoinstall/manifest.json`): which hosts the stick
//! installs, by which serials, with which closure and which resolved disk layout.

use serde::{Deserialize, Serialize};

use crate::hosts::{AfterInstall, UnknownSerial};
use crate::profile::Profile;
use crate::serial;

/// The media format version; docs/MEDIA-FORMAT.md describes it.
pub const FORMAT_VERSION: u32 = 1;
/// The `format` field, so a stray JSON file is never mistaken for a manifest.
pub const FORMAT_NAME: &str = "nixos-autoinstall-manifest";
/// Where the manifest lives in the payload tree.
pub const MANIFEST_PATH: &str = "autoinstall/manifest.json";
/// Per-serial lookups in a `--format cache` site: `<dir>/<key>.json` holds that host's entry,
/// so an online installer fetches one small static file for its serial.
pub const HOSTS_LOOKUP_DIR: &str = "autoinstall/hosts";

/// Where a serial's lookup file lives in a cache site: its comparison key (upper case, no
/// spaces), with every byte outside `A-Z 0-9 . _ -` percent-encoded so it is safe as a file
/// name and in a URL.
pub fn host_lookup_path(serial: &str) -> String {
    let mut name = String::new();
    for b in crate::serial::key(serial).bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{HOSTS_LOOKUP_DIR}/{name}.json")
}

/// Signatures of the manifest's exact bytes, one `keyname:base64` per line (Nix's key format).
pub const MANIFEST_SIG_PATH: &str = "autoinstall/manifest.json.sig";
/// Where installers write their reports back.
pub const REPORTS_DIR: &str = "autoinstall/reports";
/// Where each host's extra files are kept.
pub const EXTRA_FILES_DIR: &str = "autoinstall/extra-files";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The tool and version that wrote it, e.g. `mkinstaller 0.1.0`.
    pub generator: String,
    /// `mass`: pick the host by serial. `single`: install `hosts[0]` whatever the serial
    /// (after confirmation).
    pub mode: Mode,
    pub on_unknown_serial: UnknownSerial,
    pub after_install: AfterInstall,
    pub confirm_seconds: u32,
    pub hosts: Vec<HostEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Mass,
    Single,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    pub serials: Vec<String>,
    /// The NixOS toplevel store path.
    pub toplevel: String,
    /// Every store path of the toplevel's closure, sorted.
    pub closure: Vec<String>,
    /// Sum of the closure's NAR sizes: what the installed store takes, before file system
    /// overhead.
    pub closure_nar_bytes: u64,
    pub layout: Profile,
    /// An explicit target disk (`/dev/disk/by-id/…`), else the layout's rules choose.
    pub disk: Option<String>,
    pub extra_files: Vec<ExtraFile>,
}

/// A file copied into the installed system as it is, e.g. an SSH host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    /// Path in the installed system, relative to its root (`etc/ssh/ssh_host_ed25519_key`).
    pub target: String,
    /// Path in the payload tree.
    pub source: String,
    /// Unix mode bits (FAT keeps none, so they travel here).
    pub mode: u32,
    pub sha256: String,
    pub size: u64,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises") + "\n"
    }

    /// Parses a manifest and checks that this build understands it.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest =
            serde_json::from_str(text).map_err(|e| format!("the manifest is not valid: {e}"))?;
        if m.format != FORMAT_NAME {
            return Err(format!(
                "this is not an autoinstall manifest (format {:?})",
                m.format
            ));
        }
        if m.version != FORMAT_VERSION {
            return Err(format!(
                "the media format version is {}, this build reads version {FORMAT_VERSION}; use a matching mkinstaller/autoinstall-terminal",
                m.version
            ));
        }
        Ok(m)
    }

    /// The host whose serials include `serial` (compared as [`serial::key`] does).
    pub fn host_for_serial(&self, serial_number: &str) -> Option<&HostEntry> {
        let key = serial::key(serial_number);
        self.hosts
            .iter()
            .find(|h| h.serials.iter().any(|s| serial::key(s) == key))
    }

    pub fn host(&self, name: &str) -> Option<&HostEntry> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::host_lookup_path;

    #[test]
    fn lookup_names_are_the_serial_key_and_url_safe() {
        assert_eq!(
            host_lookup_path("sn-0001"),
            "autoinstall/hosts/SN-0001.json"
        );
        assert_eq!(
            host_lookup_path(" Sn 0001 "),
            "autoinstall/hosts/SN0001.json"
        );
        assert_eq!(
            host_lookup_path("a/b?c#d"),
            "autoinstall/hosts/A%2FB%3FC%23D.json"
        );
        assert_eq!(host_lookup_path(".."), "autoinstall/hosts/...json");
    }
}
