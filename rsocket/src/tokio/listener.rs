//! [`RsListener`] for tokio: a listening rsocket whose `accept` is a future.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll, ready};

use ::tokio::io::unix::AsyncFd;
use ::tokio::net::{ToSocketAddrs, lookup_host};

use super::RsStream;

/// A listening rsocket driven by tokio: the shape of `tokio::net::TcpListener`.
#[derive(Debug)]
pub struct RsListener {
    io: AsyncFd<crate::RsListener>,
}

impl RsListener {
    /// Listens on the first of `addr`'s addresses that can be bound.
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<RsListener> {
        let mut last = io::Error::from(io::ErrorKind::InvalidInput);
        for a in lookup_host(addr).await? {
            match crate::RsListener::bind(a) {
                Ok(l) => return RsListener::from_std(l),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Takes a listener of this crate (made with [`Builder::listen`](crate::Builder::listen)
    /// for another backlog, say) into the runtime, making it non-blocking.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one without its I/O driver.
    pub fn from_std(listener: crate::RsListener) -> io::Result<RsListener> {
        listener.set_nonblocking(true)?;
        // SAFETY: the descriptor is the listener's readiness descriptor, opened when the listener
        // was made and closed only when its last handle (this one among them) is dropped;
        // `as_raw_fd` always returns it.
        let io = unsafe { AsyncFd::register(listener)? };
        Ok(RsListener { io })
    }

    /// The listener of this crate, blocking again.
    pub fn into_std(self) -> io::Result<crate::RsListener> {
        let l = self.io.into_inner();
        l.set_nonblocking(false)?;
        Ok(l)
    }

    /// Takes the next connection, waiting for one.
    pub async fn accept(&self) -> io::Result<(RsStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Takes the next connection if one is queued; otherwise has `cx`'s task woken when
    /// one comes.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(RsStream, SocketAddr)>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))?;
            match guard.try_io(|io| io.get_ref().accept()) {
                Ok(Ok((s, peer))) => return Poll::Ready(RsStream::from_std(s).map(|s| (s, peer))),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// The address listened on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }
}

impl AsRawFd for RsListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}
