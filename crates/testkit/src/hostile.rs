//! A hostile HTTP server for the online installer's tests: it serves a directory as a static
//! server would, except where its rule says to send a file without end, or to redirect.
//! Plain HTTP/1.1, one request per connection, each on its own thread; stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the server answers for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The file from the directory, with its length, as a static server sends it (404 if it
    /// is not there).
    File,
    /// The file's bytes (if any), then `byte` for ever, with no length: only the client can
    /// end it.
    Endless(u8),
    /// `301 Moved Permanently` to this URL.
    Redirect(String),
}

/// The rule: the path asked for (without the leading `/`) → the answer.
pub type Rule = Box<dyn Fn(&str) -> Answer + Send + Sync>;

pub struct HostileServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileServer {
    /// Serves `dir` on 127.0.0.1 (a free port) by `rule`.
    pub fn start(dir: &Path, rule: Rule) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let dir = dir.to_path_buf();
        let rule = Arc::new(rule);
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (dir, rule, stopping) = (dir.clone(), rule.clone(), stopping.clone());
                std::thread::spawn(move || {
                    let _ = answer(conn, &dir, rule.as_ref(), &stopping);
                });
            }
        });
        HostileServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(conn: TcpStream, dir: &Path, rule: &Rule, stop: &AtomicBool) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let path = percent_decode(&path);
    let mut out = conn;
    let file: PathBuf = dir.join(&path);
    match rule(&path) {
        Answer::Redirect(to) => write!(
            out,
            "HTTP/1.1 301 Moved Permanently\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Answer::File => match std::fs::read(&file) {
            Ok(bytes) => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    bytes.len()
                )?;
                out.write_all(&bytes)
            }
            Err(_) => write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        },
        Answer::Endless(byte) => {
            write!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            if let Ok(mut f) = std::fs::File::open(&file) {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)?;
                out.write_all(&bytes)?;
            }
            let chunk = vec![byte; 64 << 10];
            while !stop.load(Ordering::SeqCst) {
                out.write_all(&chunk)?;
            }
            Ok(())
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
