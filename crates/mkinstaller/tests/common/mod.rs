//! What the image tests share: a scratch environment running the real mkinstaller on the
//! tiny fleet, and the checks of an image as a user would make them.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{build_fixture, nix_cmd, nix_ok, requisites, run, FatMount, Loop};

pub const PAYLOAD_TYPE: &str = "ED140608-3A53-493D-9175-A012CF428C95";
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub installer: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let installer = testkit::stand_in_installer(tmp.path());
        Env { tmp, installer }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// mkinstaller with `args`, this environment's installer and NAR cache. The tiny fleet's
    /// systems are closures, not bootable NixOS systems: `--system` builds say so.
    pub fn mkinstaller(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mkinstaller"));
        cmd.args(args);
        if !matches!(args[0], "inspect" | "verify") {
            cmd.arg("--installer")
                .arg(&self.installer)
                .arg("--cache-dir")
                .arg(self.path("cache"));
        }
        if args.contains(&"--system") {
            cmd.arg("--not-bootable");
        }
        cmd
    }

    /// [`Env::mkinstaller`] with one more environment variable.
    pub fn mkinstaller_env(&self, args: &[&str], key: &str, value: &str) -> Output {
        self.command(args).env(key, value).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mkinstaller(args);
        assert!(
            out.status.success(),
            "mkinstaller {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes hosts.toml for the tiny fleet and returns its path and the toplevels.
    pub fn fleet(&self, version: &str) -> (PathBuf, Vec<String>) {
        let tops: Vec<String> = (1..=3)
            .map(|n| {
                build_fixture(
                    "tiny-fleet.nix",
                    Some(&format!("host-{n}")),
                    &[("version", version)],
                )
            })
            .collect();
        let file = self.path("hosts.toml");
        fs::write(&file, fleet_toml(&tops)).unwrap();
        (file, tops)
    }
}

/// Gives host-1 of the tiny fleet's `hosts` an extra file (an SSH host key with `secret` in
/// it), in the clear (`secrets = "clear"`).
pub fn add_extra_file(env: &Env, hosts: &Path, secret: &str) {
    let secrets = env.path("secrets/host-1/etc/ssh");
    fs::create_dir_all(&secrets).unwrap();
    fs::write(secrets.join("ssh_host_ed25519_key"), secret).unwrap();
    let text = fs::read_to_string(hosts)
        .unwrap()
        .replacen(
            "name = \"host-1\"\n",
            "name = \"host-1\"\nextra-files = \"secrets/host-1\"\n",
            1,
        )
        .replacen("[defaults]\n", "[defaults]\nsecrets = \"clear\"\n", 1);
    fs::write(hosts, text).unwrap();
}

/// Host `name` of an `inspect --json` answer.
pub fn inspect_host(inspect: &serde_json::Value, name: &str) -> serde_json::Value {
    inspect["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {inspect}"))
        .clone()
}

pub fn fleet_toml(tops: &[String]) -> String {
    let mut s = String::from("version = 1\n\n[defaults]\non-unknown-serial = \"refuse\"\nafter-install = \"poweroff\"\nconfirm-seconds = 0\n");
    for (i, t) in tops.iter().enumerate() {
        let profile = if i == 2 {
            "profile = \"uefi-btrfs\"\n"
        } else {
            ""
        };
        s += &format!("\n[[host]]\nname = \"host-{}\"\nserials = [\"TEST-SN-{:04}\"]\nsystem = \"{t}\"\nbootable = false\n{profile}", i + 1, i + 1);
    }
    s
}

/// Checks the partition table and both file systems, and that Nix installs every host from
/// the payload.
pub fn check_image(img: &Path, tops: &[String]) {
    let sgdisk = run("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(sgdisk.contains("No problems found"), "sgdisk -v: {sgdisk}");
    let json: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["-J", img.to_str().unwrap()])).unwrap();
    let parts = json["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(json["partitiontable"]["label"], "gpt");
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], ESP_TYPE);
    assert_eq!(parts[1]["type"], PAYLOAD_TYPE);
    assert_eq!(parts[1]["name"], "autoinstall-payload");

    let lo = Loop::attach(img, true);
    for p in [1, 2] {
        let out = Command::new("fsck.fat")
            .args(["-n", "-V", &lo.partition(p)])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !report.contains("Warning"),
            "fsck.fat partition {p}:\n{report}"
        );
    }
    let esp = FatMount::new(&lo.partition(1));
    assert!(esp.path().join("EFI/BOOT/BOOTX64.EFI").is_file());
    let entry = fs::read_to_string(esp.path().join("loader/entries/autoinstall.conf")).unwrap();
    // The loader entry names the payload partition this image has (a refreshed stick keeps
    // its partitions, so its entry must name them, not a fresh build's).
    let payload_guid = parts[1]["uuid"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        entry.contains("linux /autoinstall/kernel")
            && entry.contains(&format!("autoinstall.payload=PARTUUID={payload_guid}")),
        "the loader entry does not name the payload partition {payload_guid}: {entry}"
    );
    drop(esp);

    let payload = FatMount::new(&lo.partition(2));
    nix_installs_every_host(payload.path(), tops);
}

/// `nix copy --from FROM --to ROOT TOP` that trusts only `public` and requires signatures.
pub fn nix_copy_requiring_sigs(from: &str, root: &Path, top: &str, public: &str) -> Output {
    nix_cmd(
        "nix",
        &[
            "copy",
            "--option",
            "trusted-public-keys",
            public,
            "--option",
            "require-sigs",
            "true",
            "--from",
            from,
            "--to",
            root.to_str().unwrap(),
            top,
        ],
    )
}

/// `nix copy --from file://TREE` of every host into a fresh store passes `nix-store --verify`
/// and holds the host's whole closure.
pub fn nix_installs_every_host(tree: &Path, tops: &[String]) {
    let from = format!("file://{}", tree.display());
    for top in tops {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_str().unwrap();
        nix_ok(
            "nix",
            &["copy", "--no-check-sigs", "--from", &from, "--to", r, top],
        );
        let verify = nix_cmd("nix-store", &["--verify", "--check-contents", "--store", r]);
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && !said.contains("error") && !said.contains("warning"),
            "{said}"
        );
        assert_eq!(requisites(Some(root.path()), top), requisites(None, top));
    }
}

/// A file of partition `index` (0: the ESP, 1: the payload) of image `img`, read with mtools.
pub fn partition_file(img: &Path, index: usize, path: &str) -> Vec<u8> {
    let table: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["-J", img.to_str().unwrap()])).unwrap();
    let start = table["partitiontable"]["partitions"][index]["start"]
        .as_u64()
        .unwrap()
        * 512;
    let out = Command::new("mtype")
        .args([
            "-i",
            &format!("{}@@{start}", img.display()),
            &format!("::/{path}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
