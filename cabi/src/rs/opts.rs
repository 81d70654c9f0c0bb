//! `rsetsockopt`, `rgetsockopt` and `rfcntl`: the options rsocket takes, with Linux's
//! meanings, and ENOTSUP for the rest as rsocket answers.
//!
//! Sizes (`SO_RCVBUF`, `SO_SNDBUF`, `SOL_RDMA`'s) apply to the socket made next: as in
//! rsocket they are taken before `rconnect` and ignored after (`SOL_RDMA` ones are
//! refused with EINVAL). Set on a listener, before or after `rlisten`, the options pass to
//! the sockets it accepts from then on. `SO_REUSEADDR` is kept and reported; xrdma's connection manager has no
//! TIME_WAIT, so a closed socket's port is always free again.

use std::ffi::{c_int, c_long, c_void};
use std::time::Duration;

use super::table::{self, Kind, Live};
use super::{guard_int, io};

/// rsocket's `SOL_RDMA` level and its option names.
pub(crate) const SOL_RDMA: c_int = 0x10000;
const RDMA_SQSIZE: c_int = 0;
const RDMA_RQSIZE: c_int = 1;
const RDMA_INLINE: c_int = 2;
const RDMA_IOMAPSIZE: c_int = 3;

/// rsocket's largest queue (`RS_QP_MAX_SIZE`).
const QP_MAX: u32 = 0xfffe;

/// Reads an option value of type `T`: EFAULT for NULL, EINVAL for a length too short.
///
/// # Safety
///
/// A non-NULL `val` must point at `len` readable bytes.
unsafe fn read_opt<T: Copy>(val: *const c_void, len: libc::socklen_t) -> Result<T, i32> {
    if val.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < size_of::<T>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: `size_of::<T>()` readable bytes, per the contract; unaligned is allowed.
    Ok(unsafe { val.cast::<T>().read_unaligned() })
}

/// Writes an option value, truncated to `*len` bytes as Linux truncates; `*len` is set
/// to the bytes written.
///
/// # Safety
///
/// Non-NULL `val` and `len` must be writable, `val` for `*len` bytes.
unsafe fn write_opt<T: Copy>(v: T, val: *mut c_void, len: *mut libc::socklen_t) -> Result<(), i32> {
    if val.is_null() || len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `len` is writable, per the contract.
    let room = unsafe { *len } as usize;
    let n = room.min(size_of::<T>());
    // SAFETY: `val` has `room >= n` writable bytes; `v` has `size_of::<T>() >= n`.
    unsafe {
        std::ptr::copy_nonoverlapping((&v as *const T).cast::<u8>(), val.cast(), n);
        *len = n as libc::socklen_t;
    }
    Ok(())
}

fn timeval(t: Option<Duration>) -> libc::timeval {
    let t = t.unwrap_or_default();
    libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    }
}

/// A `struct timeval` option: zero is "no timeout"; EDOM for microseconds out of range,
/// as Linux answers.
fn timeout(tv: libc::timeval) -> Result<Option<Duration>, i32> {
    if tv.tv_usec < 0 || tv.tv_usec >= 1_000_000 {
        return Err(libc::EDOM);
    }
    if tv.tv_sec < 0 {
        return Ok(None);
    }
    let d = Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    Ok((!d.is_zero()).then_some(d))
}

/// `rsetsockopt(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rsetsockopt(
    socket: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: libc::socklen_t,
) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's value of `len` bytes, per setsockopt(2)'s contract.
        let int = || unsafe { read_opt::<c_int>(val, len) };
        let mut st = sock.setup();
        let live = sock.live();
        let stream = match live {
            Some(Live::Stream(s)) => Some(s),
            _ => None,
        };
        let listener = matches!(live, Some(Live::Listener(_)));
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => st.reuseaddr = int()? != 0,
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
                st.config.rmem = (int()?.max(0) as u32).saturating_mul(2);
            }
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
                st.config.wmem = (int()?.max(0) as u32).saturating_mul(2);
            }
            (libc::SOL_SOCKET, libc::SO_OOBINLINE) => st.oobinline = int()? != 0,
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) if sock.kind == Kind::Stream => {
                st.keepalive = int()? != 0;
                if let Some(s) = stream {
                    let every = st
                        .keepalive
                        .then(|| Duration::from_secs(u64::from(st.keepidle)));
                    io(s.set_keepalive(every))?;
                }
            }
            (libc::SOL_SOCKET, libc::SO_LINGER) if sock.kind == Kind::Stream => {
                // SAFETY: as above.
                let l = unsafe { read_opt::<libc::linger>(val, len) }?;
                st.linger = (l.l_onoff != 0).then(|| Duration::from_secs(l.l_linger.max(0) as u64));
                if let Some(s) = stream {
                    io(s.set_linger(st.linger))?;
                }
            }
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => {
                // SAFETY: as above.
                let t = timeout(unsafe { read_opt::<libc::timeval>(val, len) }?)?;
                let read = name == libc::SO_RCVTIMEO;
                if read {
                    st.read_timeout = t;
                } else {
                    st.write_timeout = t;
                }
                match (live, read) {
                    (Some(Live::Stream(s)), true) => io(s.set_read_timeout(t))?,
                    (Some(Live::Stream(s)), false) => io(s.set_write_timeout(t))?,
                    (Some(Live::Dgram(d)), true) => io(d.set_read_timeout(t))?,
                    (Some(Live::Dgram(d)), false) => io(d.set_write_timeout(t))?,
                    _ => {}
                }
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) if sock.kind == Kind::Stream => {
                st.nodelay = int()? != 0;
                if let Some(s) = stream {
                    io(s.set_nodelay(st.nodelay))?;
                }
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) if sock.kind == Kind::Stream => {
                let secs = int()?;
                if secs <= 0 {
                    return Err(libc::EINVAL);
                }
                st.keepidle = secs as u32;
                if let (Some(s), true) = (stream, st.keepalive) {
                    io(s.set_keepalive(Some(Duration::from_secs(u64::from(st.keepidle)))))?;
                }
            }
            // Meaningless over a reliable connection, and accepted as rsocket accepts them.
            (
                libc::IPPROTO_TCP,
                libc::TCP_KEEPCNT | libc::TCP_KEEPINTVL | libc::TCP_MAXSEG | libc::TCP_CONGESTION,
            ) if sock.kind == Kind::Stream => {}
            (SOL_RDMA, _) if live.is_some() && !listener => return Err(libc::EINVAL),
            (SOL_RDMA, RDMA_SQSIZE) => {
                st.config.sq_size = (int()?.max(0) as u32).min(QP_MAX) as u16
            }
            (SOL_RDMA, RDMA_RQSIZE) => {
                st.config.rq_size = (int()?.max(0) as u32).min(QP_MAX) as u16
            }
            (SOL_RDMA, RDMA_INLINE) => st.config.inline = (int()?.max(0) as u32).min(QP_MAX) as u16,
            (SOL_RDMA, RDMA_IOMAPSIZE) => {
                st.config.iomap_size = (int()?.max(0) as u32).min(u32::from(u16::MAX)) as u16;
            }
            _ => return Err(libc::ENOTSUP),
        }
        if let Some(Live::Listener(l)) = live {
            l.set_accept_config(super::stream_config(&st));
        }
        Ok(0)
    })
}

/// `rgetsockopt(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rgetsockopt(
    socket: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut libc::socklen_t,
) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        if val.is_null() || len.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: the caller's buffers, per getsockopt(2)'s contract.
        let put_int = |v: c_int| unsafe { write_opt(v, val, len) };
        let mut st = sock.setup();
        let live = sock.live();
        let stream = match live {
            Some(Live::Stream(s)) => Some(s),
            _ => None,
        };
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => put_int(st.reuseaddr.into())?,
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => put_int(st.keepalive.into())?,
            (libc::SOL_SOCKET, libc::SO_OOBINLINE) => put_int(st.oobinline.into())?,
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
                let n = match stream {
                    Some(s) => io(s.recv_buffer_size())?,
                    None => st.config.rmem as usize,
                };
                put_int(n.min(c_int::MAX as usize) as c_int)?
            }
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
                let n = match stream {
                    Some(s) => io(s.send_buffer_size())?,
                    None => st.config.wmem as usize,
                };
                put_int(n.min(c_int::MAX as usize) as c_int)?
            }
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                let l = libc::linger {
                    l_onoff: st.linger.is_some().into(),
                    l_linger: st
                        .linger
                        .map_or(0, |d| d.as_secs().min(c_int::MAX as u64) as c_int),
                };
                // SAFETY: as above.
                unsafe { write_opt(l, val, len) }?
            }
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => {
                // SAFETY: as above.
                unsafe { write_opt(timeval(st.read_timeout), val, len) }?
            }
            (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => {
                // SAFETY: as above.
                unsafe { write_opt(timeval(st.write_timeout), val, len) }?
            }
            (libc::SOL_SOCKET, libc::SO_ERROR) => {
                let e = match live {
                    Some(Live::Stream(s)) => {
                        if st.connecting && s.sync_ready().writable {
                            st.connecting = false;
                        }
                        io(s.take_error())?
                    }
                    Some(Live::Dgram(d)) => io(d.take_error())?,
                    _ => None,
                };
                put_int(e.map_or(0, |e| crate::io_errno(&e)))?
            }
            (libc::SOL_SOCKET, libc::SO_TYPE) => put_int(match sock.kind {
                Kind::Stream => libc::SOCK_STREAM,
                Kind::Dgram => libc::SOCK_DGRAM,
            })?,
            (libc::SOL_SOCKET, libc::SO_DOMAIN) => put_int(sock.domain)?,
            (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
                put_int(matches!(live, Some(Live::Listener(_))).into())?
            }
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) if sock.kind == Kind::Stream => {
                let on = match stream {
                    Some(s) => io(s.nodelay())?,
                    None => st.nodelay,
                };
                put_int(on.into())?
            }
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) if sock.kind == Kind::Stream => {
                put_int(st.keepidle.min(c_int::MAX as u32) as c_int)?
            }
            (SOL_RDMA, RDMA_SQSIZE) => put_int(st.config.sq_size.into())?,
            (SOL_RDMA, RDMA_RQSIZE) => put_int(st.config.rq_size.into())?,
            (SOL_RDMA, RDMA_INLINE) => put_int(st.config.inline.into())?,
            (SOL_RDMA, RDMA_IOMAPSIZE) => put_int(st.config.iomap_size.into())?,
            _ => return Err(libc::ENOTSUP),
        }
        Ok(0)
    })
}

/// `rfcntl(3)`: `F_GETFL`/`F_SETFL` (`O_NONBLOCK`), `F_GETFD`/`F_SETFD`; ENOTSUP for
/// other commands, as rsocket answers.
///
/// rsocket declares it variadic (`int rfcntl(int, int, ...)`). Stable Rust cannot define
/// a variadic function; on the 64-bit Linux ABIs xrdma builds for (x86-64 and AArch64
/// System V), an integer passed through `...` travels in the same register as a third
/// named `long` argument, so this definition receives it.
#[unsafe(no_mangle)]
pub extern "C" fn rfcntl(socket: c_int, cmd: c_int, arg: c_long) -> c_int {
    guard_int(|| {
        let sock = table::get(socket)?;
        match cmd {
            libc::F_GETFL => Ok(libc::O_RDWR | sock.setup().status_flags),
            libc::F_SETFL => {
                let mut st = sock.setup();
                let flags = arg as c_int;
                let nonblocking = flags & libc::O_NONBLOCK != 0;
                match sock.live() {
                    Some(Live::Listener(l)) => io(l.set_nonblocking(nonblocking))?,
                    Some(Live::Stream(s)) => io(s.set_nonblocking(nonblocking))?,
                    Some(Live::Dgram(d)) => io(d.set_nonblocking(nonblocking))?,
                    None => {}
                }
                st.status_flags = flags & (libc::O_NONBLOCK | libc::O_APPEND | libc::O_ASYNC);
                Ok(0)
            }
            // SAFETY: the socket's own descriptor; these commands take an int.
            libc::F_GETFD | libc::F_SETFD => {
                super::sys(unsafe { libc::fcntl(sock.fd, cmd, arg as c_int) })
            }
            _ => Err(libc::ENOTSUP),
        }
    })
}
