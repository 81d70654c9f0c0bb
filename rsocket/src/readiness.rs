//! The kernel file descriptor of a socket: one end of a Unix socket pair, made readable
//! and writable exactly when the rsocket is, so that `poll`, `select` and `epoll` can wait
//! on rsockets and ordinary descriptors together.
//!
//! The other end, kept here, drives it: a byte written from it makes the descriptor
//! readable, and reading it back makes it unreadable again. The descriptor is made
//! unwritable by filling its small send buffer (the bytes queue at our end), and writable
//! again by draining them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use xrdma_verbs::verbs::Context;

/// A readiness descriptor and what it shows.
#[derive(Debug)]
pub(crate) struct Readiness {
    /// The descriptor the application polls.
    user: OwnedFd,
    /// Our end.
    ours: OwnedFd,
    readable: bool,
    writable: bool,
}

/// What filling and draining move; never read.
static FILL: [u8; 16384] = [0; 16384];

impl Readiness {
    /// A descriptor that shows neither readable nor writable.
    pub(crate) fn new() -> io::Result<Readiness> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into the live two-element array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and owned by nothing else.
        let (user, ours) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The smallest send buffer the kernel allows, so that few bytes fill it.
        let small: libc::c_int = 1;
        // SAFETY: a live c_int of the size passed.
        unsafe {
            libc::setsockopt(
                user.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&small as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let mut r = Readiness {
            user,
            ours,
            readable: false,
            writable: true,
        };
        r.set(false, false);
        Ok(r)
    }

    /// The descriptor to poll.
    pub(crate) fn fd(&self) -> RawFd {
        self.user.as_raw_fd()
    }

    /// Makes the descriptor show `readable` and `writable`.
    pub(crate) fn set(&mut self, readable: bool, writable: bool) {
        if readable != self.readable {
            if readable {
                send(self.ours.as_raw_fd(), &FILL[..1]);
            } else {
                drain(self.user.as_raw_fd());
            }
            self.readable = readable;
        }
        if writable != self.writable {
            if writable {
                drain(self.ours.as_raw_fd());
            } else {
                while send(self.user.as_raw_fd(), &FILL) > 0 {}
            }
            self.writable = writable;
        }
    }
}

/// Sends without blocking; the bytes sent (0 when the buffer is full).
/// How a blocked socket call sleeps: until one of `fds` is ready or `deadline` passes.
/// With the context of its QPs, the context's progress is made meanwhile
/// ([`Context::wait_driving`]); without one (a socket not connected yet), in `poll(2)`,
/// for at most a millisecond at a time with `recheck` (the caller looks at its state
/// again). False on timeout.
pub(crate) fn sleep(
    fds: &mut [libc::pollfd],
    ctx: Option<Context>,
    deadline: Option<Instant>,
    recheck: bool,
) -> io::Result<bool> {
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if timeout.is_some_and(|t| t.is_zero()) {
        return Ok(false);
    }
    let n = match ctx {
        Some(ctx) => ctx.wait_driving(fds, timeout)?,
        None => {
            let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
            let ms = if recheck { ms.max(1) } else { ms };
            // SAFETY: `fds` is a live array of the length passed.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n.max(0) as usize
        }
    };
    Ok(n > 0)
}

fn send(fd: RawFd, bytes: &[u8]) -> usize {
    // SAFETY: `bytes` is live for the call and its length is passed.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    n.max(0) as usize
}

/// Reads everything queued at `fd`, without blocking.
fn drain(fd: RawFd) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is live and writable for its whole length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        // Less than asked for: nothing is left (no second call to learn EAGAIN).
        if n <= 0 || (n as usize) < buf.len() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(fd: RawFd) -> (bool, bool) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, 0) };
        (
            p.revents & libc::POLLIN != 0,
            p.revents & libc::POLLOUT != 0,
        )
    }

    #[test]
    fn the_descriptor_shows_what_it_is_told() {
        let mut r = Readiness::new().unwrap();
        assert_eq!(poll(r.fd()), (false, false));
        for (rd, wr) in [
            (true, false),
            (true, true),
            (false, true),
            (false, false),
            (true, true),
        ] {
            r.set(rd, wr);
            assert_eq!(poll(r.fd()), (rd, wr), "told {rd} {wr}");
        }
    }
}
