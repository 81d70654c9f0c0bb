//! `rpoll`, `rselect` and `repoll_*`: waiting on rsockets and ordinary descriptors
//! together.
//!
//! An rsocket's number is a kernel descriptor that polls as the socket is (see
//! [`table`](super::table)), kept up to date by xrdma's service thread while no call is
//! in the socket. So the kernel's poll, select and epoll can do the waiting; `rpoll` first
//! spins, for rsocket's polling time, on the sockets themselves (no system call for an
//! rsocket), as rsocket's does, then sleeps in poll(2).

use std::ffi::c_int;
use std::sync::Arc;
use std::time::Instant;

use xrdma_rsocket::Config;

use super::table::{self, Kind, Socket};
use super::{dgram, guard_int, last_errno, sys};

/// The events an rsocket shows now; with `sync`, its descriptor is brought up to date too.
fn revents(sock: &Socket, events: i16, sync: bool) -> i16 {
    let shown = match sock.live() {
        Some(live) => {
            let r = live.ready(sync);
            let mut ev = 0;
            if r.readable {
                ev |= libc::POLLIN | libc::POLLRDNORM;
            }
            if r.writable {
                ev |= libc::POLLOUT | libc::POLLWRNORM;
            }
            ev
        }
        // As Linux shows a TCP socket that is neither connected nor listening, and an
        // unbound UDP socket.
        None if sock.kind == Kind::Stream => libc::POLLOUT | libc::POLLWRNORM | libc::POLLHUP,
        None => libc::POLLOUT | libc::POLLWRNORM,
    };
    shown & (events | libc::POLLERR | libc::POLLHUP)
}

/// One pass over `fds`: rsockets asked directly, other descriptors polled without waiting.
/// The number with events.
fn check(
    fds: &mut [libc::pollfd],
    socks: &[Option<Arc<Socket>>],
    sync: bool,
) -> Result<c_int, i32> {
    let mut n = 0;
    for (p, sock) in fds.iter_mut().zip(socks) {
        p.revents = match sock {
            Some(sock) => revents(sock, p.events, sync),
            None if p.fd < 0 => 0,
            None => {
                let mut one = *p;
                // SAFETY: one live pollfd.
                if unsafe { libc::poll(&mut one, 1, 0) } < 0 {
                    return Err(last_errno());
                }
                one.revents
            }
        };
        n += c_int::from(p.revents != 0);
    }
    Ok(n)
}

/// `rpoll(3)`: `poll(2)` over rsockets and ordinary descriptors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rpoll(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: c_int,
) -> c_int {
    guard_int(|| {
        if nfds == 0 || fds.is_null() {
            if nfds != 0 {
                return Err(libc::EFAULT);
            }
            // SAFETY: no descriptors: poll only sleeps.
            return sys(unsafe { libc::poll(fds, 0, timeout) });
        }
        if nfds > (1 << 20) {
            return Err(libc::EINVAL);
        }
        // SAFETY: `nfds` pollfds, per poll(2)'s contract.
        let fds = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
        poll_fds(fds, timeout)
    })
}

/// [`rpoll`] over a checked slice.
fn poll_fds(fds: &mut [libc::pollfd], timeout: c_int) -> Result<c_int, i32> {
    let socks: Vec<Option<Arc<Socket>>> = fds.iter().map(|p| table::lookup(p.fd)).collect();
    if socks.iter().all(Option::is_none) {
        // SAFETY: the caller's pollfds.
        return sys(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) });
    }
    let start = Instant::now();
    let polling = Config::default().polling_time;
    loop {
        let n = check(fds, &socks, false)?;
        if n > 0 || timeout == 0 {
            // Leave the descriptors up to date for the service thread to keep.
            check(fds, &socks, true)?;
            return Ok(n);
        }
        if start.elapsed() >= polling {
            break;
        }
    }
    let n = check(fds, &socks, true)?;
    if n > 0 {
        return Ok(n);
    }
    let left = if timeout < 0 {
        -1
    } else {
        let spent = start.elapsed().as_millis().min(c_int::MAX as u128) as c_int;
        (timeout - spent).max(0)
    };
    // SAFETY: the caller's pollfds; the rsockets' numbers are their kernel descriptors.
    sys(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, left) })
}

/// `rselect(3)`: `select(2)` over rsockets and ordinary descriptors, through [`rpoll`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rselect(
    nfds: c_int,
    readfds: *mut libc::fd_set,
    writefds: *mut libc::fd_set,
    exceptfds: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> c_int {
    guard_int(|| {
        if nfds < 0 || nfds > libc::FD_SETSIZE as c_int {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller's sets, each NULL or a live fd_set (select(2)'s contract).
        let is_set =
            |set: *mut libc::fd_set, fd| !set.is_null() && unsafe { libc::FD_ISSET(fd, set) };
        let mut fds = Vec::new();
        for fd in 0..nfds {
            let mut events = 0;
            if is_set(readfds, fd) {
                events |= libc::POLLIN;
            }
            if is_set(writefds, fd) {
                events |= libc::POLLOUT;
            }
            if events != 0 || is_set(exceptfds, fd) {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
            }
        }
        let ms = if timeout.is_null() {
            -1
        } else {
            // SAFETY: a live timeval, per the contract.
            let tv = unsafe { *timeout };
            if tv.tv_sec < 0 || tv.tv_usec < 0 {
                return Err(libc::EINVAL);
            }
            // Rounded up, so that a short timeout still waits.
            let ms = tv
                .tv_sec
                .saturating_mul(1000)
                .saturating_add((tv.tv_usec + 999) / 1000);
            ms.min(c_int::MAX as libc::time_t) as c_int
        };
        let n = if fds.is_empty() {
            // SAFETY: no descriptors: poll only sleeps.
            sys(unsafe { libc::poll(std::ptr::null_mut(), 0, ms) })?
        } else {
            poll_fds(&mut fds, ms)?
        };
        for set in [readfds, writefds, exceptfds] {
            if !set.is_null() {
                // SAFETY: a live fd_set, per the contract.
                unsafe { libc::FD_ZERO(set) };
            }
        }
        if n == 0 {
            return Ok(0);
        }
        let mut count = 0;
        for p in &fds {
            let mut mark = |set: *mut libc::fd_set, hit: bool| {
                if hit && !set.is_null() {
                    // SAFETY: a live fd_set, and `p.fd < nfds <= FD_SETSIZE`.
                    unsafe { libc::FD_SET(p.fd, set) };
                    count += 1;
                }
            };
            mark(
                readfds,
                p.events & libc::POLLIN != 0
                    && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
            );
            mark(
                writefds,
                p.events & libc::POLLOUT != 0 && p.revents & (libc::POLLOUT | libc::POLLERR) != 0,
            );
            mark(exceptfds, p.revents & libc::POLLPRI != 0);
        }
        Ok(count)
    })
}

/// `repoll_create(3)`: an epoll instance (`flags`: `EPOLL_CLOEXEC`) that takes rsockets
/// and ordinary descriptors.
#[unsafe(no_mangle)]
pub extern "C" fn repoll_create(flags: c_int) -> c_int {
    // SAFETY: epoll_create1 takes no pointers.
    guard_int(|| sys(unsafe { libc::epoll_create1(flags) }))
}

/// `repoll_ctl(3)`: `epoll_ctl(2)`, -1 and errno on failure. An rsocket added or changed
/// has its descriptor brought up to date first; a datagram socket not yet bound is bound
/// to the wildcard address, so that its descriptor is final.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut libc::epoll_event,
) -> c_int {
    guard_int(|| {
        if op != libc::EPOLL_CTL_DEL {
            if let Some(sock) = table::lookup(fd) {
                match sock.live() {
                    Some(live) => {
                        live.ready(true);
                    }
                    None if sock.kind == Kind::Dgram => {
                        dgram(&sock)?.sync_ready();
                    }
                    None => {}
                }
            }
        }
        // SAFETY: the caller's event, per epoll_ctl(2)'s contract.
        sys(unsafe { libc::epoll_ctl(epfd, op, fd, event) })
    })
}

/// `repoll_wait(3)`: `epoll_wait(2)` over rsockets and ordinary descriptors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repoll_wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: the caller's events array, per epoll_wait(2)'s contract.
    guard_int(|| sys(unsafe { libc::epoll_wait(epfd, events, maxevents, timeout) }))
}
