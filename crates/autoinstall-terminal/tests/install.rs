//! autoinstall-terminal as an operator runs it, onto real loop disks (root only): a stick built
//! by mkinstaller from hosts shaped like the demo fleet (with a stand-in kernel, so no Debian
//! download), installed and checked with sfdisk, blkid, fsck, mtools and the real Nix; each
//! refusal leaves the disk untouched; an install killed mid-copy reruns to success.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nixstore::hash::Sha256Hash;
use testkit::{build_fixture, nix_ok, requisites, run, Nginx};

struct Env {
    tmp: tempfile::TempDir,
}

/// The tests share the machine's loop devices and mount table: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A loop device over a sparse image; detached (after unmounting anything left) on drop.
struct LoopDisk {
    image: PathBuf,
    dev: String,
}

impl LoopDisk {
    fn new(image: PathBuf, size: &str) -> LoopDisk {
        run("truncate", &["-s", size, image.to_str().unwrap()]);
        // -P: the kernel drops the partitions with the device, so the next user of this loop
        // number inherits none.
        let dev = run("losetup", &["-f", "-P", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        LoopDisk { image, dev }
    }

    /// Whether anything was ever written to the image (it starts as one big hole).
    fn untouched(&self) -> bool {
        let f = fs::File::open(&self.image).unwrap();
        let len = f.metadata().unwrap().len();
        let mut buf = vec![0u8; 1 << 20];
        // Sparse: only allocated blocks can hold data; check they are all zeros.
        let blocks = {
            use std::os::unix::fs::MetadataExt;
            f.metadata().unwrap().blocks()
        };
        if blocks == 0 {
            return true;
        }
        let mut at = 0;
        while at < len {
            let n = f.read_at(&mut buf, at).unwrap();
            if buf[..n].iter().any(|b| *b != 0) {
                return false;
            }
            at += n as u64;
        }
        true
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Two hosts built from the demo fleet's expression with a stand-in kernel (its stage 1
    /// is never booted here) and the real systemd-boot, so switch-to-configuration runs for
    /// real. Returns the toplevels.
    fn demo_hosts(&self) -> Vec<String> {
        let kernel = self.path("kernel");
        fs::create_dir_all(kernel.join("lib/modules/6.1.0-test")).unwrap();
        fs::write(kernel.join("bzImage"), testkit::pseudo_random(1 << 20, 7)).unwrap();
        fs::write(kernel.join("version"), "6.1.0-test\n").unwrap();
        fs::write(kernel.join("modules.load"), "").unwrap();
        let sdboot = self.path("systemd-boot");
        fs::create_dir_all(&sdboot).unwrap();
        fs::copy(
            "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            sdboot.join("systemd-bootx64.efi"),
        )
        .unwrap();
        ["demo-1", "demo-2"]
            .iter()
            .map(|h| {
                build_fixture(
                    "demo-fleet/default.nix",
                    Some(h),
                    &[
                        ("kernel", kernel.to_str().unwrap()),
                        ("systemdBoot", sdboot.to_str().unwrap()),
                    ],
                )
            })
            .collect()
    }

    /// A `--format cache` site (under `site`) of demo-1 (DEMO-SN-0001) with toplevel `top`,
    /// signed with the key in `key_file`.
    fn demo_1_site(&self, top: &str, key_file: &Path) -> PathBuf {
        self.medium_with(
            &[("demo-1", "DEMO-SN-0001", top, "uefi-ext4")],
            "site",
            &[
                "--format",
                "cache",
                "--sign-key",
                key_file.to_str().unwrap(),
            ],
        )
    }

    /// A mass stick for `hosts` (name, serial, toplevel, profile) with policy `refuse`.
    fn stick(&self, hosts: &[(&str, &str, &str, &str)]) -> PathBuf {
        self.medium(hosts, "stick.img")
    }

    /// [`Env::stick`] written as `name` (`fleet.iso` makes an ISO).
    fn medium(&self, hosts: &[(&str, &str, &str, &str)], name: &str) -> PathBuf {
        self.medium_with(hosts, name, &[])
    }

    /// [`Env::medium`] with more mkinstaller arguments.
    fn medium_with(
        &self,
        hosts: &[(&str, &str, &str, &str)],
        name: &str,
        more: &[&str],
    ) -> PathBuf {
        let mut toml = String::from("version = 1\n\n[defaults]\non-unknown-serial = \"refuse\"\nafter-install = \"poweroff\"\nconfirm-seconds = 0\n");
        for (name, serial, top, profile) in hosts {
            toml += &format!("\n[[host]]\nname = \"{name}\"\nserials = [\"{serial}\"]\nsystem = \"{top}\"\nprofile = \"{profile}\"\n");
        }
        let file = self.path("hosts.toml");
        fs::write(&file, toml).unwrap();
        let img = self.path(name);
        let installer = testkit::stand_in_installer(self.tmp.path());
        let out = Command::new(mkinstaller())
            .args([
                "--mass",
                file.to_str().unwrap(),
                "-o",
                img.to_str().unwrap(),
                "-q",
            ])
            .arg("--installer")
            .arg(installer)
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .args(more)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mkinstaller: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        img
    }

    fn install(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
            .args(args)
            .args([
                "--root",
                self.path("root").to_str().unwrap(),
                "--finish",
                "none",
            ])
            .output()
            .unwrap()
    }
}

/// The workspace's mkinstaller, built on demand (it is another package of the workspace).
fn mkinstaller() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "mkinstaller"])
        .status()
        .unwrap();
    assert!(status.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::repo_root().join("target"));
    target.join("debug/mkinstaller")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "autoinstall-terminal failed:\n{}",
        stderr(o)
    );
}

/// A mounted file system, unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(dev: &str, at: PathBuf) -> Mounted {
        fs::create_dir_all(&at).unwrap();
        run("mount", &[dev, at.to_str().unwrap()]);
        Mounted(at)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Checks an installed disk as a user would: GPT, file systems, the Nix store, the profile,
/// the boot entry.
fn check_installed(env: &Env, disk: &LoopDisk, toplevel: &str, root_fs: &str) {
    let table = run("sfdisk", &["-J", &disk.dev]);
    assert!(table.contains("\"label\": \"gpt\""), "{table}");
    assert!(
        table.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        "no ESP: {table}"
    );
    assert!(
        table.contains("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        "no root partition: {table}"
    );
    assert!(table.contains("\"name\": \"ESP\"") && table.contains("\"name\": \"nixos\""));
    let blkid = run("blkid", &["-p", "-o", "export", &disk.part(2)]);
    assert!(blkid.contains(&format!("TYPE={root_fs}")), "{blkid}");
    assert!(run("blkid", &["-p", &disk.part(1)]).contains("TYPE=\"vfat\""));
    run("fsck.vfat", &["-n", &disk.part(1)]);
    if root_fs == "ext4" {
        run("e2fsck", &["-fn", &disk.part(2)]);
    } else {
        run("btrfs", &["check", "--readonly", &disk.part(2)]);
    }
    // The boot entry, read with mtools: systemd-boot and this generation's entry.
    let entry = run(
        "mtype",
        &[
            "-i",
            &disk.part(1),
            "::/loader/entries/nixos-generation-1.conf",
        ],
    );
    assert!(entry.contains(&format!("init={toplevel}/init")), "{entry}");
    run("mdir", &["-i", &disk.part(1), "::/EFI/BOOT/BOOTX64.EFI"]);

    let m = Mounted::new(&disk.part(2), env.path("check"));
    let store_root = if root_fs == "btrfs" {
        m.0.join("@nix").parent().unwrap().to_path_buf()
    } else {
        m.0.clone()
    };
    // On btrfs the store lives in the @nix subvolume: mount it where Nix expects it.
    let _nix = (root_fs == "btrfs").then(|| {
        let at = env.path("check-nix-root");
        fs::create_dir_all(at.join("nix")).unwrap();
        run(
            "mount",
            &[
                "-o",
                "subvol=@nix",
                &disk.part(2),
                at.join("nix").to_str().unwrap(),
            ],
        );
        Mounted(at.join("nix"))
    });
    let store = if root_fs == "btrfs" {
        env.path("check-nix-root")
    } else {
        store_root
    };
    let store_s = store.to_str().unwrap();
    nix_ok(
        "nix-store",
        &["--verify", "--check-contents", "--store", store_s],
    );
    // Every path was moved into the store: none is left where the ext4 writer put it.
    assert!(!store.join("nix/.autoinstall-store").exists());
    let store_meta = fs::metadata(store.join("nix/store")).unwrap();
    assert_eq!(store_meta.permissions().mode() & 0o7777, 0o1775);
    assert_eq!(
        requisites(Some(&store), toplevel),
        requisites(None, toplevel)
    );
    let sys_root = if root_fs == "btrfs" {
        m.0.join("@")
    } else {
        m.0.clone()
    };
    let profiles = store.join("nix/var/nix/profiles");
    assert_eq!(
        fs::read_link(profiles.join("system")).unwrap(),
        PathBuf::from("system-1-link")
    );
    assert_eq!(
        fs::read_link(profiles.join("system-1-link")).unwrap(),
        PathBuf::from(toplevel)
    );
    assert!(sys_root.join("etc/NIXOS").exists());
    // The installed system keeps its install report.
    let kept: Vec<serde_json::Value> = fs::read_dir(sys_root.join("var/log/autoinstall"))
        .expect("the installed disk keeps its report in /var/log/autoinstall")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["outcome"], "installed");
    assert_eq!(kept[0]["toplevel"], toplevel);
}

fn report_on_stick(stick: &Path) -> Vec<serde_json::Value> {
    let img = media::read::Image::open(stick).unwrap();
    let fat = img.fat(img.payload).unwrap();
    let root = fat.fs().root_dir();
    let dir = root.open_dir("autoinstall/reports").unwrap();
    let mut out = Vec::new();
    for e in dir.iter() {
        let e = e.unwrap();
        if e.file_name().ends_with(".json") {
            let mut s = String::new();
            e.to_file().read_to_string(&mut s).unwrap();
            out.push(serde_json::from_str(&s).unwrap());
        }
    }
    out
}

/// What every test here starts with: root (for loop devices; else the test is skipped), the
/// lock that runs them one at a time, a scratch directory and the demo hosts.
fn root_env() -> Option<(std::sync::MutexGuard<'static, ()>, Env, Vec<String>)> {
    if !is_root() {
        eprintln!("skipped: needs root for loop devices");
        return None;
    }
    let serial = one_at_a_time();
    let env = Env::new();
    let tops = env.demo_hosts();
    Some((serial, env, tops))
}

#[test]
fn installs_hosts_by_serial_onto_blank_disks() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[
        ("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4"),
        ("demo-2", "DEMO-SN-0002", &tops[1], "uefi-btrfs"),
    ]);
    let s = stick.to_str().unwrap();

    // --dry-run prints the plan as JSON and touches nothing.
    let disk = LoopDisk::new(env.path("disk1.img"), "9G");
    let out = env.install(&[
        "--payload",
        s,
        "--serial",
        "DEMO-SN-0001",
        "--disk",
        &disk.dev,
        "--dry-run",
        "--json",
    ]);
    assert_ok(&out);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["host"], "demo-1");
    assert_eq!(plan["partitions"].as_array().unwrap().len(), 2);
    assert!(disk.untouched());

    let out = env.install(&[
        "--payload",
        s,
        "--serial",
        "demo-sn-0001",
        "--disk",
        &disk.dev,
        "--yes",
        "--json",
    ]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "installed");
    check_installed(&env, &disk, &tops[0], "ext4");

    // The second host, with btrfs subvolumes.
    let disk2 = LoopDisk::new(env.path("disk2.img"), "9G");
    let out = env.install(&[
        "--payload",
        s,
        "--serial",
        "DEMO-SN-0002",
        "--disk",
        &disk2.dev,
        "--yes",
    ]);
    assert_ok(&out);
    if Path::new("/usr/bin/btrfs").exists()
        || Path::new("/usr/sbin/btrfs").exists()
        || Path::new("/bin/btrfs").exists()
    {
        check_installed(&env, &disk2, &tops[1], "btrfs");
    }

    // Reports went back to the stick.
    let reports = report_on_stick(&stick);
    let installed: Vec<_> = reports
        .iter()
        .filter(|r| r["outcome"] == "installed")
        .collect();
    assert_eq!(installed.len(), 2, "{reports:?}");
    assert!(installed
        .iter()
        .any(|r| r["host"] == "demo-1" && r["serial"] == "demo-sn-0001"));
    assert!(installed
        .iter()
        .any(|r| r["host"] == "demo-2" && r["disk"]["path"] == disk2.dev.as_str()));
}

/// The same fleet as a hybrid ISO (as a CD or BMC virtual medium shows it): read without a
/// mount, installed, and the report kept on the installed disk since the ISO is read-only.
#[test]
fn installs_from_an_iso() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let iso = env.medium(
        &[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")],
        "fleet.iso",
    );
    let before = fs::read(&iso).unwrap();
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let out = env.install(&[
        "--payload",
        iso.to_str().unwrap(),
        "--serial",
        "DEMO-SN-0001",
        "--disk",
        &disk.dev,
        "--yes",
    ]);
    assert_ok(&out);
    let said = stderr(&out);
    assert!(
        said.contains("(ISO 9660)")
            && said.contains("/var/log/autoinstall/")
            && said.contains("on the installed disk"),
        "{said}"
    );
    check_installed(&env, &disk, &tops[0], "ext4");
    assert!(fs::read(&iso).unwrap() == before, "the ISO was written to");
}

/// A signing key (written to `secret.key` for mkinstaller) and another key of the same name,
/// which no trust in the first can accept.
fn signing_keys(
    env: &Env,
    name: &str,
) -> (
    nixstore::keys::SecretKey,
    nixstore::keys::SecretKey,
    PathBuf,
) {
    let key = nixstore::keys::SecretKey::generate(name).unwrap();
    let other = nixstore::keys::SecretKey::generate(name).unwrap();
    let key_file = env.path("secret.key");
    fs::write(&key_file, key.to_text()).unwrap();
    (key, other, key_file)
}

/// The hash part of a store path (the name of its narinfo, without `.narinfo`).
fn hash_part(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap();
    base.split('-').next().unwrap().to_string()
}

/// A refusal: exit status 3, `expect` said, and not a byte written to `disk`.
fn assert_refused(out: &Output, expect: &str, disk: &LoopDisk) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(3), "expected a refusal:\n{err}");
    assert!(err.contains(expect), "{expect:?} not in:\n{err}");
    assert!(disk.untouched(), "a refusal wrote to the disk");
}

/// `mkinstaller --sign-key` and `autoinstall-terminal --trusted-key`: a signed stick installs
/// under its key; an unsigned stick, another key, and a narinfo whose signature does not
/// match are each refused before the disk is touched, naming what failed.
#[test]
fn signatures_are_required_once_a_key_is_trusted() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, other, key_file) = signing_keys(&env, "fleet-test-1");
    let hosts = [("demo-1", "DEMO-SN-0001", tops[0].as_str(), "uefi-ext4")];
    let signed = env.medium_with(
        &hosts,
        "signed.img",
        &["--sign-key", key_file.to_str().unwrap()],
    );
    let unsigned = env.medium(&hosts, "unsigned.img");
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let trusted = key.public().to_text();
    let install = |payload: &Path, key: &str| {
        env.install(&[
            "--payload",
            payload.to_str().unwrap(),
            "--serial",
            "DEMO-SN-0001",
            "--disk",
            &disk.dev,
            "--trusted-key",
            key,
            "--yes",
        ])
    };
    let refused = |out: Output, expect: &str| assert_refused(&out, expect, &disk);
    refused(install(&unsigned, &trusted), "the manifest is not signed");
    refused(
        install(&signed, &other.public().to_text()),
        "not valid for any trusted key",
    );
    // One narinfo's signature made by another key (its manifest still signed): the path is
    // named. (A payload directory, so the narinfo can be edited.)
    let tree = env.path("tree");
    let img = media::read::Image::open(&signed).unwrap();
    fs::create_dir_all(&tree).unwrap();
    run(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &format!("{}@@{}", signed.display(), img.payload.start),
            "::/*",
            tree.to_str().unwrap(),
        ],
    );
    let victim = hash_part(&tops[0]);
    let narinfo = tree.join(format!("{victim}.narinfo"));
    let text = fs::read_to_string(&narinfo).unwrap();
    let info = nixstore::narinfo::NarInfo::parse(&text).unwrap();
    let forged = text
        .lines()
        .map(|l| {
            if l.starts_with("Sig: ") {
                format!("Sig: {}", other.sign(&info.fingerprint()))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    fs::write(&narinfo, forged).unwrap();
    refused(install(&tree, &trusted), &tops[0]);

    // Signed by the trusted key: installed.
    let out = install(&signed, &trusted);
    assert_ok(&out);
    check_installed(&env, &disk, &tops[0], "ext4");
}

#[test]
fn refusals_touch_nothing() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")]);
    let s = stick.to_str().unwrap();
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let refused = |args: &[&str], expect: &[&str]| {
        let out = env.install(args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "expected a refusal for {args:?}:\n{}",
            stderr(&out)
        );
        let err = stderr(&out);
        for e in expect {
            assert!(err.contains(e), "{args:?}: {e:?} not in:\n{err}");
        }
        assert!(disk.untouched(), "{args:?} wrote to the disk");
    };
    // Unknown serial under `refuse`.
    refused(
        &[
            "--payload",
            s,
            "--serial",
            "NOT-IN-FLEET",
            "--disk",
            &disk.dev,
            "--yes",
        ],
        &["NOT-IN-FLEET", "refuse"],
    );
    // A junk serial is no serial.
    refused(
        &[
            "--payload",
            s,
            "--serial",
            "To Be Filled By O.E.M.",
            "--disk",
            &disk.dev,
            "--yes",
        ],
        &["refuse"],
    );
    // Too small, and by how much.
    let small = LoopDisk::new(env.path("small.img"), "2G");
    let out = env.install(&[
        "--payload",
        s,
        "--host",
        "demo-1",
        "--disk",
        &small.dev,
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("short"), "{}", stderr(&out));
    assert!(small.untouched());
    // No candidate disk: this machine's own disks are busy; --dry-run so nothing could be
    // touched even on a machine with a spare disk.
    let out = env.install(&["--payload", s, "--host", "demo-1", "--dry-run"]);
    if !out.status.success() {
        assert!(
            stderr(&out).contains("no disk to install on") || stderr(&out).contains("equally"),
            "{}",
            stderr(&out)
        );
    }

    // A payload whose NAR was altered: refused, naming the store path.
    let dir = env.path("payload");
    fs::create_dir_all(&dir).unwrap();
    let img = media::read::Image::open(&stick).unwrap();
    let off = img.payload.start.to_string();
    run(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &format!("{s}@@{off}"),
            "::/*",
            dir.to_str().unwrap(),
        ],
    );
    let top_hash = &Path::new(&tops[0]).file_name().unwrap().to_str().unwrap()[..32];
    let narinfo_path = dir.join(format!("{top_hash}.narinfo"));
    let narinfo = fs::read_to_string(&narinfo_path).unwrap();
    let url = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_string();
    let nar = dir.join(&url);
    let mut bytes = fs::read(&nar).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    fs::write(&nar, &bytes).unwrap();
    let d = dir.to_str().unwrap();
    refused(
        &[
            "--payload",
            d,
            "--host",
            "demo-1",
            "--disk",
            &disk.dev,
            "--yes",
        ],
        &[&tops[0], "tampered"],
    );

    // A NAR that tries to leave the store, with hashes that match: refused before the disk.
    let evil = hostile_nar();
    let compressed = zstd::encode_all(&evil[..], 3).unwrap();
    fs::write(&nar, &compressed).unwrap();
    let fix = |text: &str, key: &str, value: String| -> String {
        text.lines()
            .map(|l| {
                if l.starts_with(&format!("{key}: ")) {
                    format!("{key}: {value}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let mut t = fix(&narinfo, "FileHash", Sha256Hash::of(&compressed).to_nix32());
    t = fix(&t, "FileSize", compressed.len().to_string());
    t = fix(&t, "NarHash", Sha256Hash::of(&evil).to_nix32());
    t = fix(&t, "NarSize", evil.len().to_string());
    fs::write(&narinfo_path, t).unwrap();
    refused(
        &[
            "--payload",
            d,
            "--host",
            "demo-1",
            "--disk",
            &disk.dev,
            "--yes",
        ],
        &[&tops[0], ".."],
    );

    // Refusals are reported too.
    let reports = report_on_stick(&stick);
    assert!(
        reports
            .iter()
            .any(|r| r["outcome"] == "refused" && r["serial"] == "NOT-IN-FLEET"),
        "{reports:?}"
    );
}

/// A NAR directory with an entry named `..`.
fn hostile_nar() -> Vec<u8> {
    fn s(out: &mut Vec<u8>, t: &[u8]) {
        out.extend_from_slice(&(t.len() as u64).to_le_bytes());
        out.extend_from_slice(t);
        out.resize(out.len() + (8 - t.len() % 8) % 8, 0);
    }
    let mut v = Vec::new();
    for t in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
        b"..",
        b"node",
        b"(",
        b"type",
        b"regular",
        b"contents",
        b"x",
        b")",
        b")",
        b")",
    ] {
        s(&mut v, t);
    }
    v
}

#[test]
fn an_install_killed_mid_copy_reruns_to_success() {
    if !is_root() {
        eprintln!("skipped: needs root for loop devices");
        return;
    }
    let _serial = one_at_a_time();
    let env = Env::new();
    // One big incompressible path, so the copy takes long enough to be interrupted.
    let big = env.path("big-system");
    fs::create_dir_all(&big).unwrap();
    for i in 0..8 {
        fs::write(
            big.join(format!("blob-{i}")),
            testkit::pseudo_random(24 << 20, 100 + i),
        )
        .unwrap();
    }
    let top = nix_ok("nix-store", &["--add", big.to_str().unwrap()])
        .trim()
        .to_string();
    let stick = env.stick(&[("big", "BIG-SN-1", &top, "uefi-ext4")]);
    // Both ways of writing the store: the ext4 file system written directly (the default)
    // and through the kernel (--kernel-copy).
    for mode in [None, Some("--kernel-copy")] {
        let disk = LoopDisk::new(env.path("disk.img"), "9G");
        let mut args = vec![
            "--payload",
            stick.to_str().unwrap(),
            "--host",
            "big",
            "--disk",
            &disk.dev,
            "--yes",
            "--no-bootloader",
            "--jobs",
            "1",
            "--quiet",
        ];
        args.extend(mode);
        let mut child = Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
            .args(&args)
            .args([
                "--root",
                env.path("root").to_str().unwrap(),
                "--finish",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until_copying(
            &mut child,
            &env.path("root/nix/store"),
            &disk.part(2),
            16 << 20,
        );
        let killed = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            killed,
            "the install finished before it could be interrupted"
        );

        // The killed run left a half-written file system (or, through the kernel, its mounts
        // and a half-written path); the rerun takes them down.
        let out = env.install(&args);
        assert_ok(&out);
        let out_fs = run("blkid", &["-p", "-o", "export", &disk.part(2)]);
        assert!(out_fs.contains("TYPE=ext4"), "{out_fs}");
        run("e2fsck", &["-fn", &disk.part(2)]);
        let m = Mounted::new(&disk.part(2), env.path("check"));
        nix_ok(
            "nix-store",
            &[
                "--verify",
                "--check-contents",
                "--store",
                m.0.to_str().unwrap(),
            ],
        );
        assert_eq!(requisites(Some(&m.0), &top), vec![top.clone()]);
        assert!(!fs::read_dir(m.0.join("nix/store"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".import-")));
    }
}

/// Whether the disk could boot anything: its first partition (the ESP) has an `EFI` folder.
fn has_boot_entry(disk: &LoopDisk) -> bool {
    Command::new("mdir")
        .args(["-b", "-i", &disk.part(1), "::/EFI"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A copy of the site at `from`, named `name`, changed by `edit`.
fn site_variant(env: &Env, from: &Path, name: &str, edit: &dyn Fn(&Path)) -> PathBuf {
    let to = env.path(name);
    run("cp", &["-a", from.to_str().unwrap(), to.to_str().unwrap()]);
    edit(&to);
    to
}

/// Waits until the install `child` is writing the closure into the target, or fails the
/// test if it ends first: through the kernel, a path under its temporary name shows in the
/// mounted `store`; written directly (ext4), the store's partition `part` is open in the
/// installer and at least `min_written` more bytes have gone out since (`/proc/PID/io`).
fn wait_until_copying(child: &mut std::process::Child, store: &Path, part: &str, min_written: u64) {
    let pid = child.id();
    let written = || {
        fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("write_bytes: "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let has_part_open = || {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
            d.flatten()
                .any(|e| fs::read_link(e.path()).is_ok_and(|l| l == Path::new(part)))
        })
    };
    let start = Instant::now();
    let mut since: Option<u64> = None;
    while start.elapsed() < Duration::from_secs(120) {
        let partial = fs::read_dir(store)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".import-"))
            })
            .unwrap_or(false);
        if partial {
            return;
        }
        match since {
            None if has_part_open() => since = Some(written()),
            Some(at) if written() >= at + min_written => return,
            _ => {}
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the install ended ({status}) before it was caught copying");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("the install did not start copying within 120 s");
}

/// The online installer against a real nginx serving a signed `--format cache` site: without
/// a trusted key, with the wrong key, for a serial the site does not know, and with a
/// narinfo's signature removed it refuses before the disk is touched; a tampered NAR and a
/// server that goes away for good fail the install with no boot entry on the disk; a server
/// stopped mid-copy and started again a moment later costs a retry, and the install
/// completes (the download resumed, the result checked like any install).
#[test]
fn installs_online_from_a_signed_cache_site_and_fails_closed() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, other, key_file) = signing_keys(&env, "fleet-online-1");
    let site = env.demo_1_site(&tops[0], &key_file);
    let top_hash = hash_part(&tops[0]);
    let unsigned_narinfo = site_variant(&env, &site, "site-unsigned", &|dir| {
        let narinfo = dir.join(format!("{top_hash}.narinfo"));
        let text = fs::read_to_string(&narinfo).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with("Sig: "))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&narinfo, kept).unwrap();
    });
    let tampered_nar = site_variant(&env, &site, "site-tampered", &|dir| {
        // The largest NAR: a byte in its middle flipped.
        let biggest = fs::read_dir(dir.join("nar"))
            .unwrap()
            .flatten()
            .max_by_key(|e| e.metadata().unwrap().len())
            .unwrap()
            .path();
        let mut bytes = fs::read(&biggest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&biggest, bytes).unwrap();
    });

    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let trusted = key.public().to_text();
    let install = |url: &str, serial: &str, more: &[&str]| {
        let mut args = vec![
            "--url", url, "--serial", serial, "--disk", &disk.dev, "--yes",
        ];
        args.extend_from_slice(more);
        env.install(&args)
    };
    let refused = |out: Output, expect: &str| assert_refused(&out, expect, &disk);
    let server = Nginx::serve(&site);
    let url = server.url();
    refused(
        install(&url, "DEMO-SN-0001", &[]),
        "online installs accept only signed payloads",
    );
    refused(
        install(
            &url,
            "DEMO-SN-0001",
            &["--trusted-key", &other.public().to_text()],
        ),
        "not valid for any trusted key",
    );
    refused(
        install(&url, "NOT-IN-THE-FLEET-42", &["--trusted-key", &trusted]),
        &format!("serial NOT-IN-THE-FLEET-42 is not in the fleet at {url}"),
    );
    let unsigned = Nginx::serve(&unsigned_narinfo);
    refused(
        install(
            &unsigned.url(),
            "DEMO-SN-0001",
            &["--trusted-key", &trusted],
        ),
        &tops[0],
    );

    // A tampered NAR is found as it is unpacked: the install fails, nothing boots.
    let tampered = Nginx::serve(&tampered_nar);
    let out = install(
        &tampered.url(),
        "DEMO-SN-0001",
        &["--trusted-key", &trusted],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("install failed at step copy-closure"), "{err}");
    assert!(!has_boot_entry(&disk));

    // A slow server (so the copy can be caught half-way), stopped mid-copy.
    let mut slow = Nginx::serve_with(&site, None, "limit_rate 1m;");
    let spawn = |url: &str, more: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
            .args([
                "--url",
                url,
                "--serial",
                "DEMO-SN-0001",
                "--disk",
                &disk.dev,
            ])
            .args(["--yes", "--trusted-key", &trusted, "--finish", "none"])
            .args(["--root", env.path("root").to_str().unwrap()])
            .args(more)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let store = env.path("root/nix/store");
    // Gone for good: after its attempts the install fails, nothing boots.
    let mut child = spawn(&slow.url(), &["--retries", "2"]);
    wait_until_copying(&mut child, &store, &disk.part(2), 0);
    slow.stop();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("gave up on nar/") && err.contains("after 2 attempts"),
        "{err}"
    );
    assert!(!has_boot_entry(&disk));

    // Back 1.5 s later: retried, resumed, installed.
    slow.start();
    let mut child = spawn(&slow.url(), &[]);
    wait_until_copying(&mut child, &store, &disk.part(2), 0);
    slow.stop();
    std::thread::sleep(Duration::from_millis(1500));
    slow.start();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("retrying in"), "{err}");
    assert!(
        slow.access_log().contains(" 206 "),
        "no download resumed with a Range request:\n{}",
        slow.access_log()
    );
    check_installed(&env, &disk, &tops[0], "ext4");
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl in `dir`:
/// (ca.pem, server.pem, server.key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=fleet-test-ca"];
    ca.extend(ec);
    let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_pem]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign"]);
    run("openssl", &ca);
    let (key, csr, pem, ext) = (p("server.key"), p("server.csr"), p("server.pem"), p("ext"));
    let mut req = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ];
    req.extend(ec);
    run("openssl", &req);
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ],
    );
    (ca_pem.into(), pem.into(), key.into())
}

/// HTTPS with a fleet's private CA: checked against the public roots, the server is refused
/// at once (a certificate does not get better by retrying) with the disk untouched; with
/// `--ca-file` the same site installs.
#[test]
fn installs_online_over_https_with_a_private_ca() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, _, key_file) = signing_keys(&env, "fleet-tls-1");
    let site = env.demo_1_site(&tops[0], &key_file);
    let (ca, cert, cert_key) = private_ca(env.tmp.path());
    let server = Nginx::serve_with(&site, Some((&cert, &cert_key)), "");
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let trusted = key.public().to_text();
    let url = server.url();
    let install = |more: &[&str]| {
        let mut args = vec![
            "--url",
            &url,
            "--serial",
            "DEMO-SN-0001",
            "--disk",
            &disk.dev,
        ];
        args.extend(["--yes", "--trusted-key", &trusted]);
        args.extend_from_slice(more);
        env.install(&args)
    };
    let out = install(&[]);
    assert_refused(&out, "UnknownIssuer", &disk);
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));

    let out = install(&["--ca-file", ca.to_str().unwrap()]);
    assert_ok(&out);
    check_installed(&env, &disk, &tops[0], "ext4");
}
