//! rsockets for tokio: [`RsListener`] and [`RsStream`], with the shape of
//! `tokio::net`'s `TcpListener` and `TcpStream` (`AsyncRead`, `AsyncWrite`, `split`).
//!
//! Each wraps a socket of this crate, made non-blocking, in tokio's
//! [`AsyncFd`](::tokio::io::unix::AsyncFd): a task waits on the socket's readiness
//! descriptor in the runtime's reactor, and tries the call again when the descriptor says
//! it may go on. The descriptor is level-triggered (it polls readable while bytes are
//! queued), and a call that returns `WouldBlock` has just found it not ready, so the next
//! change wakes the task (tokio's `try_io` protocol). The runtime needs its I/O driver
//! (`enable_io`, or `enable_all`). A call makes the socket's progress inline without ever
//! waiting, and this crate's service thread makes it while tasks sleep, so no runtime thread
//! blocks on an rsocket.
//!
//! # Example
//!
//! ```no_run
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use xrdma_rsocket::tokio::{RsListener, RsStream};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = RsListener::bind("198.18.0.1:7471").await?;
//! tokio::spawn(async move {
//!     while let Ok((mut s, _peer)) = listener.accept().await {
//!         tokio::spawn(async move {
//!             let (mut r, mut w) = s.split();
//!             let _ = tokio::io::copy(&mut r, &mut w).await;
//!         });
//!     }
//! });
//! let mut s = RsStream::connect("198.18.0.1:7471").await?;
//! s.write_all(b"ping").await?;
//! let mut reply = [0u8; 4];
//! s.read_exact(&mut reply).await?;
//! # Ok(())
//! # }
//! ```

mod listener;
mod stream;

pub use listener::RsListener;
pub use stream::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, RsStream, WriteHalf};
