//! Sleeping on sockets' descriptors together with other descriptors, as `rpoll` does.
//!
//! A socket's descriptor is brought up to date by the service thread, and what arrives is
//! taken off the backend by the context's helper thread: a thread that sleeps in `poll(2)`
//! on the descriptor alone is woken at the end of a chain of three threads, each of which
//! may wait for a CPU on a busy machine. A [`Waiter`] sleeps instead on the sockets' own
//! events (completion channels, a datagram socket's UDP socket) and the backend, and takes
//! what arrives itself, as a blocked call does; the service thread keeps out of the way.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xrdma_verbs::verbs::Context;

use crate::{Ready, RsDatagram, RsStream};

/// A socket a waiter can be in: it arms the socket's events and counts itself in the
/// socket (see [`Shared::enter`](crate::shared::Shared::enter)) until it leaves.
pub(crate) trait Waitable: Send + Sync {
    /// Enters the socket, arms its events, adds the descriptors they fire on to `events`,
    /// and says what the socket can do now, with the context to drive.
    fn arm_for_waiter(&self, events: &mut Vec<RawFd>) -> (Ready, Option<Context>);
    /// Leaves the socket.
    fn depart(&self);
}

/// A socket a waiter is in; dropping it leaves.
struct Entered(Arc<dyn Waitable>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.depart();
    }
}

/// The sockets a thread is about to sleep on, with their events armed: add them, then
/// [`wait`](Waiter::wait). Dropping it ends the wait.
#[derive(Default)]
pub struct Waiter {
    events: Vec<RawFd>,
    ctx: Option<Context>,
    entered: Vec<Entered>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("events", &self.events)
            .field("sockets", &self.entered.len())
            .finish()
    }
}

impl Waiter {
    /// A waiter on no socket yet.
    pub fn new() -> Waiter {
        Waiter::default()
    }

    /// Adds a stream: arms its events, brings its descriptor up to date, and says what it
    /// can do now (if anything, the caller need not sleep).
    pub fn add_stream(&mut self, s: &RsStream) -> Ready {
        self.add(s.inner.clone())
    }

    /// Adds a datagram socket, as [`add_stream`](Self::add_stream).
    pub fn add_datagram(&mut self, d: &RsDatagram) -> Ready {
        self.add(d.inner().clone())
    }

    fn add(&mut self, socket: Arc<dyn Waitable>) -> Ready {
        let (ready, ctx) = socket.arm_for_waiter(&mut self.events);
        self.entered.push(Entered(socket));
        self.ctx = self.ctx.take().or(ctx);
        ready
    }

    /// Sleeps until one of `fds` shows an event it asks for, or a socket's event fires, or
    /// `timeout` passes (`None`: no limit), taking what arrives meanwhile. Returns how many
    /// of `fds` have events, with their `revents` set: 0 after a socket's event (look at
    /// the sockets again) or the timeout.
    pub fn wait(&self, fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
        let mut all: Vec<libc::pollfd> = fds
            .iter()
            .copied()
            .chain(self.events.iter().map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }))
            .collect();
        match &self.ctx {
            Some(ctx) if all.len() <= Context::MAX_WAIT_FDS => {
                ctx.wait_driving(&mut all, timeout)?;
            }
            _ => poll(&mut all, timeout)?,
        }
        let mut n = 0;
        for (f, a) in fds.iter_mut().zip(&all) {
            f.revents = a.revents;
            n += usize::from(a.revents != 0);
        }
        Ok(n)
    }
}

/// poll(2) on `fds` for up to `timeout`; EINTR is a wake-up like any other.
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let ms = deadline.map_or(-1, |d| {
        d.saturating_duration_since(Instant::now())
            .as_micros()
            .div_ceil(1000)
            .min(i32::MAX as u128) as i32
    });
    // SAFETY: `fds` is a live array of the length passed.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
