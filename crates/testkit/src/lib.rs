//! Helpers the integration tests share. They drive real tools (Nix, losetup, mount, fusefat)
//! and panic with the tool's own words when one fails, so a red test says why.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs a Nix command with the options every daemonless, offline call needs.
pub fn nix_cmd(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    if program == "nix" {
        cmd.args(["--extra-experimental-features", "nix-command flakes"]);
    }
    cmd.args(args).args(["--option", "substituters", ""]);
    cmd.output().unwrap_or_else(|e| {
        panic!("running {program}: {e}; the tests need Debian's nix-bin (tests/setup installs it)")
    })
}

/// Like [`nix_cmd`]; fails the test with Nix's stderr unless the command succeeded.
pub fn nix_ok(program: &str, args: &[&str]) -> String {
    let out = nix_cmd(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command and returns its stdout; fails the test with its stderr otherwise.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over an image file, with partition nodes; detached on drop.
pub struct Loop {
    pub device: String,
}

impl Loop {
    pub fn attach(image: &Path, read_only: bool) -> Loop {
        let mut args = vec!["-f", "-P", "--show"];
        if read_only {
            args.push("-r");
        }
        let img = image.to_str().unwrap();
        args.push(img);
        let device = run("losetup", &args).trim().to_string();
        // Wait for the partition nodes the kernel creates asynchronously.
        for _ in 0..10 {
            if Path::new(&format!("{device}p1")).exists() {
                return Loop { device };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Some kernels (this machine's among them) parse no partition tables at all; add the
        // partitions by hand with BLKPG (addpart), which needs no parser.
        if let Ok(json) = Command::new("sfdisk").args(["-J", &device]).output() {
            let text = String::from_utf8_lossy(&json.stdout);
            for (n, part) in text.split("\"node\":").skip(1).enumerate() {
                let field = |key: &str| -> Option<u64> {
                    let rest = part.split(&format!("\"{key}\":")).nth(1)?;
                    rest.trim_start()
                        .split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                };
                if let (Some(start), Some(size)) = (field("start"), field("size")) {
                    run(
                        "addpart",
                        &[
                            &device,
                            &(n + 1).to_string(),
                            &start.to_string(),
                            &size.to_string(),
                        ],
                    );
                }
            }
        }
        Loop { device }
    }

    pub fn partition(&self, n: u32) -> String {
        format!("{}p{n}", self.device)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// A FAT file system mounted read-only; unmounted on drop. This machine's kernel may lack
/// vfat (the CI sandbox's does), so FUSE's fusefat stands in when the kernel refuses.
pub struct FatMount {
    pub dir: tempfile::TempDir,
    fuse: bool,
}

impl FatMount {
    pub fn new(device: &str) -> FatMount {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().to_str().unwrap();
        let kernel = Command::new("mount")
            .args(["-t", "vfat", "-o", "ro", device, mnt])
            .output()
            .unwrap();
        if kernel.status.success() {
            return FatMount { dir, fuse: false };
        }
        let out = Command::new("fusefat")
            .args(["-o", "ro", device, mnt])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "the kernel has no vfat and fusefat is missing ({e}); tests/setup installs it"
                )
            });
        assert!(
            out.status.success(),
            "fusefat {device}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        FatMount { dir, fuse: true }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for FatMount {
    fn drop(&mut self) {
        let mnt = self.dir.path();
        let _ = if self.fuse {
            Command::new("fusermount").arg("-u").arg(mnt).status()
        } else {
            Command::new("umount").arg(mnt).status()
        };
    }
}

/// Every file under `dir`, relative, sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// An installer environment good enough for image tests that do not boot: systemd-boot from
/// Debian's systemd-boot-efi, and stand-in kernel and initrd files of realistic sizes. The
/// VM tests boot the real one from images/debian.
pub fn stand_in_installer(dir: &Path) -> PathBuf {
    let env = dir.join("installer");
    fs::create_dir_all(&env).unwrap();
    let efi = Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    assert!(
        efi.exists(),
        "{} is missing: tests/setup installs systemd-boot-efi",
        efi.display()
    );
    fs::copy(efi, env.join("systemd-bootx64.efi")).unwrap();
    fs::write(env.join("kernel"), pseudo_random(8 << 20, 1)).unwrap();
    fs::write(env.join("initrd"), pseudo_random(24 << 20, 2)).unwrap();
    fs::write(env.join("cmdline"), "console=tty0 console=ttyS0,115200\n").unwrap();
    env
}

/// A stand-in arm64 installer environment (images/debian/build --arch arm64 makes the real
/// one): its files named as the real ones, their bytes made up (this machine has no arm64
/// systemd-boot), for tests that write images and do not boot them.
pub fn stand_in_installer_arm64(dir: &Path) -> PathBuf {
    let env = dir.join("installer-arm64");
    fs::create_dir_all(&env).unwrap();
    fs::write(
        env.join("systemd-bootaa64.efi"),
        pseudo_random(120 << 10, 3),
    )
    .unwrap();
    fs::write(env.join("kernel"), pseudo_random(8 << 20, 4)).unwrap();
    fs::write(env.join("initrd"), pseudo_random(20 << 20, 5)).unwrap();
    fs::write(env.join("cmdline"), "console=tty0 console=ttyAMA0,115200\n").unwrap();
    env
}

/// Incompressible bytes, the same for the same seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Builds an attribute of a fixture in tests/fixtures with the real Nix.
pub fn build_fixture(file: &str, attr: Option<&str>, args: &[(&str, &str)]) -> String {
    let expr = repo_root().join("tests/fixtures").join(file);
    let mut argv = vec![expr.to_str().unwrap().to_string(), "--no-out-link".into()];
    argv.extend(["--arg".into(), "busybox".into(), "/usr/bin/busybox".into()]);
    for (k, v) in args {
        argv.extend(["--argstr".into(), k.to_string(), v.to_string()]);
    }
    if let Some(a) = attr {
        argv.extend(["-A".into(), a.into()]);
    }
    let argv: Vec<&str> = argv.iter().map(|s| s.as_str()).collect();
    nix_ok("nix-build", &argv).trim().to_string()
}

/// `nix-store -qR PATH` (in `store` when given), sorted.
pub fn requisites(store: Option<&Path>, path: &str) -> Vec<String> {
    let mut args = vec!["-qR".to_string(), path.to_string()];
    if let Some(root) = store {
        args.extend(["--store".into(), root.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut paths: Vec<String> = nix_ok("nix-store", &args)
        .lines()
        .map(String::from)
        .collect();
    paths.sort();
    paths
}

/// A real nginx serving `dir` on 127.0.0.1 (a free port), as a child process with its pid,
/// logs and temporary files under a scratch prefix; stopped on drop.
pub struct Nginx {
    pub port: u16,
    tls: bool,
    child: Option<std::process::Child>,
    prefix: tempfile::TempDir,
}

impl Nginx {
    pub fn serve(dir: &Path) -> Nginx {
        Nginx::serve_with(dir, None, "")
    }

    /// [`Nginx::serve`] over HTTPS with this certificate and key (PEM files) when `tls` is
    /// given, and with more directives in its `server` block (e.g. `limit_rate 1m;`).
    pub fn serve_with(dir: &Path, tls: Option<(&Path, &Path)>, server_extra: &str) -> Nginx {
        let prefix = tempfile::tempdir().unwrap();
        // A port the kernel just handed out is free; nginx binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = prefix.path().display();
        let conf = format!(
            "master_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/body;\n\
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n\
             uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             types {{ application/json json; text/x-nix-narinfo narinfo; }}\n\
             default_type application/octet-stream;\n\
             server {{ listen 127.0.0.1:{port}{}; root {}; {}{server_extra} }}\n}}\n",
            if tls.is_some() { " ssl" } else { "" },
            dir.display(),
            tls.map(|(cert, key)| format!(
                "ssl_certificate {}; ssl_certificate_key {}; ",
                cert.display(),
                key.display()
            ))
            .unwrap_or_default()
        );
        fs::write(prefix.path().join("nginx.conf"), conf).unwrap();
        let mut nginx = Nginx {
            port,
            tls: tls.is_some(),
            child: None,
            prefix,
        };
        nginx.start();
        nginx
    }

    /// Starts it again after [`Nginx::stop`], on the same port.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "nginx is already running");
        let conf_file = self.prefix.path().join("nginx.conf");
        let mut child = Command::new("nginx")
            .args(["-c", conf_file.to_str().unwrap(), "-p"])
            .arg(self.prefix.path())
            .args(["-g", "daemon off;"])
            .spawn()
            .unwrap_or_else(|e| panic!("starting nginx: {e} (tests/setup installs it)"));
        // Up when it answers.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nginx did not listen on 127.0.0.1:{}: {}",
            self.port,
            fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
        );
    }

    /// Kills it: open connections drop, new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its process (one: no master), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The access log so far: one line per request.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

pub mod hostile;

/// How a child process ran: its output, its peak memory and its wall time.
pub struct Measured {
    pub output: Output,
    /// Peak resident set, KiB (`ru_maxrss` of this child alone).
    pub max_rss_kib: u64,
    pub seconds: f64,
}

/// Runs `cmd` to its end, capturing its output, and measures that child alone (wait4), so
/// a test can state the memory and time a refusal or failure took.
// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_measured(cmd: &mut Command) -> Measured {
    use std::io::Read;
    use std::process::Stdio;
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the command");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let mut stderr = Vec::new();
    let _ = err.read_to_end(&mut stderr);
    let stdout = reader.join().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes the status and usage through pointers that outlive the call; the
    // pid is our own child's, not yet reaped (std's Child was never waited on).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    use std::os::unix::process::ExitStatusExt;
    Measured {
        output: Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout,
            stderr,
        },
        max_rss_kib: usage.ru_maxrss as u64,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Builds NARs token by token, for archives no honest encoder would write.
#[derive(Default)]
pub struct NarBuilder(pub Vec<u8>);

impl NarBuilder {
    pub fn new() -> Self {
        let mut b = NarBuilder(Vec::new());
        b.s(b"nix-archive-1");
        b
    }
    pub fn s(&mut self, t: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(t.len() as u64).to_le_bytes());
        self.0.extend_from_slice(t);
        let pad = (8 - t.len() % 8) % 8;
        self.0.resize(self.0.len() + pad, 0);
        self
    }
    pub fn all(&mut self, ts: &[&[u8]]) -> &mut Self {
        for t in ts {
            self.s(t);
        }
        self
    }
    pub fn dir_start(&mut self) -> &mut Self {
        self.all(&[b"(", b"type", b"directory"])
    }
    pub fn entry_start(&mut self, name: &[u8]) -> &mut Self {
        self.all(&[b"entry", b"(", b"name", name, b"node"])
    }
    pub fn file(&mut self, contents: &[u8]) -> &mut Self {
        self.all(&[b"(", b"type", b"regular", b"contents", contents, b")"])
    }
    pub fn symlink(&mut self, target: &[u8]) -> &mut Self {
        self.all(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }
    pub fn entry_file(&mut self, name: &[u8], contents: &[u8]) -> &mut Self {
        self.entry_start(name).file(contents).s(b")")
    }
    pub fn entry_symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.entry_start(name).symlink(target).s(b")")
    }
    pub fn end(&mut self) -> &mut Self {
        self.s(b")")
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// A software TPM 2.0 (swtpm) on a socket, stopped on drop; systemd's tools reach it through
/// `SYSTEMD_TPM2_DEVICE=swtpm:path=…`, our own TPM code through the socket (the installer's
/// machines have /dev/tpmrm0).
pub struct Swtpm {
    child: std::process::Child,
    /// The TPM's command channel: raw TPM 2.0 commands in, answers out.
    pub socket: PathBuf,
}

impl Swtpm {
    /// Starts one with its state in `dir/tpm` (the same TPM again from the same `dir`).
    pub fn start(dir: &Path) -> Swtpm {
        let state = dir.join("tpm");
        std::fs::create_dir_all(&state).unwrap();
        let socket = state.join("sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm runs (tests/setup installs it)");
        let start = std::time::Instant::now();
        while !(socket.exists() && Path::new(&format!("{}.ctrl", socket.display())).exists()) {
            assert!(start.elapsed().as_secs() < 30, "swtpm made no socket");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Swtpm { child, socket }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A LUKS2 header in `dir/volume.img` (32 MiB, no device-mapper needed), formatted with `key`,
/// which is left in `dir/install.key` (mode 0600): the image and the key file.
pub fn luks_volume(dir: &Path, key: &[u8]) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let img = dir.join("volume.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let key_file = dir.join("install.key");
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let status = Command::new("cryptsetup")
        .args([
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
        ])
        .args(["--pbkdf-force-iterations", "1000", "--key-file"])
        .arg(&key_file)
        .arg(&img)
        .stdin(Stdio::null())
        .status()
        .expect("cryptsetup runs (tests/setup installs cryptsetup-bin)");
    assert!(status.success(), "cryptsetup luksFormat {}", img.display());
    (img, key_file)
}
