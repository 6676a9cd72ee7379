//! Standard output for a tool whose output is piped: `mkinstaller inspect IMG | head` or
//! `| grep -q` closes the pipe early, and that is the reader's choice, not a failure. `print!`
//! would panic on the closed pipe (Rust ignores SIGPIPE), and restoring SIGPIPE would kill a
//! builder mid-write to a child's pipe; so output goes through here, where a closed pipe ends
//! the output quietly and any other error is reported.

use std::io::{self, Write};

/// Writes `text` to standard output; a reader that went away is not an error.
pub fn stdout(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}
