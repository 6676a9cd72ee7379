//! A minimal multicast DNS responder (RFC 6762) for the live installer: it answers A
//! questions for its one name, `autoinstall-<serial>.local`, with this machine's IPv4
//! addresses, so `ssh root@autoinstall-<serial>.local` finds it on the LAN. It answers
//! nothing else and asks nothing; the wire format is parsed with bounds on every read.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

const MDNS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const PORT: u16 = 5353;
const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
/// The cache-flush bit on a unique record's class; the unicast-response bit on a question's.
const TOP_BIT: u16 = 0x8000;
const TTL: u32 = 120;

/// The installer's name on the LAN: `autoinstall-` and the serial in lower case, each
/// character that cannot be in a DNS label made `-`.
pub fn hostname(serial: Option<&str>) -> String {
    let label = serial.and_then(|s| manifest::hosts::serial_label(s, 50));
    format!("autoinstall-{}", label.as_deref().unwrap_or("unknown"))
}

/// One question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    /// The asker wants a unicast answer.
    pub unicast: bool,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// A name at `at` (labels, or pointers to earlier ones; at most 16 jumps and 255 bytes) and
/// where the name ends in place.
fn name_at(p: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *p.get(at)? as usize;
        match len {
            0 => {
                let name = labels.join(".");
                return (name.len() <= 255).then_some((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xC0 == 0xC0 => {
                jumps += 1;
                if jumps > 16 {
                    return None;
                }
                end.get_or_insert(at + 2);
                at = (u16_at(p, at)? & 0x3FFF) as usize;
            }
            l if l < 64 => {
                let label = p.get(at + 1..at + 1 + l)?;
                labels.push(String::from_utf8_lossy(label).to_lowercase());
                at += 1 + l;
            }
            _ => return None,
        }
    }
}

/// The questions of a query (not of a response), or None for anything malformed.
pub fn questions(p: &[u8]) -> Option<Vec<Question>> {
    let flags = u16_at(p, 2)?;
    if flags & 0x8000 != 0 || (flags >> 11) & 0xF != 0 {
        return None; // a response, or not a standard query
    }
    let count = u16_at(p, 4)?;
    let mut at = 12;
    let mut out = Vec::new();
    for _ in 0..count.min(64) {
        let (name, end) = name_at(p, at)?;
        let qtype = u16_at(p, end)?;
        let class = u16_at(p, end + 2)?;
        at = end + 4;
        if class & !TOP_BIT == CLASS_IN {
            out.push(Question {
                name,
                qtype,
                unicast: class & TOP_BIT != 0,
            });
        }
    }
    Some(out)
}

/// A response (id 0, authoritative) with one A record per address for `name`.
pub fn answer(name: &str, addrs: &[Ipv4Addr]) -> Vec<u8> {
    let mut p = vec![0, 0, 0x84, 0, 0, 0];
    p.extend((addrs.len() as u16).to_be_bytes());
    p.extend([0, 0, 0, 0]);
    for (i, a) in addrs.iter().enumerate() {
        if i == 0 {
            for label in name.split('.') {
                p.push(label.len() as u8);
                p.extend(label.as_bytes());
            }
            p.push(0);
        } else {
            p.extend([0xC0, 12]); // the name again, by pointer
        }
        p.extend(TYPE_A.to_be_bytes());
        p.extend((CLASS_IN | TOP_BIT).to_be_bytes());
        p.extend(TTL.to_be_bytes());
        p.extend(4u16.to_be_bytes());
        p.extend(a.octets());
    }
    p
}

/// This machine's IPv4 addresses, loopback aside.
fn addresses() -> Vec<Ipv4Addr> {
    let Ok(all) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<Ipv4Addr> = all
        .filter_map(|i| i.address?.as_sockaddr_in().map(|s| s.ip()))
        .filter(|a| !a.is_loopback())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Answers for `name` (`autoinstall-….local`) from a thread of its own, for as long as the
/// installer runs.
pub fn spawn(name: &str) -> std::io::Result<()> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // Another responder may hold the port too: share it, as mDNS responders do.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)),
    )?;
    let sock = UdpSocket::from(fd);
    sock.join_multicast_v4(&MDNS, &Ipv4Addr::UNSPECIFIED)?;
    let name = name.to_lowercase();
    std::thread::spawn(move || {
        let mut buf = [0u8; 9000];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Some(qs) = questions(&buf[..n]) else {
                continue;
            };
            let Some(q) = qs
                .iter()
                .find(|q| q.name == name && matches!(q.qtype, TYPE_A | TYPE_ANY))
            else {
                continue;
            };
            let addrs = addresses();
            if addrs.is_empty() {
                continue;
            }
            let reply = answer(&name, &addrs);
            // A legacy resolver (not from port 5353) or one asking for unicast gets its
            // answer directly; the rest by multicast.
            let to = match from {
                SocketAddr::V4(f) if q.unicast || f.port() != PORT => from,
                _ => SocketAddr::V4(SocketAddrV4::new(MDNS, PORT)),
            };
            let _ = sock.send_to(&reply, to);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::{Name, RData, RecordType};

    #[test]
    fn names_from_serials() {
        assert_eq!(hostname(Some("PF3ABC12")), "autoinstall-pf3abc12");
        assert_eq!(hostname(Some(" To Be/Filled ")), "autoinstall-to-be-filled");
        assert_eq!(hostname(None), "autoinstall-unknown");
    }

    /// A real DNS library writes the question and reads the answer.
    #[test]
    fn answers_a_query_as_a_resolver_library_writes_and_reads_it() {
        let mut q = Message::new();
        q.set_id(0).set_message_type(MessageType::Query);
        q.add_query(Query::query(
            Name::from_ascii("autoinstall-pf3abc12.local.").unwrap(),
            RecordType::A,
        ));
        q.add_query(Query::query(
            Name::from_ascii("other.local.").unwrap(),
            RecordType::AAAA,
        ));
        let bytes = q.to_vec().unwrap();
        let qs = questions(&bytes).unwrap();
        assert_eq!(
            qs,
            [
                Question {
                    name: "autoinstall-pf3abc12.local".into(),
                    qtype: TYPE_A,
                    unicast: false
                },
                Question {
                    name: "other.local".into(),
                    qtype: 28,
                    unicast: false
                }
            ]
        );
        let addrs = [Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(192, 168, 1, 7)];
        let reply = Message::from_vec(&answer("autoinstall-pf3abc12.local", &addrs)).unwrap();
        assert_eq!(reply.message_type(), MessageType::Response);
        assert!(reply.authoritative());
        let got: Vec<(String, Ipv4Addr)> = reply
            .answers()
            .iter()
            .map(|r| match r.data() {
                Some(RData::A(a)) => (r.name().to_ascii(), a.0),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("autoinstall-pf3abc12.local.".to_string(), addrs[0]),
                ("autoinstall-pf3abc12.local.".to_string(), addrs[1])
            ]
        );
        // A response, garbage, and a pointer loop are not questions.
        assert_eq!(questions(&answer("x.local", &addrs)), None);
        assert_eq!(questions(&[1, 2, 3]), None);
        let mut looped = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend([0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(questions(&looped), None);
    }
}
