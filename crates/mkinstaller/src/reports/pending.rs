//! `reports --pending`: the machines that enrolled (`on-unknown-serial = "enrol"`) and were not
//! installed since, as `[[host]]` blocks to paste into hosts.toml: the serial filled in, the
//! disk the rules chose named, the TPM's keys (to seal the host's secrets to), the hardware
//! recorded as comments; the admin gives each a name and a system.

use super::Found;

/// The hosts.toml blocks of the pending machines among `found`.
pub fn blocks(found: &[Found]) -> String {
    let mut out = String::new();
    let latest: Vec<&Found> = {
        let mut by = std::collections::BTreeMap::new();
        for f in found {
            let newer = by
                .get(&f.report.machine())
                .is_none_or(|g: &&Found| g.report.started <= f.report.started);
            if newer {
                by.insert(f.report.machine(), f);
            }
        }
        by.into_values().collect()
    };
    for f in latest.iter().filter(|f| f.report.outcome == "enrolled") {
        let r = &f.report;
        let serial = r.machine();
        let inv = &r.inventory;
        out += &format!("# {serial}: {}\n", inv.summary());
        out += &format!(
            "# enrolled {} (report {})\n",
            util::time::utc_minutes(r.started),
            f.from
        );
        if let Some(t) = &inv.tpm {
            if !t.ek_sha256.is_empty() {
                out += &format!(
                    "# TPM {} endorsement key sha256:{}\n",
                    t.version, t.ek_sha256
                );
            }
        }
        out += "[[host]]\n";
        out += &format!("name = {:?}\n", host_name(&serial));
        out += &format!("serials = [{serial:?}]\n");
        out += "system = \"/nix/store/…\"  # fill in: this machine's system\n";
        if let Some(t) = inv.tpm.as_ref().filter(|t| !t.ek_public.is_empty()) {
            out += "# its TPM: with secrets = \"tpm\", the host's secrets are sealed to it\n";
            out += &format!(
                "tpm = {{ ek = {:?}, activation = {:?} }}\n",
                t.ek_public, t.activation_name
            );
        }
        match r
            .pending
            .as_ref()
            .and_then(|p| p.disk.as_ref().map(|d| (d, &p.why)))
        {
            Some((disk, why)) => out += &format!("disk = {disk:?}  # {why}\n"),
            None => {
                let why = r.pending.as_ref().map_or("", |p| p.why.as_str());
                out += &format!("# no disk: {why}\n");
            }
        }
        out += "\n";
    }
    if out.is_empty() {
        out += "# no pending machines\n";
    }
    out
}

/// A host name from a serial: lower case, other characters as `-`, at most 63.
fn host_name(serial: &str) -> String {
    manifest::hosts::serial_label(serial, 63).unwrap_or_else(|| "machine".into())
}
