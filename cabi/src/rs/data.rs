//! Reads and writes: `rrecv` to `rwritev`, and `riomap`, `riounmap`, `riowrite`.

use std::ffi::{c_int, c_void};
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;

use super::table::{self, Kind, Live, Socket};
use super::{check_family, dgram, guard_count, guard_int, in_family, io, read_addr, write_addr};

/// The largest datagram rsocket carries: its 2048-byte slots less its header.
const DGRAM_MAX: usize = 2048;

/// `buf` as a slice; EFAULT for NULL with a length.
///
/// # Safety
///
/// A non-NULL `buf` must point at `len` bytes, valid for the call.
unsafe fn bytes<'a>(buf: *const c_void, len: usize) -> Result<&'a [u8], i32> {
    match (buf.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(libc::EFAULT),
        // SAFETY: per the contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(buf.cast(), len) }),
    }
}

/// `buf` as a writable slice; EFAULT for NULL with a length.
///
/// # Safety
///
/// A non-NULL `buf` must point at `len` writable bytes, valid for the call.
unsafe fn bytes_mut<'a>(buf: *mut c_void, len: usize) -> Result<&'a mut [u8], i32> {
    match (buf.is_null(), len) {
        (_, 0) => Ok(&mut []),
        (true, _) => Err(libc::EFAULT),
        // SAFETY: per the contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast(), len) }),
    }
}

/// An iovec array as checked slices: EINVAL for a negative count or more than IOV_MAX,
/// EFAULT for a NULL array or buffer with a length.
///
/// # Safety
///
/// `iov` must point at `count` iovecs whose buffers are valid for the call.
unsafe fn iovecs<'a>(iov: *const libc::iovec, count: c_int) -> Result<Vec<&'a mut [u8]>, i32> {
    let count = usize::try_from(count).map_err(|_| libc::EINVAL)?;
    if count > libc::UIO_MAXIOV as usize {
        return Err(libc::EINVAL);
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `count` iovecs, per the contract.
    let iov = unsafe { std::slice::from_raw_parts(iov, count) };
    iov.iter()
        // SAFETY: each buffer is valid for its length, per the contract.
        .map(|v| unsafe { bytes_mut(v.iov_base, v.iov_len) })
        .collect()
}

/// Receives into `buf`; the bytes and, for a datagram, its sender.
fn recv(sock: &Socket, buf: &mut [u8], flags: c_int) -> Result<(usize, Option<SocketAddr>), i32> {
    match sock.kind {
        Kind::Stream => match sock.live() {
            Some(Live::Stream(s)) => Ok((io(s.recv_with_flags(buf, flags))?, None)),
            _ => Err(libc::ENOTCONN),
        },
        Kind::Dgram => {
            let (n, from) = io(dgram(sock)?.recv_from_with_flags(buf, flags))?;
            Ok((n, Some(from)))
        }
    }
}

/// Sends `bufs`, as one datagram for a datagram socket (to `to`, else its peer).
fn send(
    sock: &Socket,
    bufs: &[IoSlice<'_>],
    flags: c_int,
    to: Option<SocketAddr>,
) -> Result<usize, i32> {
    match sock.kind {
        Kind::Stream => match (sock.live(), to) {
            (Some(Live::Stream(_)), Some(_)) => Err(libc::EISCONN),
            (Some(Live::Stream(s)), None) => io(s.send_vectored_with_flags(bufs, flags)),
            _ => Err(libc::ENOTCONN),
        },
        Kind::Dgram => {
            let d = dgram(sock)?;
            let to = match to {
                Some(to) => {
                    check_family(sock.domain, to)?;
                    to
                }
                None => io(d.peer_addr()).map_err(|_| libc::EDESTADDRREQ)?,
            };
            if let [one] = bufs {
                return io(d.send_to_with_flags(one, to, flags));
            }
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            if total > DGRAM_MAX {
                return Err(libc::EMSGSIZE);
            }
            let mut whole = [0u8; DGRAM_MAX];
            let mut at = 0;
            for b in bufs {
                whole[at..at + b.len()].copy_from_slice(b);
                at += b.len();
            }
            io(d.send_to_with_flags(&whole[..at], to, flags))
        }
    }
}

/// Receives into several buffers: a datagram is scattered over them (the rest of a
/// longer one dropped); a stream fills them in turn, waiting (as `flags` allow) only for
/// the first byte.
fn recv_vectored(
    sock: &Socket,
    bufs: &mut [&mut [u8]],
    flags: c_int,
) -> Result<(usize, Option<SocketAddr>), i32> {
    if let [one] = bufs {
        return recv(sock, one, flags);
    }
    let peek = flags & libc::MSG_PEEK != 0;
    if sock.kind == Kind::Dgram || peek {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut whole = vec![0u8; total];
        let (n, from) = recv(sock, &mut whole, flags)?;
        let mut at = 0;
        for b in bufs.iter_mut() {
            let k = b.len().min(n - at);
            b[..k].copy_from_slice(&whole[at..at + k]);
            at += k;
        }
        return Ok((n, from));
    }
    let Some(Live::Stream(s)) = sock.live() else {
        return Err(libc::ENOTCONN);
    };
    if flags == 0 {
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        return io(std::io::Read::read_vectored(&mut &*s, &mut slices)).map(|n| (n, None));
    }
    let mut done = 0;
    for (i, b) in bufs.iter_mut().enumerate() {
        let f = if i == 0 || flags & libc::MSG_WAITALL != 0 {
            flags
        } else {
            flags | libc::MSG_DONTWAIT
        };
        match s.recv_with_flags(b, f) {
            Ok(n) => {
                done += n;
                if n < b.len() {
                    break;
                }
            }
            Err(_) if done > 0 => break,
            Err(e) => return Err(crate::io_errno(&e)),
        }
    }
    Ok((done, None))
}

/// `rrecv(3)`: `recv(2)` with `MSG_PEEK`, `MSG_WAITALL` and `MSG_DONTWAIT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rrecv(socket: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize {
    guard_count(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's buffer, per recv(2)'s contract.
        let buf = unsafe { bytes_mut(buf, len) }?;
        recv(&sock, buf, flags).map(|(n, _)| n)
    })
}

/// `rrecvfrom(3)`: a stream socket gives its peer's address.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rrecvfrom(
    socket: c_int,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
    src: *mut libc::sockaddr,
    src_len: *mut libc::socklen_t,
) -> isize {
    guard_count(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's buffer, per recvfrom(2)'s contract.
        let buf = unsafe { bytes_mut(buf, len) }?;
        let (n, from) = recv(&sock, buf, flags)?;
        if !src.is_null() {
            let from = match (from, sock.live()) {
                (Some(a), _) => Some(a),
                (None, Some(Live::Stream(s))) => s.peer_addr().ok(),
                _ => None,
            };
            if let Some(from) = from {
                // SAFETY: the caller's buffers, per recvfrom(2)'s contract.
                unsafe { write_addr(in_family(sock.domain, from), src, src_len) }?;
            }
        }
        Ok(n)
    })
}

/// `rrecvmsg(3)`: no ancillary data (`msg_controllen` comes back 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rrecvmsg(socket: c_int, msg: *mut libc::msghdr, flags: c_int) -> isize {
    guard_count(|| {
        let sock = table::get(socket)?;
        if msg.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: the caller's message header, per recvmsg(2)'s contract.
        let m = unsafe { &mut *msg };
        // SAFETY: its iovecs, per the same contract.
        let mut bufs = unsafe { iovecs(m.msg_iov, m.msg_iovlen as c_int) }?;
        let (n, from) = recv_vectored(&sock, &mut bufs, flags)?;
        m.msg_controllen = 0;
        m.msg_flags = 0;
        if !m.msg_name.is_null() {
            match from {
                Some(from) => {
                    // SAFETY: the caller's name buffer of msg_namelen bytes.
                    unsafe {
                        write_addr(
                            in_family(sock.domain, from),
                            m.msg_name.cast(),
                            &mut m.msg_namelen,
                        )
                    }?
                }
                None => m.msg_namelen = 0,
            }
        }
        Ok(n)
    })
}

/// `rsend(3)`: `send(2)` with `MSG_DONTWAIT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rsend(
    socket: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
) -> isize {
    guard_count(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's buffer, per send(2)'s contract.
        let buf = unsafe { bytes(buf, len) }?;
        send(&sock, &[IoSlice::new(buf)], flags, None)
    })
}

/// `rsendto(3)`: EISCONN for an address on a stream socket, as rsocket answers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rsendto(
    socket: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    to: *const libc::sockaddr,
    to_len: libc::socklen_t,
) -> isize {
    guard_count(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's buffer, per sendto(2)'s contract.
        let buf = unsafe { bytes(buf, len) }?;
        let to = if to.is_null() {
            None
        } else {
            // SAFETY: the caller's address of `to_len` bytes.
            Some(unsafe { read_addr(to, to_len) }?)
        };
        send(&sock, &[IoSlice::new(buf)], flags, to)
    })
}

/// `rsendmsg(3)`: EOPNOTSUPP for ancillary data.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rsendmsg(socket: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    guard_count(|| {
        let sock = table::get(socket)?;
        if msg.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: the caller's message header, per sendmsg(2)'s contract.
        let m = unsafe { &*msg };
        if !m.msg_control.is_null() && m.msg_controllen > 0 {
            return Err(libc::EOPNOTSUPP);
        }
        // SAFETY: its iovecs, per the same contract.
        let bufs = unsafe { iovecs(m.msg_iov, m.msg_iovlen as c_int) }?;
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let to = if m.msg_name.is_null() {
            None
        } else {
            // SAFETY: the caller's address of msg_namelen bytes.
            Some(unsafe { read_addr(m.msg_name.cast(), m.msg_namelen) }?)
        };
        send(&sock, &slices, flags, to)
    })
}

/// `rread(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rread(socket: c_int, buf: *mut c_void, count: usize) -> isize {
    // SAFETY: the same contract.
    unsafe { rrecv(socket, buf, count, 0) }
}

/// `rreadv(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rreadv(socket: c_int, iov: *const libc::iovec, count: c_int) -> isize {
    guard_count(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's iovecs, per readv(2)'s contract.
        let mut bufs = unsafe { iovecs(iov, count) }?;
        recv_vectored(&sock, &mut bufs, 0).map(|(n, _)| n)
    })
}

/// `rwrite(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rwrite(socket: c_int, buf: *const c_void, count: usize) -> isize {
    // SAFETY: the same contract.
    unsafe { rsend(socket, buf, count, 0) }
}

/// `rwritev(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rwritev(socket: c_int, iov: *const libc::iovec, count: c_int) -> isize {
    guard_count(|| {
        let sock = table::get(socket)?;
        // SAFETY: the caller's iovecs, per writev(2)'s contract.
        let bufs = unsafe { iovecs(iov, count) }?;
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        send(&sock, &slices, 0, None)
    })
}

/// Runs `f` on the connected stream `socket` is; ENOTCONN otherwise (EINVAL for a
/// listener, EOPNOTSUPP for a datagram socket, as rsocket's iomap calls answer).
fn with_stream<T>(
    socket: c_int,
    f: impl FnOnce(&xrdma_rsocket::RsStream) -> Result<T, i32>,
) -> Result<T, i32> {
    let sock = table::get(socket)?;
    match sock.live() {
        Some(Live::Stream(s)) => f(s),
        Some(Live::Listener(_)) => Err(libc::EINVAL),
        _ if sock.kind == Kind::Dgram => Err(libc::EOPNOTSUPP),
        _ => Err(libc::ENOTCONN),
    }
}

/// `riomap(3)`: lets the peer `riowrite` into `len` bytes at `buf`, at `offset` (-1: the
/// buffer's address). `prot` must be `PROT_WRITE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn riomap(
    socket: c_int,
    buf: *mut c_void,
    len: usize,
    prot: c_int,
    _flags: c_int,
    offset: libc::off_t,
) -> libc::off_t {
    crate::guard_or(-1, || {
        with_stream(socket, |s| {
            if prot & !(libc::PROT_WRITE | libc::PROT_NONE) != 0 || buf.is_null() || len == 0 {
                return Err(libc::EINVAL);
            }
            let at = if offset == -1 {
                None
            } else {
                Some(u64::try_from(offset).map_err(|_| libc::EINVAL)?)
            };
            // SAFETY: riomap's contract: the buffer stays valid until riounmap or rclose,
            // and the program expects the peer to write it.
            let got = io(unsafe { s.iomap(buf.cast(), len, at) })?;
            libc::off_t::try_from(got).map_err(|_| libc::EOVERFLOW)
        })
    })
}

/// `riounmap(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn riounmap(socket: c_int, buf: *mut c_void, len: usize) -> c_int {
    guard_int(|| with_stream(socket, |s| io(s.iounmap(buf.cast(), len)).map(|()| 0)))
}

/// `riowrite(3)`: the bytes written, or `(size_t)-1` with errno.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn riowrite(
    socket: c_int,
    buf: *const c_void,
    count: usize,
    offset: libc::off_t,
    flags: c_int,
) -> usize {
    crate::guard_or(usize::MAX, || {
        with_stream(socket, |s| {
            // SAFETY: the caller's buffer, per riowrite's contract.
            let buf = unsafe { bytes(buf, count) }?;
            let offset = u64::try_from(offset).map_err(|_| libc::EINVAL)?;
            io(s.iowrite(buf, offset, flags))
        })
    })
}
