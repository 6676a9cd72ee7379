//! What the admin sees of an installer followed over SSH: the JSON lines of
//! `autoinstall-terminal status --follow` turned into a few lines (the host chosen, each step,
//! a question waiting) and a progress bar, then how the run ended, from its report.

use serde::Deserialize;

use crate::reports::Report;

/// What is read of one status line (the installer's `status::Status`); every field may be
/// missing, so installers of other versions still follow.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Followed {
    pub serial: Option<String>,
    pub host: Option<String>,
    pub step: Option<String>,
    pub progress: Option<Progress>,
    pub prompt: Option<Prompt>,
    pub outcome: Option<String>,
    pub report: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub what: String,
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Prompt {
    pub question: String,
    pub choices: Vec<String>,
}

/// What changed since the last line, for the screen.
#[derive(Debug, Default)]
pub struct Shown {
    pub lines: Vec<String>,
    pub progress: Option<Progress>,
    /// The run's report, once it has ended: read, and as the installer wrote it.
    pub report: Option<(Report, serde_json::Value)>,
}

/// Follows one run; `answer` is how the admin answers a question (the ssh command line).
#[derive(Debug, Default)]
pub struct Tracker {
    last: Followed,
    pub answer: String,
}

impl Tracker {
    pub fn new(answer: String) -> Tracker {
        Tracker {
            last: Followed::default(),
            answer,
        }
    }

    /// Takes one line of `status --follow`.
    pub fn line(&mut self, line: &str) -> Result<Shown, String> {
        let s: Followed = serde_json::from_str(line).map_err(|e| {
            format!("the installer's status is not what this mkinstaller reads ({e}): {line:.200}")
        })?;
        let mut shown = Shown::default();
        if s.host.is_some() && s.host != self.last.host {
            shown.lines.push(format!(
                "installer: host {} (serial {})",
                s.host.as_deref().unwrap_or("?"),
                s.serial.as_deref().unwrap_or("none")
            ));
        }
        if let Some(step) = s.step.as_ref().filter(|_| s.step != self.last.step) {
            shown.lines.push(format!("installer: {step}"));
        }
        if let Some(p) = s
            .prompt
            .as_ref()
            .filter(|&p| Some(p) != self.last.prompt.as_ref())
        {
            shown
                .lines
                .push(format!("installer: waiting for an answer: {}", p.question));
            for (i, c) in p.choices.iter().enumerate() {
                shown.lines.push(format!("  {}. {c}", i + 1));
            }
            let value = if p.choices.is_empty() {
                "yes|no"
            } else {
                "NUMBER"
            };
            shown.lines.push(format!(
                "  answer with: {} autoinstall-terminal answer {value}",
                self.answer
            ));
        }
        if s.progress != self.last.progress {
            shown.progress = s.progress.clone();
        }
        if let Some(r) = &s.report {
            let read = serde_json::from_value(r.clone())
                .map_err(|e| format!("the installer's report does not read: {e}"))?;
            shown.report = Some((read, r.clone()));
        }
        self.last = s;
        Ok(shown)
    }

    /// The step the installer was at, for a message when it is lost.
    pub fn step(&self) -> Option<&str> {
        self.last.step.as_deref()
    }
}

/// The exit status and the line for how a run ended, as `autoinstall-terminal` itself
/// would give them: 0 installed (or nothing to do), 3 refused (nothing written), 1 failed.
pub fn ending(r: &Report) -> (u8, String) {
    let host = r.host.as_deref().unwrap_or("?");
    let disk = r.disk.as_ref().map_or("?", |d| d.path.as_str());
    let why = r
        .error
        .as_ref()
        .map(|e| format!(" at step {}: {}", e.step, e.message))
        .unwrap_or_default();
    match r.outcome.as_str() {
        "installed" => (
            0,
            format!("installed {host} on {disk} in {:.0} s", r.seconds),
        ),
        "already-installed" => (
            0,
            format!("{host} is already installed on {disk}: not installed again"),
        ),
        "enrolled" => (
            0,
            "the machine was recorded as pending (its serial is in no host): no disk was touched"
                .to_string(),
        ),
        "refused" => (
            3,
            format!("the installer refused{why}; nothing was written"),
        ),
        "failed" => (
            1,
            format!("the install failed{why}; the disk has no boot entry (run again)"),
        ),
        other => (1, format!("the installer ended with {other:?}{why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_questions_and_the_end_are_shown_once() {
        let mut t = Tracker {
            answer: "ssh root@h".into(),
            ..Tracker::default()
        };
        let a = t
            .line(r#"{"pid":7,"serial":"SN-2","host":"demo-2","step":"partition"}"#)
            .unwrap();
        assert_eq!(
            a.lines,
            [
                "installer: host demo-2 (serial SN-2)",
                "installer: partition"
            ]
        );
        let b = t
            .line(r#"{"pid":7,"serial":"SN-2","host":"demo-2","step":"partition","progress":{"what":"copy","done":5,"total":10}}"#)
            .unwrap();
        assert!(b.lines.is_empty());
        assert_eq!(b.progress.unwrap().done, 5);
        let c = t
            .line(r#"{"host":"demo-2","step":"confirm","prompt":{"question":"Install?","choices":[]}}"#)
            .unwrap();
        assert_eq!(c.lines[1], "installer: waiting for an answer: Install?");
        assert_eq!(
            c.lines[2],
            "  answer with: ssh root@h autoinstall-terminal answer yes|no"
        );
        let end = t
            .line(r#"{"host":"demo-2","outcome":"installed","report":{"outcome":"installed","host":"demo-2","disk":{"path":"/dev/vdb"},"seconds":61.2}}"#)
            .unwrap();
        let (code, said) = ending(&end.report.unwrap().0);
        assert_eq!(
            (code, said.as_str()),
            (0, "installed demo-2 on /dev/vdb in 61 s")
        );
        assert!(t.line("not json").unwrap_err().contains("not json"));
    }

    #[test]
    fn refusals_and_failures_keep_the_installers_exit_status() {
        let r: Report = serde_json::from_str(
            r#"{"outcome":"refused","error":{"step":"choose-disk","message":"no disk"}}"#,
        )
        .unwrap();
        assert_eq!(
            ending(&r),
            (
                3,
                "the installer refused at step choose-disk: no disk; nothing was written".into()
            )
        );
        let f: Report = serde_json::from_str(r#"{"outcome":"failed"}"#).unwrap();
        assert_eq!(ending(&f).0, 1);
    }
}
