//! A fleet declared in a flake: `mkinstaller --flake REF`, the Nix function it shares with the
//! flake's `lib.mkInstaller` (images/nixos/fleet.nix), the example fleet, and the option
//! trees of the NixOS modules. No nixpkgs here: the flakes are flakes without inputs whose
//! configurations are stand-ins (`config.autoinstall`, `config.system.build.toplevel`), and
//! the modules' options are read with a stand-in `lib` (tests/fixtures/stub-lib.nix).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::Env;
use testkit::repo_root;

/// Nix settings for these tests: no binary cache to wait for, and builders that may use the
/// host's /bin (the stand-in toplevels are made with /bin/sh and /bin/mkdir).
const NIX_CONFIG: &str = "substituters =\nsandbox = false";

/// A stand-in toplevel as Nix source: a derivation shaped as a bootable NixOS system
/// (`kernel`, `init`, `bin/switch-to-configuration`), so hosts need no `bootable = false`.
fn toplevel_nix(name: &str) -> String {
    format!(
        r#"derivation {{
        name = "nixos-system-{name}-1"; system = "x86_64-linux"; builder = "/bin/sh";
        args = [ "-c" "/bin/mkdir -p $out/bin && echo {name} > $out/kernel && echo {name} > $out/init && echo {name} > $out/bin/switch-to-configuration" ];
      }}"#
    )
}

fn mkinstaller(env: &Env, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
        .args(args)
        .arg("--installer")
        .arg(&env.installer)
        .arg("--cache-dir")
        .arg(env.path("cache"))
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every host of an image as (name, serials, toplevel), from `inspect --json`.
fn hosts_of(img: &Path) -> Vec<(String, Vec<String>, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
        .args(["inspect", img.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "inspect")).unwrap();
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let serials = h["serials"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            (
                h["name"].as_str().unwrap().to_string(),
                serials,
                h["toplevel"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A flake of three configurations, two of them with serials, and the fleet's defaults.
fn write_flake(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("flake.nix"),
        format!(
            r#"{{
  outputs = {{ self }}: {{
    nixosConfigurations = {{
      fl-a.config = {{
        autoinstall = {{ serials = [ "FLAKE-SN-A1" "flake-sn-a2" ]; profile = "uefi-btrfs"; }};
        system.build.toplevel = {a};
      }};
      fl-b.config = {{
        autoinstall.serials = [ "FLAKE-SN-B1" ];
        system.build.toplevel = {b};
      }};
      # No serials: not on the stick (and never built).
      fl-workstation.config = {{
        system.build.toplevel = throw "fl-workstation must not be evaluated";
      }};
    }};
    autoinstall.defaults = {{ on-unknown-serial = "refuse"; after-install = "poweroff"; confirm-seconds = 0; }};
  }};
}}
"#,
            a = toplevel_nix("fl-a"),
            b = toplevel_nix("fl-b")
        ),
    )
    .unwrap();
}

#[test]
fn a_flake_and_the_hosts_toml_of_its_fleet_make_the_same_stick() {
    let env = Env::new();
    let flake = env.path("fleet");
    write_flake(&flake);
    let from_flake = env.path("flake.img");
    ok(
        &mkinstaller(
            &env,
            &[
                "--flake",
                flake.to_str().unwrap(),
                "-o",
                from_flake.to_str().unwrap(),
                "--quiet",
            ],
        ),
        "mkinstaller --flake",
    );
    let hosts = hosts_of(&from_flake);
    let names: Vec<&str> = hosts.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(
        names,
        ["fl-a", "fl-b"],
        "only the configurations with serials"
    );
    assert_eq!(hosts[0].1, ["FLAKE-SN-A1", "flake-sn-a2"]);
    for (name, _, top) in &hosts {
        assert!(top.ends_with(&format!("-nixos-system-{name}-1")), "{top}");
        assert_eq!(
            fs::read_to_string(format!("{top}/init")).unwrap(),
            format!("{name}\n")
        );
    }
    // The generated hosts.toml stays where messages about its lines can send the reader.
    let generated = fs::read_to_string(env.path("cache/flake/hosts.toml")).unwrap();
    assert!(
        generated.contains("on-unknown-serial = \"refuse\""),
        "{generated}"
    );
    assert!(!generated.contains("fl-workstation"), "{generated}");

    // The same fleet by hand, written as a user would (another order, comments, spacing).
    let by_hand = env.path("hosts.toml");
    fs::write(
        &by_hand,
        format!(
            "# written by hand\nversion = 1\n\n[defaults]\nconfirm-seconds = 0\non-unknown-serial = \"refuse\"\nafter-install = \"poweroff\"\n\n\
             [[host]]\nname = \"fl-a\"\nprofile = \"uefi-btrfs\"\nsystem = \"{}\"\nserials = [\"FLAKE-SN-A1\", \"flake-sn-a2\"]\n\n\
             [[host]]\nname    = \"fl-b\"\nserials = [ \"FLAKE-SN-B1\" ]\nsystem  = \"{}\"\n",
            hosts[0].2, hosts[1].2
        ),
    )
    .unwrap();
    let from_toml = env.path("toml.img");
    ok(
        &mkinstaller(
            &env,
            &[
                "--mass",
                by_hand.to_str().unwrap(),
                "-o",
                from_toml.to_str().unwrap(),
                "--quiet",
            ],
        ),
        "mkinstaller --mass",
    );
    assert!(
        fs::read(&from_flake).unwrap() == fs::read(&from_toml).unwrap(),
        "the stick from --flake differs from the stick from hosts.toml"
    );

    // One host of the flake's fleet: a stick that installs it whatever the serial.
    let single = env.path("fl-b.img");
    ok(
        &mkinstaller(
            &env,
            &[
                "--flake",
                flake.to_str().unwrap(),
                "--host",
                "fl-b",
                "-o",
                single.to_str().unwrap(),
                "--quiet",
            ],
        ),
        "mkinstaller --flake --host",
    );
    let names: Vec<String> = hosts_of(&single).into_iter().map(|h| h.0).collect();
    assert_eq!(names, ["fl-b"]);
}

#[test]
fn a_flake_without_hosts_is_refused_before_anything_is_written() {
    let env = Env::new();
    let flake = env.path("empty");
    fs::create_dir_all(&flake).unwrap();
    fs::write(
        flake.join("flake.nix"),
        format!(
            "{{ outputs = {{ self }}: {{ nixosConfigurations.ws.config.system.build.toplevel = {}; }}; }}\n",
            toplevel_nix("ws")
        ),
    )
    .unwrap();
    let img = env.path("x.img");
    let out = mkinstaller(
        &env,
        &[
            "--flake",
            flake.to_str().unwrap(),
            "-o",
            img.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no NixOS configuration sets autoinstall.serials"),
        "{err}"
    );
    assert!(!img.exists());

    // --host names a host the flake's fleet does not have.
    write_flake(&flake);
    let out = mkinstaller(
        &env,
        &[
            "--flake",
            flake.to_str().unwrap(),
            "--host",
            "fl-workstation",
            "-o",
            img.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("there is no host \"fl-workstation\" (hosts: fl-a, fl-b)"),
        "{err}"
    );
    assert!(!img.exists());
}

/// A toplevel's `system` file (NixOS writes the platform there) is read into the stick, and
/// one that names no platform is refused before anything is written.
#[test]
fn a_toplevels_platform_is_carried_and_checked() {
    let env = Env::new();
    let flake = env.path("platform");
    fs::create_dir_all(&flake).unwrap();
    let with_system = |system: &str| {
        toplevel_nix("pl-1").replace(
            "echo pl-1 > $out/kernel",
            &format!("echo pl-1 > $out/kernel && printf '{system}' > $out/system"),
        )
    };
    let img = env.path("pl.img");
    for (system, valid) in [("x86_64-linux", true), ("x86_64 linux", false)] {
        fs::write(
            flake.join("flake.nix"),
            format!(
                "{{ outputs = {{ self }}: {{ nixosConfigurations.pl-1.config = {{ autoinstall.serials = [ \"PL-SN-1\" ]; system.build.toplevel = {}; }}; }}; }}\n",
                with_system(system)
            ),
        )
        .unwrap();
        let out = mkinstaller(
            &env,
            &[
                "--flake",
                flake.to_str().unwrap(),
                "-o",
                img.to_str().unwrap(),
                "--quiet",
            ],
        );
        if valid {
            ok(&out, "mkinstaller --flake");
            assert_eq!(hosts_system(&img), "x86_64-linux");
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{err}");
            assert!(err.contains("\"x86_64 linux\" is not a platform"), "{err}");
        }
        let _ = fs::remove_file(&img);
    }
}

fn hosts_system(img: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
        .args(["inspect", img.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "inspect")).unwrap();
    v["hosts"][0]["system"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

/// examples/fleet, evaluated as far as it can be without nixpkgs
/// (tests/fixtures/example-fleet.nix): the hosts.toml it generates makes a stick, the
/// example's own profile and disko layout included.
#[test]
fn the_example_fleet_generates_a_hosts_toml_that_makes_a_stick() {
    let env = Env::new();
    // Read with `--impure` (a file of the checkout, not of a flake).
    let fixture = repo_root().join("tests/fixtures/example-fleet.nix");
    let toplevel = format!("name: {}", toplevel_nix("${name}"));
    let fleet: serde_json::Value = {
        let expr = format!("import {} {{ toplevel = {toplevel}; }}", fixture.display());
        let out = Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "eval",
                "--json",
            ])
            .args(["--impure", "--expr", &expr])
            .env("NIX_CONFIG", NIX_CONFIG)
            .output()
            .unwrap();
        serde_json::from_str(&ok(&out, "nix eval tests/fixtures/example-fleet.nix")).unwrap()
    };
    let toml = fleet["toml"].as_str().unwrap();
    // What `mkinstaller --flake` realises; here by hand.
    let drvs: Vec<&str> = fleet["drvPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let out = Command::new("nix-store")
        .arg("--realise")
        .args(&drvs)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    ok(&out, "nix-store --realise");
    let hosts = env.path("hosts.toml");
    fs::write(&hosts, toml).unwrap();
    let img = env.path("example.img");
    ok(
        &mkinstaller(
            &env,
            &[
                "--mass",
                hosts.to_str().unwrap(),
                "-o",
                img.to_str().unwrap(),
                "--quiet",
            ],
        ),
        "mkinstaller --mass (the example's hosts.toml)",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
        .args(["inspect", img.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "inspect")).unwrap();
    let host = |n: &str| common::inspect_host(&v, n);
    let (db, web) = (host("db-1"), host("web-1"));
    assert_eq!(db["layout_source"], "disko", "{db}");
    assert_eq!(db["serials"], serde_json::json!(["EXAMPLE-SN-0101"]));
    assert_eq!(
        web["serials"],
        serde_json::json!(["EXAMPLE-SN-0001", "EXAMPLE-SN-0002"])
    );
    // Named after their files, without the store hash of the copies the fleet names.
    assert_eq!(
        (&db["layout"], &web["layout"], &web["layout_source"]),
        (
            &serde_json::json!("db-1"),
            &serde_json::json!("workstation"),
            &serde_json::json!("profile")
        ),
        "{v}"
    );
    assert_eq!(v["on_unknown_serial"]["policy"], "enrol", "{v}");
    assert_eq!(
        (&v["fleet"], &v["confirm_seconds"]),
        (&serde_json::json!("example"), &serde_json::json!(10))
    );
}

/// The options of nixosModules.host and nixosModules.default, read with a stand-in `lib`:
/// each is typed, described and has a default, and the names are the documented ones.
#[test]
fn the_nixos_modules_declare_typed_described_options() {
    let expr = r#"
      let
        lib = import ./tests/fixtures/stub-lib.nix;
        pkgs = { stdenv.hostPlatform.system = "x86_64-linux"; };
        packages.x86_64-linux.mkinstaller = "the flake's mkinstaller";
        host = (import ./images/nixos/host.nix { inherit lib; }).options.autoinstall;
        tool = import ./images/nixos/tool.nix { inherit packages; };
        module = tool { inherit lib pkgs; config = { }; };
        describe = o: { type = o.type.name; description = o.description; default = o.default or "none"; };
      in {
        host = builtins.mapAttrs (_: describe) host;
        tool = builtins.mapAttrs (_: describe) module.options.programs.mkinstaller;
        imports = map toString module.imports;
      }"#;
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expr])
        .current_dir(repo_root())
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "nix-instantiate")).unwrap();
    let names: Vec<&String> = v["host"].as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        ["disk", "extraFiles", "luksKeys", "profile", "serials"]
    );
    for (name, o) in v["host"]
        .as_object()
        .unwrap()
        .iter()
        .chain(v["tool"].as_object().unwrap())
    {
        assert!(o["description"].as_str().unwrap().len() > 20, "{name}: {o}");
        assert_ne!(o["default"], "none", "{name} has no default");
    }
    assert_eq!(v["host"]["serials"]["type"], "listOf");
    assert_eq!(v["host"]["serials"]["default"], serde_json::json!([]));
    assert_eq!(v["tool"]["enable"]["type"], "bool");
    assert_eq!(v["tool"]["enable"]["default"], false);
    assert_eq!(v["tool"]["package"]["type"], "package");
    assert_eq!(v["tool"]["package"]["default"], "the flake's mkinstaller");
    assert!(v["imports"][0]
        .as_str()
        .unwrap()
        .ends_with("/images/nixos/host.nix"));
}

/// A flake in a git checkout with changes not yet committed (how a fleet is edited, then
/// built): read as `nix build .#…` reads it, the uncommitted changes included.
#[test]
fn a_flake_in_a_git_checkout_with_uncommitted_changes_is_read() {
    let env = Env::new();
    let flake = env.path("git-fleet");
    write_flake(&flake);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
            .arg(&flake)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "flake.nix"]);
    git(&["commit", "-q", "-m", "fleet"]);
    // A serial added and not committed.
    let text = fs::read_to_string(flake.join("flake.nix"))
        .unwrap()
        .replace("\"FLAKE-SN-B1\"", "\"FLAKE-SN-B1\" \"FLAKE-SN-B2\"");
    fs::write(flake.join("flake.nix"), text).unwrap();
    let img = env.path("git.img");
    ok(
        &mkinstaller(
            &env,
            &[
                "--flake",
                flake.to_str().unwrap(),
                "--host",
                "fl-b",
                "-o",
                img.to_str().unwrap(),
                "--quiet",
            ],
        ),
        "mkinstaller --flake on a dirty git checkout",
    );
    assert_eq!(hosts_of(&img)[0].1, ["FLAKE-SN-B1", "FLAKE-SN-B2"]);
}
