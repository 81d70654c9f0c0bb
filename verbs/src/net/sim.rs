//! The `sim` backend: an in-memory network with seeded impairments and virtual time.
//!
//! A [`SimNetwork`] is a shared medium; [`SimNetwork::endpoint`] attaches a [`SimIo`] at an
//! address. Datagrams carry the same bytes as on a real wire (transport packet plus ICRC over
//! the IP and UDP headers the sender would have used), so corruption is caught exactly as on
//! a real network. Time does not pass by itself: the test moves it with
//! [`SimNetwork::advance`] / [`SimNetwork::advance_to`], usually to
//! [`SimNetwork::next_arrival`] or to an engine's next timer, which makes a run with a given
//! seed replay exactly.
//!
//! Impairments, each drawn from the network's seeded [`Rng`]: loss, duplication, reordering
//! (an extra random delay), bit corruption, fixed delay plus jitter, and a per-sender
//! bandwidth limit (serialization delay).
//!
//! Buffers are recycled through a pool, so a run in steady state does not allocate.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{BackendKind, FrameIo, IoMode, LinkInfo, NetError, NetStats, RxMeta, TxMeta, datagram};
use crate::rng::Rng;
use crate::wire::icrc;

/// Impairments and shape of a simulated network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice the network makes.
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to `reorder_delay` extra.
    pub reorder: f64,
    /// Longest extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability that one random bit of a datagram is flipped.
    pub corrupt: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Uniform extra delay in `[0, jitter)`.
    pub jitter: Duration,
    /// Bits per second each sender can put on the medium; `None` for unlimited.
    pub bandwidth_bps: Option<u64>,
    /// IP MTU of the medium.
    pub mtu: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_micros(50),
            corrupt: 0.0,
            delay: Duration::from_micros(5),
            jitter: Duration::ZERO,
            bandwidth_bps: None,
            mtu: 1500,
        }
    }
}

/// What the medium did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams handed to the medium.
    pub sent: u64,
    /// Lost on purpose.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Held back past later datagrams.
    pub reordered: u64,
    /// Had a bit flipped.
    pub corrupted: u64,
    /// Addressed to nobody.
    pub unroutable: u64,
    /// Dropped because their sender's or receiver's host is down.
    pub host_down: u64,
    /// Put into a receiver's mailbox.
    pub delivered: u64,
}

/// A datagram on its way.
struct InFlight {
    at: Instant,
    seq: u64,
    src: SocketAddr,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// An attached endpoint's receive side.
struct Mailbox {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Readable while `queue` is not empty.
    event: OwnedFd,
    /// When this endpoint's sender is next free to serialize (bandwidth limit).
    tx_free_at: Instant,
}

struct Shared {
    config: SimConfig,
    rng: Rng,
    now: Instant,
    seq: u64,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    mailboxes: HashMap<SocketAddr, Mailbox>,
    /// Hosts whose datagrams, sent or due, vanish.
    down: HashSet<IpAddr>,
    pool: Vec<Vec<u8>>,
    stats: SimStats,
}

impl Shared {
    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Moves every datagram due by `now` into its receiver's mailbox.
    fn release_due(&mut self) {
        while let Some(Reverse(head)) = self.in_flight.peek() {
            if head.at > self.now {
                break;
            }
            let Reverse(d) = self.in_flight.pop().expect("peeked");
            match self.mailboxes.get_mut(&d.dst) {
                Some(mb) => {
                    if mb.queue.is_empty() {
                        signal(&mb.event);
                    }
                    mb.queue.push_back((d.src, d.bytes));
                    self.stats.delivered += 1;
                }
                None => {
                    self.stats.unroutable += 1;
                    self.pool.push(d.bytes);
                }
            }
        }
    }

    fn launch(&mut self, src: SocketAddr, dst: SocketAddr, mut bytes: Vec<u8>) {
        self.stats.sent += 1;
        let now = self.now;
        let departure = match (self.config.bandwidth_bps, self.mailboxes.get_mut(&src)) {
            (Some(bps), Some(mb)) if bps > 0 => {
                let start = mb.tx_free_at.max(now);
                let wire_bits = (bytes.len() as u64 + 42) * 8;
                mb.tx_free_at = start + Duration::from_nanos(wire_bits * 1_000_000_000 / bps);
                mb.tx_free_at
            }
            _ => now,
        };
        if self.down.contains(&src.ip()) || self.down.contains(&dst.ip()) {
            self.stats.host_down += 1;
            self.pool.push(bytes);
            return;
        }
        if self.rng.chance(self.config.loss) {
            self.stats.lost += 1;
            self.pool.push(bytes);
            return;
        }
        if self.rng.chance(self.config.corrupt) && !bytes.is_empty() {
            let bit = self.rng.below(bytes.len() as u64 * 8);
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        let copies = if self.rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let payload = if copy + 1 == copies {
                std::mem::take(&mut bytes)
            } else {
                self.stats.duplicated += 1;
                let mut dup = self.buffer();
                dup.extend_from_slice(&bytes);
                dup
            };
            let mut at = departure + self.config.delay + jitter(&mut self.rng, self.config.jitter);
            if self.rng.chance(self.config.reorder) {
                self.stats.reordered += 1;
                at += jitter(&mut self.rng, self.config.reorder_delay);
            }
            self.seq += 1;
            self.in_flight.push(Reverse(InFlight {
                at,
                seq: self.seq,
                src,
                dst,
                bytes: payload,
            }));
        }
        self.release_due();
    }
}

fn jitter(rng: &mut Rng, max: Duration) -> Duration {
    Duration::from_nanos(rng.below(max.as_nanos() as u64))
}

fn signal(event: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. A full counter (EAGAIN)
    // still leaves the fd readable, which is all we need.
    let _ = unsafe { libc::write(event.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

fn clear(event: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd we own; EAGAIN (not
    // signalled) is fine.
    let _ = unsafe { libc::read(event.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// A simulated network that endpoints attach to. Cloning gives another handle to the same
/// network.
#[derive(Clone)]
pub struct SimNetwork {
    shared: Arc<Mutex<Shared>>,
}

impl SimNetwork {
    /// A network with the given impairments, its clock starting now.
    pub fn new(config: SimConfig) -> Self {
        let rng = Rng::seed_from_u64(config.seed);
        SimNetwork {
            shared: Arc::new(Mutex::new(Shared {
                config,
                rng,
                now: Instant::now(),
                seq: 0,
                in_flight: BinaryHeap::new(),
                mailboxes: HashMap::new(),
                down: HashSet::new(),
                pool: Vec::new(),
                stats: SimStats::default(),
            })),
        }
    }

    /// Attaches an endpoint receiving at `addr`.
    pub fn endpoint(&self, addr: SocketAddr) -> Result<SimIo, NetError> {
        let mut s = self.shared.lock();
        if s.mailboxes.contains_key(&addr) {
            return Err(NetError::InvalidConfig(format!(
                "{addr} is already attached"
            )));
        }
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(NetError::Io(
                "creating an eventfd",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        let now = s.now;
        s.mailboxes.insert(
            addr,
            Mailbox {
                queue: VecDeque::new(),
                event,
                tx_free_at: now,
            },
        );
        let link = LinkInfo {
            backend: BackendKind::Sim,
            mode: IoMode::Simulated,
            iface: "sim".into(),
            ifindex: 0,
            mac: None,
            mtu: s.config.mtu,
            addrs: vec![addr.ip()],
            port: addr.port(),
            queues: 1,
        };
        let scratch = vec![0; link.max_transport_len(false) + icrc::ICRC_LEN];
        Ok(SimIo {
            shared: self.shared.clone(),
            addr,
            event_fd: s.mailboxes[&addr].event.as_raw_fd(),
            link,
            scratch,
            batch: Vec::new(),
            stats: NetStats::default(),
        })
    }

    /// The network's current (virtual) time.
    pub fn now(&self) -> Instant {
        self.shared.lock().now
    }

    /// Moves time forward by `by`, delivering what arrives meanwhile.
    pub fn advance(&self, by: Duration) {
        let mut s = self.shared.lock();
        s.now += by;
        s.release_due();
    }

    /// Moves time forward to `t` (never backwards), delivering what arrives meanwhile.
    pub fn advance_to(&self, t: Instant) {
        let mut s = self.shared.lock();
        if t > s.now {
            s.now = t;
        }
        s.release_due();
    }

    /// When the next datagram in flight arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.shared.lock().in_flight.peek().map(|Reverse(d)| d.at)
    }

    /// Datagrams waiting in mailboxes, not yet received.
    pub fn queued(&self) -> usize {
        self.shared
            .lock()
            .mailboxes
            .values()
            .map(|m| m.queue.len())
            .sum()
    }

    /// What the medium has done so far.
    pub fn stats(&self) -> SimStats {
        self.shared.lock().stats
    }

    /// Changes the impairments from now on (the random sequence continues).
    pub fn reconfigure(&self, f: impl FnOnce(&mut SimConfig)) {
        f(&mut self.shared.lock().config);
    }

    /// Takes host `ip` off the network (`down`), as a machine that lost power or a
    /// process killed before it could say goodbye: what it sends and what is sent to it
    /// from now on vanishes, without an answer. Or puts it back.
    pub fn set_host_down(&self, ip: IpAddr, down: bool) {
        let mut sh = self.shared.lock();
        if down {
            sh.down.insert(ip);
        } else {
            sh.down.remove(&ip);
        }
    }
}

/// An endpoint attached to a [`SimNetwork`].
pub struct SimIo {
    shared: Arc<Mutex<Shared>>,
    addr: SocketAddr,
    event_fd: RawFd,
    link: LinkInfo,
    scratch: Vec<u8>,
    batch: Vec<(SocketAddr, Vec<u8>)>,
    stats: NetStats,
}

impl SimIo {
    /// The address this endpoint receives at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SimIo {
    fn drop(&mut self) {
        self.shared.lock().mailboxes.remove(&self.addr);
    }
}

impl FrameIo for SimIo {
    fn link(&self) -> &LinkInfo {
        &self.link
    }

    fn now(&self) -> Instant {
        self.shared.lock().now
    }

    fn send(
        &mut self,
        meta: &TxMeta,
        write: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<bool, NetError> {
        if meta.dst.is_ipv6() != self.addr.is_ipv6() {
            return Err(NetError::AddressFamily(meta.dst.ip()));
        }
        let max = self.link.max_transport_len(meta.dst.is_ipv6());
        let len = write(&mut self.scratch[..max]);
        if len > max {
            return Err(NetError::TooLong { len, max });
        }
        let total = datagram::seal(self.addr, meta.dst, &mut self.scratch, len)
            .map_err(|_| NetError::AddressFamily(meta.dst.ip()))?;
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        let mut s = self.shared.lock();
        let mut bytes = s.buffer();
        bytes.extend_from_slice(&self.scratch[..total]);
        s.launch(self.addr, meta.dst, bytes);
        Ok(true)
    }

    fn flush(&mut self) -> Result<(), NetError> {
        Ok(())
    }

    fn recv(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&RxMeta, &[u8]),
    ) -> Result<usize, NetError> {
        {
            let mut s = self.shared.lock();
            s.release_due();
            let Some(mb) = s.mailboxes.get_mut(&self.addr) else {
                return Ok(0);
            };
            while self.batch.len() < max {
                match mb.queue.pop_front() {
                    Some(d) => self.batch.push(d),
                    None => break,
                }
            }
            if mb.queue.is_empty() {
                clear(&mb.event);
            }
        }
        let mut delivered = 0;
        for (src, bytes) in &self.batch {
            match datagram::open(*src, self.addr, bytes) {
                Ok(transport) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += transport.len() as u64;
                    deliver(
                        &RxMeta {
                            src: *src,
                            dst: self.addr.ip(),
                        },
                        transport,
                    );
                    delivered += 1;
                }
                Err(err) => self.stats.count_drop(err),
            }
        }
        let mut s = self.shared.lock();
        for (_, bytes) in self.batch.drain(..) {
            s.pool.push(bytes);
        }
        Ok(delivered)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.event_fd
    }

    fn stats(&self) -> NetStats {
        self.stats
    }
}

/// The address of the `n`th simulated host on the RoCEv2 port (198.18.0.n).
pub fn host_addr(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([198, 18, 0, n]), crate::wire::udp::ROCEV2_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::send_copy;

    /// A BTH-only transport packet whose PSN field carries `n`.
    fn packet(n: u32) -> [u8; 16] {
        let mut p = [0u8; 16];
        p[0] = 0x64;
        p[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
        p[9..12].copy_from_slice(&n.to_be_bytes()[1..]);
        p[12..16].copy_from_slice(&n.to_be_bytes());
        p
    }

    fn seq_of(p: &[u8]) -> u32 {
        u32::from_be_bytes(p[12..16].try_into().unwrap())
    }

    /// Sends `count` packets a->b, one per microsecond, then lets everything arrive; returns
    /// the sequence numbers b received, in order, and the stats of both ends.
    fn run(config: SimConfig, count: u32) -> (Vec<u32>, SimStats, NetStats) {
        let net = SimNetwork::new(config);
        let mut a = net.endpoint(host_addr(1)).unwrap();
        let mut b = net.endpoint(host_addr(2)).unwrap();
        let mut got = Vec::new();
        for n in 0..count {
            assert!(send_copy(&mut a, &TxMeta::to(host_addr(2), 0xc000), &packet(n)).unwrap());
            net.advance(Duration::from_micros(1));
            b.recv(64, &mut |_, p| got.push(seq_of(p))).unwrap();
        }
        while let Some(t) = net.next_arrival() {
            net.advance_to(t);
            b.recv(64, &mut |_, p| got.push(seq_of(p))).unwrap();
        }
        b.recv(64, &mut |_, p| got.push(seq_of(p))).unwrap();
        (got, net.stats(), b.stats())
    }

    #[test]
    fn clean_network_delivers_everything_in_order() {
        let (got, stats, rx) = run(SimConfig::default(), 1000);
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(stats.delivered, 1000);
        assert_eq!(rx.rx_packets, 1000);
        assert_eq!(rx.rx_dropped(), 0);
    }

    #[test]
    fn nothing_arrives_before_its_delay() {
        let net = SimNetwork::new(SimConfig {
            delay: Duration::from_millis(10),
            ..SimConfig::default()
        });
        let mut a = net.endpoint(host_addr(1)).unwrap();
        let mut b = net.endpoint(host_addr(2)).unwrap();
        send_copy(&mut a, &TxMeta::to(host_addr(2), 1), &packet(7)).unwrap();
        let mut n = 0;
        net.advance(Duration::from_millis(9));
        b.recv(8, &mut |_, _| n += 1).unwrap();
        assert_eq!(n, 0);
        net.advance(Duration::from_millis(1));
        b.recv(8, &mut |_, _| n += 1).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn loss_rate_is_roughly_the_configured_one() {
        let (got, stats, _) = run(
            SimConfig {
                seed: 3,
                loss: 0.3,
                ..SimConfig::default()
            },
            10_000,
        );
        assert_eq!(stats.lost + got.len() as u64, 10_000);
        assert!((2_700..3_300).contains(&stats.lost), "lost {}", stats.lost);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "loss alone must not reorder"
        );
    }

    #[test]
    fn duplicates_and_reordering_happen_and_are_counted() {
        let config = SimConfig {
            seed: 5,
            duplicate: 0.1,
            reorder: 0.2,
            ..SimConfig::default()
        };
        let (got, stats, _) = run(config, 5_000);
        assert_eq!(got.len() as u64, 5_000 + stats.duplicated);
        assert!(stats.duplicated > 300 && stats.reordered > 700, "{stats:?}");
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "some packet must overtake another"
        );
        let mut unique = got.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique, (0..5_000).collect::<Vec<_>>());
    }

    #[test]
    fn corruption_is_caught_by_the_icrc_and_counted() {
        let net = SimNetwork::new(SimConfig {
            seed: 9,
            corrupt: 0.2,
            ..SimConfig::default()
        });
        let mut a = net.endpoint(host_addr(1)).unwrap();
        let mut b = net.endpoint(host_addr(2)).unwrap();
        let (mut intact, mut fecn_byte_flipped) = (0u64, 0u64);
        for n in 0..2_000 {
            let sent = packet(n);
            send_copy(&mut a, &TxMeta::to(host_addr(2), 1), &sent).unwrap();
            net.advance(Duration::from_millis(1));
            b.recv(8, &mut |_, p| {
                if p == sent {
                    intact += 1;
                } else {
                    // The ICRC masks the BTH byte holding FECN/BECN (switches may set them),
                    // so a flip there is the one corruption that gets through.
                    assert_eq!(&p[..4], &sent[..4]);
                    assert_eq!(&p[5..], &sent[5..]);
                    fecn_byte_flipped += 1;
                }
            })
            .unwrap();
        }
        let stats = net.stats();
        let rx = b.stats();
        assert!(stats.corrupted > 300, "{stats:?}");
        assert_eq!(rx.rx_bad_icrc + fecn_byte_flipped, stats.corrupted);
        assert_eq!(intact, 2_000 - stats.corrupted);
    }

    #[test]
    fn bandwidth_limit_serializes_packets() {
        // 16 + 4 bytes of datagram + 42 of headers = 496 bits; at 1 Mbit/s, 496 us each.
        let net = SimNetwork::new(SimConfig {
            bandwidth_bps: Some(1_000_000),
            delay: Duration::ZERO,
            ..SimConfig::default()
        });
        let mut a = net.endpoint(host_addr(1)).unwrap();
        let mut b = net.endpoint(host_addr(2)).unwrap();
        for n in 0..10 {
            send_copy(&mut a, &TxMeta::to(host_addr(2), 1), &packet(n)).unwrap();
        }
        let mut n = 0;
        net.advance(Duration::from_micros(496 * 5));
        b.recv(64, &mut |_, _| n += 1).unwrap();
        assert_eq!(n, 5);
        net.advance(Duration::from_micros(496 * 5));
        b.recv(64, &mut |_, _| n += 1).unwrap();
        assert_eq!(n, 10);
    }

    #[test]
    fn same_seed_replays_exactly_and_another_seed_does_not() {
        let config = |seed| SimConfig {
            seed,
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.1,
            jitter: Duration::from_micros(3),
            ..SimConfig::default()
        };
        let (a, _, _) = run(config(11), 3_000);
        let (b, _, _) = run(config(11), 3_000);
        let (c, _, _) = run(config(12), 3_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn event_fd_is_readable_exactly_while_something_is_waiting() {
        let net = SimNetwork::new(SimConfig::default());
        let mut a = net.endpoint(host_addr(1)).unwrap();
        let mut b = net.endpoint(host_addr(2)).unwrap();
        let readable = |fd: RawFd| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd, no timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!readable(b.as_raw_fd()));
        send_copy(&mut a, &TxMeta::to(host_addr(2), 1), &packet(1)).unwrap();
        net.advance(Duration::from_millis(1));
        assert!(readable(b.as_raw_fd()));
        b.recv(64, &mut |_, _| ()).unwrap();
        assert!(!readable(b.as_raw_fd()));
    }

    #[test]
    fn unknown_destinations_and_duplicate_endpoints_are_refused_or_counted() {
        let net = SimNetwork::new(SimConfig::default());
        let mut a = net.endpoint(host_addr(1)).unwrap();
        assert!(matches!(
            net.endpoint(host_addr(1)),
            Err(NetError::InvalidConfig(_))
        ));
        send_copy(&mut a, &TxMeta::to(host_addr(9), 1), &packet(1)).unwrap();
        net.advance(Duration::from_millis(1));
        assert_eq!(net.stats().unroutable, 1);
        let too_long = vec![0u8; a.link().max_transport_len(false) + 1];
        assert!(matches!(
            send_copy(&mut a, &TxMeta::to(host_addr(2), 1), &too_long),
            Err(NetError::TooLong { .. })
        ));
    }
}
