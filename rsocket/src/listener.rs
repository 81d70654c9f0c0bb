//! Listening sockets: [`RsListener`], nearly a `std::net::TcpListener`.
//!
//! Connection requests are taken by the service thread: each becomes a connected socket
//! (its data path made, the REP sent) queued for [`RsListener::accept`], up to the backlog;
//! beyond it, requests are rejected and the client's connect fails with ECONNREFUSED, as a
//! full SYN queue with `tcp_abort_on_overflow` would make it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use parking_lot::Mutex;
use xrdma_verbs::cm::{CmId, Event, PortSpace};

use crate::Ready;
use crate::config::Config;
use crate::readiness::Readiness;
use crate::service::{Entry, service};
use crate::stream::{RsStream, StreamInner};

pub(crate) struct ListenerInner {
    token: u64,
    state: Mutex<ListenState>,
    fd: RawFd,
}

struct ListenState {
    id: Option<CmId>,
    queue: VecDeque<Arc<StreamInner>>,
    backlog: usize,
    ready: Readiness,
    nonblocking: bool,
    config: Config,
    local: SocketAddr,
}

impl ListenState {
    fn publish(&mut self) {
        let r = !self.queue.is_empty();
        self.ready.set(r, false);
    }
}

impl ListenerInner {
    /// A connection request for this listener (the service's call).
    pub(crate) fn on_request(&self, event: Event) {
        let mut st = self.state.lock();
        if st.id.is_none() || st.queue.len() >= st.backlog {
            let _ = event.id.reject(&[]);
            event.id.destroy();
            return;
        }
        let config = st.config;
        let accepted = StreamInner::new(config).and_then(|s| {
            s.lock().accept_request(s.token, &event)?;
            Ok(s)
        });
        match accepted {
            Ok(s) => {
                st.queue.push_back(s);
                st.publish();
            }
            Err(_) => {
                // The stream's teardown (its drop) destroys the id; reject it first.
                let _ = event.id.reject(&[]);
            }
        }
    }
}

impl Drop for ListenerInner {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if let Some(id) = st.id.take() {
            id.destroy();
        }
        if let Ok(svc) = service() {
            svc.unregister(self.token);
        }
    }
}

/// A listening socket: the shape of [`std::net::TcpListener`].
pub struct RsListener {
    inner: Arc<ListenerInner>,
}

impl std::fmt::Debug for RsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsListener")
            .field("fd", &self.inner.fd)
            .field("local", &self.inner.state.lock().local)
            .finish()
    }
}

/// `listen(2)`'s default backlog in std.
pub(crate) const DEFAULT_BACKLOG: usize = 128;

impl RsListener {
    /// Listens on the first of `addr`'s addresses that can be bound.
    pub fn bind<A: std::net::ToSocketAddrs>(addr: A) -> io::Result<RsListener> {
        crate::Builder::new().listen(addr)
    }

    pub(crate) fn open(config: Config, addr: SocketAddr, backlog: usize) -> io::Result<RsListener> {
        crate::device::ensure_local(addr.ip())?;
        let svc = service()?;
        let ready = Readiness::new()?;
        let fd = ready.fd();
        let inner = Arc::new_cyclic(|weak| ListenerInner {
            token: svc.register(Entry::Listener(weak.clone())),
            state: Mutex::new(ListenState {
                id: None,
                queue: VecDeque::new(),
                backlog: backlog.max(1),
                ready,
                nonblocking: false,
                config,
                local: addr,
            }),
            fd,
        });
        let id = CmId::new(&svc.channel, PortSpace::Tcp);
        id.set_user(inner.token as usize);
        let listened = id
            .bind_addr(addr)
            .and_then(|()| id.listen(backlog as i32))
            .map_err(|e| io::Error::from_raw_os_error(e.errno()));
        if let Err(e) = listened {
            id.destroy();
            return Err(e);
        }
        {
            let mut st = inner.state.lock();
            st.local = id.local_addr().unwrap_or(addr);
            st.id = Some(id);
            st.publish();
        }
        Ok(RsListener { inner })
    }

    /// Takes the next connection, waiting for one unless the listener is non-blocking.
    pub fn accept(&self) -> io::Result<(RsStream, SocketAddr)> {
        loop {
            let nonblocking = {
                let mut st = self.inner.state.lock();
                if let Some(s) = st.queue.pop_front() {
                    st.publish();
                    let peer = s.lock().peer;
                    let stream = RsStream::from_inner(s);
                    let peer = peer.ok_or(io::Error::from_raw_os_error(libc::ECONNABORTED))?;
                    return Ok((stream, peer));
                }
                st.nonblocking
            };
            if nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut p = libc::pollfd {
                fd: self.inner.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let n = unsafe { libc::poll(&mut p, 1, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    /// Whether a connection waits for `accept`: the service thread queues them and keeps
    /// the descriptor up to date, so this is also what polling it says.
    pub fn poll_ready(&self) -> Ready {
        Ready {
            readable: !self.inner.state.lock().queue.is_empty(),
            writable: false,
        }
    }

    /// The connections, as they come.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address listened on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.state.lock().local)
    }

    /// Makes `accept` fail with `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.state.lock().nonblocking = nonblocking;
        Ok(())
    }

    /// The sizes and options of the connections accepted from now on (rsocket's
    /// listening sockets pass theirs on, set before or after `listen`).
    pub fn set_accept_config(&self, config: Config) {
        self.inner.state.lock().config = config;
    }

    /// Listening sockets have no error to report.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(None)
    }
}

impl AsRawFd for RsListener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd
    }
}

/// The iterator of [`RsListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a RsListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<RsStream>;

    fn next(&mut self) -> Option<io::Result<RsStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}
