//! The process's rsockets, by the descriptor number the application holds.
//!
//! Every number is a descriptor the kernel knows, so that `poll`, `select`, `epoll` and
//! `close` on it behave: `rsocket` returns an eventfd as a placeholder, and the call that
//! makes the socket (`rlisten`, `rconnect`, a datagram socket's first use) puts the new
//! socket's readiness descriptor in its place with `dup3`. An accepted socket's number is
//! its own readiness descriptor.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard, RwLock};
use xrdma_rsocket::{Config, Ready, RsDatagram, RsListener, RsStream, Waiter};

/// The kind `rsocket` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Stream,
    Dgram,
}

/// What a socket has become.
pub(crate) enum Live {
    Listener(RsListener),
    Stream(RsStream),
    Dgram(RsDatagram),
}

impl Live {
    fn fd(&self) -> RawFd {
        match self {
            Live::Listener(l) => l.as_raw_fd(),
            Live::Stream(s) => s.as_raw_fd(),
            Live::Dgram(d) => d.as_raw_fd(),
        }
    }

    /// Makes the progress that waits, and says what the socket can do; brings the
    /// descriptor up to date as `look` needs (see `RsStream::sync_ready`).
    pub(crate) fn ready(&self, look: Look) -> Ready {
        match (self, look) {
            (Live::Listener(l), _) => l.poll_ready(),
            (Live::Stream(s), Look::Spin | Look::Return) => s.poll_ready(),
            (Live::Stream(s), Look::Sleep) => s.sync_ready(),
            (Live::Dgram(d), Look::Spin | Look::Return) => d.poll_ready(),
            (Live::Dgram(d), Look::Sleep) => d.sync_ready(),
        }
    }
}

impl Live {
    /// Adds the socket to `waiter`, its events armed, and says what it can do now; `None`
    /// for a listener, whose descriptor the service thread keeps.
    pub(crate) fn wait_in(&self, waiter: &mut Waiter) -> Option<Ready> {
        match self {
            Live::Listener(_) => None,
            Live::Stream(s) => Some(waiter.add_stream(s)),
            Live::Dgram(d) => Some(waiter.add_datagram(d)),
        }
    }
}

/// Why a socket's readiness is looked at (see [`Live::ready`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// While spinning: the descriptor need not be up to date.
    Spin,
    /// As `rpoll` returns: the descriptor is to show what the socket is.
    Return,
    /// Before sleeping on the descriptor: it is to be kept up to date.
    Sleep,
}

/// Options set before the socket exists, and the flags `rfcntl` keeps.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub config: Config,
    /// `rbind`'s address, for a stream socket that is not made yet.
    pub local: Option<SocketAddr>,
    /// `O_NONBLOCK` and the other file status flags `F_SETFL` was given.
    pub status_flags: i32,
    pub reuseaddr: bool,
    pub keepalive: bool,
    /// `TCP_KEEPIDLE`, seconds (rsocket's default: 7200).
    pub keepidle: u32,
    pub nodelay: bool,
    pub oobinline: bool,
    pub linger: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// `rconnect` on a non-blocking socket returned EINPROGRESS.
    pub connecting: bool,
}

impl Setup {
    pub(crate) fn nonblocking(&self) -> bool {
        self.status_flags & libc::O_NONBLOCK != 0
    }
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            config: Config::default(),
            local: None,
            status_flags: 0,
            reuseaddr: false,
            keepalive: false,
            keepidle: 7200,
            nodelay: false,
            oobinline: false,
            linger: None,
            read_timeout: None,
            write_timeout: None,
            connecting: false,
        }
    }
}

/// One rsocket.
pub(crate) struct Socket {
    pub kind: Kind,
    pub domain: i32,
    /// The number the application holds.
    pub fd: RawFd,
    /// Options and flags; also serialises the calls that make the socket.
    setup: Mutex<Setup>,
    /// Set once, by the call that makes the socket. Dropped before `placeholder`.
    live: OnceLock<Live>,
    /// The number `rsocket` returned, which the socket owns (an accepted socket's number
    /// is its stream's own descriptor instead).
    placeholder: Option<OwnedFd>,
}

impl Socket {
    /// A socket not made yet, numbered by a new placeholder descriptor.
    pub(crate) fn fresh(
        kind: Kind,
        domain: i32,
        cloexec: bool,
        setup: Setup,
    ) -> io::Result<Socket> {
        let flags = if cloexec { libc::EFD_CLOEXEC } else { 0 };
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket {
            kind,
            domain,
            fd,
            setup: Mutex::new(setup),
            live: OnceLock::new(),
            // SAFETY: the descriptor is new and owned by nothing else.
            placeholder: Some(unsafe { OwnedFd::from_raw_fd(fd) }),
        })
    }

    /// An accepted stream, numbered by its own descriptor.
    pub(crate) fn accepted(domain: i32, stream: RsStream, setup: Setup) -> Socket {
        let fd = stream.as_raw_fd();
        let live = OnceLock::new();
        let _ = live.set(Live::Stream(stream));
        Socket {
            kind: Kind::Stream,
            domain,
            fd,
            setup: Mutex::new(setup),
            live,
            placeholder: None,
        }
    }

    pub(crate) fn setup(&self) -> MutexGuard<'_, Setup> {
        self.setup.lock()
    }

    pub(crate) fn live(&self) -> Option<&Live> {
        self.live.get()
    }

    /// Makes the socket `live`: its descriptor takes the placeholder's number. The caller
    /// holds the setup lock, so that no other call makes it at the same time.
    pub(crate) fn make(&self, _setup: &MutexGuard<'_, Setup>, live: Live) -> io::Result<&Live> {
        if let Some(placeholder) = &self.placeholder {
            let cloexec = {
                // SAFETY: F_GETFD takes no pointer.
                let f = unsafe { libc::fcntl(placeholder.as_raw_fd(), libc::F_GETFD) };
                if f >= 0 && f & libc::FD_CLOEXEC != 0 {
                    libc::O_CLOEXEC
                } else {
                    0
                }
            };
            // SAFETY: both are open descriptors; the placeholder's number now refers to
            // the live socket's descriptor, and stays owned by `placeholder`.
            if unsafe { libc::dup3(live.fd(), placeholder.as_raw_fd(), cloexec) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if self.live.set(live).is_err() {
            // The setup lock makes this unreachable; refuse rather than replace.
            return Err(io::Error::from_raw_os_error(libc::EISCONN));
        }
        Ok(self.live.get().expect("just set"))
    }
}

/// The table, indexed by descriptor number.
static TABLE: RwLock<Vec<Option<Arc<Socket>>>> = RwLock::new(Vec::new());

/// Enters `sock` under its number.
pub(crate) fn insert(sock: Socket) -> RawFd {
    let fd = sock.fd;
    let i = fd as usize;
    let mut t = TABLE.write();
    if t.len() <= i {
        t.resize_with(i + 1, || None);
    }
    t[i] = Some(Arc::new(sock));
    fd
}

/// The rsocket numbered `fd`: EBADF if `fd` is not open, ENOTSOCK if it is open but not
/// an rsocket (as Linux's socket calls answer for a descriptor that is not a socket).
pub(crate) fn get(fd: RawFd) -> Result<Arc<Socket>, i32> {
    if let Some(s) = lookup(fd) {
        return Ok(s);
    }
    // SAFETY: F_GETFD takes no pointer.
    if fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
        Err(libc::ENOTSOCK)
    } else {
        Err(libc::EBADF)
    }
}

/// The rsocket numbered `fd`, if it is one.
pub(crate) fn lookup(fd: RawFd) -> Option<Arc<Socket>> {
    let i = usize::try_from(fd).ok()?;
    TABLE.read().get(i).and_then(|s| s.clone())
}

/// Takes `fd` out of the table; the socket closes when the last call using it returns.
pub(crate) fn remove(fd: RawFd) -> Option<Arc<Socket>> {
    let i = usize::try_from(fd).ok()?;
    TABLE.write().get_mut(i).and_then(Option::take)
}
