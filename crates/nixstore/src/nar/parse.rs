//! A pull parser for NARs: validates as it reads, holds one entry name per open directory and
//! never a file's contents, so memory stays bounded whatever the archive holds.

use std::io::{self, BufReader, Read};

use super::error::{NarError, NarErrorKind as K};
use super::{padding, MAGIC};

/// Longest entry name accepted (Linux's NAME_MAX).
pub const MAX_NAME_LEN: u64 = 255;
/// Longest symlink target accepted (Linux's PATH_MAX less the NUL).
pub const MAX_TARGET_LEN: u64 = 4095;
/// Deepest directory nesting accepted: far beyond any real store path, and it bounds the
/// parser's memory and the unpacker's open directory handles.
pub const MAX_DEPTH: usize = 256;
const MAX_TOKEN_LEN: u64 = 16;
const READ_BUFFER: usize = 256 * 1024;

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A file; its `size` bytes of contents are read with [`Parser::contents`] (or skipped).
    Regular {
        executable: bool,
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A directory; its entries follow, then [`Event::EndDirectory`].
    Directory,
}

/// One step through the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node: the root (name `None`) or an entry of the innermost open directory.
    Node { name: Option<Vec<u8>>, node: Node },
    /// The innermost open directory has no more entries.
    EndDirectory,
}

enum State {
    Start,
    /// Inside a regular file with this many content bytes not yet read.
    InFile {
        left: u64,
        size: u64,
    },
    InDirectory,
    End,
}

/// Reads events from a NAR stream. Every structural rule is checked before an event is
/// returned: a name that reaches the caller is a single, valid, correctly ordered component.
pub struct Parser<R: Read> {
    input: BufReader<R>,
    state: State,
    /// For each open directory, its name and the last entry name seen in it.
    stack: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The name of the node being read (for error messages).
    current: Option<Vec<u8>>,
}

impl<R: Read> Parser<R> {
    pub fn new(input: R) -> Self {
        Parser {
            input: BufReader::with_capacity(READ_BUFFER, input),
            state: State::Start,
            stack: Vec::new(),
            current: None,
        }
    }

    /// The entry path of the node being read, for messages (`a/b/c`, empty for the root).
    pub fn entry_path(&self) -> String {
        let mut parts: Vec<&[u8]> = self
            .stack
            .iter()
            .skip(1)
            .map(|(n, _)| n.as_slice())
            .collect();
        if let Some(cur) = &self.current {
            parts.push(cur);
        }
        parts
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn err(&self, kind: K) -> NarError {
        NarError::new(self.entry_path(), kind)
    }

    /// The next event, or `None` once the archive has ended (and nothing follows it).
    pub fn next_event(&mut self) -> Result<Option<Event>, NarError> {
        match std::mem::replace(&mut self.state, State::End) {
            State::Start => {
                let magic = self
                    .read_string(MAGIC.len() as u64)
                    .map_err(|e| match e.kind {
                        K::Truncated | K::TooLong { .. } => self.err(K::BadMagic),
                        _ => e,
                    })?;
                if magic != MAGIC {
                    return Err(self.err(K::BadMagic));
                }
                self.expect("(")?;
                let node = self.node_body()?;
                Ok(Some(Event::Node { name: None, node }))
            }
            State::InFile { left, size } => {
                self.skip(left)?;
                self.finish_file(size)?;
                self.next_event()
            }
            State::InDirectory => self.directory_step().map(Some),
            State::End => {
                let mut byte = [0u8; 1];
                match self.input.read(&mut byte) {
                    Ok(0) => Ok(None),
                    Ok(_) => Err(self.err(K::TrailingGarbage)),
                    Err(e) => Err(self.err(K::Io(e))),
                }
            }
        }
    }

    /// A reader over the contents of the regular file just announced. Reading it to the end is
    /// optional: whatever is left is skipped by the next call to [`Parser::next_event`].
    pub fn contents(&mut self) -> Contents<'_, R> {
        Contents { parser: self }
    }

    fn directory_step(&mut self) -> Result<Event, NarError> {
        self.current = None;
        let token = self.read_token()?;
        match token.as_slice() {
            b")" => {
                let (name, _) = self
                    .stack
                    .pop()
                    .expect("InDirectory implies an open directory");
                self.current = Some(name);
                self.finish_node()?;
                Ok(Event::EndDirectory)
            }
            b"entry" => {
                self.expect("(")?;
                self.expect("name")?;
                let name = self.read_string(MAX_NAME_LEN)?;
                self.check_name(&name)?;
                self.current = Some(name.clone());
                self.expect("node")?;
                self.expect("(")?;
                let node = self.node_body()?;
                Ok(Event::Node {
                    name: Some(name),
                    node,
                })
            }
            _ => Err(self.unexpected("entry or )", &token)),
        }
    }

    fn check_name(&mut self, name: &[u8]) -> Result<(), NarError> {
        let text = String::from_utf8_lossy(name).into_owned();
        let kind = if name.is_empty() {
            Some(K::EmptyName)
        } else if name == b"." || name == b".." {
            Some(K::DotName(text.clone()))
        } else if name.contains(&b'/') {
            Some(K::SlashInName(text.clone()))
        } else if name.contains(&0) {
            Some(K::NulInName(text.clone()))
        } else {
            None
        };
        if let Some(kind) = kind {
            self.current = None;
            return Err(self.err(kind));
        }
        let (_, last) = self
            .stack
            .last_mut()
            .expect("entries only occur in directories");
        match last.as_deref() {
            Some(prev) if prev == name => {
                self.current = None;
                return Err(self.err(K::Duplicate(text)));
            }
            Some(prev) if prev > name => {
                let previous = String::from_utf8_lossy(prev).into_owned();
                self.current = None;
                return Err(self.err(K::Misordered {
                    previous,
                    name: text,
                }));
            }
            _ => *last = Some(name.to_vec()),
        }
        Ok(())
    }

    /// Reads a node after its opening `(`, up to the point where the caller takes over:
    /// the start of a file's contents, or a directory's first entry.
    fn node_body(&mut self) -> Result<Node, NarError> {
        self.expect("type")?;
        let kind = self.read_token()?;
        match kind.as_slice() {
            b"regular" => {
                let mut token = self.read_token()?;
                let executable = token == b"executable";
                if executable {
                    self.expect("")?;
                    token = self.read_token()?;
                }
                if token != b"contents" {
                    return Err(self.unexpected("contents", &token));
                }
                let size = self.read_u64()?;
                self.state = State::InFile { left: size, size };
                Ok(Node::Regular { executable, size })
            }
            b"symlink" => {
                self.expect("target")?;
                let target = self.read_string(MAX_TARGET_LEN)?;
                if target.is_empty() || target.contains(&0) {
                    return Err(self.err(K::BadTarget(String::from_utf8_lossy(&target).into())));
                }
                self.expect(")")?;
                self.finish_node()?;
                Ok(Node::Symlink { target })
            }
            b"directory" => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(self.err(K::TooDeep(MAX_DEPTH)));
                }
                let name = self.current.take().unwrap_or_default();
                self.stack.push((name, None));
                self.state = State::InDirectory;
                Ok(Node::Directory)
            }
            other => Err(self.err(K::UnknownType(String::from_utf8_lossy(other).into()))),
        }
    }

    fn finish_file(&mut self, size: u64) -> Result<(), NarError> {
        self.read_padding(size)?;
        self.expect(")")?;
        self.finish_node()
    }

    /// After a node's closing `)`: close the directory entry around it, or end the archive.
    fn finish_node(&mut self) -> Result<(), NarError> {
        if self.stack.is_empty() {
            self.state = State::End;
        } else {
            self.expect(")")?;
            self.state = State::InDirectory;
        }
        Ok(())
    }

    fn unexpected(&self, expected: &'static str, found: &[u8]) -> NarError {
        self.err(K::Unexpected {
            expected,
            found: String::from_utf8_lossy(found).into(),
        })
    }

    fn expect(&mut self, token: &'static str) -> Result<(), NarError> {
        let found = self.read_token()?;
        if found != token.as_bytes() {
            return Err(self.unexpected(token, &found));
        }
        Ok(())
    }

    fn read_token(&mut self) -> Result<Vec<u8>, NarError> {
        self.read_string(MAX_TOKEN_LEN).map_err(|e| match e.kind {
            K::TooLong { len, .. } => {
                self.unexpected("a NAR keyword", format!("<{len} bytes>").as_bytes())
            }
            _ => e,
        })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.err(K::Truncated)
            } else {
                self.err(K::Io(e))
            }
        })
    }

    fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_string(&mut self, max: u64) -> Result<Vec<u8>, NarError> {
        let len = self.read_u64()?;
        if len > max {
            return Err(self.err(K::TooLong { len, max }));
        }
        let mut s = vec![0u8; len as usize];
        self.read_exact(&mut s)?;
        self.read_padding(len)?;
        Ok(s)
    }

    fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let mut pad = [0u8; 8];
        let n = padding(len);
        self.read_exact(&mut pad[..n])?;
        if pad[..n].iter().any(|&b| b != 0) {
            return Err(self.err(K::BadPadding));
        }
        Ok(())
    }

    fn skip(&mut self, mut left: u64) -> Result<(), NarError> {
        let mut sink = [0u8; 8192];
        while left > 0 {
            let n = left.min(sink.len() as u64) as usize;
            self.read_exact(&mut sink[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// The underlying reader, once the archive has ended.
    pub fn into_inner(self) -> R {
        self.input.into_inner()
    }
}

/// The contents of one regular file, read straight from the archive stream.
pub struct Contents<'a, R: Read> {
    parser: &'a mut Parser<R>,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let State::InFile { left, size } = self.parser.state else {
            return Ok(0);
        };
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (left.min(buf.len() as u64)) as usize;
        let n = self.parser.input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a file (truncated)",
            ));
        }
        self.parser.state = State::InFile {
            left: left - n as u64,
            size,
        };
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, t: &[u8]) {
        out.extend_from_slice(&(t.len() as u64).to_le_bytes());
        out.extend_from_slice(t);
        out.resize(out.len() + padding(t.len() as u64), 0);
    }

    fn events(nar: &[u8]) -> Result<Vec<Event>, NarError> {
        let mut p = Parser::new(nar);
        let mut out = Vec::new();
        while let Some(e) = p.next_event()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn parses_a_small_tree() {
        let mut nar = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"a",
            b"node",
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"",
            b"contents",
        ] {
            s(&mut nar, t);
        }
        s(&mut nar, b"hi!");
        for t in [
            &b")"[..],
            b")",
            b"entry",
            b"(",
            b"name",
            b"b",
            b"node",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"a",
            b")",
            b")",
            b")",
        ] {
            s(&mut nar, t);
        }
        assert_eq!(
            events(&nar).unwrap(),
            vec![
                Event::Node {
                    name: None,
                    node: Node::Directory
                },
                Event::Node {
                    name: Some(b"a".to_vec()),
                    node: Node::Regular {
                        executable: true,
                        size: 3
                    }
                },
                Event::Node {
                    name: Some(b"b".to_vec()),
                    node: Node::Symlink {
                        target: b"a".to_vec()
                    }
                },
                Event::EndDirectory,
            ]
        );
    }

    #[test]
    fn huge_lengths_do_not_allocate() {
        let mut nar = Vec::new();
        s(&mut nar, b"nix-archive-1");
        s(&mut nar, b"(");
        nar.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = events(&nar).unwrap_err();
        assert!(matches!(err.kind, K::Unexpected { .. }), "{err}");
    }
}
