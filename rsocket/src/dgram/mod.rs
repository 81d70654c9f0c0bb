//! Datagram sockets: [`RsDatagram`], nearly a `std::net::UdpSocket`, over UD QPs with
//! rsocket's datagram protocol (see [`crate::proto::dgram`]).

mod qp;
mod state;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Ready;
use crate::config::Config;
use crate::service::{Entry, service};
use crate::shared::Shared;
use crate::wait::Waitable;
use state::DgramState;

/// How long closing a socket waits for its sends to leave, at most.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// A datagram socket's shared state: what every handle of it names.
pub(crate) struct DgramInner {
    token: u64,
    st: Shared<DgramState>,
    fd: RawFd,
    /// Handles alive ([`RsDatagram`] and its clones): the last one closes.
    handles: AtomicUsize,
}

impl DgramInner {
    /// The service's call: the UDP socket or a completion channel fired.
    pub(crate) fn service_events(&self) {
        self.st.service();
    }

    /// Waits until the descriptor shows `events`, or the UDP socket or a completion
    /// channel fires, or `deadline` passes, making progress meanwhile. False on timeout.
    fn wait(&self, events: i16, deadline: Option<Instant>) -> io::Result<bool> {
        let mut others = Vec::with_capacity(4);
        let ctx = self.st.lock().wait_fds(&mut others);
        let mut fds: Vec<libc::pollfd> = std::iter::once((self.fd, events))
            .chain(others.into_iter().map(|fd| (fd, libc::POLLIN)))
            .take(xrdma_verbs::verbs::Context::MAX_WAIT_FDS)
            .map(|(fd, events)| libc::pollfd {
                fd,
                events,
                revents: 0,
            })
            .collect();
        crate::readiness::sleep(&mut fds, ctx, deadline, false)
    }

    /// Runs `attempt` under the lock, after making progress, until it returns
    /// `Some`: between attempts that find nothing to do, polls for the polling time, then
    /// sleeps until the descriptor shows `events`. A non-blocking call, or one whose
    /// timeout has passed, fails with `WouldBlock` instead.
    fn blocking<T>(
        &self,
        events: i16,
        flags: i32,
        timeout: impl Fn(&DgramState) -> Option<Duration>,
        mut attempt: impl FnMut(&mut DgramState) -> io::Result<Option<T>>,
    ) -> io::Result<T> {
        let _caller = self.st.enter();
        let deadline = timeout(&self.st.lock()).map(|t| Instant::now() + t);
        let mut spin_from = Instant::now();
        let mut timed_out = false;
        // The UDP socket is read after each sleep, not while the call spins: it only
        // carries a peer's first datagrams, reading it is a system call, and the service
        // thread has whoever holds the lock read it when it fires (see `Shared`).
        let mut udp = false;
        loop {
            let polling = {
                let mut st = self.st.lock();
                // Readiness shows when the call returns or sleeps, and the CQs are armed
                // when it sleeps (see `DgramState::call_done`).
                st.progress(udp, false);
                udp = false;
                let r = attempt(&mut st);
                let give_up = timed_out || st.nonblocking || flags & libc::MSG_DONTWAIT != 0;
                match r {
                    Ok(None) if !give_up => st.config.polling_time,
                    r => {
                        st.call_done();
                        return r.and_then(|done| done.ok_or(io::ErrorKind::WouldBlock.into()));
                    }
                }
            };
            if spin_from.elapsed() < polling {
                continue;
            }
            // Arm and publish before sleeping; what came meanwhile is tried at once.
            {
                let mut st = self.st.lock();
                st.sleep_begins();
                st.before_sleep();
                match attempt(&mut st) {
                    Ok(None) => {}
                    r => {
                        st.sleep_ends();
                        st.call_done();
                        return r.and_then(|done| done.ok_or(io::ErrorKind::WouldBlock.into()));
                    }
                }
            }
            let woke = self.wait(events, deadline);
            self.st.lock().sleep_ends();
            timed_out = !woke? && deadline.is_some_and(|d| Instant::now() >= d);
            spin_from = Instant::now();
            udp = true;
        }
    }

    fn recv_from(&self, buf: &mut [u8], flags: i32) -> io::Result<(usize, SocketAddr)> {
        let peek = flags & libc::MSG_PEEK != 0;
        self.blocking(
            libc::POLLIN,
            flags,
            |st| st.read_timeout,
            |st| Ok(st.try_recv(buf, peek)),
        )
    }

    fn send_to(&self, buf: &[u8], dst: SocketAddr, flags: i32) -> io::Result<usize> {
        self.blocking(
            libc::POLLOUT,
            flags,
            |st| st.write_timeout,
            |st| match st.try_send(buf, dst) {
                // The kernel socket's buffer is full: as a full send queue.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                r => r,
            },
        )
    }

    /// The last handle is gone: lets the sends in flight leave (for a short while at
    /// most, as rsocket's close waits for them).
    fn close(&self) {
        let deadline = Instant::now() + CLOSE_LIMIT;
        loop {
            {
                let mut st = self.st.lock();
                st.before_sleep();
                if st.all_sends_done() || Instant::now() >= deadline {
                    break;
                }
                st.sleep_begins();
            }
            let woke = self.wait(0, Some(deadline));
            self.st.lock().sleep_ends();
            if woke.is_err() {
                break;
            }
        }
    }
}

impl Waitable for DgramInner {
    fn arm_for_waiter(
        &self,
        events: &mut Vec<RawFd>,
    ) -> (Ready, Option<xrdma_verbs::verbs::Context>) {
        self.st.arrive();
        let mut st = self.st.lock();
        st.sleep_begins();
        st.before_sleep();
        let ctx = st.wait_fds(events);
        (st.ready_now(), ctx)
    }

    fn depart(&self) {
        self.st.lock().sleep_ends();
        self.st.depart();
    }
}

impl Drop for DgramInner {
    fn drop(&mut self) {
        self.st.get_mut().unwatch();
        if let Ok(svc) = service() {
            svc.unregister(self.token);
        }
    }
}

/// A datagram socket over RDMA: the shape of [`std::net::UdpSocket`], rsocket's datagram
/// protocol on the wire.
///
/// Like rsocket's, it owns a kernel UDP socket bound to its address: the first datagrams
/// to a peer go over it, while the peers learn each other's QP; the rest go over UD.
/// Datagrams keep their boundaries and may be lost, as UDP's, and are at most
/// [`max_payload_to`](Self::max_payload_to) bytes (2032 at most: `EMSGSIZE` beyond).
/// Dropping the last handle (see [`try_clone`](Self::try_clone)) closes the socket.
pub struct RsDatagram {
    inner: Arc<DgramInner>,
}

impl std::fmt::Debug for RsDatagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.st.lock();
        f.debug_struct("RsDatagram")
            .field("fd", &self.inner.fd)
            .field("local", &st.local_addr().ok())
            .field("peer", &st.peer)
            .finish()
    }
}

impl RsDatagram {
    /// A socket bound to the first of `addr`'s addresses that can be bound (port 0: one
    /// the kernel picks).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<RsDatagram> {
        crate::Builder::new().bind_datagram(addr)
    }

    pub(crate) fn open(config: Config, addr: SocketAddr) -> io::Result<RsDatagram> {
        crate::device::ensure()?;
        let svc = service()?;
        let udp = UdpSocket::bind(addr)?;
        let st = DgramState::new(udp, config)?;
        let fd = st.ready.fd();
        let inner = Arc::new_cyclic(|weak| DgramInner {
            token: svc.register(Entry::Datagram(weak.clone())),
            st: Shared::new(st),
            fd,
            handles: AtomicUsize::new(1),
        });
        // Dropping `inner` on failure unregisters it.
        inner.st.lock().attach(inner.token)?;
        Ok(RsDatagram { inner })
    }

    /// Sends `buf` as one datagram to `addr`'s first address; the bytes sent (all of
    /// them). `EMSGSIZE` for more than [`max_payload_to`](Self::max_payload_to) bytes,
    /// `EAFNOSUPPORT` for an address of the other family than the socket's.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let dst = addr
            .to_socket_addrs()?
            .next()
            .ok_or(io::Error::from(io::ErrorKind::InvalidInput))?;
        self.inner.send_to(buf, dst, 0)
    }

    /// `sendto(2)` with `flags` (`MSG_DONTWAIT`).
    pub fn send_to_with_flags(
        &self,
        buf: &[u8],
        addr: SocketAddr,
        flags: i32,
    ) -> io::Result<usize> {
        self.inner.send_to(buf, addr, flags)
    }

    /// Receives one datagram: the bytes copied into `buf` and the sender's address. The
    /// rest of a datagram longer than `buf` is lost, as with UDP.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf, 0)
    }

    /// `recvfrom(2)` with `flags` (`MSG_PEEK`, `MSG_DONTWAIT`).
    pub fn recv_from_with_flags(
        &self,
        buf: &mut [u8],
        flags: i32,
    ) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf, flags)
    }

    /// Reads the next datagram without taking it.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf, libc::MSG_PEEK)
    }

    /// Sets the peer: [`send`](Self::send) goes to it, and only its datagrams are
    /// received from now on.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        let mut last = io::Error::from(io::ErrorKind::InvalidInput);
        for a in addr.to_socket_addrs()? {
            match self.inner.st.lock().connect(a) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn peer(&self) -> io::Result<SocketAddr> {
        self.inner
            .st
            .lock()
            .peer
            .ok_or(io::Error::from_raw_os_error(libc::ENOTCONN))
    }

    /// Sends to the peer ([`connect`](Self::connect)); `ENOTCONN` without one.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let peer = self.peer()?;
        self.inner.send_to(buf, peer, 0)
    }

    /// Receives from the peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv_from(buf, 0).map(|(n, _)| n)
    }

    /// Reads the next datagram from the peer without taking it.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv_from(buf, libc::MSG_PEEK).map(|(n, _)| n)
    }

    /// The peer's address; `ENOTCONN` without one.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.peer()
    }

    /// Our address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.st.lock().local_addr()
    }

    /// The largest datagram [`send_to`](Self::send_to) takes for `addr`: what fits the
    /// 2048-byte slots behind rsocket's headers and the path MTU of the interface that
    /// reaches `addr`.
    pub fn max_payload_to(&self, addr: SocketAddr) -> io::Result<usize> {
        self.inner.st.lock().max_payload(addr)
    }

    /// Makes the progress that waits and says what the socket can do now: the spinning
    /// phase of an `rpoll`, a call as any other. Call [`sync_ready`](Self::sync_ready)
    /// before sleeping on the descriptor.
    pub fn poll_ready(&self) -> Ready {
        let mut st = self.inner.st.lock();
        st.progress(false, false);
        st.call_done();
        st.ready_now()
    }

    /// [`poll_ready`](Self::poll_ready), and arms the socket's events so that the
    /// descriptor is kept up to date: before the caller sleeps in `poll(2)`.
    pub fn sync_ready(&self) -> Ready {
        let mut st = self.inner.st.lock();
        st.before_sleep();
        st.ready_now()
    }

    /// Makes calls fail with `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.st.lock().nonblocking = nonblocking;
        Ok(())
    }

    /// How long a receive waits (`None`: for ever), then fails with `WouldBlock`. A zero
    /// duration is refused, as by std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.inner.st.lock().read_timeout = timeout;
        Ok(())
    }

    /// How long a send waits for room (`None`: for ever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.inner.st.lock().write_timeout = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.st.lock().read_timeout)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.st.lock().write_timeout)
    }

    /// Takes the socket's pending error (`SO_ERROR`): a send that failed on UD, or what
    /// the kernel's UDP socket holds.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let mut st = self.inner.st.lock();
        match st.so_error.take() {
            Some(e) => Ok(Some(io::Error::from_raw_os_error(e))),
            None => st.udp().take_error(),
        }
    }

    /// Another handle to the same socket.
    pub fn try_clone(&self) -> io::Result<RsDatagram> {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Ok(RsDatagram {
            inner: self.inner.clone(),
        })
    }
}

impl Drop for RsDatagram {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.close();
        }
    }
}

impl RsDatagram {
    pub(crate) fn inner(&self) -> &Arc<DgramInner> {
        &self.inner
    }
}

impl AsRawFd for RsDatagram {
    /// The readiness descriptor: poll it, never read or write it.
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd
    }
}
