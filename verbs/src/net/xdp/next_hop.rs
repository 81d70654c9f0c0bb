//! Next-hop resolution for frames we build ourselves: the kernel's route and neighbour
//! tables say which MAC address and source IP a datagram to a peer needs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::net::NetError;
use crate::net::netlink::Netlink;
use crate::wire::ethernet::MacAddr;

/// How long a resolved next hop is used before the tables are asked again.
const REFRESH: Duration = Duration::from_secs(10);
/// How long a first resolution may wait for ARP / neighbour discovery.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a datagram to a peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    pub(crate) mac: MacAddr,
    pub(crate) src: IpAddr,
}

struct Entry {
    hop: Hop,
    resolved_at: Instant,
}

/// Lookups between two looks at the clock on the fast path.
const CLOCK_EVERY: u32 = 1024;

/// A cache of next hops in front of rtnetlink.
pub(crate) struct NextHops {
    netlink: Netlink,
    ifindex: u32,
    addrs: Vec<IpAddr>,
    cache: HashMap<IpAddr, Entry>,
    /// The last destination and its hop: consecutive frames mostly go to the same peer.
    last: Option<(IpAddr, Hop)>,
    /// Fast-path lookups left before the clock is read again to catch stale entries.
    until_clock: u32,
}

impl NextHops {
    /// Resolves next hops out of interface `ifindex`, whose addresses are `addrs`. The
    /// netlink socket belongs to the network namespace of the thread that opened it.
    pub(crate) fn new(netlink: Netlink, ifindex: u32, addrs: Vec<IpAddr>) -> Self {
        NextHops {
            netlink,
            ifindex,
            addrs,
            cache: HashMap::new(),
            last: None,
            until_clock: 0,
        }
    }

    /// The next hop towards `dst`: from the cache, or from the kernel's tables (waiting for
    /// neighbour resolution the first time).
    pub(crate) fn get(&mut self, dst: IpAddr) -> Result<Hop, NetError> {
        // The per-frame path: same peer as last time, clock not due. Reading the clock and
        // hashing for every frame cost a few percent of the message rate.
        if let Some((ip, hop)) = self.last {
            if ip == dst && self.until_clock > 0 {
                self.until_clock -= 1;
                return Ok(hop);
            }
        }
        let hop = self.lookup(dst)?;
        self.last = Some((dst, hop));
        self.until_clock = CLOCK_EVERY;
        Ok(hop)
    }

    fn lookup(&mut self, dst: IpAddr) -> Result<Hop, NetError> {
        let cached = self
            .cache
            .get(&dst)
            .map(|e| (e.hop, e.resolved_at.elapsed() < REFRESH));
        let hop = match cached {
            Some((hop, true)) => return Ok(hop),
            // Stale: ask again, but keep using the old answer if the tables no longer have
            // one (the peer may just be quiet).
            Some((old, false)) => self.resolve(dst).unwrap_or(old),
            None => self.resolve(dst)?,
        };
        self.cache.insert(
            dst,
            Entry {
                hop,
                resolved_at: Instant::now(),
            },
        );
        Ok(hop)
    }

    fn resolve(&mut self, dst: IpAddr) -> Result<Hop, NetError> {
        let unreachable = |e: std::io::Error| NetError::Unreachable(dst, e.to_string());
        let route = self.netlink.route_get(dst).map_err(unreachable)?;
        if route.oif != self.ifindex {
            return Err(NetError::Unreachable(
                dst,
                format!(
                    "the route goes out of interface index {}, not ours ({})",
                    route.oif, self.ifindex
                ),
            ));
        }
        let src = route
            .prefsrc
            .filter(|ip| self.addrs.contains(ip))
            .or_else(|| {
                self.addrs
                    .iter()
                    .find(|ip| ip.is_ipv4() == dst.is_ipv4())
                    .copied()
            })
            .ok_or(NetError::AddressFamily(dst))?;
        let (_, mac) = self
            .netlink
            .resolve_next_hop(dst, RESOLVE_TIMEOUT)
            .map_err(unreachable)?;
        Ok(Hop {
            mac: MacAddr(mac),
            src,
        })
    }
}
