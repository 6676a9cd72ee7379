//! One `[[host]]` of hosts.toml: its table as written, and the checks that make it a
//! [`Host`] (a name and serials given once in the fleet, one system source, a disk under
//! /dev, a TPM line as `mkinstaller reports --pending` prints it).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{check_host_name, Host, SystemSource};
use crate::location::LocatedError;
use crate::serial;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct HostFile {
    name: Spanned<String>,
    #[serde(default)]
    serials: Vec<Spanned<String>>,
    system: Option<Spanned<String>>,
    flake: Option<Spanned<String>>,
    profile: Option<String>,
    disko: Option<String>,
    #[serde(default)]
    luks_keys: std::collections::BTreeMap<String, String>,
    disk: Option<Spanned<String>>,
    extra_files: Option<String>,
    bootable: Option<bool>,
    tpm: Option<Spanned<TpmFile>>,
}

/// A host's TPM as an enrolment recorded it: the endorsement key's RSA modulus and the
/// activation key's name, in hex.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TpmFile {
    ek: String,
    activation: String,
}

impl TpmFile {
    fn target(&self) -> Result<secrets::tpm::Target, String> {
        let ek = util::hex::decode(&self.ek).map_err(|e| format!("tpm.ek: {e}"))?;
        let name =
            util::hex::decode(&self.activation).map_err(|e| format!("tpm.activation: {e}"))?;
        secrets::tpm::Target::new(ek, name).map_err(|e| {
            format!("tpm: {e}; copy the tpm line `mkinstaller reports --pending` prints for the machine")
        })
    }
}

/// The names and serials of the hosts parsed so far, with their lines: each is given once.
#[derive(Default)]
pub(super) struct Seen {
    pub names: HashMap<String, usize>,
    serials: HashMap<String, (String, usize)>,
}

/// The host `h` of hosts.toml (`text`), its paths resolved against `base`; `at` locates an
/// error in the file.
pub(super) fn parse(
    h: &Spanned<HostFile>,
    seen: &mut Seen,
    at: &dyn Fn(Range<usize>, String) -> LocatedError,
    text: &str,
    base: &Path,
    default_profile: &str,
) -> Result<Host, LocatedError> {
    let span = h.span();
    let h = h.get_ref();
    let name = h.name.get_ref().clone();
    check_host_name(&name).map_err(|e| at(h.name.span(), e))?;
    let line = crate::location::line_col(text, span.start).0;
    if let Some(first) = seen.names.insert(name.clone(), line) {
        return Err(at(
            h.name.span(),
            format!("host {name:?} is defined twice (first on line {first})"),
        ));
    }
    let mut host_serials = Vec::new();
    for s in &h.serials {
        let normal = serial::normalise(s.get_ref());
        if let Some(why) = serial::junk_reason(&normal) {
            return Err(at(
                s.span(),
                format!("host {name:?}: {why}; it cannot identify a machine, so it is refused"),
            ));
        }
        let key = serial::key(&normal);
        let this_line = crate::location::line_col(text, s.span().start).0;
        if let Some((other, other_line)) = seen.serials.insert(key, (name.clone(), this_line)) {
            return Err(at(
                    s.span(),
                    format!("serial {normal:?} is given to both {other:?} (line {other_line}) and {name:?}; a serial must name one host"),
                ));
        }
        host_serials.push(normal);
    }
    let system = match (&h.system, &h.flake) {
        (Some(s), None) => SystemSource::StorePath(
            nixstore::StorePath::parse(s.get_ref())
                .map_err(|e| at(s.span(), format!("host {name:?}: {e}")))?,
        ),
        (None, Some(f)) => {
            if !f.get_ref().contains('#') {
                return Err(at(
                    f.span(),
                    format!(
                        "host {name:?}: flake {:?} must be REF#NAME, e.g. \".#{name}\"",
                        f.get_ref()
                    ),
                ));
            }
            SystemSource::Flake(f.get_ref().clone())
        }
        (Some(s), Some(_)) => {
            return Err(at(
                s.span(),
                format!("host {name:?} has both system and flake; give one"),
            ))
        }
        (None, None) => {
            return Err(at(
                span,
                format!("host {name:?} needs system = \"/nix/store/…\" or flake = \".#{name}\""),
            ))
        }
    };
    if let Some(d) = &h.disk {
        if !d.get_ref().starts_with("/dev/") {
            return Err(at(
                d.span(),
                format!(
                    "host {name:?}: disk {:?} must be a path under /dev, e.g. /dev/disk/by-id/…",
                    d.get_ref()
                ),
            ));
        }
    }
    let tpm = match &h.tpm {
        Some(t) => Some(
            t.get_ref()
                .target()
                .map_err(|e| at(t.span(), format!("host {name:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(Host {
        name,
        serials: host_serials,
        system,
        profile: h
            .profile
            .clone()
            .unwrap_or_else(|| default_profile.to_string()),
        disko: h.disko.as_ref().map(|d| base.join(d)),
        luks_keys: h
            .luks_keys
            .iter()
            .map(|(n, f)| (n.clone(), base.join(f)))
            .collect(),
        disk: h.disk.as_ref().map(|d| d.get_ref().clone()),
        extra_files: h.extra_files.as_ref().map(|e| base.join(e)),
        bootable: h.bootable.unwrap_or(true),
        tpm,
        line,
    })
}
