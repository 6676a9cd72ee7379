//! Select host: a pure function of the manifest, the machine's identity and the operator's
//! overrides. Nothing is touched here; the caller shows a menu or stops as told.

use manifest::document::{HostEntry, Manifest, Mode};
use manifest::UnknownSerial;

/// Operator overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--host NAME`: install this host whatever the serial.
    pub host: Option<String>,
    /// `--serial S`: use this serial instead of the firmware's.
    pub serial: Option<String>,
}

/// This machine's platform as Nix names it (`x86_64-linux`, `aarch64-linux`): the
/// installer's own, since it runs natively.
pub fn machine_platform() -> String {
    // Rust's names where Nix's differ.
    let cpu = match std::env::consts::ARCH {
        "x86" => "i686",
        "arm" => "armv7l",
        a => a,
    };
    format!("{cpu}-{}", std::env::consts::OS)
}

/// A chosen host must be built for this machine's platform (where its stick says which): an
/// aarch64 host chosen on an x86-64 machine (by its serial, `--host` or the menu) is refused,
/// with nothing touched.
pub fn runs_here(host: &HostEntry, machine: &str) -> Result<(), String> {
    match &host.system {
        Some(system) if system != machine => Err(format!(
            "host {} is built for {system}, and this machine is {machine}: it cannot run here; nothing was touched (a serial in the wrong host's list, or the wrong stick?)",
            host.name
        )),
        _ => Ok(()),
    }
}

/// The outcome of host selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<'a> {
    /// Install this host; `why` says how it was chosen (for the screen and the report).
    Host { host: &'a HostEntry, why: String },
    /// Ask the operator (the stick's policy is `ask`); `why` heads the menu.
    Ask { why: String },
    /// Stop without touching anything.
    Refuse { why: String },
    /// Record this machine as pending (the stick's policy is `enrol`); touch no disk.
    Enrol { why: String },
}

/// The serial the host is looked up by: `--serial` when given, under the same rules as the
/// firmware's (a placeholder counts as none), else the firmware's. Returns the serial, why
/// there is none, and where it came from.
pub fn effective_serial<'a>(
    serial: Option<&'a str>,
    rejected: Option<&str>,
    o: &Overrides,
) -> (
    Option<std::borrow::Cow<'a, str>>,
    Option<String>,
    &'static str,
) {
    let given = o.serial.as_deref().map(manifest::serial::normalise);
    match given {
        Some(s) => match manifest::serial::junk_reason(&s) {
            Some(why) => (None, Some(why), "--serial"),
            None => (Some(std::borrow::Cow::Owned(s)), None, "--serial"),
        },
        None => (
            serial.map(std::borrow::Cow::Borrowed),
            rejected.map(str::to_string),
            "the firmware",
        ),
    }
}

/// Chooses the host. `serial` is the machine's normalised serial (`None` when the firmware
/// has none or a placeholder, with `rejected` saying why).
pub fn choose<'a>(
    m: &'a Manifest,
    serial: Option<&str>,
    rejected: Option<&str>,
    o: &Overrides,
) -> Choice<'a> {
    if let Some(name) = &o.host {
        return match m.host(name) {
            Some(host) => Choice::Host {
                host,
                why: format!("named with --host {name}"),
            },
            None => Choice::Refuse {
                why: format!(
                    "--host {name}: the stick has no such host (it has {})",
                    names(m)
                ),
            },
        };
    }
    if m.mode == Mode::Single {
        if let Some(host) = m.hosts.first() {
            return Choice::Host {
                host,
                why: "the stick carries a single host".into(),
            };
        }
    }
    let (serial, rejected, from) = effective_serial(serial, rejected, o);
    let unknown = match serial.as_deref() {
        Some(s) => {
            if let Some(host) = m.host_for_serial(s) {
                return Choice::Host {
                    host,
                    why: format!("serial {s} (from {from}) belongs to it"),
                };
            }
            format!("serial {s} (from {from}) belongs to no host on this stick")
        }
        None => match rejected {
            Some(r) => format!("this machine has no usable serial ({from}): {r}"),
            None => "this machine's firmware reports no serial".into(),
        },
    };
    match &m.on_unknown_serial {
        UnknownSerial::Refuse => Choice::Refuse {
            why: format!("{unknown}, and the stick's policy for unknown serials is to refuse; nothing was touched (add the serial to hosts.toml, or run with --host NAME)"),
        },
        UnknownSerial::Ask => Choice::Ask { why: unknown },
        UnknownSerial::Enrol => Choice::Enrol { why: unknown },
        UnknownSerial::Host(name) => match m.host(name) {
            Some(host) => Choice::Host {
                host,
                why: format!("{unknown}; the stick's default host for unknown serials is {name}"),
            },
            None => Choice::Refuse {
                why: format!("{unknown}, and the stick's default host {name} is not on it"),
            },
        },
    }
}

fn names(m: &Manifest) -> String {
    m.hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hosts whose name or serials contain `query` (case-insensitive), for the menu's search.
pub fn search<'a>(m: &'a Manifest, query: &str) -> Vec<&'a HostEntry> {
    let q = query.to_lowercase();
    m.hosts
        .iter()
        .filter(|h| {
            q.is_empty()
                || h.name.to_lowercase().contains(&q)
                || h.serials.iter().any(|s| s.to_lowercase().contains(&q))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serial the online lookup and the stick's choice both use: `--serial` normalised
    /// and, if a placeholder, none; else the firmware's.
    #[test]
    fn the_effective_serial_follows_the_firmware_rules() {
        let o = |s: Option<&str>| Overrides {
            host: None,
            serial: s.map(String::from),
        };
        let (s, _, from) = effective_serial(Some("FW-1"), None, &o(Some(" sn-9 ")));
        assert_eq!((s.as_deref(), from), (Some("sn-9"), "--serial"));
        let (s, why, _) = effective_serial(Some("FW-1"), None, &o(Some("To Be Filled By O.E.M.")));
        assert!(s.is_none() && why.is_some());
        let (s, _, from) = effective_serial(Some("FW-1"), None, &o(None));
        assert_eq!((s.as_deref(), from), (Some("FW-1"), "the firmware"));
        let (s, why, _) = effective_serial(None, Some("junk"), &o(None));
        assert_eq!((s, why.as_deref()), (None, Some("junk")));
    }

    fn manifest(policy: UnknownSerial) -> Manifest {
        crate::testing::manifest(policy)
    }

    fn host_name(c: Choice) -> String {
        match c {
            Choice::Host { host, .. } => host.name.clone(),
            other => panic!("expected a host, got {other:?}"),
        }
    }

    #[test]
    fn the_serial_picks_the_host_case_insensitively() {
        let m = manifest(UnknownSerial::Refuse);
        let o = Overrides::default();
        assert_eq!(host_name(choose(&m, Some("sn-2"), None, &o)), "db-1");
    }

    #[test]
    fn unknown_or_junk_serials_follow_the_policy() {
        let o = Overrides::default();
        let m = manifest(UnknownSerial::Refuse);
        let Choice::Refuse { why } = choose(&m, Some("SN-9"), None, &o) else {
            panic!()
        };
        assert!(why.contains("SN-9") && why.contains("refuse"), "{why}");
        let Choice::Refuse { why } =
            choose(&m, None, Some("\"Default string\" is a placeholder"), &o)
        else {
            panic!()
        };
        assert!(why.contains("placeholder"), "{why}");
        let junk = Overrides {
            host: None,
            serial: Some("To Be Filled By O.E.M.".into()),
        };
        let Choice::Refuse { why } = choose(&m, None, None, &junk) else {
            panic!()
        };
        assert!(why.contains("no usable serial (--serial)"), "{why}");
        let m = manifest(UnknownSerial::Ask);
        assert!(matches!(choose(&m, None, None, &o), Choice::Ask { .. }));
        let m = manifest(UnknownSerial::Host("db-1".into()));
        assert_eq!(host_name(choose(&m, Some("SN-9"), None, &o)), "db-1");
    }

    #[test]
    fn overrides_win() {
        let m = manifest(UnknownSerial::Refuse);
        let o = Overrides {
            host: Some("db-1".into()),
            serial: None,
        };
        assert_eq!(host_name(choose(&m, Some("SN-1"), None, &o)), "db-1");
        let o = Overrides {
            host: None,
            serial: Some("SN-1".into()),
        };
        assert_eq!(host_name(choose(&m, None, None, &o)), "web-1");
        let o = Overrides {
            host: Some("nope".into()),
            serial: None,
        };
        let Choice::Refuse { why } = choose(&m, None, None, &o) else {
            panic!()
        };
        assert!(why.contains("web-1, db-1"), "{why}");
    }

    #[test]
    fn search_matches_names_and_serials() {
        let m = manifest(UnknownSerial::Ask);
        assert_eq!(search(&m, "DB").len(), 1);
        assert_eq!(search(&m, "sn-").len(), 2);
        assert_eq!(search(&m, "").len(), 2);
    }

    #[test]
    fn a_host_of_another_platform_does_not_run_here() {
        let m = manifest(UnknownSerial::Refuse);
        let mut host = m.hosts[0].clone();
        assert_eq!(
            runs_here(&host, "x86_64-linux"),
            Ok(()),
            "unknown: not refused"
        );
        host.system = Some("x86_64-linux".into());
        assert_eq!(runs_here(&host, "x86_64-linux"), Ok(()));
        host.system = Some("aarch64-linux".into());
        let why = runs_here(&host, "x86_64-linux").unwrap_err();
        assert!(
            why.contains("is built for aarch64-linux, and this machine is x86_64-linux"),
            "{why}"
        );
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        assert_eq!(machine_platform(), "x86_64-linux");
        #[cfg(all(target_arch = "aarch64", target_os = "linux"))]
        assert_eq!(machine_platform(), "aarch64-linux");
    }
}
