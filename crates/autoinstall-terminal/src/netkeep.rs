//! The running system's network, kept for the installer a kexec bundle boots into: its
//! interfaces' static addresses (by MAC, since names may differ between kernels), its
//! default routes and its DNS servers, read here and handed over on the installer's kernel
//! command line (`autoinstall.net=MAC,ADDR/PREFIX,…,gw=GW` per interface,
//! `autoinstall.dns=IP,…`), which the environment's `autoinstall-network-up` applies instead
//! of asking DHCP. A server a provider set up with a static address then stays reachable at
//! it while it installs, as it would not by DHCP on a network without a server.
//!
//! Parsing is pure (the /proc and resolv.conf texts in, words out); `read` does the reading.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// One interface's kept configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub mac: String,
    pub addrs: Vec<(IpAddr, u8)>,
    pub gateways: Vec<IpAddr>,
}

/// The kernel command line words for `ifaces` and `dns` (none for an empty configuration).
pub fn cmdline_words(ifaces: &[Kept], dns: &[IpAddr]) -> Vec<String> {
    let mut words: Vec<String> = ifaces
        .iter()
        .filter(|k| !k.addrs.is_empty())
        .map(|k| {
            let mut parts = vec![k.mac.clone()];
            parts.extend(k.addrs.iter().map(|(a, p)| format!("{a}/{p}")));
            parts.extend(k.gateways.iter().map(|g| format!("gw={g}")));
            format!("autoinstall.net={}", parts.join(","))
        })
        .collect();
    if !words.is_empty() && !dns.is_empty() {
        let list: Vec<String> = dns.iter().map(IpAddr::to_string).collect();
        words.push(format!("autoinstall.dns={}", list.join(",")));
    }
    words
}

/// Addresses worth keeping: global ones (not loopback, not link-local, which every
/// interface makes itself).
fn kept_address(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !v.is_loopback() && !v.is_link_local() && !v.is_unspecified(),
        IpAddr::V6(v) => {
            !v.is_loopback() && !v.is_unspecified() && (v.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The IPv4 default gateways of `/proc/net/route`, by interface name.
pub fn default_routes_v4(text: &str) -> Vec<(String, Ipv4Addr)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Iface Destination Gateway Flags …; little-endian hex, RTF_GATEWAY = 2.
            if f.len() < 4 || f[1] != "00000000" {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            (flags & 2 != 0 && gw != 0).then(|| (f[0].to_string(), Ipv4Addr::from(gw.swap_bytes())))
        })
        .collect()
}

/// The IPv6 default gateways of `/proc/net/ipv6_route`, by interface name.
pub fn default_routes_v6(text: &str) -> Vec<(String, Ipv6Addr)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // dest destlen src srclen nexthop metric refcnt use flags iface
            if f.len() < 10 || f[0] != "00000000000000000000000000000000" || f[1] != "00" {
                return None;
            }
            let gw = u128::from_str_radix(f[4], 16).ok()?;
            (gw != 0).then(|| (f[9].to_string(), Ipv6Addr::from(gw)))
        })
        .collect()
}

/// The `nameserver`s of a resolv.conf, loopback ones left out (a local resolver of the old
/// system does not run in the installer).
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

/// The running system's configuration: interfaces with a device and a MAC, their global
/// addresses (getifaddrs), default routes and nameservers.
pub fn read() -> (Vec<Kept>, Vec<IpAddr>) {
    let mut by_name: BTreeMap<String, Kept> = BTreeMap::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let name = ifa.interface_name.clone();
            let sys = Path::new("/sys/class/net").join(&name);
            if !sys.join("device").exists() {
                continue;
            }
            let Ok(mac) = std::fs::read_to_string(sys.join("address")) else {
                continue;
            };
            let entry = by_name.entry(name).or_insert_with(|| Kept {
                mac: mac.trim().to_string(),
                addrs: Vec::new(),
                gateways: Vec::new(),
            });
            let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
                continue;
            };
            let pair = match (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                (Some(a), Some(m)) => Some((IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones())),
                _ => match (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                    (Some(a), Some(m)) => {
                        Some((IpAddr::V6(a.ip()), u128::from(m.ip()).count_ones()))
                    }
                    _ => None,
                },
            };
            if let Some((a, p)) = pair.filter(|(a, _)| kept_address(a)) {
                entry.addrs.push((a, p as u8));
            }
        }
    }
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    for (name, gw) in default_routes_v4(&read("/proc/net/route")) {
        if let Some(k) = by_name.get_mut(&name) {
            k.gateways.push(IpAddr::V4(gw));
        }
    }
    for (name, gw) in default_routes_v6(&read("/proc/net/ipv6_route")) {
        if let Some(k) = by_name.get_mut(&name) {
            k.gateways.push(IpAddr::V6(gw));
        }
    }
    let dns = nameservers(&read("/etc/resolv.conf"));
    (
        by_name
            .into_values()
            .filter(|k| !k.addrs.is_empty())
            .collect(),
        dns,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_resolvers_as_linux_writes_them() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            default_routes_v4(route),
            [("eth0".to_string(), Ipv4Addr::new(10, 0, 2, 2))]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
                  20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n";
        assert_eq!(
            default_routes_v6(v6),
            [("eth0".to_string(), "fe80::1".parse().unwrap())]
        );
        assert_eq!(
            nameservers("# x\nnameserver 10.0.2.3\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch example\n"),
            ["10.0.2.3".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]
        );
    }

    #[test]
    fn words_name_the_interface_by_its_mac() {
        let k = Kept {
            mac: "52:54:00:12:34:56".into(),
            addrs: vec![
                ("10.0.2.77".parse().unwrap(), 24),
                ("2001:db8::7".parse().unwrap(), 64),
            ],
            gateways: vec!["10.0.2.2".parse().unwrap()],
        };
        let idle = Kept {
            mac: "52:54:00:00:00:01".into(),
            addrs: vec![],
            gateways: vec![],
        };
        assert_eq!(
            cmdline_words(&[k, idle], &["10.0.2.3".parse().unwrap()]),
            [
                "autoinstall.net=52:54:00:12:34:56,10.0.2.77/24,2001:db8::7/64,gw=10.0.2.2",
                "autoinstall.dns=10.0.2.3"
            ]
        );
        assert!(cmdline_words(&[], &["10.0.2.3".parse().unwrap()]).is_empty());
        assert!(!kept_address(&"fe80::5".parse().unwrap()));
        assert!(!kept_address(&"127.0.0.1".parse().unwrap()));
    }
}
