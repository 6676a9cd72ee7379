//! Where `mkinstaller --ssh` goes and how it calls OpenSSH's `ssh` there: the admin's own
//! client, keys, agent and options, so nothing about SSH is reimplemented here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A machine to reach: `[user@]host` or `ssh://[user@]host[:port]` (root when no user is
/// given: kexec needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let bad =
            |why: &str| format!("--ssh {s:?}: {why}; say [USER@]HOST or ssh://[USER@]HOST[:PORT]");
        let (rest, url) = match s.strip_prefix("ssh://") {
            Some(r) => (r.trim_end_matches('/'), true),
            None => (s, false),
        };
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (u, h),
            None => ("root", rest),
        };
        let (host, port) = if !url {
            (hostport, 22)
        } else if let Some(v6) = hostport.strip_prefix('[') {
            // ssh://[fe80::1%eth0]:2222
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed ["))?;
            match after.strip_prefix(':') {
                Some(p) => (h, p.parse().map_err(|_| bad("a port is a number"))?),
                None if after.is_empty() => (h, 22),
                None => return Err(bad("text after ]")),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad("a port is a number"))?),
                None => (hostport, 22),
            }
        };
        let clean = |t: &str| {
            !t.is_empty()
                && !t.starts_with('-')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-:%".contains(c))
        };
        if !clean(user) {
            return Err(bad("the user name"));
        }
        if !clean(host) {
            return Err(bad("the host name"));
        }
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(Target {
            user: user.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.port == 22 {
            write!(f, "{}@{}", self.user, self.host)
        } else {
            write!(f, "ssh://{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

/// How to run `ssh` to the target, with the admin's options (`--ssh-option`) and identity;
/// for the installer, with only the host key made for this run.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub target: Target,
    pub identity: Option<PathBuf>,
    pub options: Vec<String>,
    /// A known_hosts file that alone decides which host key is accepted.
    pub pinned: Option<PathBuf>,
}

impl Ssh {
    /// The same machine, reached with only the host key in `known_hosts`.
    pub fn pinned(&self, known_hosts: &Path) -> Ssh {
        Ssh {
            pinned: Some(known_hosts.to_path_buf()),
            ..self.clone()
        }
    }

    /// `ssh … TARGET REMOTE`: never asks for a password (a batch client fails instead),
    /// notices a dead peer within ~15 s (the kexec reboot drops the connection unannounced).
    pub fn command(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.args()).arg(remote);
        c
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["-p".into(), self.target.port.to_string()];
        let mut o = |opt: &str| a.extend(["-o".to_string(), opt.to_string()]);
        o("BatchMode=yes");
        o("ConnectTimeout=10");
        o("ServerAliveInterval=5");
        o("ServerAliveCountMax=3");
        o("LogLevel=ERROR");
        if let Some(k) = &self.pinned {
            o(&format!("UserKnownHostsFile={}", k.display()));
            o("GlobalKnownHostsFile=/dev/null");
            o("StrictHostKeyChecking=yes");
            o("CheckHostIP=no");
            o("HostKeyAlgorithms=ssh-ed25519");
        }
        // After the pin: ssh takes the first value it is given for an option, so the admin's
        // options (a ProxyJump, say) apply but cannot loosen the pin.
        for opt in &self.options {
            o(opt);
        }
        if let Some(i) = &self.identity {
            a.extend(["-i".into(), i.display().to_string()]);
            a.extend(["-o".into(), "IdentitiesOnly=yes".into()]);
        }
        a.push("--".into());
        a.push(format!("{}@{}", self.target.user, self.target.host));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<Target, String> {
        s.parse()
    }

    #[test]
    fn targets_parse_as_ssh_says_them() {
        assert_eq!(
            t("web-1.example").unwrap(),
            Target {
                user: "root".into(),
                host: "web-1.example".into(),
                port: 22
            }
        );
        assert_eq!(t("admin@10.0.0.5").unwrap().user, "admin");
        let u = t("ssh://root@127.0.0.1:2222").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 2222));
        assert_eq!(u.to_string(), "ssh://root@127.0.0.1:2222");
        let v6 = t("ssh://[fe80::47%eth0]:22").unwrap();
        assert_eq!(v6.host, "fe80::47%eth0");
        assert_eq!(t("fe80::47%eth0").unwrap().port, 22);
        for bad in [
            "",
            "-oProxyCommand=x",
            "root@",
            "ssh://h:port",
            "ssh://h:0",
            "a b",
            "ssh://[::1",
            "x;reboot",
        ] {
            assert!(t(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn the_installer_is_reached_with_the_pinned_key_only() {
        let s = Ssh {
            target: t("ssh://root@h:2222").unwrap(),
            identity: Some("/k/id".into()),
            options: vec!["StrictHostKeyChecking=accept-new".into()],
            pinned: None,
        };
        let a = s.args().join(" ");
        assert!(a.contains("-p 2222"), "{a}");
        assert!(a.contains("StrictHostKeyChecking=accept-new"), "{a}");
        assert!(
            a.ends_with("-i /k/id -o IdentitiesOnly=yes -- root@h"),
            "{a}"
        );
        let p = s.pinned(Path::new("/run/kh")).args().join(" ");
        assert!(p.contains("UserKnownHostsFile=/run/kh"), "{p}");
        assert!(p.contains("StrictHostKeyChecking=yes"), "{p}");
        assert!(
            p.find("StrictHostKeyChecking=yes") < p.find("accept-new"),
            "the admin's options come after the pin, which wins: {p}"
        );
    }
}
