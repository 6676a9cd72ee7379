//! Errors that point into a file: `hosts.toml:12:5: …`, as compilers print them, so that
//! editors jump to the spot.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An error at a place in a text file. `line` and `column` are 1-based; 0 means "the file as
/// a whole".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl LocatedError {
    pub fn whole(file: &Path, message: impl Into<String>) -> Self {
        LocatedError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }

    /// An error at the byte span `span` of `text`.
    pub fn at(file: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let (line, column) = line_col(text, span.start);
        LocatedError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for LocatedError {}

/// Turns a TOML parse or schema error into a located one, keeping the message short.
pub fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> LocatedError {
    let message = err.message().trim().to_string();
    match err.span() {
        Some(span) => LocatedError::at(file, text, span, message),
        None => LocatedError::whole(file, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
        let e = LocatedError::at(Path::new("h.toml"), text, 6..8, "bad");
        assert_eq!(e.to_string(), "h.toml:2:1: bad");
    }
}
