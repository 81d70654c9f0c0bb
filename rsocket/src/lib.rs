//! rsockets over xrdma: stream sockets that behave nearly as TCP's, over RDMA queue pairs,
//! speaking rdma-core's rsocket protocol on the wire.
//!
//! [`RsListener`] and [`RsStream`] have the shape of `std::net`'s `TcpListener` and
//! `TcpStream`: porting a program is a change of type names. [`RsDatagram`] is the
//! `UdpSocket`, over UD QPs with rsocket's datagram protocol. No set-up call is needed:
//! the interface comes from the kernel's routing table and its context is opened on first
//! use (see [`configure`] and the `XRDMA_*` variables it describes).
//!
//! # Example
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use xrdma_rsocket::{RsListener, RsStream};
//!
//! let listener = RsListener::bind("198.18.0.1:7471")?;
//! std::thread::spawn(move || {
//!     for stream in listener.incoming() {
//!         let mut s = stream.unwrap();
//!         let mut buf = [0u8; 4096];
//!         while let Ok(n @ 1..) = s.read(&mut buf) {
//!             s.write_all(&buf[..n]).unwrap();
//!         }
//!     }
//! });
//! let mut s = RsStream::connect("198.18.0.1:7471")?;
//! s.write_all(b"ping")?;
//! let mut reply = [0u8; 4];
//! s.read_exact(&mut reply)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Readiness and threads
//!
//! Every socket owns a kernel file descriptor ([`AsRawFd`](std::os::fd::AsRawFd)) that
//! polls readable and writable exactly when the socket is, so `poll`, `select` and `epoll`
//! can wait on sockets and ordinary descriptors together; the application must only poll
//! it, never read or write it. Sockets are `Send + Sync`; `&RsStream` reads and writes.
//! A blocked call polls for [`Config::polling_time`], then sleeps; one service thread per
//! process makes the progress of sockets nobody is calling into.
//!
//! A program that calls in a loop takes what arrives itself, and the service thread keeps
//! out of its way: it keeps a socket's descriptor up to date again once the calls stop
//! for a millisecond. A program that goes from its calls straight to sleep on the
//! descriptor calls `sync_ready` first ([`RsStream::sync_ready`],
//! [`RsDatagram::sync_ready`]), as the C API's `rpoll` does and the `tokio` module does;
//! otherwise it may see what arrives that much later. To sleep on sockets and other
//! descriptors together, a [`Waiter`] does better still: its thread takes the sockets'
//! events itself.
//!
//! # tokio
//!
//! With the `tokio` feature, the module `tokio` holds `RsListener` and `RsStream` for
//! tokio's runtime: `accept` and `connect` are futures, and streams are `AsyncRead` and
//! `AsyncWrite`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod config;
mod device;
mod dgram;
mod listener;
pub mod proto;
mod readiness;
mod regbuf;
mod service;
mod shared;
mod stream;
#[cfg(feature = "tokio")]
pub mod tokio;
mod wait;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};

pub use config::Config;
pub use device::{Backend, Settings, configure};
pub use dgram::RsDatagram;
pub use listener::{Incoming, RsListener};
pub use stream::RsStream;
pub use wait::Waiter;

/// Protocol violations by peers, in this process: each ended its connection.
pub(crate) static PROTOCOL_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Panics caught in the service thread: each is a bug, counted so that tests see it.
pub(crate) static SERVICE_PANICS: AtomicU64 = AtomicU64::new(0);

/// Datagrams dropped because their rsocket header was malformed.
pub(crate) static DGRAM_DROPPED: AtomicU64 = AtomicU64::new(0);

/// What a socket can do at once: what `poll(2)` on its descriptor says once it is brought
/// up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    /// A read (or accept) would not block: data, a connection, end of file or an error.
    pub readable: bool,
    /// A write would not block, or fails at once.
    pub writable: bool,
}

/// Counters of the process's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections ended because the peer broke the protocol.
    pub protocol_errors: u64,
    /// Bugs caught in the service thread (always 0, unless xrdma has one).
    pub service_panics: u64,
    /// Datagrams dropped because their rsocket header was malformed.
    pub dgram_dropped: u64,
}

/// The process's counters.
pub fn stats() -> Stats {
    Stats {
        protocol_errors: PROTOCOL_ERRORS.load(Ordering::Relaxed),
        service_panics: SERVICE_PANICS.load(Ordering::Relaxed),
        dgram_dropped: DGRAM_DROPPED.load(Ordering::Relaxed),
    }
}

/// Waits up to `limit` for the streams closing in the background (dropped without
/// `SO_LINGER`) to deliver what they were given; true if none is left. A process that
/// closes its streams and exits calls this first: unlike the kernel's TCP, nothing
/// delivers an rsocket's data once the process is gone.
pub fn wait_closing(limit: std::time::Duration) -> bool {
    service::wait_closing(limit)
}

/// Builds sockets with other sizes than rsocket's defaults, or bound to a local address.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    config: Config,
    local: Option<SocketAddr>,
    backlog: Option<usize>,
}

impl Builder {
    /// rsocket's defaults.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Sizes and timings.
    pub fn config(mut self, config: Config) -> Builder {
        self.config = config;
        self
    }

    /// Connects from this address (`bind` before `connect`).
    pub fn bind(mut self, local: SocketAddr) -> Builder {
        self.local = Some(local);
        self
    }

    /// The listen backlog (default 128).
    pub fn backlog(mut self, backlog: usize) -> Builder {
        self.backlog = Some(backlog);
        self
    }

    /// Connects to the first of `addr`'s addresses that accepts.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<RsStream> {
        let mut last = io::Error::from(io::ErrorKind::InvalidInput);
        for a in addr.to_socket_addrs()? {
            match self
                .connect_nonblocking(a)
                .and_then(|s| s.wait_connected().map(|()| s))
            {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Starts connecting to `addr` and returns at once, as `connect(2)` on a non-blocking
    /// socket does (EINPROGRESS): the socket's descriptor polls writable when the
    /// connection is made or has failed, and `take_error` then says which.
    pub fn connect_nonblocking(&self, addr: SocketAddr) -> io::Result<RsStream> {
        RsStream::start(self.config, self.local, addr)
    }

    /// A datagram socket bound to the first of `addr`'s addresses that can be bound.
    /// The [`Config`]'s `rmem` and `wmem` bound its queues, as in rsocket: one 2048-byte
    /// slot per entry.
    pub fn bind_datagram<A: ToSocketAddrs>(&self, addr: A) -> io::Result<RsDatagram> {
        let mut last = io::Error::from(io::ErrorKind::InvalidInput);
        for a in addr.to_socket_addrs()? {
            match RsDatagram::open(self.config, a) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Listens on the first of `addr`'s addresses that can be bound.
    pub fn listen<A: ToSocketAddrs>(&self, addr: A) -> io::Result<RsListener> {
        let mut last = io::Error::from(io::ErrorKind::InvalidInput);
        let backlog = self.backlog.unwrap_or(listener::DEFAULT_BACKLOG);
        for a in addr.to_socket_addrs()? {
            match RsListener::open(self.config, a, backlog) {
                Ok(l) => return Ok(l),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
