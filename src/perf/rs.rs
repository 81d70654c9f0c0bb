//! `rs-lat`, `rs-bw`: stream rsockets ([`xrdma_rsocket`]) as a program uses them, and
//! `tcp-lat`, `tcp-bw`: the same on the kernel's TCP, between the same two hosts, for the
//! ratio.
//!
//! - `*-lat`: the client writes `--size` bytes, the server reads them all and writes them
//!   back, the client reads them all: one way is half the round trip (as sockperf reports
//!   it). After a warm-up, each round trip is a sample.
//! - `*-bw`: the client writes `--size`-byte messages as fast as the socket takes them, then
//!   shuts down its side (the rsockets with 1 MiB rings, as rstream's bandwidth test asks
//!   with SO_SNDBUF/SO_RCVBUF of 512 KiB); the server reads until end of file and reports
//!   the bytes and the time from the first to the last (the receiver's rate).
//!
//! - `rs-dgram-lat`: the same ping-pong with datagram rsockets; a datagram lost (UD is
//!   unreliable) is sent again after `DGRAM_RESEND` and counted as lost.
//!
//! A blocked call polls for `--polling-time` before it sleeps: rsocket's own 10 µs by
//! default (rsocket sockets) or not at all (TCP, as a blocking socket); a long one makes
//! both spin, as sockperf's busy-polling runs do. The rsocket listens on the rdma_cm port
//! (`--cm-port`) at the backend's address, the TCP listener on the same port at the control
//! connection's.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use xrdma_rsocket::{Config, RsListener, RsStream};
use xrdma_verbs::cm;
use xrdma_verbs::net::{FrameIo, LinkInfo};
use xrdma_verbs::verbs::{Context, ContextConfig};

use super::oob::Message;
use super::{Options, PerfError, Report, Result, Role, Session, Test, meet};

/// Round trips before the counted ones.
const WARMUP: u64 = 100;
/// The rings of `rs-bw`'s sockets, as rstream's bandwidth test sizes them.
const BW_BUFFER: u32 = 1 << 20;
/// How long `rs-dgram-lat` waits for an echo before it sends the datagram again.
const DGRAM_RESEND: Duration = Duration::from_millis(200);

/// What a run measures over: an rsocket or a kernel TCP socket.
trait Stream: Read + Write {
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for RsStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// A TCP socket that polls for `spin` before it blocks, as the rsocket does.
struct Tcp {
    s: TcpStream,
    spin: Duration,
}

impl Tcp {
    fn new(s: TcpStream, spin: Duration) -> io::Result<Tcp> {
        s.set_nodelay(true)?;
        s.set_nonblocking(!spin.is_zero())?;
        Ok(Tcp { s, spin })
    }

    /// `op` until it does not block; spins `spin`, then waits in poll for `events`.
    fn spin<T>(
        &mut self,
        events: i16,
        mut op: impl FnMut(&mut TcpStream) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut since = Instant::now();
        loop {
            match op(&mut self.s) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            if since.elapsed() >= self.spin {
                let mut p = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&self.s),
                    events,
                    revents: 0,
                };
                // SAFETY: one live pollfd.
                unsafe { libc::poll(&mut p, 1, 100) };
                since = Instant::now();
            }
        }
    }
}

impl Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.spin.is_zero() {
            return self.s.read(buf);
        }
        self.spin(libc::POLLIN, |s| s.read(buf))
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.spin.is_zero() {
            return self.s.write(buf);
        }
        self.spin(libc::POLLOUT, |s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Tcp {
    fn shutdown_write(&self) -> io::Result<()> {
        self.s.shutdown(Shutdown::Write)
    }
}

/// What the rsocket tests run on: the backend as the sockets' device (kept open while
/// they run), their configuration and the link.
struct RsDevice {
    _ctx: Context,
    config: Config,
    link: LinkInfo,
}

impl RsDevice {
    fn open(opts: &Options, io: Box<dyn FrameIo>) -> Result<RsDevice> {
        let link = io.link().clone();
        // The rsocket finds this context through the connection manager, as it would one
        // it opened itself for the interface.
        let ctx = Context::new(io, ContextConfig::default())?;
        cm::add_device(&ctx)?;
        let mut config = Config {
            polling_time: opts.polling_time.unwrap_or(Config::default().polling_time),
            ..Config::default()
        };
        if opts.test == Test::RsBw {
            // rstream's bandwidth test sets SO_SNDBUF and SO_RCVBUF to 512 KiB (rings
            // twice that, as rsocket doubles them like Linux); TCP's windows grow by
            // themselves.
            config.rmem = BW_BUFFER;
            config.wmem = BW_BUFFER;
        }
        Ok(RsDevice {
            _ctx: ctx,
            config,
            link,
        })
    }

    fn builder(&self) -> xrdma_rsocket::Builder {
        xrdma_rsocket::Builder::new().config(self.config)
    }

    /// `r` with the backend it ran on.
    fn label(&self, r: Report) -> Report {
        Report {
            backend: self.link.backend.to_string(),
            mode: format!("rsocket, {}", self.link.mode),
            ..r
        }
    }
}

/// Runs `rs-lat` or `rs-bw` over the backend `io`.
pub(super) fn run_rsocket(opts: &Options, io: Box<dyn FrameIo>) -> Result<Report> {
    let dev = RsDevice::open(opts, io)?;
    let link = &dev.link;
    match opts.role {
        Role::Server => {
            let at = SocketAddr::new(roce_ip(link)?, opts.cm_port);
            let listener = dev
                .builder()
                .listen(at)
                .map_err(|e| PerfError(format!("listening on {at}: {e}")))?;
            let s = meet(opts, link, usize::MAX, &[])?;
            let stream = accept_rs(&listener, opts.timeout)?;
            serve(opts.test, s, stream).map(|r| dev.label(r))
        }
        Role::Client(_) => {
            let s = meet(opts, link, usize::MAX, &[])?;
            let at = SocketAddr::new(s.peer.ip(), opts.cm_port);
            let stream = dev
                .builder()
                .connect(at)
                .map_err(|e| PerfError(format!("connecting to {at}: {e}")))?;
            drive(opts.test, s, stream).map(|r| dev.label(r))
        }
    }
}

/// Runs `rs-dgram-lat` over the backend `io`.
pub(super) fn run_dgram(opts: &Options, io: Box<dyn FrameIo>) -> Result<Report> {
    let dev = RsDevice::open(opts, io)?;
    let link = &dev.link;
    let me = roce_ip(link)?;
    let builder = dev.builder();
    match opts.role {
        Role::Server => {
            let at = SocketAddr::new(me, opts.cm_port);
            let sock = builder
                .bind_datagram(at)
                .map_err(|e| PerfError(format!("binding {at}: {e}")))?;
            let mut s = meet(opts, link, usize::MAX, &[])?;
            sock.set_read_timeout(Some(Duration::from_millis(5)))?;
            let mut buf = vec![0u8; 1 << 16];
            let mut echoed = 0u64;
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        sock.send_to(&buf[..n], from)?;
                        echoed += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if s.ctrl.try_recv()?.is_some() {
                            break;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(dev.label(Report {
                iters: echoed,
                sent: echoed,
                ..report(opts.test, s.size)
            }))
        }
        Role::Client(_) => {
            let sock = builder
                .bind_datagram(SocketAddr::new(me, 0))
                .map_err(|e| PerfError(format!("binding {me}: {e}")))?;
            let mut s = meet(opts, link, usize::MAX, &[])?;
            let to = SocketAddr::new(s.peer.ip(), opts.cm_port);
            sock.set_read_timeout(Some(DGRAM_RESEND))?;
            let msg = vec![0x5au8; s.size];
            let mut echo = vec![0u8; s.size.max(1)];
            let (mut latencies, mut count, mut sent) = (Vec::new(), 0u64, 0u64);
            let start = Instant::now();
            while count < WARMUP || !s.limit.done(count - WARMUP, start) {
                let t = Instant::now();
                sock.send_to(&msg, to)
                    .map_err(|e| PerfError(format!("sending to {to}: {e}")))?;
                sent += 1;
                match sock.recv_from(&mut echo) {
                    Ok(_) => {
                        if count >= WARMUP {
                            latencies.push(t.elapsed() / 2);
                        }
                        count += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
            s.ctrl.send(&Message::new("END").with("sent", sent))?;
            latencies.sort_unstable();
            let n = latencies.len() as u64;
            Ok(dev.label(Report {
                iters: n,
                sent: n + (sent - count),
                elapsed: start.elapsed(),
                latencies,
                ..report(opts.test, s.size)
            }))
        }
    }
}

/// Runs `tcp-lat` or `tcp-bw` on the kernel's TCP, between the control connection's
/// addresses.
pub(super) fn run_tcp(opts: &Options, link: &LinkInfo) -> Result<Report> {
    let spin = opts.polling_time.unwrap_or(Duration::ZERO);
    let label = |r: Report| Report {
        backend: "kernel".into(),
        mode: "TCP".into(),
        ..r
    };
    match opts.role {
        Role::Server => {
            let at = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), opts.cm_port);
            let listener =
                TcpListener::bind(at).map_err(|e| PerfError(format!("listening on {at}: {e}")))?;
            let s = meet(opts, link, usize::MAX, &[])?;
            let stream = accept_tcp(&listener, opts.timeout)?;
            serve(opts.test, s, Tcp::new(stream, spin)?).map(label)
        }
        Role::Client(server) => {
            let s = meet(opts, link, usize::MAX, &[])?;
            let at = SocketAddr::new(server, opts.cm_port);
            let stream = TcpStream::connect_timeout(&at, opts.timeout)
                .map_err(|e| PerfError(format!("connecting to {at}: {e}")))?;
            drive(opts.test, s, Tcp::new(stream, spin)?).map(label)
        }
    }
}

fn roce_ip(link: &LinkInfo) -> Result<std::net::IpAddr> {
    link.addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(link.addrs.first())
        .copied()
        .ok_or_else(|| PerfError(format!("{} has no address", link.iface)))
}

fn accept_rs(listener: &RsListener, timeout: Duration) -> Result<RsStream> {
    listener.set_nonblocking(true)?;
    let s = accept_within(timeout, || listener.accept().map(|(s, _)| s))?;
    s.set_nonblocking(false)?;
    Ok(s)
}

fn accept_tcp(listener: &TcpListener, timeout: Duration) -> Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let s = accept_within(timeout, || listener.accept().map(|(s, _)| s))?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// `accept` (non-blocking) until it gives a connection, for at most `timeout`.
fn accept_within<S>(timeout: Duration, mut accept: impl FnMut() -> io::Result<S>) -> Result<S> {
    let deadline = Instant::now() + timeout;
    loop {
        match accept() {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(PerfError(format!("accepting: {e}"))),
        }
    }
}

/// The server's side: echoes (latency) or counts (bandwidth) until end of file.
fn serve(test: Test, mut s: Session, mut stream: impl Stream) -> Result<Report> {
    let mut buf = vec![0u8; s.size.max(1 << 16)];
    let report = if is_latency(test) {
        let msg = &mut buf[..s.size];
        let mut echoed = 0u64;
        while read_message(&mut stream, msg)? {
            stream.write_all(msg)?;
            echoed += 1;
        }
        Report {
            iters: echoed.saturating_sub(WARMUP),
            sent: echoed.saturating_sub(WARMUP),
            ..report(test, s.size)
        }
    } else {
        let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            last = Instant::now();
            first.get_or_insert(last);
            bytes += n as u64;
        }
        let elapsed = first.map_or(Duration::ZERO, |f| last - f);
        let received = bytes / s.size.max(1) as u64;
        s.ctrl.send(
            &Message::new("RESULT")
                .with("received", received)
                .with("elapsed_ns", elapsed.as_nanos()),
        )?;
        Report {
            iters: received,
            sent: received,
            elapsed,
            ..report(test, s.size)
        }
    };
    Ok(report)
}

/// Reads one whole message; false at end of file before its first byte.
fn read_message(stream: &mut impl Read, msg: &mut [u8]) -> Result<bool> {
    let mut got = 0;
    while got < msg.len() {
        match stream.read(&mut msg[got..])? {
            0 if got == 0 => return Ok(false),
            0 => {
                return Err(PerfError(
                    "the peer closed in the middle of a message".into(),
                ));
            }
            n => got += n,
        }
    }
    Ok(true)
}

/// The client's side: ping-pongs (latency) or streams (bandwidth), then closes.
fn drive(test: Test, mut s: Session, mut stream: impl Stream) -> Result<Report> {
    let mut msg = vec![0x5au8; s.size];
    let start = Instant::now();
    if is_latency(test) {
        let mut latencies = Vec::new();
        let mut count = 0u64;
        while count < WARMUP || !s.limit.done(count - WARMUP, start) {
            let t = Instant::now();
            stream.write_all(&msg)?;
            if !read_message(&mut stream, &mut msg)? {
                return Err(PerfError("the server closed the connection".into()));
            }
            if count >= WARMUP {
                latencies.push(t.elapsed() / 2);
            }
            count += 1;
        }
        stream.shutdown_write()?;
        latencies.sort_unstable();
        let elapsed = start.elapsed();
        let n = latencies.len() as u64;
        return Ok(Report {
            iters: n,
            sent: n,
            elapsed,
            latencies,
            ..report(test, s.size)
        });
    }
    let mut sent = 0u64;
    while !s.limit.done(sent, start) {
        stream.write_all(&msg)?;
        sent += 1;
    }
    stream.shutdown_write()?;
    let result = s.ctrl.recv()?;
    if result.verb != "RESULT" {
        return Err(PerfError(format!("the server said {}", result.rest())));
    }
    Ok(Report {
        iters: result.parse("received")?,
        sent,
        elapsed: Duration::from_nanos(result.parse("elapsed_ns")?),
        ..report(test, s.size)
    })
}

fn is_latency(test: Test) -> bool {
    matches!(test, Test::RsLat | Test::TcpLat)
}

fn report(test: Test, size: usize) -> Report {
    Report {
        test: test.name().into(),
        size,
        ..Report::default()
    }
}
