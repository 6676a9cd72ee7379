use super::*;

const GOOD: &str = r#"version = 1

[defaults]
profile = "uefi-ext4"
on-unknown-serial = "host:dev-2"
after-install = "poweroff"
confirm-seconds = 5

[[host]]
name = "dev-1"
serials = ["PF3ABC12", " PF3ABC13 "]
system = "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-nixos-system-dev-1"
extra-files = "secrets/dev-1"

[[host]]
name = "dev-2"
serials = ["XY-0002"]
flake = ".#dev-2"
profile = "uefi-btrfs"
disk = "/dev/disk/by-id/nvme-foo"
"#;

fn parse(text: &str) -> Result<Fleet, LocatedError> {
    Fleet::parse(Path::new("/etc/fleet/hosts.toml"), text)
}

#[test]
fn parses_a_fleet() {
    let f = parse(&GOOD.replace(
        "confirm-seconds = 5",
        "confirm-seconds = 5\nreinstall = \"never\"",
    ))
    .unwrap();
    assert_eq!(f.hosts.len(), 2);
    assert_eq!(f.hosts[0].serials, ["PF3ABC12", "PF3ABC13"]);
    assert_eq!(
        f.hosts[0].extra_files.as_deref(),
        Some(Path::new("/etc/fleet/secrets/dev-1"))
    );
    assert_eq!(f.hosts[1].system, SystemSource::Flake(".#dev-2".into()));
    assert_eq!(f.hosts[1].profile, "uefi-btrfs");
    assert_eq!(
        f.defaults.on_unknown_serial,
        UnknownSerial::Host("dev-2".into())
    );
    assert_eq!(f.defaults.after_install, AfterInstall::Poweroff);
    assert_eq!(f.defaults.reinstall, Reinstall::Never);
    assert_eq!(parse(GOOD).unwrap().defaults.reinstall, Reinstall::Ask);
}

fn refused(text: &str, line: usize, needle: &str) {
    let e = parse(text).unwrap_err();
    assert_eq!(e.line, line, "{e}");
    assert!(e.message.contains(needle), "{e}");
    assert!(e.to_string().starts_with("/etc/fleet/hosts.toml:"), "{e}");
}

#[test]
fn refusals_name_the_line() {
    refused(&GOOD.replace("[defaults]", "[defaults"), 3, "");
    refused(
        &GOOD.replace("confirm-seconds = 5", "confirm-second = 5"),
        7,
        "confirm-second",
    );
    refused(
        &GOOD.replace("XY-0002", "To Be Filled By O.E.M."),
        17,
        "placeholder",
    );
    refused(
        &GOOD.replace("XY-0002", "  default STRING"),
        17,
        "placeholder",
    );
    refused(
        &GOOD.replace("XY-0002", "pf3abc12"),
        17,
        "both \"dev-1\" (line 11)",
    );
    refused(
        &GOOD.replace("name = \"dev-2\"", "name = \"dev-1\""),
        16,
        "defined twice",
    );
    refused(
        &GOOD.replace("/nix/store/dbv3", "/nix/store/dbv"),
        12,
        "not a valid Nix store path",
    );
    refused(&GOOD.replace("host:dev-2", "host:dev-3"), 5, "not defined");
    refused(
        &GOOD.replace("version = 1", "version = 2"),
        1,
        "not supported",
    );
    refused(&GOOD.replace("flake = \".#dev-2\"", ""), 15, "needs system");
}
