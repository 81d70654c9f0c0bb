//! A stream socket's state under its lock: its phase (resolving, connecting, connected,
//! closing), its data path once connected, what each side has shut, the error to report,
//! and the readiness its descriptor shows.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xrdma_verbs::cm::{CmId, Event, EventKind, EventParam, PortSpace};

use super::link::{Happened, Link};
use crate::config::Config;
use crate::proto::msg::Ctrl;
use crate::readiness::Readiness;
use crate::service::service;
use crate::shared::{Calls, Drive};

/// Where a socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created, not connected.
    Fresh,
    /// Resolving the peer's address and route.
    Resolving,
    /// The REQ is out.
    Connecting,
    /// Connected (whatever each side has shut since).
    Connected,
    /// Connecting failed; the error waits in `so_error`.
    Failed,
    /// Closed by the application: finishing its sends, then gone.
    Closing,
    /// Nothing left.
    Closed,
}

/// How long a closed socket may take to deliver what it had sent, at most.
const CLOSE_LIMIT: Duration = Duration::from_secs(60);

pub(crate) struct Conn {
    pub(crate) phase: Phase,
    pub(crate) config: Config,
    pub(crate) id: Option<CmId>,
    pub(crate) link: Option<Link>,
    pub(crate) ready: Readiness,
    /// The error `take_error` (SO_ERROR) reports, once.
    pub(crate) so_error: Option<i32>,
    /// The connection is broken: calls fail with this once the data queued is read.
    pub(crate) dead: Option<i32>,
    /// The peer sends no more: reads end at the data queued.
    pub(crate) peer_shut: bool,
    /// The peer is gone: writes fail.
    pub(crate) peer_gone: bool,
    pub(crate) rd_shut: bool,
    pub(crate) wr_shut: bool,
    /// A control message that waits for a free slot.
    pending_ctrl: Option<Ctrl>,
    pub(crate) nonblocking: bool,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) nodelay: bool,
    /// The size of the next chunk a write sends (see `StreamInner::writing`).
    pub(crate) olen: u32,
    /// `SO_KEEPALIVE` with `TCP_KEEPIDLE`: the interval of keepalives, when on.
    pub(crate) keepalive: Option<Duration>,
    /// When the next keepalive is due (while connected, with keepalive on).
    keepalive_at: Option<Instant>,
    /// `SO_LINGER`: how long the last close may wait for the data to be delivered.
    pub(crate) linger: Option<Duration>,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
    close_deadline: Option<Instant>,
    pub(crate) calls: Calls,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn cm_errno(e: xrdma_verbs::verbs::Error) -> io::Error {
    errno(e.errno())
}

impl Conn {
    pub(crate) fn new(config: Config) -> io::Result<Conn> {
        let mut conn = Conn {
            phase: Phase::Fresh,
            config,
            id: None,
            link: None,
            ready: Readiness::new()?,
            so_error: None,
            dead: None,
            peer_shut: false,
            peer_gone: false,
            rd_shut: false,
            wr_shut: false,
            pending_ctrl: None,
            nonblocking: false,
            read_timeout: None,
            write_timeout: None,
            nodelay: false,
            olen: crate::proto::stream::OLAP_START,
            keepalive: config.keepalive,
            keepalive_at: None,
            linger: config.linger,
            local: None,
            peer: None,
            close_deadline: None,
            calls: Calls::default(),
        };
        conn.publish();
        Ok(conn)
    }

    /// Starts connecting to `dst` (from `src`, if given), as the id of `token`.
    pub(crate) fn start_connect(
        &mut self,
        token: u64,
        src: Option<SocketAddr>,
        dst: SocketAddr,
    ) -> io::Result<()> {
        match self.phase {
            Phase::Fresh => {}
            Phase::Resolving | Phase::Connecting => return Err(errno(libc::EALREADY)),
            Phase::Connected => return Err(errno(libc::EISCONN)),
            _ => return Err(errno(libc::EBADF)),
        }
        crate::device::ensure()?;
        let svc = service()?;
        let id = CmId::new(&svc.channel, PortSpace::Tcp);
        id.set_user(token as usize);
        if let Err(e) = id.resolve_addr(src, dst) {
            id.destroy();
            return Err(cm_errno(e));
        }
        self.id = Some(id);
        self.peer = Some(dst);
        self.phase = Phase::Resolving;
        self.publish();
        Ok(())
    }

    /// Makes a connection accepted by a listener: the data path on `id` (the request's),
    /// the peer's connection data taken in, the REP sent.
    pub(crate) fn accept_request(&mut self, token: u64, event: &Event) -> io::Result<()> {
        let id = event.id.clone();
        id.set_user(token as usize);
        self.id = Some(id.clone());
        let EventParam::Conn(param) = &event.param else {
            return Err(errno(libc::EPROTO));
        };
        let mut link = Link::new(&id, self.config)?;
        link.accept_peer(&param.private_data)?;
        let answer = link.conn_param(Some(param));
        service()?.watch(link_fd(&link), token)?;
        self.link = Some(link);
        id.accept(Some(&answer)).map_err(cm_errno)?;
        self.local = id.local_addr();
        self.peer = id.peer_addr();
        self.phase = Phase::Connected;
        self.drive();
        Ok(())
    }

    /// A CM event about this socket's id.
    pub(crate) fn on_cm_event(&mut self, token: u64, event: Event) {
        let result = match (self.phase, event.kind) {
            (Phase::Resolving, EventKind::AddrResolved) => self
                .id
                .as_ref()
                .map_or(Ok(()), |id| id.resolve_route().map_err(cm_errno)),
            (Phase::Resolving, EventKind::RouteResolved) => self.connect_now(token),
            (Phase::Connecting, EventKind::Established) => match &event.param {
                EventParam::Conn(p) => self.established(&p.private_data),
                _ => Err(errno(libc::EPROTO)),
            },
            (Phase::Resolving | Phase::Connecting, kind) => Err(errno(match kind {
                EventKind::Rejected | EventKind::ConnectError => libc::ECONNREFUSED,
                EventKind::Unreachable => libc::ETIMEDOUT,
                EventKind::AddrError => libc::EHOSTUNREACH,
                EventKind::RouteError => libc::ENETUNREACH,
                _ => libc::ECONNABORTED,
            })),
            (Phase::Connected | Phase::Closing, EventKind::Disconnected) => {
                // The peer is gone, whether or not it said so in band first.
                self.peer_shut = true;
                self.peer_gone = true;
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.fail_connect(e.raw_os_error().unwrap_or(libc::ECONNABORTED));
        }
        self.drive();
    }

    fn connect_now(&mut self, token: u64) -> io::Result<()> {
        let id = self.id.clone().ok_or(errno(libc::EINVAL))?;
        let link = Link::new(&id, self.config)?;
        service()?.watch(link_fd(&link), token)?;
        let param = link.conn_param(None);
        self.link = Some(link);
        id.connect(&param).map_err(cm_errno)?;
        self.local = id.local_addr();
        self.phase = Phase::Connecting;
        Ok(())
    }

    fn established(&mut self, private: &[u8]) -> io::Result<()> {
        let link = self.link.as_mut().ok_or(errno(libc::EINVAL))?;
        link.accept_peer(private)?;
        self.phase = Phase::Connected;
        Ok(())
    }

    fn fail_connect(&mut self, e: i32) {
        if matches!(self.phase, Phase::Resolving | Phase::Connecting) {
            self.phase = Phase::Failed;
            self.so_error = Some(e);
            self.teardown();
        }
    }

    /// What a call does as it returns: takes what came, and updates the descriptor,
    /// leaving the CQ as it is (see [`Calls`]).
    pub(crate) fn call_done(&mut self) {
        self.progress();
        self.publish();
        self.calls.returned();
    }

    /// [`drive`](Drive::drive) without updating the descriptor or arming the CQ: for a
    /// caller that goes on polling under the lock, and drives (arms and publishes) before
    /// it leaves or sleeps. True if completions came.
    pub(crate) fn progress(&mut self) -> bool {
        self.progress_arming(false)
    }

    /// Arms the CQ before a blocked caller sleeps; true if completions came first (the
    /// caller tries again instead of sleeping).
    pub(crate) fn progress_arming_for_sleep(&mut self) -> bool {
        self.calls.sleeping();
        let came = self.progress_arming(true);
        self.publish();
        came
    }

    fn progress_arming(&mut self, arm: bool) -> bool {
        let arm = arm || self.calls.must_arm();
        let mut taken = 0;
        if let Some(link) = self.link.as_mut() {
            let mut h = Happened::default();
            taken = link.drive(&mut h, arm);
            if h.peer_shut {
                self.peer_shut = true;
            }
            if h.peer_gone {
                self.peer_gone = true;
            }
            if let Some(e) = h.error {
                self.break_connection(e);
            }
            if h.proto_error.is_some() {
                self.break_connection(libc::ECONNRESET);
            }
            if let (Some(ctrl), Some(link)) = (self.pending_ctrl, self.link.as_mut()) {
                if link.proto.ctrl_avail() && self.dead.is_none() {
                    self.pending_ctrl = None;
                    if link.send_ctrl(ctrl).is_err() {
                        self.break_connection(libc::ECONNRESET);
                    }
                }
            }
        }
        taken > 0
    }

    /// The connection is broken (`e`): nothing more moves; the id is disconnected so
    /// the peer hears of it.
    fn break_connection(&mut self, e: i32) {
        if self.dead.is_none() && matches!(self.phase, Phase::Connected | Phase::Closing) {
            self.dead.get_or_insert(e);
            if self.so_error.is_none() && self.phase == Phase::Connected {
                self.so_error = Some(e);
            }
            if let Some(id) = &self.id {
                let _ = id.disconnect();
            }
        }
    }

    /// Data can be read now (or the read ends: end of file, an error).
    pub(crate) fn readable(&self) -> bool {
        match self.phase {
            Phase::Connected => {
                self.link.as_ref().is_some_and(|l| l.proto.queued() > 0)
                    || self.peer_shut
                    || self.rd_shut
                    || self.dead.is_some()
            }
            Phase::Failed | Phase::Closed => true,
            _ => false,
        }
    }

    /// Data can be written now (or the write fails at once).
    pub(crate) fn writable(&self) -> bool {
        match self.phase {
            Phase::Connected => {
                self.link.as_ref().is_some_and(|l| l.proto.can_send())
                    || self.wr_shut
                    || self.peer_gone
                    || self.dead.is_some()
            }
            Phase::Fresh | Phase::Failed | Phase::Closed => true,
            _ => false,
        }
    }

    /// What the socket can do now.
    pub(crate) fn ready_now(&self) -> crate::Ready {
        crate::Ready {
            readable: self.readable(),
            writable: self.writable(),
        }
    }

    pub(crate) fn publish(&mut self) {
        let now = self.ready_now();
        self.ready.set(now.readable, now.writable);
    }

    /// The error of a call that needs a connection, if it cannot go on.
    pub(crate) fn not_connected(&self) -> Option<io::Error> {
        match self.phase {
            Phase::Connected => None,
            Phase::Resolving | Phase::Connecting => Some(errno(libc::EAGAIN)),
            _ => Some(errno(libc::ENOTCONN)),
        }
    }

    /// Sends a control message now, or as soon as a slot frees.
    pub(crate) fn queue_ctrl(&mut self, ctrl: Ctrl) {
        if self.dead.is_some() || self.peer_gone {
            return;
        }
        // A DISCONNECT supersedes a SHUTDOWN not yet sent.
        self.pending_ctrl = Some(ctrl);
        self.drive();
    }

    /// `shutdown(2)`.
    pub(crate) fn shutdown(&mut self, read: bool, write: bool) -> io::Result<()> {
        if let Some(e) = self.not_connected() {
            return Err(if e.raw_os_error() == Some(libc::EAGAIN) {
                errno(libc::ENOTCONN)
            } else {
                e
            });
        }
        let was_writing = !self.wr_shut;
        self.rd_shut |= read;
        self.wr_shut |= write;
        if write && was_writing {
            // rsocket: SHUTDOWN while we still read, DISCONNECT once neither side does.
            let ctrl = if self.rd_shut {
                Ctrl::Disconnect
            } else {
                Ctrl::Shutdown
            };
            self.queue_ctrl(ctrl);
        } else if read && self.wr_shut {
            self.queue_ctrl(Ctrl::Disconnect);
        }
        self.publish();
        Ok(())
    }

    /// The last handle is gone: a connected socket says DISCONNECT after its data and
    /// lingers until its sends complete; anything else ends now. True if it lingers.
    pub(crate) fn begin_close(&mut self) -> bool {
        match self.phase {
            Phase::Connected if self.dead.is_none() => {
                if !self.peer_gone {
                    self.wr_shut = true;
                    self.rd_shut = true;
                    self.queue_ctrl(Ctrl::Disconnect);
                }
                self.phase = Phase::Closing;
                self.close_deadline = Some(Instant::now() + CLOSE_LIMIT);
                true
            }
            _ => {
                self.teardown();
                self.phase = Phase::Closed;
                false
            }
        }
    }

    /// Ends the connection at once, dropping what was not delivered (`SO_LINGER` with a
    /// zero timeout, or one that ran out).
    pub(crate) fn abort(&mut self) {
        self.teardown();
        self.phase = Phase::Closed;
    }

    /// Starts the keepalive interval from now, if keepalive is on and the socket is
    /// connected; returns when the keepalive is due, for the service to wake then.
    pub(crate) fn arm_keepalive(&mut self) -> Option<Instant> {
        let at = match (self.keepalive, self.phase) {
            (Some(idle), Phase::Connected) => Some(Instant::now() + idle),
            _ => None,
        };
        self.keepalive_at = at;
        at
    }

    /// True if a keepalive is on and armed.
    pub(crate) fn keepalive_armed(&self) -> bool {
        self.keepalive_at.is_some()
    }

    /// The service's call at `now`: sends the keepalive if it is due (as rsocket does,
    /// unless the control slots are all in use, which is traffic enough), and returns when
    /// the next one is. `None` if none is due now: a wake-up for a timer since re-armed.
    pub(crate) fn keepalive_tick(&mut self, now: Instant) -> Option<Instant> {
        if self.keepalive_at.is_none_or(|at| at > now) {
            return None;
        }
        if self.dead.is_some() || self.peer_gone {
            self.keepalive_at = None;
            return None;
        }
        if let Some(link) = self.link.as_mut() {
            if link.proto.ctrl_avail() && link.send_keepalive().is_err() {
                self.break_connection(libc::ECONNRESET);
                self.publish();
                self.keepalive_at = None;
                return None;
            }
        }
        self.arm_keepalive()
    }

    /// A closing socket's progress; true once it is closed.
    pub(crate) fn continue_close(&mut self) -> bool {
        // No call comes any more: the CQ is armed, for whoever waits for the rest.
        self.calls.sleeping();
        self.drive();
        let sent = self.pending_ctrl.is_none()
            && self.link.as_ref().is_none_or(|l| l.proto.all_sends_done());
        let late = self.close_deadline.is_some_and(|d| Instant::now() >= d);
        if sent || self.dead.is_some() || late {
            self.teardown();
            self.phase = Phase::Closed;
            return true;
        }
        false
    }

    /// Disconnects and frees the id and the data path.
    pub(crate) fn teardown(&mut self) {
        if let Some(link) = self.link.take() {
            if let Ok(svc) = service() {
                svc.unwatch(link_fd(&link));
            }
            if let Some(id) = &self.id {
                let _ = id.disconnect();
                id.detach_qp();
            }
            drop(link);
        }
        if let Some(id) = self.id.take() {
            id.destroy();
        }
        self.publish();
    }
}

fn link_fd(link: &Link) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    link.res.channel.as_raw_fd()
}

impl Drive for Conn {
    /// Makes the data path's progress: completions, credits, reposts; applies what they
    /// told, arms the CQ unless calls are coming (see [`Calls`]), and updates the
    /// readiness descriptor.
    fn drive(&mut self) {
        let arm = !self.calls.active();
        self.progress_arming(arm);
        self.publish();
    }
}
