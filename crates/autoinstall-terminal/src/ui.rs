//! The console: step lines, progress bars, the confirmation countdown and the menus. With no
//! terminal (or `--yes`), nothing waits for a key that nobody can press.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, LocalFlags, SetArg};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::status::{take_answer, Progress, Prompt, Status, StatusFile, ANSWER_FILE};

pub struct Ui {
    /// No step lines or bars (errors still go to stderr).
    pub quiet: bool,
    /// stdin is a terminal that someone may answer on.
    pub interactive: bool,
    /// The run's state for `autoinstall-terminal status`, if kept.
    pub status: Option<StatusFile>,
    /// Someone may answer from elsewhere (the live installer takes SSH logins): prompts wait
    /// for `autoinstall-terminal answer` even without a console.
    pub remote: AtomicBool,
}

/// How long a prompt with no console waits for a remote answer.
const REMOTE_WAIT: Duration = Duration::from_secs(3600);
/// How often a waiting prompt looks for a remote answer.
const POLL: Duration = Duration::from_millis(250);

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        Ui {
            quiet,
            interactive: io::stdin().is_terminal(),
            status: None,
            remote: AtomicBool::new(false),
        }
    }

    /// Changes the run's status (when kept).
    pub fn status(&self, f: impl FnOnce(&mut Status)) {
        if let Some(s) = &self.status {
            s.update(f);
        }
    }

    /// Counts `n` more bytes of the progress the status shows.
    pub fn advance(&self, n: u64) {
        if let Some(s) = &self.status {
            s.advance(n);
        }
    }

    fn remote(&self) -> bool {
        self.remote.load(Ordering::Relaxed)
    }

    /// Shows a prompt in the status, and takes it away when `f` is done.
    fn prompting<T>(&self, question: &str, choices: &[String], f: impl FnOnce() -> T) -> T {
        self.status(|s| {
            s.prompt = Some(Prompt {
                question: question.to_string(),
                choices: choices.to_vec(),
            })
        });
        // An answer left before this prompt was shown answers nothing.
        let _ = take_answer(Path::new(ANSWER_FILE));
        let r = f();
        self.status(|s| s.prompt = None);
        r
    }

    /// One line of what is happening, on stderr.
    pub fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// A byte progress bar (hidden when quiet or not on a terminal).
    pub fn bytes_bar(&self, total: u64, what: &str) -> ProgressBar {
        self.status(|s| {
            s.progress = Some(Progress {
                what: what.to_string(),
                done: 0,
                total,
            })
        });
        if self.quiet || !io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(
            Some(total),
            ProgressDrawTarget::stderr_with_hz(redraws_per_second()),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar
    }

    /// Shows `text`, then counts `seconds` down. Returns false if a key was pressed (abort).
    /// Without a terminal it just waits, so an unattended machine carries on.
    pub fn countdown(&self, text: &str, seconds: u32) -> bool {
        eprintln!("{text}");
        if seconds == 0 {
            return true;
        }
        let question = format!("install now? (in {seconds} s unless stopped)");
        self.prompting(&question, &[], || {
            let raw = self.interactive.then(RawMode::enter).and_then(Result::ok);
            for left in (1..=seconds).rev() {
                eprint!("\rinstalling in {left:>3} s; press any key to stop ");
                let _ = io::stderr().flush();
                let second = std::time::Instant::now();
                while second.elapsed() < Duration::from_secs(1) {
                    if let Some(a) = take_answer(Path::new(ANSWER_FILE)) {
                        let go = matches!(a.to_lowercase().as_str(), "y" | "yes" | "go");
                        eprintln!(
                            "\n{} (answered from elsewhere)",
                            if go {
                                "installing now"
                            } else {
                                "stopped: nothing was touched"
                            }
                        );
                        return go;
                    }
                    if raw.is_some() {
                        if key_within(POLL).is_some() {
                            eprintln!("\nstopped: nothing was touched");
                            return false;
                        }
                    } else {
                        std::thread::sleep(POLL);
                    }
                }
            }
            drop(raw);
            eprintln!("\rinstalling now{:40}", "");
            true
        })
    }

    /// A menu: arrow keys move, typing filters, Enter picks, Esc cancels. Returns the index
    /// into `items`, or None (cancelled, or no terminal to ask on).
    pub fn menu(&self, title: &str, items: &[String]) -> Option<usize> {
        if items.is_empty() || !(self.interactive || self.remote()) {
            return None;
        }
        self.prompting(title, items, || self.menu_now(title, items))
    }

    fn menu_now(&self, title: &str, items: &[String]) -> Option<usize> {
        let remote_pick = |a: String| {
            a.parse::<usize>()
                .ok()
                .filter(|n| (1..=items.len()).contains(n))
                .map(|n| n - 1)
        };
        if !self.interactive {
            eprintln!("{title}\n(waiting for `autoinstall-terminal answer NUMBER` from elsewhere)");
            let start = std::time::Instant::now();
            while start.elapsed() < REMOTE_WAIT {
                if let Some(a) = take_answer(Path::new(ANSWER_FILE)) {
                    if let Some(i) = remote_pick(a) {
                        return Some(i);
                    }
                }
                std::thread::sleep(POLL);
            }
            return None;
        }
        let raw = RawMode::enter().ok()?;
        let mut query = String::new();
        let mut cursor = 0usize;
        loop {
            let shown: Vec<usize> = (0..items.len())
                .filter(|i| items[*i].to_lowercase().contains(&query.to_lowercase()))
                .collect();
            cursor = cursor.min(shown.len().saturating_sub(1));
            let mut out = format!("\x1b[2J\x1b[H{title}\r\n\r\nsearch: {query}\r\n\r\n");
            for (row, i) in shown.iter().enumerate() {
                let mark = if row == cursor { "> " } else { "  " };
                out += &format!("{mark}{}\r\n", items[*i]);
            }
            out += "\r\n(up/down to move, type to search, Enter to choose, Esc to cancel)\r\n";
            eprint!("{out}");
            let _ = io::stderr().flush();
            let key = loop {
                if let Some(i) = take_answer(Path::new(ANSWER_FILE)).and_then(remote_pick) {
                    drop(raw);
                    return Some(i);
                }
                match key_within(POLL) {
                    Some(k) => break Some(k),
                    None if !stdin_open() => break None,
                    None => {}
                }
            };
            match key {
                Some(Key::Up) => cursor = cursor.saturating_sub(1),
                Some(Key::Down) => cursor = (cursor + 1).min(shown.len().saturating_sub(1)),
                Some(Key::Enter) => {
                    if let Some(i) = shown.get(cursor) {
                        drop(raw);
                        return Some(*i);
                    }
                }
                Some(Key::Backspace) => {
                    query.pop();
                }
                Some(Key::Char(c)) => query.push(c),
                Some(Key::Escape) | None => {
                    drop(raw);
                    return None;
                }
            }
        }
    }

    /// Reads a passphrase on the terminal without echo (one line; its newline dropped); no
    /// terminal, end of input or an empty line means none.
    pub fn secret(&self, prompt: &str) -> Option<String> {
        if !self.interactive {
            return None;
        }
        eprint!("{prompt}");
        let _ = io::stderr().flush();
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet).ok()?;
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &saved);
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        (read.is_ok_and(|n| n > 0) && !line.is_empty()).then_some(line)
    }

    /// Asks a yes/no question that defaults to no: only `y` within `seconds` says yes; any
    /// other key, the time running out, or no terminal at all, says no.
    pub fn yes_within(&self, question: &str, seconds: u32) -> bool {
        if seconds == 0 || !(self.interactive || self.remote()) {
            return false;
        }
        eprint!("{question} [y/N, no in {seconds} s] ");
        let _ = io::stderr().flush();
        let yes = self.prompting(question, &[], || {
            let raw = self.interactive.then(RawMode::enter).and_then(Result::ok);
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(seconds as u64) {
                if let Some(a) = take_answer(Path::new(ANSWER_FILE)) {
                    return matches!(a.to_lowercase().as_str(), "y" | "yes");
                }
                if raw.is_some() {
                    match key_within(POLL) {
                        Some(Key::Char('y' | 'Y')) => return true,
                        Some(_) => return false,
                        None => {}
                    }
                } else {
                    std::thread::sleep(POLL);
                }
            }
            false
        });
        eprintln!("{}", if yes { "yes" } else { "no" });
        yes
    }

    /// Asks a yes/no question on the terminal; no terminal means no.
    pub fn ask_yes(&self, question: &str) -> bool {
        if !self.interactive {
            return false;
        }
        eprint!("{question} [y/N] ");
        let _ = io::stderr().flush();
        let mut line = String::new();
        io::stdin().read_line(&mut line).is_ok() && line.trim().eq_ignore_ascii_case("y")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Up,
    Down,
    Enter,
    Escape,
    Backspace,
    Char(char),
}

/// Whether stdin can still give keys (a closed terminal ends a menu).
fn stdin_open() -> bool {
    let stdin = io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0
        && fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)))
}

/// The next key on stdin within `wait`, if any.
fn key_within(wait: Duration) -> Option<Key> {
    let stdin = io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    let mut buf = [0u8; 8];
    let n = stdin.lock().read(&mut buf).ok()?;
    Some(match &buf[..n] {
        [] => return None,
        [0x1b, b'[', b'A', ..] | [0x1b, b'O', b'A', ..] => Key::Up,
        [0x1b, b'[', b'B', ..] | [0x1b, b'O', b'B', ..] => Key::Down,
        [0x1b, ..] => Key::Escape,
        [b'\r', ..] | [b'\n', ..] => Key::Enter,
        [0x7f, ..] | [0x08, ..] => Key::Backspace,
        [c, ..] if c.is_ascii_graphic() || *c == b' ' => Key::Char(*c as char),
        _ => Key::Escape,
    })
}

/// The terminal in raw mode (no echo, no line buffering) for as long as this lives.
struct RawMode {
    saved: termios::Termios,
}

impl RawMode {
    fn enter() -> io::Result<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// How often bars redraw. A serial console at 115200 baud moves about 11 KB/s, and a redraw
/// with its escape codes is a few hundred bytes: at indicatif's usual 20 per second the bar
/// alone would take half the line. Serial consoles (the installer's ttyS*, or TERM=vt*) get 2.
fn redraws_per_second() -> u8 {
    let tty = std::fs::read_link("/proc/self/fd/2")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let term = std::env::var("TERM").unwrap_or_default();
    if tty.starts_with("/dev/ttyS") || tty.starts_with("/dev/ttyAMA") || term.starts_with("vt") {
        2
    } else {
        15
    }
}
