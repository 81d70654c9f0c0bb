//! `xrdma perf`: measure what a path gives, perftest-style.
//!
//! A server and a client each open a backend, meet over a TCP control connection
//! ([`oob`]), run one test and report. Tests so far:
//!
//! - `raw-lat`: ping-pong of frames carrying a BTH and DETH; one-way latency is half the
//!   round trip, as perftest and sockperf report it.
//! - `raw-bw`: the client streams such frames as fast as the backend takes them; the server
//!   counts what arrives. Rates are the receiver's.
//!
//! - `ud-lat`, `ud-bw`: the same with UD SENDs through the verbs.
//! - `rc-send-lat`, `rc-send-bw`, `rc-write-lat`, `rc-write-bw`, `rc-read-lat`,
//!   `rc-read-bw`, `rc-atomic-lat`: RC QPs, as perftest's `ib_*_lat`/`ib_*_bw` run them
//!   (see the `rc` module), with messages up to 1 GiB.
//!
//! - `cm-connect`: RC connections set up and torn down through the connection manager
//!   ([`xrdma_verbs::cm`]), as rdma_cm programs do; the rate is connections per second (see
//!   the `cm` module).
//!
//! - `rs-lat`, `rs-bw`: stream rsockets ([`xrdma_rsocket`]), ping-pong and streaming, and
//!   `rs-dgram-lat`, datagram rsockets' ping-pong;
//!   `tcp-lat`, `tcp-bw`: the same on the kernel's TCP between the same hosts (see the `rs`
//!   module).
//!
//! Raw frames have no reliability: a lost ping is resent after a timeout, a lost stream
//! frame is simply not counted.

mod cm;
pub mod oob;
mod raw;
mod rc;
pub mod report;
mod rs;
mod ud;
mod verbs;

use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::str::FromStr;
use std::time::Duration;

use xrdma_verbs::net::{self, BackendConfig, FrameIo, LinkInfo};

pub use report::Report;

/// perftest's default control port.
pub const DEFAULT_OOB_PORT: u16 = 18515;

/// The rdma_cm port `cm-connect` listens on and connects to by default (rping's is 7174,
/// perftest's its control port; this one is free of both).
pub const DEFAULT_CM_PORT: u16 = 7471;

/// Which test to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// Frame ping-pong latency.
    RawLat,
    /// Frame streaming bandwidth and message rate.
    RawBw,
    /// UD SEND ping-pong latency through the verbs.
    UdLat,
    /// UD SEND streaming bandwidth and message rate through the verbs.
    UdBw,
    /// RC SEND ping-pong latency.
    RcSendLat,
    /// RC SEND streaming bandwidth, counted by the receiver.
    RcSendBw,
    /// RC RDMA WRITE ping-pong latency.
    RcWriteLat,
    /// RC RDMA WRITE streaming bandwidth.
    RcWriteBw,
    /// RC RDMA READ latency, one at a time.
    RcReadLat,
    /// RC RDMA READ streaming bandwidth.
    RcReadBw,
    /// RC fetch-and-add latency, one at a time.
    RcAtomicLat,
    /// RC connections through the connection manager: connect, disconnect, per second.
    CmConnect,
    /// Stream rsocket ping-pong latency.
    RsLat,
    /// Stream rsocket streaming bandwidth.
    RsBw,
    /// Datagram rsocket ping-pong latency.
    RsDgramLat,
    /// Kernel TCP ping-pong latency, as `rs-lat` measures it.
    TcpLat,
    /// Kernel TCP streaming bandwidth, as `rs-bw` measures it.
    TcpBw,
}

/// Every test, in the order help texts list them.
pub const TESTS: [Test; 17] = [
    Test::RawLat,
    Test::RawBw,
    Test::UdLat,
    Test::UdBw,
    Test::RcSendLat,
    Test::RcSendBw,
    Test::RcWriteLat,
    Test::RcWriteBw,
    Test::RcReadLat,
    Test::RcReadBw,
    Test::RcAtomicLat,
    Test::CmConnect,
    Test::RsLat,
    Test::RsBw,
    Test::RsDgramLat,
    Test::TcpLat,
    Test::TcpBw,
];

impl Test {
    /// The test's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Test::RawLat => "raw-lat",
            Test::RawBw => "raw-bw",
            Test::UdLat => "ud-lat",
            Test::UdBw => "ud-bw",
            Test::RcSendLat => "rc-send-lat",
            Test::RcSendBw => "rc-send-bw",
            Test::RcWriteLat => "rc-write-lat",
            Test::RcWriteBw => "rc-write-bw",
            Test::RcReadLat => "rc-read-lat",
            Test::RcReadBw => "rc-read-bw",
            Test::RcAtomicLat => "rc-atomic-lat",
            Test::CmConnect => "cm-connect",
            Test::RsLat => "rs-lat",
            Test::RsBw => "rs-bw",
            Test::RsDgramLat => "rs-dgram-lat",
            Test::TcpLat => "tcp-lat",
            Test::TcpBw => "tcp-bw",
        }
    }

    fn default_iters(self) -> u64 {
        match self {
            Test::RawBw | Test::UdBw => 1_000_000,
            // Reliable streams carry every message: fewer by default, as perftest does.
            Test::RcSendBw | Test::RcWriteBw | Test::RcReadBw => 100_000,
            Test::RsBw | Test::TcpBw => 100_000,
            Test::CmConnect => 1000,
            _ => 10_000,
        }
    }
}

impl FromStr for Test {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        TESTS.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let known: Vec<&str> = TESTS.iter().map(|t| t.name()).collect();
            format!("unknown test {s:?} (known: {})", known.join(", "))
        })
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which end this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Waits for a client on the control port.
    Server,
    /// Connects to the server at this address.
    Client(IpAddr),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Test to run.
    pub test: Test,
    /// Server or client.
    pub role: Role,
    /// Backend to open.
    pub backend: BackendConfig,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages to send (default per test), unless `duration` is given.
    pub iters: Option<u64>,
    /// Run for this long instead of a count.
    pub duration: Option<Duration>,
    /// TCP control port.
    pub oob_port: u16,
    /// rdma_cm port of `cm-connect` (PS_TCP): the server listens on it, the client connects
    /// to it.
    pub cm_port: u16,
    /// How long to wait for the peer (server: for a client; client: for the server).
    pub timeout: Duration,
    /// Socket tests: how long a blocked call polls before it sleeps (default: rsocket's
    /// 10 µs for rsockets, none for TCP).
    pub polling_time: Option<Duration>,
}

/// An error of a perf run, with what was being done.
#[derive(Debug)]
pub struct PerfError(pub String);

impl fmt::Display for PerfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PerfError {}

impl From<std::io::Error> for PerfError {
    fn from(e: std::io::Error) -> Self {
        PerfError(e.to_string())
    }
}

impl From<net::NetError> for PerfError {
    fn from(e: net::NetError) -> Self {
        PerfError(e.to_string())
    }
}

/// Result of a perf run.
pub type Result<T> = std::result::Result<T, PerfError>;

/// Opens the backend and runs one test as server or client.
pub fn run(opts: &Options) -> Result<Report> {
    let io = net::open(&opts.backend)?;
    run_on(opts, io)
}

/// Runs one test on an already opened backend (tests and benchmarks open it themselves,
/// for example inside a network namespace).
pub fn run_on(opts: &Options, io: Box<dyn FrameIo>) -> Result<Report> {
    match opts.test {
        Test::RawLat | Test::RawBw => raw::run(opts, io),
        Test::UdLat | Test::UdBw => ud::run(opts, io),
        Test::CmConnect => cm::run(opts, io),
        Test::RsLat | Test::RsBw => rs::run_rsocket(opts, io),
        Test::RsDgramLat => rs::run_dgram(opts, io),
        Test::TcpLat | Test::TcpBw => rs::run_tcp(opts, &io.link().clone()),
        _ => rc::run(opts, io),
    }
}

/// Two ends that have met: the control connection, the peer's RoCEv2 address and the
/// words of its HELLO (server) or OK (client).
pub(crate) struct Session {
    pub(crate) ctrl: oob::Control,
    pub(crate) peer: SocketAddr,
    pub(crate) peer_says: oob::Message,
    pub(crate) size: usize,
    pub(crate) limit: Limit,
}

/// When a client stops sending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub(crate) iters: u64,
    pub(crate) duration: Option<Duration>,
}

impl Limit {
    pub(crate) fn done(&self, count: u64, start: std::time::Instant) -> bool {
        count >= self.iters || self.duration.is_some_and(|d| start.elapsed() >= d)
    }
}

/// Meets the peer over the control connection. `max` is the largest message this end can
/// carry; `ours` are extra words for the peer (a QPN, say).
pub(crate) fn meet(
    opts: &Options,
    link: &LinkInfo,
    max: usize,
    ours: &[(&str, String)],
) -> Result<Session> {
    if opts.size > max {
        return Err(PerfError(format!(
            "--size {} exceeds the {max} bytes a message carries on this link",
            opts.size
        )));
    }
    let iters = opts.iters.unwrap_or(opts.test.default_iters());
    let limit = Limit {
        iters: if opts.duration.is_some() {
            u64::MAX
        } else {
            iters
        },
        duration: opts.duration,
    };
    let with_ours = |mut m: oob::Message| {
        for (k, v) in ours {
            m = m.with(k, v);
        }
        m
    };
    match opts.role {
        Role::Server => {
            let listener =
                TcpListener::bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), opts.oob_port))
                    .map_err(|e| {
                        PerfError(format!("listening on control port {}: {e}", opts.oob_port))
                    })?;
            let mut ctrl = accept_within(&listener, opts.timeout)?;
            let hello = ctrl.recv()?;
            let test: Test = hello.get("test")?.parse().map_err(PerfError)?;
            if hello.verb != "HELLO" || test != opts.test {
                ctrl.send(
                    &oob::Message::new("ERR")
                        .with("server", "")
                        .with("runs", opts.test.name()),
                )?;
                return Err(PerfError(format!(
                    "client asked for {test}, this server runs {}",
                    opts.test
                )));
            }
            let size: usize = hello.parse("size")?;
            if size > max {
                ctrl.send(&oob::Message::new("ERR").with("size", size).with("max", max))?;
                return Err(PerfError(format!(
                    "client asked for {size}-byte messages; this link carries {max}"
                )));
            }
            let peer: SocketAddr = hello.parse("roce")?;
            let me = roce_addr(link, ctrl.local_addr()?.ip())?;
            ctrl.send(&with_ours(oob::Message::new("OK").with("roce", me)))?;
            Ok(Session {
                ctrl,
                peer,
                peer_says: hello,
                size,
                limit,
            })
        }
        Role::Client(server) => {
            let mut ctrl =
                oob::Control::connect(SocketAddr::new(server, opts.oob_port), opts.timeout)?;
            let me = roce_addr(link, ctrl.local_addr()?.ip())?;
            let hello = oob::Message::new("HELLO")
                .with("test", opts.test.name())
                .with("size", opts.size)
                .with("roce", me);
            ctrl.send(&with_ours(hello))?;
            let ok = ctrl.recv()?;
            let peer: SocketAddr = ok.parse("roce")?;
            Ok(Session {
                ctrl,
                peer,
                peer_says: ok,
                size: opts.size,
                limit,
            })
        }
    }
}

/// What the server of a bandwidth test counted.
pub(crate) struct Counted {
    pub(crate) received: u64,
    pub(crate) sent: u64,
    pub(crate) elapsed: Duration,
}

/// The server side of a bandwidth test: calls `receive` (which returns how many messages
/// arrived) until the client says END and nothing more arrived for a while, answers with
/// RESULT, and returns the counts. The elapsed time runs from the first message counted to
/// the last.
pub(crate) fn count_until_end(
    ctrl: &mut oob::Control,
    mut receive: impl FnMut() -> Result<u64>,
) -> Result<Counted> {
    const DRAIN_QUIET: Duration = Duration::from_millis(50);
    let (mut received, mut first, mut last) =
        (0u64, None::<std::time::Instant>, std::time::Instant::now());
    // Once the client said END, keep counting until nothing arrived for DRAIN_QUIET.
    let (mut end, mut quiet_since, mut last_check) = (
        None::<u64>,
        std::time::Instant::now(),
        std::time::Instant::now(),
    );
    loop {
        let n = receive()?;
        if n > 0 {
            last = std::time::Instant::now();
            first.get_or_insert(last);
            quiet_since = last;
            received += n;
        }
        if end.is_some() {
            if quiet_since.elapsed() > DRAIN_QUIET {
                break;
            }
        } else if last_check.elapsed() > Duration::from_millis(5) {
            last_check = std::time::Instant::now();
            if let Some(m) = ctrl.try_recv()? {
                end = Some(m.parse("sent")?);
                quiet_since = std::time::Instant::now();
            }
        }
    }
    let elapsed = first
        .map(|f| last.saturating_duration_since(f))
        .unwrap_or_default();
    ctrl.send(
        &oob::Message::new("RESULT")
            .with("received", received)
            .with("elapsed_ns", elapsed.as_nanos()),
    )?;
    Ok(Counted {
        received,
        sent: end.unwrap_or(0),
        elapsed,
    })
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<oob::Control> {
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match oob::Control::accept(listener) {
            Ok(c) => return Ok(c),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(PerfError(format!("no client connected within {timeout:?}")));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Our RoCEv2 address as a peer should use it: the control connection's local address if
/// the backend owns it, else the backend's first address of the same family.
fn roce_addr(link: &LinkInfo, control_ip: IpAddr) -> Result<SocketAddr> {
    let ip = if link.addrs.contains(&control_ip) {
        control_ip
    } else {
        link.addrs
            .iter()
            .find(|a| a.is_ipv4() == control_ip.is_ipv4())
            .copied()
            .ok_or_else(|| {
                PerfError(format!(
                    "{} has no address of the control connection's family",
                    link.iface
                ))
            })?
    };
    Ok(SocketAddr::new(ip, link.port))
}
