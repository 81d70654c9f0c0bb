//! `cm-connect`: RC connections set up and torn down through the connection manager
//! ([`xrdma_verbs::cm`]), as rdma_cm programs (rping, cmtime, perftest `-R`) do, counted per
//! second.
//!
//! - The server listens on the CM port (`--cm-port`, PS_TCP) and accepts every request: an
//!   RC QP on the child id's default PD, attached to the id, then `accept`. When the client
//!   disconnects (DISCONNECTED), it disconnects too (the DREP), then destroys the child id
//!   and its QP.
//! - The client, for each connection: creates an id, resolves the address and the route,
//!   creates and attaches its RC QP, connects, waits for ESTABLISHED, disconnects, waits for
//!   DISCONNECTED (the server's DREP), destroys the id and the QP.
//!
//! The latency is the connect call to ESTABLISHED (REQ, REP and the RTU on its way); the
//! cycle is all of the above. The server reports, per connection, CONNECT_REQUEST to
//! ESTABLISHED and CONNECT_REQUEST to the child's end.
//!
//! Both ends make progress on their own thread (the context has no helper thread) and wait
//! for each event at most `--timeout`. An error event (REJECTED, UNREACHABLE,
//! CONNECT_ERROR, ...) ends the run with what it says; a client that fails tells the server
//! (ERR on the control connection), which fails too.
//!
//! The control connection frames the run: after HELLO/OK the client connects as often as
//! it was asked, then sends `END sent=N`; the server answers `RESULT received=M` with the
//! connections it saw through.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use xrdma_verbs::cm::{self, CmId, ConnParam, Event, EventChannel, EventKind, PortSpace};
use xrdma_verbs::net::FrameIo;
use xrdma_verbs::verbs::{Context, ContextConfig, Cq, QpInitAttr, QueuePair};
use xrdma_verbs::wire::cm::rej_reason;

use super::oob::Message;
use super::{Options, PerfError, Report, Result, Role, Session, Test, meet, verbs};

/// Connections made before the counted ones (the first also resolves the peer's MAC).
const WARMUP: u64 = 10;
/// Work requests each QP takes (none are posted: the QP only has to exist).
const DEPTH: u32 = 16;
/// READs and atomics each side allows, as rping asks.
const RD_ATOMIC: u8 = 1;
/// How often the server looks at the control connection.
const CONTROL_EVERY: Duration = Duration::from_millis(5);

/// Runs `cm-connect` as `opts` says.
pub(super) fn run(opts: &Options, io: Box<dyn FrameIo>) -> Result<Report> {
    let link = io.link().clone();
    let cm = Cm::open(io, opts.timeout)?;
    match opts.role {
        Role::Server => {
            // Listening before the client hears OK, so that its first REQ finds us.
            let listener = CmId::new(&cm.channel, PortSpace::Tcp);
            let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), opts.cm_port);
            listener
                .bind_addr(any)
                .and_then(|()| listener.listen(64))
                .map_err(|e| {
                    PerfError(format!("listening on rdma_cm port {}: {e}", opts.cm_port))
                })?;
            let s = meet(opts, &link, usize::MAX, &[])?;
            let r = serve(&cm, s);
            listener.destroy();
            r
        }
        Role::Client(_) => {
            let s = meet(opts, &link, usize::MAX, &[])?;
            let dst = SocketAddr::new(s.peer.ip(), opts.cm_port);
            connect_repeatedly(&cm, s, dst)
        }
    }
}

/// The context, registered with the connection manager, and the channel of our ids.
struct Cm {
    // Field order is drop order: the channel before the device it hears from.
    channel: EventChannel,
    ctx: Context,
    timeout: Duration,
}

impl Cm {
    fn open(io: Box<dyn FrameIo>, timeout: Duration) -> Result<Cm> {
        // The helper thread makes the progress, as the kernel would for rdma_cm: both ends
        // sleep on their channel between events.
        let ctx = Context::new(io, ContextConfig::default())?;
        cm::add_device(&ctx)?;
        let channel = EventChannel::new()?;
        channel.set_nonblocking(true)?;
        Ok(Cm {
            channel,
            ctx,
            timeout,
        })
    }

    /// The next event if one is queued, without waiting.
    fn try_event(&self) -> Result<Option<Event>> {
        // `pending` costs no system call; `get_event` reads the channel's eventfd, and
        // finds nothing when the only events queued were about ids destroyed since.
        if self.channel.pending() == 0 {
            return Ok(None);
        }
        match self.channel.get_event() {
            Ok(ev) => Ok(Some(ev)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits at most `timeout` for the channel to poll readable.
    fn wait(&self, timeout: Duration) -> Result<()> {
        let mut p = libc::pollfd {
            fd: self.channel.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, alive for the duration of the call.
        if unsafe { libc::poll(&mut p, 1, ms) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Waits for the next event, which must be `kind`; fails after `timeout`, or on another
    /// event, saying what `what` waited for.
    fn expect(&self, kind: EventKind, what: &dyn Fn() -> String) -> Result<Event> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(ev) = self.try_event()? {
                if ev.kind == kind {
                    return Ok(ev);
                }
                return Err(unexpected(&ev, &what()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PerfError(format!(
                    "{}: no {} within {:?}",
                    what(),
                    kind.name(),
                    self.timeout
                )));
            }
            self.wait(left)?;
        }
    }

    /// An RC QP on `id`'s default PD, attached to the id (librdmacm's `rdma_create_qp`).
    fn attach_qp(&self, id: &CmId) -> Result<Qp> {
        let pd = id
            .default_pd()
            .ok_or_else(|| PerfError("the CM id is bound to no device".into()))?;
        let cq = self.ctx.create_cq(2 * DEPTH, None)?;
        let qp = pd.create_qp(&QpInitAttr::rc(&cq, &cq, DEPTH))?;
        id.attach_qp(&qp)?;
        Ok(Qp { _qp: qp, _cq: cq })
    }
}

impl Drop for Cm {
    fn drop(&mut self) {
        // The device registry would keep the context (and its backend) open for good.
        cm::remove_device(&self.ctx);
    }
}

/// A connection's QP and its CQ. Field order is drop order: the QP before its CQ.
struct Qp {
    _qp: QueuePair,
    _cq: Cq,
}

/// A CM id and its QP, destroyed in that order (rping's teardown) however the holder ends.
struct Conn {
    id: CmId,
    qp: Option<Qp>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.id.destroy();
        self.qp.take();
    }
}

/// What both ends ask for and grant.
fn conn_param() -> ConnParam {
    ConnParam {
        responder_resources: RD_ATOMIC,
        initiator_depth: RD_ATOMIC,
        retry_count: 7,
        rnr_retry_count: 7,
        ..ConnParam::default()
    }
}

/// The error an event that should not have come makes, with what was being done.
fn unexpected(ev: &Event, what: &str) -> PerfError {
    let detail = match ev.kind {
        EventKind::Rejected => {
            let reason = u16::try_from(ev.status).map_or("", rej_meaning);
            if reason.is_empty() {
                format!("status {}", ev.status)
            } else {
                format!("status {} ({reason})", ev.status)
            }
        }
        _ if ev.status < 0 => format!(
            "status {} ({})",
            ev.status,
            std::io::Error::from_raw_os_error(-ev.status)
        ),
        _ => format!("status {}", ev.status),
    };
    PerfError(format!("{what}: {} {detail}", ev.kind.name()))
}

/// What a REJ reason tells the user, for the reasons a peer is likely to send.
fn rej_meaning(reason: u16) -> &'static str {
    match reason {
        rej_reason::NO_QP => "no QP",
        rej_reason::NO_RESOURCES => "no resources",
        rej_reason::TIMEOUT => "timeout",
        rej_reason::UNSUPPORTED => "unsupported request",
        rej_reason::INVALID_COMM_ID => "invalid communication ID",
        rej_reason::INVALID_SERVICE_ID => "invalid service ID: nothing listens on that port",
        rej_reason::INVALID_TRANSPORT_TYPE => "invalid transport type",
        rej_reason::STALE_CONN => "stale connection",
        rej_reason::INVALID_GID => "invalid GID",
        rej_reason::INVALID_MTU => "invalid path MTU",
        rej_reason::CONSUMER_DEFINED => "rejected by the peer application",
        _ => "",
    }
}

/// The client: connections one after the other until the limit, then END and RESULT.
fn connect_repeatedly(cm: &Cm, mut s: Session, dst: SocketAddr) -> Result<Report> {
    let mut latencies = Vec::with_capacity(s.limit.iters.min(1_000_000) as usize);
    let mut cycles = Vec::with_capacity(latencies.capacity());
    let (mut started, mut n) = (None::<Instant>, 0u64);
    loop {
        if n >= WARMUP {
            let start = *started.get_or_insert_with(Instant::now);
            if s.limit.done(n - WARMUP, start) {
                break;
            }
        }
        let (latency, cycle) = match connect_once(cm, dst, n) {
            Ok(sample) => sample,
            Err(e) => {
                // The server is told why, and fails too, rather than waiting for END.
                let why =
                    e.0.split_whitespace()
                        .fold(Message::new("ERR").with("client:", ""), |m, w| {
                            m.with(w, "")
                        });
                let _ = s.ctrl.send(&why);
                return Err(e);
            }
        };
        if n >= WARMUP {
            latencies.push(latency);
            cycles.push(cycle);
        }
        n += 1;
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    s.ctrl.send(&Message::new("END").with("sent", n))?;
    let result = s.ctrl.recv()?;
    let seen: u64 = result.parse("received")?;
    if seen != n {
        return Err(PerfError(format!(
            "the server saw {seen} connections through, of {n}"
        )));
    }
    latencies.sort_unstable();
    cycles.sort_unstable();
    let mut r = verbs::report(&cm.ctx, Test::CmConnect, 0);
    r.iters = latencies.len() as u64;
    r.sent = r.iters;
    r.elapsed = elapsed;
    r.latencies = latencies;
    r.cycles = cycles;
    Ok(r)
}

/// One connection's whole life; returns the connect-to-ESTABLISHED time and the cycle's.
fn connect_once(cm: &Cm, dst: SocketAddr, n: u64) -> Result<(Duration, Duration)> {
    let what = || format!("connection {n} to {} port {}", dst.ip(), dst.port());
    let start = Instant::now();
    let mut conn = Conn {
        id: CmId::new(&cm.channel, PortSpace::Tcp),
        qp: None,
    };
    let id = conn.id.clone();
    id.resolve_addr(None, dst)
        .map_err(|e| PerfError(format!("{}: resolving the address: {e}", what())))?;
    cm.expect(EventKind::AddrResolved, &what)?;
    id.resolve_route()
        .map_err(|e| PerfError(format!("{}: resolving the route: {e}", what())))?;
    cm.expect(EventKind::RouteResolved, &what)?;
    conn.qp = Some(cm.attach_qp(&id)?);
    let connecting = Instant::now();
    id.connect(&conn_param())
        .map_err(|e| PerfError(format!("{}: connect: {e}", what())))?;
    cm.expect(EventKind::Established, &what)?;
    let latency = connecting.elapsed();
    id.disconnect()
        .map_err(|e| PerfError(format!("{}: disconnect: {e}", what())))?;
    cm.expect(EventKind::Disconnected, &what)?;
    drop(conn);
    Ok((latency, start.elapsed()))
}

/// A connection the server accepted.
struct Child {
    conn: Conn,
    requested: Instant,
}

/// The server: accepts and ends connections until the client says END and every
/// connection it made is over, then answers RESULT.
fn serve(cm: &Cm, mut s: Session) -> Result<Report> {
    let mut children: HashMap<usize, Child> = HashMap::new();
    let mut next_key = 1usize;
    let (mut latencies, mut cycles) = (Vec::new(), Vec::new());
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    let mut end: Option<(Message, Instant)> = None;
    let mut last_check = Instant::now();
    loop {
        while let Some(ev) = cm.try_event()? {
            let now = Instant::now();
            let key = ev.id.user();
            let peer = || match ev.id.peer_addr() {
                Some(p) => format!("connection from {} port {}", p.ip(), p.port()),
                None => "a connection".to_string(),
            };
            match ev.kind {
                EventKind::ConnectRequest => {
                    first.get_or_insert(now);
                    ev.id.set_user(next_key);
                    let mut conn = Conn {
                        id: ev.id.clone(),
                        qp: None,
                    };
                    conn.qp = Some(cm.attach_qp(&ev.id)?);
                    ev.id
                        .accept(Some(&conn_param()))
                        .map_err(|e| PerfError(format!("{}: accept: {e}", peer())))?;
                    children.insert(
                        next_key,
                        Child {
                            conn,
                            requested: now,
                        },
                    );
                    next_key += 1;
                }
                EventKind::Established => {
                    let child = children.get(&key).ok_or_else(|| unexpected(&ev, &peer()))?;
                    latencies.push(now - child.requested);
                }
                EventKind::Disconnected => {
                    let child = children
                        .remove(&key)
                        .ok_or_else(|| unexpected(&ev, &peer()))?;
                    // The DREP; then the id and its QP go.
                    child
                        .conn
                        .id
                        .disconnect()
                        .map_err(|e| PerfError(format!("{}: disconnect: {e}", peer())))?;
                    drop(child.conn);
                    last = Instant::now();
                    cycles.push(last - child.requested);
                }
                EventKind::TimewaitExit => {}
                _ => return Err(unexpected(&ev, &peer())),
            }
        }
        if let Some((_, at)) = &end {
            if children.is_empty() {
                break;
            }
            if at.elapsed() > cm.timeout {
                return Err(PerfError(format!(
                    "{} connections still open {:?} after the client's END",
                    children.len(),
                    cm.timeout
                )));
            }
        } else if last_check.elapsed() > CONTROL_EVERY {
            last_check = Instant::now();
            if let Some(m) = s.ctrl.try_recv()? {
                end = Some((m, Instant::now()));
            }
        }
        cm.wait(CONTROL_EVERY)?;
    }
    let (end, _) = end.expect("the loop ends after END");
    let done = cycles.len() as u64;
    s.ctrl
        .send(&Message::new("RESULT").with("received", done))?;
    latencies.sort_unstable();
    cycles.sort_unstable();
    let mut r = verbs::report(&cm.ctx, Test::CmConnect, 0);
    r.iters = done;
    r.sent = end.parse("sent")?;
    r.elapsed = first.map(|f| last - f).unwrap_or_default();
    r.latencies = latencies;
    r.cycles = cycles;
    Ok(r)
}
