//! `mkinstaller reports`: the fleet's state from the reports installers wrote back to sticks
//! (or report directories collected from them): which machine, which host, when, how it
//! ended and why, and what the machine is. One row per machine (its newest report) unless
//! `--all`; a table, JSON, CSV, an HTML page (`html`), or the pending machines of
//! `on-unknown-serial = "enrol"` as hosts.toml blocks (`pending`).

mod html;
mod pending;
pub mod recovery;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use manifest::document::REPORTS_DIR;
use manifest::inventory::Inventory;

/// How the reports are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Table,
    Json,
    Csv,
    Html,
    Pending,
}

/// The most a report file can be: a report is a few KiB, its log is beside it.
const MAX_REPORT: u64 = 4 << 20;

/// What `reports` reads of an installer's report. Every field may be missing: reports from
/// other versions still read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Report {
    pub started: u64,
    pub outcome: String,
    pub error: Option<StepError>,
    pub host: Option<String>,
    pub serial: Option<String>,
    pub identity: Identity,
    pub disk: Option<Disk>,
    pub boot_next: Option<String>,
    pub seconds: f64,
    pub inventory: Inventory,
    pub pending: Option<Pending>,
    /// Each LUKS volume's recovery key, escrowed to the fleet's recovery recipients.
    pub recovery: Vec<Escrowed>,
}

/// A recovery key as a report keeps it: an age file for the fleet's recipients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Escrowed {
    pub volume: String,
    pub luks_uuid: String,
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StepError {
    pub step: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub raw_serial: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Disk {
    pub path: String,
}

/// What an enrolled machine's report says of the disk the rules would choose.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pending {
    /// A stable name for it (`/dev/disk/by-id/…`), else its path.
    pub disk: Option<String>,
    /// How the rules chose it, or why no disk fits.
    pub why: String,
}

impl Report {
    /// The machine it is about: its serial as the firmware gave it, else its SMBIOS UUID.
    pub fn machine(&self) -> String {
        self.identity
            .raw_serial
            .clone()
            .or_else(|| self.serial.clone())
            .filter(|s| !s.trim().is_empty())
            .or_else(|| self.identity.uuid.clone())
            .unwrap_or_else(|| "?".into())
    }

    /// The failing step and why, or what happened.
    pub fn detail(&self) -> String {
        match (&self.error, self.outcome.as_str()) {
            (Some(e), _) => format!("{}: {}", e.step, e.message),
            (None, "installed") => format!(
                "on {} in {:.0} s",
                self.disk.as_ref().map_or("?", |d| d.path.as_str()),
                self.seconds
            ),
            (None, "already-installed") => "already installed: not installed again".into(),
            (None, "enrolled") => format!(
                "pending: {}",
                self.pending.as_ref().map_or("", |p| p.why.as_str())
            ),
            _ => String::new(),
        }
    }
}

/// A report as read, with where it was found and its JSON as written.
pub struct Found {
    pub report: Report,
    pub raw: serde_json::Value,
    pub from: String,
}

/// Every report under `sources`: sticks and images (their payload's reports), payload
/// directories (`autoinstall/reports`), directories of report files, or sites online
/// installers sent their reports to (`http(s)://…`, their reports directory listed as nginx's
/// `autoindex_format json` lists it).
pub fn read(sources: &[PathBuf]) -> Result<Vec<Found>, String> {
    let mut out = Vec::new();
    for s in sources {
        if let Some(url) = s
            .to_str()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        {
            read_site(url, &mut out)?;
            continue;
        }
        let reports_dir = s.join(REPORTS_DIR);
        if s.is_dir() && !reports_dir.is_dir() {
            read_dir(s, &mut out)?;
            continue;
        }
        let p = media::image::open_payload(s).map_err(|e| format!("{}: {e}", s.display()))?;
        let names = match p.list(REPORTS_DIR) {
            Ok(n) => n,
            // A stick no installer has written to yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", s.display())),
        };
        for n in names.iter().filter(|n| n.ends_with(".json")) {
            let path = format!("{REPORTS_DIR}/{n}");
            let bytes = p
                .read_capped(&path, MAX_REPORT)
                .map_err(|e| format!("{}: {e}", s.display()))?;
            out.push(parse(&bytes, format!("{}:{path}", s.display()))?);
        }
    }
    out.sort_by_key(|f| f.report.started);
    Ok(out)
}

fn read_site(url: &str, out: &mut Vec<Found>) -> Result<(), String> {
    let base = format!("{}/{REPORTS_DIR}/", url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let get = |u: &str| -> Result<Vec<u8>, String> {
        let resp = agent.get(u).call().map_err(|e| format!("{u}: {e}"))?;
        let mut body = resp.into_body();
        body.with_config()
            .limit(MAX_REPORT)
            .read_to_vec()
            .map_err(|e| format!("{u}: {e}"))
    };
    let listing: Vec<serde_json::Value> = serde_json::from_slice(&get(&base)?).map_err(|e| {
        format!("{base}: not a JSON directory listing ({e}); serve the reports directory with nginx's autoindex on; autoindex_format json;")
    })?;
    for name in listing.iter().filter_map(|e| e["name"].as_str()) {
        // Only plain file names: a listing names nothing outside the directory.
        if !name.ends_with(".json") || name.contains(['/', '\\']) || name.starts_with('.') {
            continue;
        }
        let u = format!("{base}{name}");
        out.push(parse(&get(&u)?, u)?);
    }
    Ok(())
}

fn read_dir(dir: &Path, out: &mut Vec<Found>) -> Result<(), String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    for p in names {
        let bytes = std::fs::File::open(&p)
            .and_then(|f| util::io::read_limited(f, MAX_REPORT, "a report"))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        out.push(parse(&bytes, p.display().to_string())?);
    }
    Ok(())
}

fn parse(bytes: &[u8], from: String) -> Result<Found, String> {
    let raw: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{from}: not a report: {e}"))?;
    let report: Report =
        serde_json::from_value(raw.clone()).map_err(|e| format!("{from}: not a report: {e}"))?;
    Ok(Found { report, raw, from })
}

/// The reports under `sources` as `shape` shows them: each machine's newest, or `all`.
pub fn show(sources: &[PathBuf], all: bool, shape: Shape) -> Result<String, String> {
    let found = read(sources)?;
    let found = if all || shape == Shape::Pending {
        found
    } else {
        newest(found)
    };
    Ok(render(&found, shape))
}

/// The newest report of each machine, in the order of their machines.
pub fn newest(found: Vec<Found>) -> Vec<Found> {
    let mut by: BTreeMap<String, Found> = BTreeMap::new();
    for f in found {
        by.insert(f.report.machine(), f); // sorted by time: the last wins
    }
    by.into_values().collect()
}

/// The reports as `shape` shows them.
pub fn render(found: &[Found], shape: Shape) -> String {
    match shape {
        Shape::Json => {
            let all: Vec<&serde_json::Value> = found.iter().map(|f| &f.raw).collect();
            serde_json::to_string_pretty(&all).expect("JSON values serialise") + "\n"
        }
        Shape::Csv => {
            let mut s = String::from("machine,host,when,outcome,detail,hardware\n");
            for r in rows(found) {
                s += &r.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",");
                s += "\n";
            }
            s
        }
        Shape::Html => html::page(&rows(found)),
        Shape::Pending => pending::blocks(found),
        Shape::Table => {
            if found.is_empty() {
                return "no reports\n".into();
            }
            let rows = rows(found);
            let mut widths = [7usize, 4, 4, 7];
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |r: &[String]| {
                format!(
                    "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}  {}\n",
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                    w3 = widths[3]
                )
            };
            let head: Vec<String> = ["MACHINE", "HOST", "WHEN", "OUTCOME", "DETAIL", "HARDWARE"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let mut s = line(&head);
            for r in &rows {
                s += &line(r);
            }
            s
        }
    }
}

/// machine, host, when, outcome, detail, hardware: one row per report.
fn rows(found: &[Found]) -> Vec<Vec<String>> {
    found
        .iter()
        .map(|f| {
            let r = &f.report;
            vec![
                r.machine(),
                r.host.clone().unwrap_or_else(|| "-".into()),
                util::time::utc_minutes(r.started),
                r.outcome.clone(),
                r.detail(),
                r.inventory.summary(),
            ]
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
