//! What the install tests share: loop disks, a scratch environment that builds sticks and
//! sites with the real mkinstaller, running the installer, and checking an installed disk
//! as a user would.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testkit::{build_fixture, nix_ok, requisites, run};

pub struct Env {
    pub tmp: tempfile::TempDir,
}

/// The tests share the machine's loop devices and mount table: one at a time.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A loop device over a sparse image; detached (after unmounting anything left) on drop.
pub struct LoopDisk {
    pub image: PathBuf,
    pub dev: String,
}

impl LoopDisk {
    pub fn new(image: PathBuf, size: &str) -> LoopDisk {
        // A fresh, empty image, even where an earlier disk of the test lay.
        let _ = fs::remove_file(&image);
        run("truncate", &["-s", size, image.to_str().unwrap()]);
        // -P: the kernel drops the partitions with the device, so the next user of this loop
        // number inherits none.
        let dev = run("losetup", &["-f", "-P", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        LoopDisk { image, dev }
    }

    /// Whether anything was ever written to the image (it starts as one big hole).
    pub fn untouched(&self) -> bool {
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

    pub fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Hosts built from the demo fleet's expression with a stand-in kernel (its stage 1
    /// is never booted here) and the real systemd-boot, so switch-to-configuration runs for
    /// real: demo-1, demo-2, demo-btrfs, demo-uuid. Returns the toplevels.
    pub fn demo_hosts(&self) -> Vec<String> {
        ["demo-1", "demo-2", "demo-btrfs", "demo-uuid"]
            .iter()
            .map(|h| self.demo_host(h, &[]))
            .collect()
    }

    /// One host of the demo fleet's expression, as `demo_hosts` builds them, with more
    /// arguments to the expression (a `kernel` of its own among them, if it says one).
    pub fn demo_host(&self, host: &str, args: &[(&str, &str)]) -> String {
        let kernel = self.path("kernel");
        if !kernel.exists() {
            fs::create_dir_all(kernel.join("lib/modules/6.1.0-test")).unwrap();
            fs::write(kernel.join("bzImage"), testkit::pseudo_random(1 << 20, 7)).unwrap();
            fs::write(kernel.join("version"), "6.1.0-test\n").unwrap();
            fs::write(kernel.join("modules.load"), "").unwrap();
        }
        let sdboot = self.path("systemd-boot");
        if !sdboot.exists() {
            fs::create_dir_all(&sdboot).unwrap();
            fs::copy(
                "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
                sdboot.join("systemd-bootx64.efi"),
            )
            .unwrap();
        }
        let mut all = vec![("systemdBoot", sdboot.to_str().unwrap())];
        if !args.iter().any(|(k, _)| *k == "kernel") {
            all.push(("kernel", kernel.to_str().unwrap()));
        }
        all.extend_from_slice(args);
        build_fixture("demo-fleet/default.nix", Some(host), &all)
    }

    /// A `--format cache` site (under `site`) of demo-1 (DEMO-SN-0001) with toplevel `top`,
    /// signed with the key in `key_file`.
    pub fn demo_1_site(&self, top: &str, key_file: &Path) -> PathBuf {
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
    pub fn stick(&self, hosts: &[(&str, &str, &str, &str)]) -> PathBuf {
        self.medium(hosts, "stick.img")
    }

    /// [`Env::stick`] written as `name` (`fleet.iso` makes an ISO).
    pub fn medium(&self, hosts: &[(&str, &str, &str, &str)], name: &str) -> PathBuf {
        self.medium_with(hosts, name, &[])
    }

    /// [`Env::medium`] with more mkinstaller arguments.
    pub fn medium_with(
        &self,
        hosts: &[(&str, &str, &str, &str)],
        name: &str,
        more: &[&str],
    ) -> PathBuf {
        self.medium_from(&fleet_toml("confirm-seconds = 0", hosts), name, more)
    }

    /// A medium `name` built by mkinstaller from the hosts.toml text `toml` (with more
    /// arguments `more`).
    pub fn medium_from(&self, toml: &str, name: &str, more: &[&str]) -> PathBuf {
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

    /// The plan `--dry-run --json` prints for installing from `stick` (with `select`: `--host
    /// NAME` or `--serial S`) onto `disk`; it touches nothing.
    pub fn plan(&self, stick: &Path, select: [&str; 2], disk: &LoopDisk) -> serde_json::Value {
        let mut args = vec!["--payload", stick.to_str().unwrap()];
        args.extend(select);
        args.extend(["--disk", &disk.dev, "--dry-run", "--json"]);
        let out = self.install(&args);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn install(&self, args: &[&str]) -> Output {
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
pub fn mkinstaller() -> PathBuf {
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

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "autoinstall-terminal failed:\n{}",
        stderr(o)
    );
}

/// A mounted file system, unmounted on drop.
pub struct Mounted(pub PathBuf);

impl Mounted {
    pub fn new(dev: &str, at: PathBuf) -> Mounted {
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

/// A hosts.toml for `hosts` (name, serial, toplevel, profile): policy `refuse`, power off
/// after install, and the lines `defaults` in `[defaults]`.
pub fn fleet_toml(defaults: &str, hosts: &[(&str, &str, &str, &str)]) -> String {
    let mut toml = format!("version = 1\n\n[defaults]\non-unknown-serial = \"refuse\"\nafter-install = \"poweroff\"\n{defaults}\n");
    for (name, serial, top, layout) in hosts {
        // A profile's name, or one of the demo fleet's disko files.
        let layout = if layout.ends_with(".json") {
            format!(
                "disko = \"{}/../../tests/fixtures/demo-fleet/{layout}\"",
                env!("CARGO_MANIFEST_DIR")
            )
        } else {
            format!("profile = \"{layout}\"")
        };
        toml += &format!("\n[[host]]\nname = \"{name}\"\nserials = [\"{serial}\"]\nsystem = \"{top}\"\n{layout}\n");
    }
    toml
}

/// The payload of the stick image `stick`, copied out into the directory `to` (with mtools),
/// for tests that change it and install from the directory.
pub fn payload_dir(stick: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let img = media::image::Image::open(stick).unwrap();
    run(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &format!("{}@@{}", stick.display(), img.payload.start),
            "::/*",
            to.to_str().unwrap(),
        ],
    );
}

/// Rewrites `key: value` lines of a narinfo text: `Some(v)` replaces, `None` removes.
pub fn edit_narinfo(text: &str, key: &str, value: Option<String>) -> String {
    text.lines()
        .filter_map(|l| match l.strip_prefix(&format!("{key}: ")) {
            Some(_) => value.as_ref().map(|v| format!("{key}: {v}")),
            None => Some(l.to_string()),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Checks an installed disk as a user would: GPT, file systems, the Nix store, the profile,
/// the boot entry.
/// `root_fs` says which layout was installed: "ext4" the profile uefi-ext4 (partitions ESP and
/// nixos, the root type GUID), "btrfs" demo-btrfs.disko.json (disko's partition names, a
/// Linux file system partition, subvolumes root and nix).
pub fn check_installed(env: &Env, disk: &LoopDisk, toplevel: &str, root_fs: &str) {
    let btrfs = root_fs == "btrfs";
    let (esp, root, root_type, sub_root, sub_nix) = if btrfs {
        (
            "disk-main-ESP",
            "disk-main-root",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "root",
            "nix",
        )
    } else {
        (
            "ESP",
            "nixos",
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            "",
            "",
        )
    };
    let table = run("sfdisk", &["-J", &disk.dev]);
    assert!(table.contains("\"label\": \"gpt\""), "{table}");
    assert!(
        table.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        "no ESP: {table}"
    );
    assert!(table.contains(root_type), "no root partition: {table}");
    assert!(
        table.contains(&format!("\"name\": \"{esp}\""))
            && table.contains(&format!("\"name\": \"{root}\"")),
        "{table}"
    );
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
    let store_root = m.0.clone();
    // On btrfs the store lives in the nix subvolume: mount it where Nix expects it.
    let subvol = format!("subvol={sub_nix}");
    let _nix = btrfs.then(|| {
        let at = env.path("check-nix-root");
        fs::create_dir_all(at.join("nix")).unwrap();
        run(
            "mount",
            &[
                "-o",
                &subvol,
                &disk.part(2),
                at.join("nix").to_str().unwrap(),
            ],
        );
        Mounted(at.join("nix"))
    });
    let store = if btrfs {
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
    let sys_root = if btrfs {
        m.0.join(sub_root)
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

pub fn report_on_stick(stick: &Path) -> Vec<serde_json::Value> {
    use media::read::Payload;
    let img = media::image::Image::open(stick).unwrap();
    let fat = img.fat(img.payload).unwrap();
    fat.list("autoinstall/reports")
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .map(|n| {
            let bytes = fat
                .read_capped(&format!("autoinstall/reports/{n}"), 1 << 20)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect()
}

/// What every test here starts with: root (for loop devices; else the test is skipped), the
/// lock that runs them one at a time, a scratch directory and the demo hosts.
pub fn root_env() -> Option<(std::sync::MutexGuard<'static, ()>, Env, Vec<String>)> {
    if !is_root() {
        eprintln!("skipped: needs root for loop devices");
        return None;
    }
    let serial = one_at_a_time();
    let env = Env::new();
    let tops = env.demo_hosts();
    Some((serial, env, tops))
}

pub fn signing_keys(
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
pub fn hash_part(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap();
    base.split('-').next().unwrap().to_string()
}

/// A refusal: exit status 3, `expect` said, and not a byte written to `disk`.
pub fn assert_refused(out: &Output, expect: &str, disk: &LoopDisk) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(3), "expected a refusal:\n{err}");
    assert!(err.contains(expect), "{expect:?} not in:\n{err}");
    assert!(disk.untouched(), "a refusal wrote to the disk");
}

/// Whether the disk could boot anything: its first partition (the ESP) has an `EFI` folder.
pub fn has_boot_entry(disk: &LoopDisk) -> bool {
    Command::new("mdir")
        .args(["-b", "-i", &disk.part(1), "::/EFI"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A copy of the site at `from`, named `name`, changed by `edit`.
pub fn site_variant(env: &Env, from: &Path, name: &str, edit: &dyn Fn(&Path)) -> PathBuf {
    let to = env.path(name);
    run("cp", &["-a", from.to_str().unwrap(), to.to_str().unwrap()]);
    edit(&to);
    to
}

/// The `server` directives of a site that sends `nar` (a file under nar/) at a crawl after
/// its first 256 KiB, and everything else at 1 MB/s. A request that resumes (a Range) goes
/// at full speed.
pub fn crawl_after_256k(nar: &str) -> String {
    format!(
        "limit_rate 1m; location = /nar/{nar} {{ limit_rate_after 256k; limit_rate 1k; \
         if ($http_range) {{ set $limit_rate 0; }} }}"
    )
}

/// Waits until the install is stuck in the middle of the NAR that `server`, a
/// [`crawl_after_256k`] site, crawls: once the install copies, the server has sent 256 KiB
/// more, then next to nothing for 2 s with no request finished (its access log unchanged).
/// Stopping the server then cuts that NAR in half, and the retry must resume it with a Range
/// request (between two NARs there would be nothing to resume). Counted at the server, which
/// writes nothing but its responses and its log.
pub fn wait_until_mid_nar(
    child: &mut std::process::Child,
    store: &Path,
    part: &str,
    server: &testkit::Nginx,
) {
    wait_until_copying(child, store, part, 0);
    let pid = server.pid().expect("the server runs");
    let sent = || proc_io(pid, "wchar");
    let base = sent();
    let start = Instant::now();
    let mut still = (sent(), server.access_log().len(), Instant::now());
    while start.elapsed() < Duration::from_secs(120) {
        let (now, log) = (sent(), server.access_log().len());
        if now > still.0 + (8 << 10) || log != still.1 {
            still = (now, log, Instant::now());
        } else if now >= base + (256 << 10) && still.2.elapsed() >= Duration::from_secs(2) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the install ended ({status}) before it was caught in the middle of a NAR");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the install was not caught in the middle of a NAR within 120 s");
}

/// A counter of /proc/PID/io (`wchar`, `write_bytes`…); 0 once the process is gone.
fn proc_io(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(": "))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Waits until the install `child` is writing the closure into the target, or fails the
/// test if it ends first: through the kernel, a path under its temporary name shows in the
/// mounted `store`; written directly (ext4), the store's partition `part` is open in the
/// installer and at least `min_written` more bytes have gone out since (`/proc/PID/io`).
pub fn wait_until_copying(
    child: &mut std::process::Child,
    store: &Path,
    part: &str,
    min_written: u64,
) {
    let pid = child.id();
    let written = || proc_io(pid, "write_bytes");
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

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl in `dir`:
/// (ca.pem, server.pem, server.key).
pub fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
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
