//! Which sockets go over xrdma, and what was learnt of each destination.
//!
//! `XRDMA_TCP` lists what goes over xrdma, comma-separated: `ADDR[/PREFIX][:PORT]`, or
//! `*:PORT`, or `all` (the default) or `none`. A connection goes over xrdma if its
//! destination matches; a listener listens on xrdma too if its own address and port match.
//! Whatever does not match stays on the kernel, untouched. `XRDMA_DEBUG=1` prints one line
//! to stderr per socket saying where it went and why.
//!
//! A destination that turned out to have no xrdma (no RoCEv2 endpoint on its host, or none
//! listening on that port) is remembered for [`REMEMBER`], so later connections to it go
//! straight to the kernel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a destination without xrdma is remembered.
pub(crate) const REMEMBER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    net: Option<(IpAddr, u8)>,
    port: Option<u16>,
}

impl Pattern {
    fn parse(s: &str) -> Option<Pattern> {
        let (addr, port) = match s.rsplit_once(':') {
            // An IPv6 address without a port has colons too: a port follows `]` or an
            // IPv4 address or `*`.
            Some((a, p)) if !a.contains(':') || a.ends_with(']') => {
                (a.trim_start_matches('[').trim_end_matches(']'), Some(p))
            }
            _ => (s, None),
        };
        let port = match port {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        let net = match addr {
            "*" => None,
            a => {
                let (ip, prefix) = match a.split_once('/') {
                    Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse().ok()?),
                    None => {
                        let ip = a.parse::<IpAddr>().ok()?;
                        (ip, if ip.is_ipv4() { 32 } else { 128 })
                    }
                };
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if prefix > max {
                    return None;
                }
                Some((ip, prefix))
            }
        };
        Some(Pattern { net, port })
    }

    fn matches(&self, at: SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != at.port()) {
            return false;
        }
        match self.net {
            None => true,
            Some((net, prefix)) => in_net(canonical(at.ip()), canonical(net), prefix),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The configuration read from the environment.
#[derive(Debug)]
pub(crate) struct Policy {
    /// `None`: everything matches.
    patterns: Option<Vec<Pattern>>,
    pub debug: bool,
}

impl Policy {
    fn from_env() -> Policy {
        let debug = std::env::var("XRDMA_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0");
        let spec = std::env::var("XRDMA_TCP").unwrap_or_default();
        let patterns = match spec.trim() {
            "" | "all" => None,
            "none" => Some(Vec::new()),
            list => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| {
                        let p = Pattern::parse(s);
                        if p.is_none() {
                            say(&format!(
                                "XRDMA_TCP: ignoring {s:?}, not ADDR[/PREFIX][:PORT]"
                            ));
                        }
                        p
                    })
                    .collect(),
            ),
        };
        Policy { patterns, debug }
    }

    /// Whether connections to, or a listener on, `at` go over xrdma.
    pub(crate) fn wants(&self, at: SocketAddr) -> bool {
        match &self.patterns {
            None => true,
            Some(ps) => ps.iter().any(|p| p.matches(at)),
        }
    }
}

pub(crate) fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(Policy::from_env)
}

/// Prints one line to stderr, without going through any of our calls.
pub(crate) fn say(line: &str) {
    let text = format!("xrdma: {line}\n");
    let _inside = crate::Inside::enter();
    // SAFETY: a live buffer of the length given.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}

/// Prints `line` if `XRDMA_DEBUG` is set.
pub(crate) fn debug(line: impl FnOnce() -> String) {
    if policy().debug {
        say(&line());
    }
}

/// How long a probe waits for a host to refuse the RoCEv2 port.
const PROBE_WAIT: Duration = Duration::from_millis(50);

/// Hosts probed, whether they refused the RoCEv2 port, and when.
static PROBED: Mutex<Option<HashMap<IpAddr, (bool, Instant)>>> = Mutex::new(None);

/// Whether the host of `to` has no RoCEv2 endpoint: it refuses an empty UDP datagram to the
/// RoCEv2 port (ICMP port unreachable) within [`PROBE_WAIT`]. A host that says nothing may
/// have one, and is asked with a connection; without this, a connection to a host with
/// none would wait for the connection manager's whole timeout (a minute) before falling
/// back to TCP. The answer is remembered for [`REMEMBER`].
pub(crate) fn refuses_roce(to: SocketAddr) -> bool {
    let ip = canonical(to.ip());
    if let Some(&(refused, at)) = PROBED.lock().get_or_insert_with(HashMap::new).get(&ip) {
        if at.elapsed() < REMEMBER {
            return refused;
        }
    }
    let refused = probe(ip).unwrap_or(false);
    PROBED
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(ip, (refused, Instant::now()));
    refused
}

/// Sends the probe of [`refuses_roce`]; true if it was refused.
fn probe(ip: IpAddr) -> std::io::Result<bool> {
    let port = xrdma_verbs::devices::settings()?.port;
    let any: IpAddr = if ip.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let s = std::net::UdpSocket::bind((any, 0))?;
    s.connect((ip, port))?;
    s.set_read_timeout(Some(PROBE_WAIT))?;
    s.send(&[])?;
    match s.recv(&mut [0u8; 1]) {
        Err(e) => Ok(e.kind() == std::io::ErrorKind::ConnectionRefused),
        Ok(_) => Ok(false),
    }
}

/// Destinations found to have no xrdma, and when.
static WITHOUT: Mutex<Option<HashMap<SocketAddr, Instant>>> = Mutex::new(None);

/// Whether `to` was found without xrdma in the last [`REMEMBER`].
pub(crate) fn known_without(to: SocketAddr) -> bool {
    let mut w = WITHOUT.lock();
    let map = w.get_or_insert_with(HashMap::new);
    match map.get(&to) {
        Some(at) if at.elapsed() < REMEMBER => true,
        Some(_) => {
            map.remove(&to);
            false
        }
        None => false,
    }
}

/// Remembers that `to` has no xrdma.
pub(crate) fn found_without(to: SocketAddr) {
    WITHOUT
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(to, Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|| panic!("{s} does not parse"))
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // Every address here is from the benchmarking ranges the project keeps to
    // (198.18.0.0/15, 2001:2::/48).
    #[test]
    fn patterns_match_networks_and_ports() {
        assert!(p("198.18.0.0/15").matches(at("198.19.1.2:80")));
        assert!(!p("198.18.0.0/16").matches(at("198.19.1.2:80")));
        assert!(p("198.18.0.1").matches(at("198.18.0.1:5201")));
        assert!(!p("198.18.0.1").matches(at("198.18.0.2:5201")));
        assert!(p("*:5201").matches(at("198.19.7.7:5201")));
        assert!(!p("*:5201").matches(at("198.19.7.7:5202")));
        assert!(p("198.18.0.0/16:6379").matches(at("198.18.3.4:6379")));
        assert!(!p("198.18.0.0/16:6379").matches(at("198.18.3.4:6380")));
        assert!(p("0.0.0.0/0").matches(at("198.19.255.254:1")));
        assert!(p("2001:2::/48").matches(at("[2001:2:0:1::1]:80")));
        assert!(!p("2001:2::/64").matches(at("[2001:2:0:1::1]:80")));
        assert!(p("[2001:2::1]:80").matches(at("[2001:2::1]:80")));
        assert!(!p("[2001:2::1]:80").matches(at("[2001:2::1]:81")));
        // An IPv4 destination given as an IPv4-mapped IPv6 address, as an AF_INET6 socket
        // connects to one.
        assert!(p("198.18.0.0/15").matches(at("[::ffff:198.18.0.9]:1")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "198.18.0.1/33",
            "x",
            "198.18.0.1:port",
            "*:70000",
            "2001:2::/129",
        ] {
            assert_eq!(Pattern::parse(bad), None, "{bad}");
        }
    }
}
