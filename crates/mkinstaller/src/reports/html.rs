//! The fleet's state as one HTML page an admin opens in a browser: one row per machine,
//! coloured by outcome, sortable by any column (a few lines of script, no library), every
//! value escaped.

/// The page for `rows` (machine, host, when, outcome, detail, hardware).
pub fn page(rows: &[Vec<String>]) -> String {
    let mut body = String::new();
    for r in rows {
        body += &format!("<tr class=\"{}\">", escape(&r[3]));
        for c in r {
            body += &format!("<td>{}</td>", escape(c));
        }
        body += "</tr>\n";
    }
    let counts = [
        "installed",
        "already-installed",
        "enrolled",
        "refused",
        "failed",
    ]
    .iter()
    .map(|o| (o, rows.iter().filter(|r| r[3] == *o).count()))
    .filter(|(_, n)| *n > 0)
    .map(|(o, n)| format!("{n} {o}"))
    .collect::<Vec<_>>()
    .join(", ");
    format!(
        r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Fleet installs</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }}
th {{ cursor: pointer; background: #f4f4f4; user-select: none; }}
tr.installed td:nth-child(4), tr.already-installed td:nth-child(4) {{ color: #176c2a; }}
tr.failed td:nth-child(4), tr.refused td:nth-child(4) {{ color: #a31515; font-weight: bold; }}
tr.enrolled td:nth-child(4) {{ color: #8a5a00; }}
</style>
</head>
<body>
<h1>Fleet installs</h1>
<p id="summary">{n} machine{s}: {counts}</p>
<table id="fleet">
<thead><tr><th>Machine</th><th>Host</th><th>When</th><th>Outcome</th><th>Detail</th><th>Hardware</th></tr></thead>
<tbody>
{body}</tbody>
</table>
<script>
// Click a header to sort by its column; click again to reverse.
document.querySelectorAll("#fleet th").forEach((th, col) => {{
  th.addEventListener("click", () => {{
    const body = document.querySelector("#fleet tbody");
    const up = th.dataset.up !== "1";
    th.dataset.up = up ? "1" : "0";
    [...body.rows]
      .sort((a, b) => a.cells[col].textContent.localeCompare(b.cells[col].textContent) * (up ? 1 : -1))
      .forEach((r) => body.appendChild(r));
  }});
}});
</script>
</body>
</html>
"##,
        n = rows.len(),
        s = if rows.len() == 1 { "" } else { "s" },
        counts = escape(&counts),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
