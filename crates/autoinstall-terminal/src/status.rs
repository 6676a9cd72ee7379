//! The running installer's state, for whoever looks from elsewhere (an admin over SSH):
//! a small JSON file under /run, replaced whole at every change (so a reader never sees half
//! of one), read by `autoinstall-terminal status [--json]`. And the way back: a prompt
//! waiting on the console also takes its answer from `autoinstall-terminal answer VALUE`,
//! which leaves it in a file the prompt polls.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use util::size::human;

pub const STATUS_FILE: &str = "/run/nixos-autoinstall/status.json";
pub const ANSWER_FILE: &str = "/run/nixos-autoinstall/answer";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub pid: u32,
    pub serial: Option<String>,
    pub host: Option<String>,
    /// The step under way, and since when (Unix seconds).
    pub step: Option<String>,
    pub since: u64,
    pub progress: Option<Progress>,
    /// The plan, as the console shows it before the confirmation.
    pub plan: Option<String>,
    /// A question waiting for an answer (on the console, or `autoinstall-terminal answer`).
    pub prompt: Option<Prompt>,
    /// How the run ended, once it has.
    pub outcome: Option<String>,
    /// The run's report, once it is final: what a follower (`status --follow`) ends with.
    pub report: Option<serde_json::Value>,
    pub updated: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub what: String,
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prompt {
    pub question: String,
    /// The choices, answered by their number (from 1); empty: a yes/no question.
    pub choices: Vec<String>,
}

/// The status file of this run, written as the run goes (progress at most once a second).
pub struct StatusFile {
    path: PathBuf,
    state: Mutex<(Status, Option<Instant>)>,
}

impl StatusFile {
    pub fn new(path: &Path) -> StatusFile {
        let s = StatusFile {
            path: path.to_path_buf(),
            state: Mutex::new((
                Status {
                    pid: std::process::id(),
                    ..Status::default()
                },
                None,
            )),
        };
        s.update(|_| {});
        s
    }

    /// Changes the status and writes it.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut g = self.state.lock().unwrap();
        f(&mut g.0);
        g.0.updated = crate::report::now();
        g.1 = Some(Instant::now());
        self.write(&g.0);
    }

    /// Adds `n` bytes to the progress; written at most once a second.
    pub fn advance(&self, n: u64) {
        let mut g = self.state.lock().unwrap();
        if let Some(p) = &mut g.0.progress {
            p.done += n;
        }
        if g.1.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        g.0.updated = crate::report::now();
        g.1 = Some(Instant::now());
        self.write(&g.0);
    }

    /// The status is for others to read: a failure to write it costs the install nothing.
    fn write(&self, s: &Status) {
        let _ = write_atomically(
            &self.path,
            &serde_json::to_vec_pretty(s).expect("serialises"),
        );
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(tmp, path)
}

/// The status as `autoinstall-terminal status` prints it.
pub fn describe(s: &Status, now: u64) -> String {
    let mut out = format!(
        "installer pid {}: host {}, serial {}\n",
        s.pid,
        s.host.as_deref().unwrap_or("not chosen yet"),
        s.serial.as_deref().unwrap_or("none")
    );
    match (&s.outcome, &s.step) {
        (Some(o), _) => out += &format!("ended: {o}\n"),
        (None, Some(step)) => {
            out += &format!("step {step}, for {} s\n", now.saturating_sub(s.since))
        }
        (None, None) => out += "starting\n",
    }
    if let Some(p) = &s.progress {
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(0);
        out += &format!(
            "{} {pct}% ({} of {})\n",
            p.what,
            human(p.done),
            human(p.total)
        );
    }
    if let Some(q) = &s.prompt {
        out += &format!("waiting for an answer: {}\n", q.question);
        for (i, c) in q.choices.iter().enumerate() {
            out += &format!("  {}. {c}\n", i + 1);
        }
        out += if q.choices.is_empty() {
            "answer with: autoinstall-terminal answer yes|no\n"
        } else {
            "answer with: autoinstall-terminal answer NUMBER\n"
        };
    }
    if let Some(p) = &s.plan {
        out += "\n";
        out += p;
    }
    out
}

/// Reads the status of the running installer.
pub fn read(path: &Path) -> Result<Status, String> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{}: no installer is running here", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Leaves `value` for the prompt waiting now.
pub fn answer(path: &Path, value: &str) -> Result<(), String> {
    write_atomically(path, value.trim().as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The answer left for a prompt, taken (so it answers one prompt only).
pub fn take_answer(path: &Path) -> Option<String> {
    let a = fs::read_to_string(path).ok()?;
    let _ = fs::remove_file(path);
    Some(a.trim().to_string()).filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_read_back_and_described() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("run/status.json");
        let f = StatusFile::new(&path);
        f.update(|s| {
            s.host = Some("demo-1".into());
            s.step = Some("copy-closure".into());
            s.since = 100;
            s.progress = Some(Progress {
                what: "copy".into(),
                done: 0,
                total: 4 << 20,
            });
        });
        f.advance(1 << 20);
        let s = read(&path).unwrap();
        assert_eq!(s.host.as_deref(), Some("demo-1"));
        // Progress is written at most once a second: the last update was just now.
        assert_eq!(s.progress.as_ref().unwrap().done, 0);
        f.update(|s| {
            s.prompt = Some(Prompt {
                question: "Choose the host".into(),
                choices: vec!["demo-1".into(), "demo-2".into()],
            })
        });
        let text = describe(&read(&path).unwrap(), 112);
        assert!(text.contains("step copy-closure, for 12 s"), "{text}");
        assert!(text.contains("copy 25% (1 MiB of 4 MiB)"), "{text}");
        assert!(text.contains("  2. demo-2\n"), "{text}");

        let a = t.path().join("run/answer");
        assert_eq!(take_answer(&a), None);
        answer(&a, " 2\n").unwrap();
        assert_eq!(take_answer(&a).as_deref(), Some("2"));
        assert_eq!(take_answer(&a), None, "an answer answers one prompt");
        assert!(read(&t.path().join("none.json"))
            .unwrap_err()
            .contains("no installer is running"));
    }
}
