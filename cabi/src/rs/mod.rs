//! rsockets: the `r*` exports of rdma-core's `<rdma/rsocket.h>` (and `include/xrdma/rsocket.h`),
//! over [`xrdma_rsocket`].
//!
//! - [`table`]: the process's rsockets by descriptor number;
//! - this file: making, naming and closing sockets (`rsocket` to `rclose`);
//! - [`data`]: reads, writes and `riomap`/`riowrite`;
//! - [`opts`]: `rsetsockopt`, `rgetsockopt`, `rfcntl`;
//! - [`poll`]: `rpoll`, `rselect`, `repoll_*`.
//!
//! A stream socket is made by `rlisten` (a listener) or `rconnect`; until then it keeps
//! its address and options. A datagram socket is made by `rbind`, `rconnect` or its first
//! send, bound to the wildcard address if it was not bound. Errors follow rsocket: -1 and
//! errno (`riowrite`: `(size_t)-1`), with Linux's errno where rsocket has none.

pub(crate) mod data;
pub(crate) mod opts;
pub(crate) mod poll;
pub(crate) mod table;

use std::ffi::c_int;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};

use xrdma_rsocket::{Builder, RsDatagram, RsStream};

use crate::cm::sockaddr;
use crate::{guard_or, io_errno};
use table::{Kind, Live, Setup, Socket};

/// Runs an export that returns a count or 0: the value, or -1 with errno (EIO for a panic).
pub(crate) fn guard_count<T: TryFrom<usize> + From<i8> + Copy>(
    body: impl FnOnce() -> Result<usize, i32>,
) -> T {
    guard_or(T::from(-1), || {
        body().map(|n| T::try_from(n).unwrap_or(T::from(-1)))
    })
}

/// Runs an `int` export: its value, or -1 with errno (EIO for a panic).
pub(crate) fn guard_int(body: impl FnOnce() -> Result<c_int, i32>) -> c_int {
    guard_or(-1, body)
}

/// The calling thread's errno, after a system call failed.
pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A system call's `int` result: -1 becomes its errno.
pub(crate) fn sys(r: c_int) -> Result<c_int, i32> {
    if r < 0 { Err(last_errno()) } else { Ok(r) }
}

/// An io result as an errno result.
pub(crate) fn io<T>(r: io::Result<T>) -> Result<T, i32> {
    r.map_err(|e| io_errno(&e))
}

/// Reads a socket address of `sock`'s family: EFAULT for NULL, EINVAL for a length too
/// short, EAFNOSUPPORT for another family.
///
/// # Safety
///
/// A non-NULL `addr` must point at `len` readable bytes.
pub(crate) unsafe fn read_addr(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Result<SocketAddr, i32> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < size_of::<libc::sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: at least the family is readable, per the contract.
    let need = match c_int::from(unsafe { (*addr).sa_family }) {
        libc::AF_INET => size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
        _ => return Err(libc::EAFNOSUPPORT),
    };
    if (len as usize) < need {
        return Err(libc::EINVAL);
    }
    // SAFETY: `need` bytes of the family's layout are readable, checked just above.
    unsafe { sockaddr::read(addr) }
}

/// Writes `addr` as `getsockname(2)` does: truncated to `*len` bytes, `*len` set to the
/// full length. EFAULT for NULL pointers.
///
/// # Safety
///
/// Non-NULL `out` and `len` must be writable, `out` for `*len` bytes.
pub(crate) unsafe fn write_addr(
    addr: SocketAddr,
    out: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> Result<(), i32> {
    if out.is_null() || len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let full = sockaddr::write(Some(addr), &mut ss);
    // SAFETY: `len` is writable, per the contract.
    let room = unsafe { *len };
    let n = room.min(full) as usize;
    // SAFETY: `out` has `room >= n` writable bytes; `ss` has `full >= n`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            out.cast(),
            n,
        );
        *len = full;
    }
    Ok(())
}

/// A socket's address as one of its family: an IPv4 address on an AF_INET6 socket is
/// shown v4-mapped, as Linux's dual-stack sockets show it.
fn in_family(domain: i32, addr: SocketAddr) -> SocketAddr {
    match (domain, addr) {
        (libc::AF_INET6, SocketAddr::V4(a)) => {
            SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
        }
        _ => addr,
    }
}

/// The wildcard address of `domain`, port 0.
fn any(domain: i32) -> SocketAddr {
    if domain == libc::AF_INET6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    }
}

/// Checks that `addr` suits a socket of `domain`: an AF_INET socket takes IPv4 only.
fn check_family(domain: i32, addr: SocketAddr) -> Result<(), i32> {
    if domain == libc::AF_INET && addr.is_ipv6() {
        Err(libc::EAFNOSUPPORT)
    } else {
        Ok(())
    }
}

/// Applies the options set before the socket was made.
fn apply_stream(s: &RsStream, st: &Setup) -> io::Result<()> {
    s.set_nonblocking(st.nonblocking())?;
    s.set_nodelay(st.nodelay)?;
    s.set_read_timeout(st.read_timeout)?;
    s.set_write_timeout(st.write_timeout)?;
    Ok(())
}

fn apply_dgram(d: &RsDatagram, st: &Setup) -> io::Result<()> {
    d.set_nonblocking(st.nonblocking())?;
    d.set_read_timeout(st.read_timeout)?;
    d.set_write_timeout(st.write_timeout)?;
    Ok(())
}

/// The configuration a stream is made with: sizes, and keepalive and linger as set.
pub(crate) fn stream_config(st: &Setup) -> xrdma_rsocket::Config {
    let mut c = st.config;
    c.keepalive = st
        .keepalive
        .then(|| std::time::Duration::from_secs(u64::from(st.keepidle)));
    c.linger = st.linger;
    c
}

/// The datagram socket `sock` is, made now (bound to the wildcard address) if it is not.
pub(crate) fn dgram(sock: &Socket) -> Result<&RsDatagram, i32> {
    if sock.kind != Kind::Dgram {
        return Err(libc::EOPNOTSUPP);
    }
    if let Some(Live::Dgram(d)) = sock.live() {
        return Ok(d);
    }
    let st = sock.setup();
    if let Some(Live::Dgram(d)) = sock.live() {
        return Ok(d);
    }
    let at = st.local.unwrap_or(any(sock.domain));
    make_dgram(sock, &st, at)
}

fn make_dgram<'a>(
    sock: &'a Socket,
    st: &parking_lot::MutexGuard<'_, Setup>,
    at: SocketAddr,
) -> Result<&'a RsDatagram, i32> {
    let d = io(Builder::new().config(st.config).bind_datagram(at))?;
    io(apply_dgram(&d, st))?;
    match io(sock.make(st, Live::Dgram(d)))? {
        Live::Dgram(d) => Ok(d),
        _ => unreachable!("made as a datagram socket"),
    }
}

/// `rsocket(3)`: a stream (RC) or datagram (UD) rsocket of AF_INET or AF_INET6.
/// ENOTSUP for any other domain, type or protocol, as rsocket answers.
#[unsafe(no_mangle)]
pub extern "C" fn rsocket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    guard_int(|| {
        let base = ty & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK);
        let kind = match (base, protocol) {
            (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Kind::Stream,
            (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Kind::Dgram,
            _ => return Err(libc::ENOTSUP),
        };
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            return Err(libc::ENOTSUP);
        }
        let setup = Setup {
            status_flags: if ty & libc::SOCK_NONBLOCK != 0 {
                libc::O_NONBLOCK
            } else {
                0
            },
            ..Setup::default()
        };
        let sock = io(Socket::fresh(
            kind,
            domain,
            ty & libc::SOCK_CLOEXEC != 0,
            setup,
        ))?;
        Ok(table::insert(sock))
    })
}

/// `rbind(3)`. A stream socket keeps the address for `rlisten` or `rconnect` (where an
/// address in use is reported); a datagram socket is made and bound at once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rbind(
    socket: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's address of `len` bytes, per bind(2)'s contract.
        let at = unsafe { read_addr(addr, len) }?;
        check_family(sock.domain, at)?;
        let mut st = sock.setup();
        if sock.live().is_some() || st.local.is_some() {
            return Err(libc::EINVAL);
        }
        match sock.kind {
            Kind::Stream => st.local = Some(at),
            Kind::Dgram => {
                make_dgram(&sock, &st, at)?;
                st.local = Some(at);
            }
        }
        Ok(0)
    })
}

/// `rlisten(3)`: listens on the bound address (the wildcard address, a port the system
/// picks, if none).
#[unsafe(no_mangle)]
pub extern "C" fn rlisten(socket: c_int, backlog: c_int) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        if sock.kind != Kind::Stream {
            return Err(libc::EOPNOTSUPP);
        }
        let st = sock.setup();
        match sock.live() {
            Some(Live::Listener(_)) => return Ok(0),
            Some(_) => return Err(libc::EINVAL),
            None if st.connecting => return Err(libc::EINVAL),
            None => {}
        }
        let at = st.local.unwrap_or(any(sock.domain));
        // Linux takes a backlog of at most SOMAXCONN (4096), and 0 or less as 1.
        let backlog = backlog.clamp(1, 4096) as usize;
        let l = io(Builder::new()
            .config(stream_config(&st))
            .backlog(backlog)
            .listen(at))?;
        io(l.set_nonblocking(st.nonblocking()))?;
        io(sock.make(&st, Live::Listener(l)))?;
        Ok(0)
    })
}

/// `raccept(3)`: the next connection, as a new rsocket (blocking, as accept(2)'s are);
/// EAGAIN from a non-blocking listener with none waiting, EINVAL from a socket that does
/// not listen.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn raccept(
    socket: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        let Some(Live::Listener(l)) = sock.live() else {
            return Err(libc::EINVAL);
        };
        let (stream, peer) = io(l.accept())?;
        let setup = {
            let st = sock.setup();
            Setup {
                status_flags: 0,
                local: None,
                connecting: false,
                ..st.clone()
            }
        };
        io(apply_stream(&stream, &setup))?;
        let fd = table::insert(Socket::accepted(sock.domain, stream, setup));
        if !addr.is_null() && !len.is_null() {
            // SAFETY: the caller's buffers, per accept(2)'s contract.
            unsafe { write_addr(in_family(sock.domain, peer), addr, len) }?;
        }
        Ok(fd)
    })
}

/// `rconnect(3)`: connects a stream socket, waiting unless it is non-blocking (then
/// EINPROGRESS; the descriptor polls writable when done and `SO_ERROR` says how), or sets
/// a datagram socket's peer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rconnect(
    socket: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's address of `len` bytes, per connect(2)'s contract.
        let to = unsafe { read_addr(addr, len) }?;
        check_family(sock.domain, to)?;
        if sock.kind == Kind::Dgram {
            io(dgram(&sock)?.connect(to))?;
            return Ok(0);
        }
        let mut st = sock.setup();
        match sock.live() {
            Some(Live::Stream(s)) if st.connecting => {
                return match s.sync_ready().writable {
                    true => {
                        st.connecting = false;
                        match io(s.take_error())? {
                            Some(e) => Err(io_errno(&e)),
                            None => Err(libc::EISCONN),
                        }
                    }
                    false => Err(libc::EALREADY),
                };
            }
            Some(Live::Stream(_)) => return Err(libc::EISCONN),
            Some(_) => return Err(libc::EISCONN),
            None => {}
        }
        let mut builder = Builder::new().config(stream_config(&st));
        if let Some(local) = st.local {
            builder = builder.bind(local);
        }
        if st.nonblocking() {
            let s = io(builder.connect_nonblocking(to))?;
            io(apply_stream(&s, &st))?;
            io(sock.make(&st, Live::Stream(s)))?;
            st.connecting = true;
            return Err(libc::EINPROGRESS);
        }
        let s = io(builder.connect(to))?;
        io(apply_stream(&s, &st))?;
        io(sock.make(&st, Live::Stream(s)))?;
        Ok(0)
    })
}

/// `rshutdown(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn rshutdown(socket: c_int, how: c_int) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        let how = match how {
            libc::SHUT_RD => Shutdown::Read,
            libc::SHUT_WR => Shutdown::Write,
            libc::SHUT_RDWR => Shutdown::Both,
            _ => return Err(libc::EINVAL),
        };
        match sock.live() {
            Some(Live::Stream(s)) => io(s.shutdown(how)).map(|()| 0),
            Some(Live::Listener(_)) => Ok(0),
            Some(Live::Dgram(d)) if d.peer_addr().is_ok() => Ok(0),
            _ => Err(libc::ENOTCONN),
        }
    })
}

/// How long `rclose` waits for a stream's data to be delivered, unless `SO_LINGER` was set.
const CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `rclose(3)`. As rsocket's, it returns once the data written is delivered and the
/// connection closed (at most [`CLOSE_LIMIT`], then the connection is aborted): unlike a
/// TCP socket's, an rsocket's data has nothing to deliver it after the process exits,
/// which programs commonly do right after closing. A `SO_LINGER` the application set
/// applies instead.
#[unsafe(no_mangle)]
pub extern "C" fn rclose(socket: c_int) -> c_int {
    close(socket, Some(CLOSE_LIMIT))
}

/// How many bytes a read of stream rsocket `socket` would return now without waiting, as
/// `ioctl(FIONREAD)` tells of a TCP socket: a Rust call (rsocket.h has none), for the
/// preload library. As Linux's TCP: `EINVAL` on a listener; 0 before a connection. And
/// `EBADF` for no rsocket, `ENOTTY` for a datagram one.
pub fn queued_bytes(socket: c_int) -> Result<usize, i32> {
    let sock = table::get(socket)?;
    match sock.live() {
        Some(Live::Stream(s)) => Ok(s.queued_bytes()),
        Some(Live::Listener(_)) => Err(libc::EINVAL),
        Some(Live::Dgram(_)) => Err(libc::ENOTTY),
        None => Ok(0),
    }
}

/// Closes `socket` as close(2) closes a TCP socket, for the preload library: a stream
/// without `SO_LINGER` delivers the rest in the background, and the call returns at once;
/// [`xrdma_rsocket::wait_closing`] waits for those at exit.
pub fn close_as_tcp(socket: c_int) -> c_int {
    close(socket, None)
}

/// Closes `socket`; a stream without `SO_LINGER` waits up to `linger` (if any) for its
/// data to be delivered.
fn close(socket: c_int, linger: Option<std::time::Duration>) -> c_int {
    guard_int(|| {
        if poll::close_set(socket) {
            return Ok(0);
        }
        let sock =
            table::remove(socket).ok_or_else(|| table::get(socket).err().unwrap_or(libc::EBADF))?;
        if let (Some(Live::Stream(s)), Some(limit)) = (sock.live(), linger) {
            if sock.setup().linger.is_none() {
                io(s.set_linger(Some(limit)))?;
            }
        }
        drop(sock);
        Ok(0)
    })
}

/// Writes one of `socket`'s addresses, which `which` finds, as getsockname(2) does.
///
/// # Safety
///
/// As [`write_addr`].
unsafe fn name_call(
    socket: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    which: impl FnOnce(&Socket) -> Result<SocketAddr, i32>,
) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        let at = which(&sock)?;
        // SAFETY: the caller's buffers, per the contract.
        unsafe { write_addr(in_family(sock.domain, at), addr, len) }?;
        Ok(0)
    })
}

/// `rgetpeername(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rgetpeername(
    socket: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> c_int {
    // SAFETY: getpeername(2)'s contract.
    unsafe {
        name_call(socket, addr, len, |sock| match sock.live() {
            Some(Live::Stream(s)) => io(s.peer_addr()),
            Some(Live::Dgram(d)) => io(d.peer_addr()),
            _ => Err(libc::ENOTCONN),
        })
    }
}

/// `rgetsockname(3)`: before the socket is made, the bound address (the wildcard address
/// with port 0 if none).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rgetsockname(
    socket: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> c_int {
    // SAFETY: getsockname(2)'s contract.
    unsafe {
        name_call(socket, addr, len, |sock| match sock.live() {
            Some(Live::Listener(l)) => io(l.local_addr()),
            Some(Live::Stream(s)) => io(s.local_addr()),
            Some(Live::Dgram(d)) => io(d.local_addr()),
            None => Ok(sock.setup().local.unwrap_or(any(sock.domain))),
        })
    }
}
