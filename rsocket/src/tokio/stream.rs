//! [`RsStream`] for tokio: a stream rsocket as `AsyncRead` and `AsyncWrite`, and its halves.

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::net::{ToSocketAddrs, lookup_host};

use crate::Builder;

/// A stream rsocket driven by tokio: the shape of `tokio::net::TcpStream`.
///
/// The methods of the socket underneath (`set_keepalive`, `shutdown(Shutdown::Read)`,
/// `take_error`, ...) are reached through [`get_ref`](Self::get_ref).
/// `AsyncWrite::poll_shutdown` shuts writing down: the peer reads an end of file after
/// the bytes written before.
#[derive(Debug)]
pub struct RsStream {
    io: AsyncFd<crate::RsStream>,
}

impl RsStream {
    /// Connects to the first of `addr`'s addresses that accepts.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<RsStream> {
        RsStream::connect_with(&Builder::new(), addr).await
    }

    /// Connects as `builder` says (its sizes, its local address) to the first of `addr`'s
    /// addresses that accepts.
    pub async fn connect_with<A: ToSocketAddrs>(
        builder: &Builder,
        addr: A,
    ) -> io::Result<RsStream> {
        let mut last = io::Error::from(io::ErrorKind::InvalidInput);
        for a in lookup_host(addr).await? {
            match RsStream::connect_one(builder, a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A non-blocking connect, finished when the descriptor polls writable: the socket is
    /// then connected, or `take_error` says why not (asked second, so that a connection
    /// made and broken since is returned, and reports its error on the first read).
    async fn connect_one(builder: &Builder, addr: SocketAddr) -> io::Result<RsStream> {
        let s = RsStream::from_std(builder.connect_nonblocking(addr)?)?;
        loop {
            let mut guard = s.io.writable().await?;
            let std = s.io.get_ref();
            if std.peer_addr().is_ok() {
                return Ok(s);
            }
            if let Some(e) = std.take_error()? {
                return Err(e);
            }
            if polls_writable(std.as_raw_fd()) {
                // Writable, without an error nor a connection: it was closed.
                return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
            }
            guard.clear_ready();
        }
    }

    /// Takes a socket of this crate (connected, or connecting with
    /// [`Builder::connect_nonblocking`]) into the runtime, making it non-blocking.
    ///
    /// A socket's descriptor is registered once per runtime: `from_std` on a second handle
    /// of the same socket ([`try_clone`](crate::RsStream::try_clone)) fails.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one without its I/O driver.
    pub fn from_std(stream: crate::RsStream) -> io::Result<RsStream> {
        stream.set_nonblocking(true)?;
        // SAFETY: the descriptor is the socket's readiness descriptor, opened when the socket
        // was made and closed only when its last handle (this one among them) is dropped;
        // `as_raw_fd` always returns it.
        let io = unsafe { AsyncFd::register(stream)? };
        Ok(RsStream { io })
    }

    /// The socket of this crate, blocking again.
    pub fn into_std(self) -> io::Result<crate::RsStream> {
        let s = self.io.into_inner();
        s.set_nonblocking(false)?;
        Ok(s)
    }

    /// The socket underneath, non-blocking: its reads and writes fail with `WouldBlock`
    /// rather than wait.
    pub fn get_ref(&self) -> &crate::RsStream {
        self.io.get_ref()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().peer_addr()
    }

    /// Our address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().local_addr()
    }

    /// A reading and a writing half that borrow the stream, for use at the same time (by
    /// two futures of one task, say).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf { stream: self }, WriteHalf { stream: self })
    }

    /// A reading and a writing half that own the stream, for two tasks. Dropping the
    /// writing half shuts writing down, as tokio's `TcpStream` halves do.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let stream = Arc::new(self);
        (
            OwnedReadHalf {
                stream: stream.clone(),
            },
            OwnedWriteHalf { stream },
        )
    }

    fn poll_read_shared(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // `WouldBlock` clears the readiness tokio holds, and the loop then waits for
            // the descriptor's next change, which registers this task's waker.
            match guard.try_io(|io| io.get_ref().recv_with_flags(unfilled, 0)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // The task is to sleep on the descriptor: have it kept up to date.
                Err(_would_block) => {
                    self.io.get_ref().sync_ready();
                    continue;
                }
            }
        }
    }

    fn poll_write_shared(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            let mut guard = ready!(self.io.poll_write_ready(cx))?;
            let attempt = guard.try_io(|io| {
                let mut s: &crate::RsStream = io.get_ref();
                s.write_vectored(bufs)
            });
            match attempt {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => {
                    self.io.get_ref().sync_ready();
                    continue;
                }
            }
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().shutdown(Shutdown::Write)
    }
}

/// Whether `fd` polls writable now.
fn polls_writable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one live pollfd, for the call's duration.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLOUT != 0
}

impl AsRawFd for RsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

/// The reading half of [`RsStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a> {
    stream: &'a RsStream,
}

/// The writing half of [`RsStream::split`].
#[derive(Debug)]
pub struct WriteHalf<'a> {
    stream: &'a RsStream,
}

/// The reading half of [`RsStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    stream: Arc<RsStream>,
}

/// The writing half of [`RsStream::into_split`]: dropping it shuts writing down.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    stream: Arc<RsStream>,
}

impl OwnedReadHalf {
    /// The stream both halves share.
    pub fn stream(&self) -> &RsStream {
        &self.stream
    }
}

impl OwnedWriteHalf {
    /// The stream both halves share.
    pub fn stream(&self) -> &RsStream {
        &self.stream
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        // Fails only if the socket is no longer connected: nothing is left to end then.
        let _ = self.stream.shutdown_write();
    }
}

/// `AsyncRead` for `$t`, whose `$s => $stream` is the [`RsStream`] read.
macro_rules! async_read {
    ($t:ty, $s:ident => $stream:expr) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let $s = &*self;
                $stream.poll_read_shared(cx, buf)
            }
        }
    };
}

/// `AsyncWrite` for `$t`, whose `$s => $stream` is the [`RsStream`] written.
macro_rules! async_write {
    ($t:ty, $s:ident => $stream:expr) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let $s = &*self;
                $stream.poll_write_shared(cx, &[IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let $s = &*self;
                $stream.poll_write_shared(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            // Every write is sent as it is made: nothing waits to be flushed.
            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $s = &*self;
                Poll::Ready($stream.shutdown_write())
            }
        }
    };
}

async_read!(RsStream, s => s);
async_read!(ReadHalf<'_>, s => s.stream);
async_read!(OwnedReadHalf, s => s.stream);
async_write!(RsStream, s => s);
async_write!(WriteHalf<'_>, s => s.stream);
async_write!(OwnedWriteHalf, s => s.stream);
