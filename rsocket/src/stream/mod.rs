//! Stream sockets: [`RsStream`], nearly a `std::net::TcpStream`, over an RC QP.

mod conn;
mod link;

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::shared::{Locked, Shared};
use crate::wait::Waitable;

pub(crate) use conn::{Conn, Phase};

use crate::Ready;
use crate::config::Config;
use crate::proto::stream::OLAP_START;
use crate::service::{Entry, service};

/// What one attempt of a blocking call came to.
enum Step<T> {
    /// The call returns this.
    Done(io::Result<T>),
    /// Progress, not yet done: try again at once.
    Moved,
    /// Nothing can move now: poll a while, then sleep.
    Blocked,
}

impl<T> Step<T> {
    /// The call returns the `done` bytes moved so far, or `e` if there are none.
    fn partial(done: T, e: io::Error) -> Step<T>
    where
        T: PartialEq + Default,
    {
        Step::Done(if done != T::default() {
            Ok(done)
        } else {
            Err(e)
        })
    }
}

impl Waitable for StreamInner {
    fn arm_for_waiter(
        &self,
        events: &mut Vec<RawFd>,
    ) -> (Ready, Option<xrdma_verbs::verbs::Context>) {
        self.conn.arrive();
        let mut c = self.lock();
        c.calls.sleep_begins();
        c.progress_arming_for_sleep();
        let ctx = c.link.as_ref().map(|l| {
            events.push(l.res.channel.as_raw_fd());
            l.res.ctx.clone()
        });
        (c.ready_now(), ctx)
    }

    fn depart(&self) {
        self.lock().calls.sleep_ends();
        self.conn.depart();
    }
}

/// A stream socket's shared state: what every handle of it names.
pub(crate) struct StreamInner {
    pub(crate) token: u64,
    conn: Shared<Conn>,
    fd: RawFd,
    /// Handles alive ([`RsStream`] and its clones): the last one closes.
    handles: AtomicUsize,
}

impl StreamInner {
    /// Locks the socket's state.
    pub(crate) fn lock(&self) -> Locked<'_, Conn> {
        self.conn.lock()
    }

    /// A new socket, registered with the service.
    pub(crate) fn new(config: Config) -> io::Result<Arc<StreamInner>> {
        let svc = service()?;
        let mut conn = Conn::new(config)?;
        let fd = conn.ready.fd();
        Ok(Arc::new_cyclic(|weak| {
            let token = svc.register(Entry::Stream(weak.clone()));
            conn.calls.set_token(token);
            StreamInner {
                token,
                conn: Shared::new(conn),
                fd,
                handles: AtomicUsize::new(1),
            }
        }))
    }

    /// The service's call: completions came, or the calls have stopped (see
    /// [`Calls`](crate::shared::Calls)).
    pub(crate) fn service_completions(&self) {
        self.conn.service();
    }

    pub(crate) fn on_cm_event(&self, event: xrdma_verbs::cm::Event) {
        let keepalive = {
            let mut c = self.lock();
            c.on_cm_event(self.token, event);
            if c.keepalive_armed() {
                None
            } else {
                c.arm_keepalive()
            }
        };
        self.schedule_keepalive(keepalive);
    }

    /// Has the service wake at `at` for this socket's keepalive.
    fn schedule_keepalive(&self, at: Option<Instant>) {
        if let (Some(at), Ok(svc)) = (at, service()) {
            svc.schedule(self.token, at);
        }
    }

    /// The service's call: a keepalive may be due. It takes the lock, even from a call
    /// blocked in the socket: that call waits for what the keepalive finds.
    pub(crate) fn keepalive_tick(&self, now: Instant) {
        let next = self.lock().keepalive_tick(now);
        self.schedule_keepalive(next);
    }

    /// Waits up to `limit` for a closing socket to deliver what it sent, then drops
    /// the rest (`SO_LINGER`).
    fn linger_for(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut c = self.lock();
                if c.continue_close() {
                    return;
                }
                if Instant::now() >= deadline {
                    c.abort();
                    return;
                }
                c.calls.sleep_begins();
            }
            let woke = self.wait(0, Some(deadline));
            self.lock().calls.sleep_ends();
            if woke.is_err() {
                self.lock().abort();
                return;
            }
        }
    }

    /// The service's call for a closing socket; true once closed.
    pub(crate) fn continue_close(&self) -> bool {
        self.lock().continue_close()
    }

    /// Waits until the descriptor shows `events` (or the completion channel fires, or
    /// `deadline` passes), making the context's progress meanwhile. False on timeout.
    fn wait(&self, events: i16, deadline: Option<Instant>) -> io::Result<bool> {
        let (cq_fd, ctx) = {
            let c = self.lock();
            match &c.link {
                Some(l) => (l.res.channel.as_raw_fd(), Some(l.res.ctx.clone())),
                None => (-1, None),
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: self.fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: cq_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Without a link (still connecting) the second descriptor is -1, which poll skips;
        // the state is looked at again every millisecond.
        crate::readiness::sleep(&mut fds, ctx, deadline, true)
    }

    /// Runs `attempt` under the lock, on a connected socket whose progress was just made,
    /// until it is done: between attempts that are blocked, polls for the socket's polling time, then sleeps until the descriptor
    /// shows `events`. `attempt`'s second argument says to give up instead of blocking:
    /// the call is non-blocking, or `timeout` has passed.
    fn blocking<T>(
        &self,
        events: i16,
        flags: i32,
        timeout: impl Fn(&Conn) -> Option<Duration>,
        mut attempt: impl FnMut(&mut Conn, bool) -> Step<T>,
    ) -> io::Result<T> {
        let _caller = self.conn.enter();
        let deadline = timeout(&self.lock()).map(|t| Instant::now() + t);
        let mut spin_from = Instant::now();
        let mut timed_out = false;
        loop {
            let polling = {
                let mut c = self.lock();
                let give_up = timed_out || c.nonblocking || flags & libc::MSG_DONTWAIT != 0;
                let step = match c.not_connected() {
                    // Still connecting: wait for it, unless told not to.
                    Some(e) if e.raw_os_error() == Some(libc::EAGAIN) && !give_up => Step::Blocked,
                    Some(e) => Step::Done(Err(e)),
                    None => {
                        // The descriptor shows the state the call leaves, or the state
                        // before it sleeps, not each step: data that arrives and is read
                        // within the call never makes it readable, and a send ring that
                        // fills and drains while a write spins never makes it unwritable
                        // (system calls for each, that no one could use).
                        c.progress();
                        attempt(&mut c, give_up)
                    }
                };
                match step {
                    Step::Done(r) => {
                        c.call_done();
                        return r;
                    }
                    Step::Moved => {
                        spin_from = Instant::now();
                        continue;
                    }
                    Step::Blocked => c.config.polling_time,
                }
            };
            if spin_from.elapsed() < polling {
                continue;
            }
            // Arm before sleeping; what came meanwhile is tried at once instead.
            {
                let mut c = self.lock();
                c.calls.sleep_begins();
                let came = c.progress_arming_for_sleep();
                if came {
                    c.calls.sleep_ends();
                    continue;
                }
            }
            let woke = self.wait(events, deadline);
            self.lock().calls.sleep_ends();
            timed_out = !woke? && deadline.is_some_and(|d| Instant::now() >= d);
            spin_from = Instant::now();
        }
    }

    /// `recv(2)` with `MSG_PEEK`, `MSG_WAITALL` and `MSG_DONTWAIT`.
    pub(crate) fn recv(&self, buf: &mut [u8], flags: i32) -> io::Result<usize> {
        let peek = flags & libc::MSG_PEEK != 0;
        let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
        let mut done = 0;
        self.blocking(
            libc::POLLIN,
            flags,
            |c| c.read_timeout,
            |c, give_up| {
                if c.rd_shut {
                    return Step::Done(Ok(done));
                }
                let link = c.link.as_mut().expect("a connected socket has a link");
                let n = link.read(&mut buf[done..], peek);
                if n > 0 {
                    done += n;
                    // Reading freed ring space: credits may be due.
                    c.progress();
                    return if !waitall || done == buf.len() {
                        Step::Done(Ok(done))
                    } else {
                        Step::Moved
                    };
                }
                if c.peer_shut {
                    return Step::Done(Ok(done));
                }
                if let Some(e) = c.dead {
                    return Step::partial(done, io::Error::from_raw_os_error(e));
                }
                if give_up {
                    return Step::partial(done, io::ErrorKind::WouldBlock.into());
                }
                Step::Blocked
            },
        )
    }

    /// `send(2)` with `MSG_DONTWAIT`: a blocking send returns once all of `bufs` is sent.
    pub(crate) fn send(&self, bufs: &[IoSlice<'_>], flags: i32) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        self.writing(total, flags, |link, done, olen| {
            let mut moved = 0;
            let mut skip = done;
            for b in bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                // An error after some bytes went: report those; the next attempt fails.
                let n = match link.send(&b[skip..], olen) {
                    Ok(n) => n,
                    Err(_) if moved > 0 => break,
                    Err(e) => return Err(e),
                };
                moved += n;
                if n < b.len() - skip {
                    break;
                }
                skip = 0;
            }
            Ok(moved)
        })
    }

    /// `riowrite`: writes `buf` into the peer's mapping at `offset`, waiting as `send`
    /// does.
    pub(crate) fn iowrite(&self, buf: &[u8], offset: u64, flags: i32) -> io::Result<usize> {
        let r = self.writing(buf.len(), flags, |link, done, olen| {
            link.iowrite(&buf[done..], offset + done as u64, olen)
        });
        // The peer's application learns of the write by polling its memory, and ours may
        // now do the same for the answer rather than call in again: send it at once.
        if let Some(link) = self.lock().link.as_ref() {
            let _ = link.res.ctx.stop_polling();
        }
        r
    }

    /// A write of `total` bytes: `push(link, done, olen)` moves what it can of the rest and
    /// says how much; between attempts that move nothing, it waits as [`blocking`] does.
    ///
    /// [`blocking`]: Self::blocking
    fn writing(
        &self,
        total: usize,
        flags: i32,
        mut push: impl FnMut(&mut link::Link, usize, &mut u32) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut done = 0;
        self.blocking(
            libc::POLLOUT,
            flags,
            |c| c.write_timeout,
            |c, give_up| {
                if let Some(stop) = write_stopped(c, done) {
                    return stop;
                }
                let before = done;
                let link = c.link.as_mut().expect("a connected socket has a link");
                // rsocket starts every call's chunks at 2 KiB, doubling to 64 KiB. Here
                // they start small only after the sends went idle: a stream of writes
                // keeps its large chunks, a lone write still has its first bytes
                // delivered early.
                if link.proto.all_sends_done() {
                    c.olen = OLAP_START;
                }
                match push(link, done, &mut c.olen) {
                    Ok(n) => done += n,
                    Err(e) => return Step::partial(done, e),
                }
                write_step(before, done, total, give_up)
            },
        )
    }

    /// Maps a buffer for the peer's `iowrite` (see [`RsStream::iomap`]).
    ///
    /// # Safety
    ///
    /// As [`RsStream::iomap`].
    unsafe fn iomap(&self, buf: *mut u8, len: usize, offset: Option<u64>) -> io::Result<u64> {
        let mut c = self.lock();
        if let Some(e) = c.not_connected() {
            return Err(e);
        }
        let link = c.link.as_mut().expect("a connected socket has a link");
        // SAFETY: passed on from the caller.
        let r = unsafe { link.iomap(buf, len, offset) };
        c.publish();
        r
    }

    /// Waits for a connection under way to be made (or to fail).
    /// Gives up with `TimedOut` at `deadline`.
    fn finish_connect(&self, deadline: Option<Instant>) -> io::Result<()> {
        loop {
            {
                let mut c = self.lock();
                match c.phase {
                    Phase::Connected => return Ok(()),
                    Phase::Failed => {
                        return Err(io::Error::from_raw_os_error(
                            c.so_error.take().unwrap_or(libc::ECONNREFUSED),
                        ));
                    }
                    Phase::Resolving | Phase::Connecting => {}
                    _ => return Err(io::Error::from_raw_os_error(libc::ENOTCONN)),
                }
            }
            if !self.wait(libc::POLLOUT, deadline)? && deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        let c = self.conn.get_mut();
        if c.phase != Phase::Closed {
            c.teardown();
        }
        if let Ok(svc) = service() {
            svc.unregister(self.token);
        }
    }
}

/// Why a write cannot go on, after `done` bytes: shut down, broken, or the peer gone.
fn write_stopped(c: &Conn, done: usize) -> Option<Step<usize>> {
    if c.wr_shut {
        return Some(Step::Done(Err(io::Error::from_raw_os_error(libc::EPIPE))));
    }
    if let Some(e) = c.dead {
        return Some(Step::partial(done, io::Error::from_raw_os_error(e)));
    }
    if c.peer_gone {
        return Some(Step::partial(
            done,
            io::Error::from_raw_os_error(libc::EPIPE),
        ));
    }
    None
}

/// Where a write stands after an attempt that took it from `before` to `done` of `total`
/// bytes.
fn write_step(before: usize, done: usize, total: usize, give_up: bool) -> Step<usize> {
    if done == total {
        Step::Done(Ok(done))
    } else if give_up {
        Step::partial(done, io::ErrorKind::WouldBlock.into())
    } else if done > before {
        Step::Moved
    } else {
        Step::Blocked
    }
}

/// A stream socket over RDMA: the shape of [`std::net::TcpStream`], rsocket's protocol on
/// the wire.
///
/// Dropping the last handle (see [`try_clone`](Self::try_clone)) closes the socket: data
/// already written is still delivered, as with TCP.
pub struct RsStream {
    pub(crate) inner: Arc<StreamInner>,
}

impl std::fmt::Debug for RsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.inner.lock();
        f.debug_struct("RsStream")
            .field("fd", &self.inner.fd)
            .field("phase", &c.phase)
            .field("local", &c.local)
            .field("peer", &c.peer)
            .finish()
    }
}

impl RsStream {
    /// Connects to the first of `addr`'s addresses that accepts.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<RsStream> {
        crate::Builder::new().connect(addr)
    }

    /// Connects to `addr`, giving up after `timeout`.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<RsStream> {
        let s = crate::Builder::new().connect_nonblocking(*addr)?;
        s.inner.finish_connect(Some(Instant::now() + timeout))?;
        Ok(s)
    }

    pub(crate) fn from_inner(inner: Arc<StreamInner>) -> RsStream {
        RsStream { inner }
    }

    /// Starts connecting (`connect(2)` on a non-blocking socket): the descriptor polls
    /// writable once the connection is made or has failed, and
    /// [`take_error`](Self::take_error) says which.
    pub(crate) fn start(
        config: Config,
        src: Option<SocketAddr>,
        dst: SocketAddr,
    ) -> io::Result<RsStream> {
        let inner = StreamInner::new(config)?;
        let s = RsStream::from_inner(inner);
        s.inner.lock().start_connect(s.inner.token, src, dst)?;
        Ok(s)
    }

    pub(crate) fn wait_connected(&self) -> io::Result<()> {
        self.inner.finish_connect(None)
    }

    /// Makes the progress that waits and says what the socket can do now: the spinning
    /// phase of an `rpoll`, a call as any other. Call [`sync_ready`](Self::sync_ready)
    /// before sleeping on the descriptor.
    pub fn poll_ready(&self) -> Ready {
        let mut c = self.inner.lock();
        c.call_done();
        c.ready_now()
    }

    /// [`poll_ready`](Self::poll_ready), and arms the socket's events so that the
    /// descriptor is kept up to date: before the caller sleeps in `poll(2)`, or returns
    /// to code that may.
    pub fn sync_ready(&self) -> Ready {
        let mut c = self.inner.lock();
        c.progress_arming_for_sleep();
        c.ready_now()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let c = self.inner.lock();
        match (c.phase, c.peer) {
            (Phase::Connected | Phase::Closing, Some(a)) => Ok(a),
            _ => Err(io::Error::from_raw_os_error(libc::ENOTCONN)),
        }
    }

    /// Our address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner
            .conn
            .lock()
            .local
            .ok_or(io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// Shuts down reading, writing or both. Shutting down writing sends the peer an end of
    /// file after the data written before.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let (r, w) = match how {
            Shutdown::Read => (true, false),
            Shutdown::Write => (false, true),
            Shutdown::Both => (true, true),
        };
        self.inner.lock().shutdown(r, w)
    }

    /// Another handle to the same socket.
    pub fn try_clone(&self) -> io::Result<RsStream> {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Ok(RsStream {
            inner: self.inner.clone(),
        })
    }

    /// Reads without taking the bytes.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv(buf, libc::MSG_PEEK)
    }

    /// How many bytes a read would return now without waiting, as `FIONREAD` (`SIOCINQ`)
    /// tells of a TCP socket: what has arrived and is not read yet, copying nothing.
    pub fn queued_bytes(&self) -> usize {
        let _caller = self.inner.conn.enter();
        let mut c = self.inner.lock();
        c.progress();
        let queued = c.link.as_ref().map_or(0, |l| l.proto.queued());
        c.call_done();
        usize::try_from(queued).unwrap_or(usize::MAX)
    }

    /// `recv(2)`: `flags` may hold `MSG_PEEK`, `MSG_WAITALL` and `MSG_DONTWAIT`.
    pub fn recv_with_flags(&self, buf: &mut [u8], flags: i32) -> io::Result<usize> {
        self.inner.recv(buf, flags)
    }

    /// `send(2)`: `flags` may hold `MSG_DONTWAIT`.
    pub fn send_with_flags(&self, buf: &[u8], flags: i32) -> io::Result<usize> {
        self.inner.send(&[IoSlice::new(buf)], flags)
    }

    /// `sendmsg(2)` without ancillary data: the buffers in order, as one `send`.
    pub fn send_vectored_with_flags(&self, bufs: &[IoSlice<'_>], flags: i32) -> io::Result<usize> {
        self.inner.send(bufs, flags)
    }

    /// Makes reads and writes fail with `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.lock().nonblocking = nonblocking;
        Ok(())
    }

    /// How long a read waits (`None`: for ever). A zero duration is refused, as by std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.inner.lock().read_timeout = timeout;
        Ok(())
    }

    /// How long a write waits (`None`: for ever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.inner.lock().write_timeout = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.lock().read_timeout)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.lock().write_timeout)
    }

    /// `TCP_NODELAY`. rsocket sends every write at once, so it only records the flag.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.lock().nodelay = nodelay;
        Ok(())
    }

    /// The `TCP_NODELAY` flag.
    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(self.inner.lock().nodelay)
    }

    /// `SO_KEEPALIVE` and `TCP_KEEPIDLE` in one: with `Some(interval)`, a keepalive goes
    /// to the peer's QP every `interval` (as rsocket sends them, whether or not data
    /// moves), and a peer that no longer acknowledges ends the connection with
    /// `ETIMEDOUT`, which a blocked reader then gets. `None` turns it off (the default).
    pub fn set_keepalive(&self, interval: Option<Duration>) -> io::Result<()> {
        if interval.is_some_and(|t| t.is_zero()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let at = {
            let mut c = self.inner.lock();
            c.keepalive = interval;
            c.arm_keepalive()
        };
        self.inner.schedule_keepalive(at);
        Ok(())
    }

    /// The keepalive interval, if keepalive is on.
    pub fn keepalive(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.lock().keepalive)
    }

    /// `SO_LINGER`: with `Some(limit)`, dropping the last handle waits up to `limit` for
    /// the data written to be delivered, then drops what is left; `Some(0)` drops it at
    /// once. `None` (the default) delivers it in the background.
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.inner.lock().linger = linger;
        Ok(())
    }

    /// The `SO_LINGER` setting.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        Ok(self.inner.lock().linger)
    }

    /// The receive ring's size in bytes (`SO_RCVBUF`; set with [`Config::rmem`] before
    /// connecting, as rsocket sizes its rings once).
    ///
    /// [`Config::rmem`]: crate::Config::rmem
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        Ok(self.inner.lock().config.rmem as usize)
    }

    /// The send ring's size in bytes (`SO_SNDBUF`; see [`Config::wmem`]).
    ///
    /// [`Config::wmem`]: crate::Config::wmem
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        Ok(self.inner.lock().config.wmem as usize)
    }

    /// `riomap`: lets the peer write `len` bytes at `buf` directly with its
    /// [`iowrite`](Self::iowrite), at offsets `offset..offset + len` (`None`: the buffer's
    /// address is the offset, rsocket's -1). Returns the offset. The mapping is announced in
    /// the peer's iomap table (sized by its [`Config::iomap_size`]) as soon as the protocol
    /// lets a message go; ENOMEM if that table is full or the peer has none. The peer is not
    /// told of its writes: it tells in band (a `write` after its `iowrite`s arrives after
    /// them).
    ///
    /// # Safety
    ///
    /// `buf..buf + len` must stay valid until [`iounmap`](Self::iounmap) or the socket's
    /// close, and the program must expect its bytes to change at any time, as a DMA
    /// target: read it with volatile or atomic reads, or after the peer said it wrote.
    ///
    /// [`Config::iomap_size`]: crate::Config::iomap_size
    pub unsafe fn iomap(&self, buf: *mut u8, len: usize, offset: Option<u64>) -> io::Result<u64> {
        // SAFETY: passed on from the caller.
        unsafe { self.inner.iomap(buf, len, offset) }
    }

    /// `riounmap`: ends the mapping of `len` bytes at `buf` (EINVAL if there is none). As
    /// with rsocket the peer is not told; its writes there fail from now on.
    pub fn iounmap(&self, buf: *mut u8, len: usize) -> io::Result<()> {
        let mut c = self.inner.lock();
        match c.link.as_mut() {
            Some(link) => link.iounmap(buf, len),
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// `riowrite`: writes `buf` straight into the peer's mapping at `offset` (see
    /// [`iomap`](Self::iomap)), with RDMA WRITEs its application does not see; waits as a
    /// write does (`MSG_DONTWAIT` in `flags`, or non-blocking mode, to not). EINVAL if no
    /// mapping of the peer's holds `offset`; a write stops at a mapping's end.
    pub fn iowrite(&self, buf: &[u8], offset: u64, flags: i32) -> io::Result<usize> {
        self.inner.iowrite(buf, offset, flags)
    }

    /// Takes the socket's pending error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self
            .inner
            .conn
            .lock()
            .so_error
            .take()
            .map(io::Error::from_raw_os_error))
    }
}

impl Drop for RsStream {
    /// The last handle closes: at once with `SO_LINGER` of zero (undelivered data is
    /// dropped), waiting up to its timeout with a longer one, and otherwise in the
    /// background, as TCP does.
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let (lingers, linger) = {
            let mut c = self.inner.lock();
            match c.linger {
                Some(t) if t.is_zero() => {
                    c.abort();
                    return;
                }
                linger => (c.begin_close(), linger),
            }
        };
        match (lingers, linger) {
            (false, _) => {}
            (true, Some(limit)) => self.inner.linger_for(limit),
            (true, None) => {
                if let Ok(svc) = service() {
                    svc.linger(self.inner.clone());
                }
            }
        }
    }
}

impl AsRawFd for RsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd
    }
}

impl Read for &RsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.recv(buf, 0)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match bufs.iter_mut().find(|b| !b.is_empty()) {
            Some(b) => self.inner.recv(b, 0),
            None => Ok(0),
        }
    }
}

impl Read for RsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for &RsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.send(&[IoSlice::new(buf)], 0)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner.send(bufs, 0)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for RsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
