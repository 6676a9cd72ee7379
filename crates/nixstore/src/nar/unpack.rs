//! Unpacking a NAR into a directory, safe by construction.
//!
//! Every name the parser hands over is one validated component, and every object is created
//! relative to an open handle of its parent directory with `O_EXCL`/`mkdirat`/`symlinkat`,
//! which never follow a symlink in the last component and fail if anything already exists.
//! Directories are entered by handle with `O_NOFOLLOW`. So no entry can land outside the
//! target, overwrite anything, or be redirected by a symlink the archive itself created.
//! Modes and times are set canonically as Nix does: 0444 or 0555, mtime 1.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::symlinkat;

use super::error::{NarError, NarErrorKind};
use super::parse::{Event, Node, Parser};

const COPY_BUFFER: usize = 256 * 1024;

/// What an unpack wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Bytes of file contents.
    pub bytes: u64,
}

/// Unpacks the NAR read from `input` as `parent/name`, which must not exist yet. `parent` is
/// trusted (the caller picked it); nothing from the archive is. On error, whatever was
/// already created stays for the caller to remove (see [`crate::import::remove_tree`]).
/// Returns the input reader, read to its end, so a hashing reader can be finished.
pub fn unpack<R: Read>(
    input: R,
    parent: &Path,
    name: &OsStr,
) -> Result<(UnpackStats, R), NarError> {
    let root_err = |what: &str, e: Errno| {
        NarError::new(
            String::new(),
            NarErrorKind::Io(io::Error::new(
                io::Error::from(e).kind(),
                format!("{what} {}: {}", parent.display(), e.desc()),
            )),
        )
    };
    let parent_fd = openat(
        None,
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| root_err("opening target directory", e))?;
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    let parent_fd = unsafe { OwnedFd::from_raw_fd(parent_fd) };

    let mut parser = Parser::new(input);
    let mut stats = UnpackStats::default();
    let mut buf = vec![0u8; COPY_BUFFER];
    // Open directories, innermost last. The bottom entry is the caller's parent.
    let mut dirs: Vec<OwnedFd> = vec![parent_fd];
    let root_name = name.as_bytes().to_vec();

    while let Some(event) = parser.next_event()? {
        match event {
            Event::Node { name, node } => {
                let name = name.unwrap_or_else(|| root_name.clone());
                let dir = dirs.last().expect("the parent stays open").as_raw_fd();
                let io_err = |parser: &Parser<R>, what: &str, e: io::Error| {
                    NarError::new(
                        parser.entry_path(),
                        NarErrorKind::Io(io::Error::new(e.kind(), format!("{what}: {e}"))),
                    )
                };
                let os_name = OsStr::from_bytes(&name);
                match node {
                    Node::Regular { executable, size } => {
                        let mode = if executable { 0o555 } else { 0o444 };
                        // Created with its final mode when the umask keeps it (the new
                        // descriptor may write all the same): one system call fewer per file.
                        let born_right = mode & umask() == 0;
                        let fd = openat(
                            Some(dir),
                            os_name,
                            OFlag::O_WRONLY
                                | OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(if born_right { mode } else { 0o600 }),
                        )
                        .map_err(|e| io_err(&parser, "creating file", e.into()))?;
                        // SAFETY: a fresh descriptor from openat, owned by nobody else.
                        let mut file = unsafe { File::from_raw_fd(fd) };
                        let copied = copy_contents(&mut parser.contents(), &mut file, &mut buf);
                        let written = match copied {
                            Ok(n) => n,
                            Err(Copy::Read(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                return Err(NarError::new(
                                    parser.entry_path(),
                                    NarErrorKind::Truncated,
                                ))
                            }
                            Err(Copy::Read(e)) => {
                                return Err(io_err(&parser, "reading archive", e))
                            }
                            Err(Copy::Write(e)) => return Err(io_err(&parser, "writing file", e)),
                        };
                        debug_assert_eq!(written, size);
                        let fd = file.as_raw_fd();
                        if born_right {
                            futimens(fd, &epoch_one(), &epoch_one())
                        } else {
                            canonicalise(fd, mode)
                        }
                        .map_err(|e| io_err(&parser, "setting mode and time", e.into()))?;
                        stats.files += 1;
                        stats.bytes += size;
                    }
                    Node::Symlink { target } => {
                        symlinkat(OsStr::from_bytes(&target), Some(dir), os_name)
                            .map_err(|e| io_err(&parser, "creating symlink", e.into()))?;
                        utimensat(
                            Some(dir),
                            os_name,
                            &epoch_one(),
                            &epoch_one(),
                            UtimensatFlags::NoFollowSymlink,
                        )
                        .map_err(|e| io_err(&parser, "setting symlink time", e.into()))?;
                        stats.symlinks += 1;
                    }
                    Node::Directory => {
                        mkdirat(Some(dir), os_name, Mode::from_bits_truncate(0o700))
                            .map_err(|e| io_err(&parser, "creating directory", e.into()))?;
                        let fd = openat(
                            Some(dir),
                            os_name,
                            OFlag::O_RDONLY
                                | OFlag::O_DIRECTORY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| io_err(&parser, "opening directory", e.into()))?;
                        // SAFETY: a fresh descriptor from openat, owned by nobody else.
                        dirs.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        stats.directories += 1;
                    }
                }
            }
            Event::EndDirectory => {
                let dir = dirs.pop().expect("EndDirectory follows a Directory");
                // Last, so that creating the entries does not undo the time, and so that a
                // non-root caller could still write into it until now.
                canonicalise(dir.as_raw_fd(), 0o555).map_err(|e| {
                    NarError::new(
                        parser.entry_path(),
                        NarErrorKind::Io(io::Error::new(
                            io::Error::from(e).kind(),
                            format!("setting directory mode and time: {}", e.desc()),
                        )),
                    )
                })?;
            }
        }
    }
    Ok((stats, parser.into_inner()))
}

enum Copy {
    Read(io::Error),
    Write(io::Error),
}

fn copy_contents(from: &mut impl Read, to: &mut File, buf: &mut [u8]) -> Result<u64, Copy> {
    let mut written = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
        written += n as u64;
    }
}

/// The process's umask, read once (from /proc: the umask call itself would change it, racing
/// with other threads); all bits set when it cannot be read, so modes are always set
/// explicitly then.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

fn epoch_one() -> TimeSpec {
    TimeSpec::new(1, 0)
}

fn canonicalise(fd: i32, mode: u32) -> nix::Result<()> {
    fchmod(fd, Mode::from_bits_truncate(mode))?;
    futimens(fd, &epoch_one(), &epoch_one())
}

/// Reads a whole NAR from `input` and checks every structural rule [`unpack`] checks, writing
/// nothing: the installer runs this over a closure before it touches any disk, so a hostile
/// archive is refused while the disk is still untouched.
pub fn check<R: Read>(input: R) -> Result<(UnpackStats, R), NarError> {
    let mut parser = Parser::new(input);
    let mut stats = UnpackStats::default();
    while let Some(event) = parser.next_event()? {
        match event {
            Event::Node {
                node: Node::Regular { size, .. },
                ..
            } => {
                stats.files += 1;
                stats.bytes += size;
            }
            Event::Node {
                node: Node::Symlink { .. },
                ..
            } => stats.symlinks += 1,
            Event::Node {
                node: Node::Directory,
                ..
            } => stats.directories += 1,
            Event::EndDirectory => {}
        }
    }
    Ok((stats, parser.into_inner()))
}
