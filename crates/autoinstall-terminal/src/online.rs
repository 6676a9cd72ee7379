//! The online payload: a `mkinstaller --format cache` site read over HTTP(S), as a
//! [`Payload`] so the offline pipeline (narinfos, signatures, decompress, unpack) runs on it
//! unchanged. Files stream as they are read. A refused connection, a timeout, a server error
//! (5xx) or a connection that drops mid-file is retried after a growing pause, and a file that
//! was partly read resumes where it stopped (a `Range` request): a server restarted mid-copy
//! costs a pause, not the install. A file the server does not have (404) is never retried and
//! never replaced by anything else: the caller refuses.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media::read::Payload;

/// How hard to try before giving up on a file, and how slow a file may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts per file, the first included.
    pub attempts: u32,
    /// The pause after the first failure; it doubles after each further one.
    pub first_pause: Duration,
    pub max_pause: Duration,
    /// Every file must come at `min_rate` bytes per second on average once `grace` has
    /// passed since it was first asked for: a server that trickles (a byte every few seconds
    /// keeps each read within its timeout) cannot hold the install for ever. With every
    /// read bounded in bytes by signed facts, this bounds every file in time too.
    pub grace: Duration,
    pub min_rate: u64,
}

impl Default for Retry {
    /// Six attempts over about 15 s: enough for a server restart or a switch port coming back,
    /// short enough that an unreachable server is reported within the minute. 32 KiB/s after a
    /// minute: far below any LAN or WAN a fleet installs over.
    fn default() -> Retry {
        Retry {
            attempts: 6,
            first_pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(8),
            grace: Duration::from_secs(60),
            min_rate: 32 << 10,
        }
    }
}

/// A cache site by its base URL. Cheap to clone: clones share the connection pool and the
/// log of retries.
#[derive(Clone)]
pub struct Site {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    agent: ureq::Agent,
    retry: Retry,
    retried: Mutex<Vec<String>>,
    /// When the whole copy must be done by (see [`Site::set_deadline`]).
    deadline: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Site({})", self.inner.base)
    }
}

impl PartialEq for Site {
    fn eq(&self, other: &Site) -> bool {
        self.inner.base == other.inner.base
    }
}

impl Eq for Site {}

impl Site {
    /// `url` is the site's top (where `nix-cache-info` is), `http://` or `https://`. HTTPS
    /// servers are checked against Mozilla's roots (compiled in), or only against the
    /// certificates of `ca_pem` (PEM) when given: a fleet's private CA.
    pub fn new(url: &str, retry: Retry, ca_pem: Option<&[u8]>) -> Result<Site, String> {
        let base = url.trim().trim_end_matches('/');
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| {
                format!("{url:?} is not an http:// or https:// URL; give the cache site's top, e.g. http://10.0.0.1/fleet")
            })?;
        if rest.is_empty() || rest.starts_with('/') || base.contains(char::is_whitespace) {
            return Err(format!(
                "{url:?} names no server; e.g. http://10.0.0.1/fleet"
            ));
        }
        let roots = match ca_pem {
            None => ureq::tls::RootCerts::WebPki,
            Some(pem) => {
                let mut certs = Vec::new();
                for item in ureq::tls::parse_pem(pem) {
                    match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                        Ok(_) => {}
                        Err(e) => return Err(format!("the CA file is not valid PEM: {e}")),
                    }
                }
                if certs.is_empty() {
                    return Err("the CA file holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into());
                }
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        let config = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            // A site reached over HTTPS is never left for plain HTTP, redirects included:
            // else whoever is on the path answers instead of the site.
            .https_only(base.starts_with("https://"))
            // Statuses are ours to judge: a 404 is an answer, a 503 a reason to retry.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            // A server that stops sending mid-file is as good as gone: retry, resuming.
            .timeout_per_read(Some(Duration::from_secs(30)))
            .user_agent(concat!("autoinstall-terminal/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Site {
            inner: Arc::new(Inner {
                base: base.to_string(),
                agent: config.into(),
                retry,
                retried: Mutex::new(Vec::new()),
                deadline: Mutex::new(None),
            }),
        })
    }

    /// From now on, every read fails once `at` has passed: the whole copy's deadline, on top
    /// of each file's (see [`Retry::min_rate`]).
    pub fn set_deadline(&self, at: Instant) {
        *self.inner.deadline.lock().unwrap() = Some(at);
    }

    /// An error once the whole copy's deadline has passed.
    fn check_deadline(&self, path: &str) -> io::Result<()> {
        match *self.inner.deadline.lock().unwrap() {
            Some(at) if Instant::now() > at => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{}: the copy from {} is past its deadline; the server is too slow or stalls",
                    self.url(path),
                    self.inner.base
                ),
            )),
            _ => Ok(()),
        }
    }

    pub fn base(&self) -> &str {
        &self.inner.base
    }

    /// The URL of a path of the payload tree. Bytes outside the URL-safe set are
    /// percent-encoded (a lookup file's own `%XX` included, so the server finds that file).
    pub fn url(&self, path: &str) -> String {
        let mut url = format!("{}/", self.inner.base);
        for b in path.bytes() {
            if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        url
    }

    /// What was retried so far and why, one line each, for the report.
    pub fn retried(&self) -> Vec<String> {
        self.inner.retried.lock().unwrap().clone()
    }

    /// One request for `path` from byte `offset` on.
    fn request(&self, path: &str, offset: u64) -> Result<Body, Attempt> {
        let url = self.url(path);
        let mut req = self.inner.agent.get(&url);
        if offset > 0 {
            req = req.header("Range", &format!("bytes={offset}-"));
        }
        let resp = req.call().map_err(|e| {
            let why = format!("{url}: {e}");
            if transient(&e) {
                Attempt::Again(why)
            } else {
                // A certificate that does not verify, a malformed URL: trying again changes
                // nothing.
                Attempt::Final(io::Error::other(why))
            }
        })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
        let range = header("content-range");
        match status {
            200 | 206 => {}
            404 | 410 => {
                return Err(Attempt::Final(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{url}: HTTP {status}: the server has no such file"),
                )))
            }
            500..=599 | 408 | 429 => return Err(Attempt::Again(format!("{url}: HTTP {status}"))),
            _ => {
                return Err(Attempt::Final(io::Error::other(format!(
                    "{url}: HTTP {status}"
                ))))
            }
        }
        let mut body: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
        let total = match (status, offset) {
            (206, _) => {
                // "bytes START-END/TOTAL": it must start where we asked.
                let (start, total) =
                    range
                        .as_deref()
                        .and_then(parse_content_range)
                        .ok_or_else(|| {
                            Attempt::Again(format!(
                                "{url}: a partial answer without a usable Content-Range"
                            ))
                        })?;
                if start != offset {
                    return Err(Attempt::Again(format!(
                        "{url}: asked for byte {offset} on, got byte {start} on"
                    )));
                }
                total
            }
            // A server that ignores ranges sends it all again: skip what we have.
            (_, 0) => length,
            (_, _) => {
                io::copy(&mut (&mut body).take(offset), &mut io::sink())
                    .map_err(|e| Attempt::Again(format!("{url}: {e}")))?;
                length
            }
        };
        Ok(Body {
            reader: body,
            total,
        })
    }

    /// Stores `bytes` at `path` on the site with HTTP PUT (a site that takes reports: nginx
    /// with `dav_methods PUT`), retried as downloads are. A site that refuses (405, 403…)
    /// is an error at once.
    pub fn put(&self, path: &str, bytes: &[u8]) -> io::Result<String> {
        let url = self.url(path);
        let mut failures = 0;
        self.with_retries(path, &mut failures, || {
            match self.inner.agent.put(&url).send(bytes) {
                Ok(resp) => match resp.status().as_u16() {
                    200..=299 => Ok(url.clone()),
                    s @ (500..=599 | 408 | 429) => Err(Attempt::Again(format!("{url}: HTTP {s}"))),
                    s => Err(Attempt::Final(io::Error::other(format!(
                        "{url}: HTTP {s}: the site does not take reports"
                    )))),
                },
                Err(ureq::Error::StatusCode(s)) if s >= 500 || s == 408 || s == 429 => {
                    Err(Attempt::Again(format!("{url}: HTTP {s}")))
                }
                Err(ureq::Error::StatusCode(s)) => Err(Attempt::Final(io::Error::other(format!(
                    "{url}: HTTP {s}: the site does not take reports"
                )))),
                Err(e) if transient(&e) => Err(Attempt::Again(format!("{url}: {e}"))),
                Err(e) => Err(Attempt::Final(io::Error::other(format!("{url}: {e}")))),
            }
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts are spent.
    fn with_retries<T>(
        &self,
        path: &str,
        failures: &mut u32,
        mut attempt: impl FnMut() -> Result<T, Attempt>,
    ) -> io::Result<T> {
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Again(why)) => self.failed(path, why, failures)?,
            }
        }
    }

    /// Counts a failed attempt at `path`: an error once the attempts are spent, else a
    /// logged pause (doubling each time) before the next.
    fn failed(&self, path: &str, why: String, failures: &mut u32) -> io::Result<()> {
        *failures += 1;
        let retry = self.inner.retry;
        if *failures >= retry.attempts {
            return Err(io::Error::other(format!(
                "{why}; gave up on {path} after {} attempts",
                retry.attempts
            )));
        }
        let pause = retry
            .first_pause
            .saturating_mul(1 << (*failures - 1).min(16))
            .min(retry.max_pause);
        let line = format!(
            "{why}; retrying in {:.1} s ({} of {} attempts)",
            pause.as_secs_f64(),
            *failures + 1,
            retry.attempts
        );
        eprintln!("autoinstall-terminal: {line}");
        self.inner.retried.lock().unwrap().push(line);
        std::thread::sleep(pause);
        Ok(())
    }
}

/// Whether a failed request may succeed if tried again: the network and the server's
/// availability, not TLS verification or the URL.
fn transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io.kind() != io::ErrorKind::InvalidData,
        ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

/// How one attempt ended: worth another try, or not.
enum Attempt {
    Again(String),
    Final(io::Error),
}

struct Body {
    reader: Box<dyn Read + Send>,
    total: Option<u64>,
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`): START and TOTAL.
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// One file, streamed; reconnects and resumes on a dropped connection.
struct Download {
    site: Site,
    path: String,
    offset: u64,
    failures: u32,
    body: Option<Body>,
    started: Instant,
}

impl Download {
    /// An error once the file is later than [`Retry::min_rate`] allows for what has come.
    fn check_pace(&self) -> io::Result<()> {
        let r = self.site.inner.retry;
        let allowed = r.grace + Duration::from_secs_f64(self.offset as f64 / r.min_rate as f64);
        let spent = self.started.elapsed();
        if spent > allowed {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{}: {} bytes in {:.0} s is too slow (at least {} KiB/s after the first {} s); the server stalls or trickles",
                    self.site.url(&self.path),
                    self.offset,
                    spent.as_secs_f64(),
                    r.min_rate >> 10,
                    r.grace.as_secs()
                ),
            ));
        }
        self.site.check_deadline(&self.path)
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.check_pace()?;
            if self.body.is_none() {
                let offset = self.offset;
                let body = self.site.with_retries(&self.path, &mut self.failures, || {
                    self.site.request(&self.path, offset)
                })?;
                self.body = Some(body);
            }
            let body = self.body.as_mut().expect("just set");
            let why = match body.reader.read(buf) {
                Ok(0) => match body.total {
                    Some(total) if self.offset < total => format!(
                        "{}: the connection closed at byte {} of {total}",
                        self.site.url(&self.path),
                        self.offset
                    ),
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => format!(
                    "{}: at byte {}: {e}",
                    self.site.url(&self.path),
                    self.offset
                ),
            };
            // Dropped mid-file: count it as a failed attempt, then resume from here.
            self.body = None;
            self.site.failed(&self.path, why, &mut self.failures)?;
        }
    }
}

impl Payload for Site {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        self.check_deadline(path)?;
        let started = Instant::now();
        let mut failures = 0;
        let body = self.with_retries(path, &mut failures, || self.request(path, 0))?;
        Ok(Box::new(Download {
            site: self.clone(),
            path: path.to_string(),
            offset: 0,
            failures,
            body: Some(body),
            started,
        }))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: an HTTP site cannot list {dir:?}", self.inner.base),
        ))
    }

    fn describe(&self) -> String {
        self.inner.base.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_paths_encoded() {
        assert!(Site::new("ftp://x/", Retry::default(), None).is_err());
        assert!(Site::new("http://", Retry::default(), None).is_err());
        assert!(Site::new("/srv/site", Retry::default(), None).is_err());
        let s = Site::new("http://10.0.2.2:8080/fleet/", Retry::default(), None).unwrap();
        assert_eq!(s.base(), "http://10.0.2.2:8080/fleet");
        assert_eq!(
            s.url("autoinstall/hosts/A%2FB C.json"),
            "http://10.0.2.2:8080/fleet/autoinstall/hosts/A%252FB%20C.json"
        );
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }

    /// A server that drops the connection half-way through the file, then serves the rest
    /// from the Range asked for: the reader hands over the whole file, once.
    #[test]
    fn a_dropped_download_resumes_where_it_stopped() {
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpListener;
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = data.clone();
        let server = std::thread::spawn(move || {
            let mut ranges = Vec::new();
            for (n, conn) in listener.incoming().take(2).enumerate() {
                let mut conn = conn.unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut start = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        start = v.trim().trim_end_matches('-').parse().unwrap();
                    }
                }
                ranges.push(start);
                if n == 0 {
                    // Promise it all, send 30,000 bytes, hang up.
                    write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        served.len()
                    )
                    .unwrap();
                    conn.write_all(&served[..30_000]).unwrap();
                } else {
                    write!(
                        conn,
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        served.len() - 1,
                        served.len(),
                        served.len() - start
                    )
                    .unwrap();
                    conn.write_all(&served[start..]).unwrap();
                }
            }
            ranges
        });
        let site = Site::new(
            &format!("http://127.0.0.1:{port}"),
            Retry {
                attempts: 3,
                first_pause: Duration::from_millis(10),
                max_pause: Duration::from_millis(10),
                ..Retry::default()
            },
            None,
        )
        .unwrap();
        let mut got = Vec::new();
        site.open("nar/x.nar.zst")
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == data, "the resumed file differs");
        assert_eq!(server.join().unwrap(), vec![0, 30_000]);
        assert_eq!(site.retried().len(), 1, "{:?}", site.retried());
    }

    /// A server that streams without end (no length, never closing): a small file's read
    /// stops at its cap with an error instead of filling the memory.
    #[test]
    fn an_endless_small_file_is_cut_off() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = conn.read(&mut req);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            while conn.write_all(&[b'x'; 4096]).is_ok() {}
        });
        let site = Site::new(&format!("http://127.0.0.1:{port}"), Retry::default(), None).unwrap();
        let err = site
            .read_capped("autoinstall/hosts/X.json", 10_000)
            .expect_err("an endless file");
        assert!(err.to_string().contains("longer than 10000 bytes"), "{err}");
    }

    #[test]
    fn an_unreachable_server_fails_after_the_attempts() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let site = Site::new(
            &format!("http://127.0.0.1:{port}"),
            Retry {
                attempts: 3,
                first_pause: Duration::from_millis(1),
                max_pause: Duration::from_millis(1),
                ..Retry::default()
            },
            None,
        )
        .unwrap();
        let err = site.open("nix-cache-info").err().expect("no server");
        assert!(err.to_string().contains("after 3 attempts"), "{err}");
        assert_eq!(site.retried().len(), 2);
    }
}
