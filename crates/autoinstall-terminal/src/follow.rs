//! Following the running installer from elsewhere (`autoinstall-terminal status --follow`,
//! what `mkinstaller --ssh` runs over SSH): one JSON line of the status each time it
//! changes, until the run has ended and its report is in the status (or the installer is
//! gone). A follower registers under /run while it follows, so that an installer about to
//! reboot or power off waits a little for it to read the end, and the admin sees how it
//! ended instead of a dropped connection.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::status::{self, Status};

/// Where followers register, one file per follower named by its pid.
pub const FOLLOWERS_DIR: &str = "/run/nixos-autoinstall/followers";
/// How long an installer about to reboot waits for its followers to read the end.
pub const WAIT_FOR_FOLLOWERS: Duration = Duration::from_secs(30);
/// Left in [`FOLLOWERS_DIR`] by a follower that has read the end.
const SEEN: &str = "seen";

/// A registration, removed when dropped (the follower has read the end, or has failed).
struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn register(dir: &Path) -> io::Result<Registered> {
    fs::create_dir_all(dir)?;
    let at = dir.join(std::process::id().to_string());
    fs::write(&at, b"")?;
    Ok(Registered(at))
}

/// Whether the run the status describes is over for a follower: its report is there, or its
/// process is gone (it died, or this is a stale file).
fn ended(s: &Status) -> bool {
    s.report.is_some() || (s.pid != 0 && !alive(s.pid))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Writes the status at `path` to `out` as one JSON line per change, polling every `poll`,
/// until the run has ended. A status file that is not there yet is waited for (the installer
/// may still be starting) for up to `appear`.
pub fn follow(
    path: &Path,
    followers: &Path,
    out: &mut dyn Write,
    poll: Duration,
    appear: Duration,
) -> Result<(), String> {
    let _registered = register(followers).map_err(|e| format!("{}: {e}", followers.display()))?;
    let started = Instant::now();
    let mut last: Option<Status> = None;
    loop {
        match status::read(path) {
            Ok(s) => {
                if last.as_ref() != Some(&s) {
                    let line = serde_json::to_string(&s).expect("a status serialises");
                    writeln!(out, "{line}")
                        .and_then(|()| out.flush())
                        .map_err(|e| format!("writing the status: {e}"))?;
                    if ended(&s) {
                        let _ = fs::write(followers.join(SEEN), b"");
                        return Ok(());
                    }
                    last = Some(s);
                } else if ended(&s) {
                    return Ok(());
                }
            }
            Err(_) if last.is_none() && started.elapsed() < appear => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(poll);
    }
}

/// Waits until every live follower has read the end and left, or `timeout` has passed;
/// with `awaited`, first until some follower has read the end at all (one that has not
/// connected yet: `mkinstaller --ssh` reconnects after the kexec reboot), for at most that
/// long. Returns how many were still there at the end, and whether the end was read.
pub fn wait_for_followers(
    dir: &Path,
    timeout: Duration,
    awaited: Option<Duration>,
) -> (usize, bool) {
    let started = Instant::now();
    if let Some(limit) = awaited {
        while !dir.join(SEEN).exists() && started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let started = Instant::now();
    loop {
        let live = live_followers(dir);
        if live == 0 || started.elapsed() >= timeout {
            return (live, dir.join(SEEN).exists());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn live_followers(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(alive)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusFile;

    #[test]
    fn a_follower_sees_each_change_and_stops_at_the_report() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("status.json");
        let followers = t.path().join("followers");
        let file = StatusFile::new(&path);
        let (p, f) = (path.clone(), followers.clone());
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            follow(
                &p,
                &f,
                &mut out,
                Duration::from_millis(10),
                Duration::from_secs(5),
            )
            .map(|()| String::from_utf8(out).unwrap())
        });
        // Registered while it follows: an installer about to reboot would wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while live_followers(&followers) == 0 {
            assert!(Instant::now() < deadline, "the follower never registered");
            std::thread::sleep(Duration::from_millis(5));
        }
        file.update(|s| s.step = Some("copy-closure".into()));
        file.update(|s| s.outcome = Some("installed".into()));
        file.update(|s| s.report = Some(serde_json::json!({"outcome": "installed"})));
        let text = reader.join().unwrap().unwrap();
        let last: Status = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last.outcome.as_deref(), Some("installed"));
        assert!(last.report.is_some());
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<Status>(l).is_ok()));
        assert_eq!(live_followers(&followers), 0, "it left when done");
        assert_eq!(
            wait_for_followers(&followers, Duration::ZERO, Some(Duration::from_secs(5))),
            (0, true),
            "the end was read"
        );
        // Awaited and never read: the wait ends at its limit, and says so.
        let none = t.path().join("nobody");
        let (left, read) =
            wait_for_followers(&none, Duration::ZERO, Some(Duration::from_millis(50)));
        assert_eq!((left, read), (0, false));
    }

    #[test]
    fn a_dead_installer_ends_the_follow_and_no_status_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("status.json");
        let dead = Status {
            pid: u32::MAX - 1,
            step: Some("copy-closure".into()),
            ..Status::default()
        };
        fs::write(&path, serde_json::to_vec(&dead).unwrap()).unwrap();
        let mut out = Vec::new();
        follow(
            &path,
            &t.path().join("f"),
            &mut out,
            Duration::from_millis(1),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
        let e = follow(
            &t.path().join("none.json"),
            &t.path().join("f"),
            &mut Vec::new(),
            Duration::from_millis(1),
            Duration::from_millis(20),
        )
        .unwrap_err();
        assert!(e.contains("no installer is running"), "{e}");
    }
}
