//! The install steps as a type: each knows its name (in the log and the report) and whether a
//! failure there is a refusal (nothing has been written to any disk: exit 3) or a failure
//! (writing began: exit 1). `Run` carries the run through them, timing and logging each.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use crate::install::Options;
use crate::report::{Report, StepTime};
use crate::ui::Ui;

/// The steps of DESIGN §4, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    LoadPayload,
    SelectHost,
    ReadClosure,
    Plan,
    Verify,
    Confirm,
    Keys,
    TearDown,
    HoldDisk,
    Partition,
    Build,
    Format,
    CopyClosure,
    Mount,
    Register,
    Profile,
    ExtraFiles,
    Bootloader,
    Finish,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::LoadPayload => "load-payload",
            Step::SelectHost => "select-host",
            Step::ReadClosure => "read-closure",
            Step::Plan => "plan",
            Step::Verify => "verify",
            Step::Confirm => "confirm",
            Step::Keys => "keys",
            Step::TearDown => "tear-down",
            Step::HoldDisk => "hold-disk",
            Step::Partition => "partition",
            Step::Build => "build",
            Step::Format => "format",
            Step::CopyClosure => "copy-closure",
            Step::Mount => "mount",
            Step::Register => "register",
            Step::Profile => "profile",
            Step::ExtraFiles => "extra-files",
            Step::Bootloader => "bootloader",
            Step::Finish => "finish",
        }
    }

    /// Whether a stop here leaves every disk as it was: then the run was refused, not failed.
    /// (Tear down only unmounts and deactivates what an earlier attempt of ours left; holding
    /// the disks writes nothing.)
    pub fn before_any_write(self) -> bool {
        matches!(
            self,
            Step::LoadPayload
                | Step::SelectHost
                | Step::ReadClosure
                | Step::Plan
                | Step::Verify
                | Step::Confirm
                | Step::Keys
                | Step::TearDown
                | Step::HoldDisk
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A step that failed, and why.
#[derive(Debug)]
pub struct Fail(pub Step, pub String);

/// The run's state as it goes through the steps.
pub struct Run<'a> {
    pub opts: &'a Options,
    pub ui: &'a Ui,
    pub report: Report,
}

impl Run<'_> {
    /// Runs one step: timed, logged, and its error tagged with the step.
    pub fn step<T>(
        &mut self,
        step: Step,
        f: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, Fail> {
        let t = Instant::now();
        self.report.log(format!("{step}: start"));
        self.ui.status(|s| {
            s.step = Some(step.name().to_string());
            s.since = crate::report::now();
            s.progress = None;
        });
        let r = f(self);
        self.report.steps.push(StepTime {
            step,
            seconds: t.elapsed().as_secs_f64(),
            ok: r.is_ok(),
        });
        match r {
            Ok(v) => {
                let took = t.elapsed().as_secs_f64();
                self.report.log(format!("{step}: done in {took:.2} s"));
                Ok(v)
            }
            Err(e) => {
                self.report.log(format!("{step}: FAILED: {e}"));
                Err(Fail(step, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_steps_before_the_first_write_are_refusals() {
        let all = [
            Step::LoadPayload,
            Step::SelectHost,
            Step::ReadClosure,
            Step::Plan,
            Step::Verify,
            Step::Confirm,
            Step::TearDown,
            Step::HoldDisk,
            Step::Partition,
            Step::Format,
            Step::CopyClosure,
            Step::Mount,
            Step::Register,
            Step::Profile,
            Step::ExtraFiles,
            Step::Bootloader,
            Step::Finish,
        ];
        let first_write = all.iter().position(|s| !s.before_any_write()).unwrap();
        assert_eq!(all[first_write], Step::Partition);
        assert!(all[first_write..].iter().all(|s| !s.before_any_write()));
        // The names the report and the log use.
        assert_eq!(
            serde_json::to_string(&Step::CopyClosure).unwrap(),
            "\"copy-closure\""
        );
        assert_eq!(Step::CopyClosure.to_string(), "copy-closure");
    }
}
