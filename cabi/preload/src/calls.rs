//! The socket calls: making, connecting, listening, accepting, closing and duplicating
//! sockets, their options and flags, and moving data.

use std::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use libc::{iovec, mmsghdr, msghdr, off_t, sockaddr, socklen_t};
use xrdma_verbs::net::sockaddr as c_addr;

use crate::fds::{self, Fresh, Listener, Sock};
use crate::policy::{self, debug, policy};
use crate::{inside, next, rs, run, sys};

/// The entry of `fd` if the program's call is to be ours: not from inside the library, and
/// `fd` one of our numbers.
pub(crate) fn ours(fd: c_int) -> Option<Arc<Sock>> {
    if inside() { None } else { fds::get(fd) }
}

/// Where a data call on `fd` goes.
enum Data {
    /// The C library's call: not a connection over xrdma.
    Kernel,
    /// The rsocket of a connection over xrdma.
    Rs(c_int),
    /// A connection of the parent process's (see [`Sock::Inherited`]).
    Inherited,
}

fn data_of(fd: c_int) -> Data {
    match ours(fd).as_deref() {
        Some(Sock::Stream { rs }) => Data::Rs(*rs),
        Some(Sock::Inherited) => Data::Inherited,
        _ => Data::Kernel,
    }
}

/// The failure of a data call on a connection of the parent's.
fn inherited<T: From<i8>>() -> T {
    crate::set_errno(libc::ENOTCONN);
    T::from(-1)
}

/// The address at `addr` (`len` bytes) if it is a whole IPv4 or IPv6 one.
///
/// # Safety
///
/// `addr` is NULL or points at `len` readable bytes.
unsafe fn read_addr(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: plain data; zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(size_of::<libc::sockaddr_storage>());
    // SAFETY: the caller's `len` bytes, at most the storage's size.
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), (&raw mut ss).cast::<u8>(), n) };
    let whole = match c_int::from(ss.ss_family) {
        libc::AF_INET => size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
        _ => return None,
    };
    if n < whole {
        return None;
    }
    c_addr::from_storage(&ss)
}

/// A descriptor's local address, as the kernel has it.
fn local_addr(fd: c_int) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as socklen_t;
    // SAFETY: a live buffer of the length given.
    let r = unsafe { next::getsockname(fd, (&raw mut ss).cast(), &mut len) };
    // SAFETY: the kernel wrote `len` bytes of the storage.
    (r == 0).then(|| unsafe { read_addr((&raw const ss).cast(), len) })?
}

/// The file status flags of `fd` (`F_GETFL`), 0 if they cannot be read.
fn status_flags(fd: c_int) -> c_int {
    // SAFETY: F_GETFL takes no argument.
    unsafe { next::fcntl(fd, libc::F_GETFL, 0) }.max(0)
}

/// `O_CLOEXEC` if `fd` closes on exec.
pub(crate) fn cloexec_of(fd: c_int) -> c_int {
    // SAFETY: F_GETFD takes no argument.
    let f = unsafe { next::fcntl(fd, libc::F_GETFD, 0) };
    if f >= 0 && f & libc::FD_CLOEXEC != 0 {
        libc::O_CLOEXEC
    } else {
        0
    }
}

fn strerror(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// Gives an rsocket just made what the program did to its kernel socket.
fn replay(rs: c_int, fresh: &Fresh) {
    for (level, name, value) in &fresh.opts {
        // SAFETY: the value the program set, of its length. What rsockets do not take is
        // left out, as it would be on a connection over xrdma (see `setsockopt`).
        unsafe { rs::rsetsockopt(rs, *level, *name, value.as_ptr().cast(), value.len() as _) };
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: socket(2)'s contract.
    let fd = unsafe { next::socket(domain, ty, protocol) };
    let tcp = matches!(domain, libc::AF_INET | libc::AF_INET6)
        && ty & 0xf == libc::SOCK_STREAM
        && matches!(protocol, 0 | libc::IPPROTO_TCP);
    if fd >= 0 && tcp && !inside() && !fds::in_forked_child() {
        run((), || {
            fds::set(
                fd,
                Arc::new(Sock::Fresh {
                    domain,
                    fresh: Default::default(),
                }),
            );
            Ok(())
        });
    }
    fd
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: bind(2)'s contract.
    let r = unsafe { next::bind(fd, addr, len) };
    if r == 0 {
        if let Some(sock) = ours(fd) {
            if let Sock::Fresh { fresh, .. } = sock.as_ref() {
                // SAFETY: the kernel took `len` bytes at `addr`.
                let bytes = unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len as usize) };
                fresh.lock().bound = Some(bytes.to_vec());
            }
        }
    }
    r
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let Some(sock) = ours(fd) else {
        // SAFETY: listen(2)'s contract.
        return unsafe { next::listen(fd, backlog) };
    };
    run(-1, || match sock.as_ref() {
        Sock::Fresh { domain, fresh } => listen_both(fd, *domain, &fresh.lock(), backlog),
        // SAFETY: our listener's kernel socket.
        Sock::Listener(l) => sys(unsafe { next::listen(l.kernel_fd(), backlog) }),
        Sock::Stream { .. } | Sock::Inherited | Sock::Relayed { .. } => Err(libc::EINVAL),
    })
}

/// Listens on the kernel socket `fd`, and with an rsocket on the same address and port if
/// the configuration wants it; then `fd` becomes an epoll set over the two.
fn listen_both(fd: c_int, domain: c_int, fresh: &Fresh, backlog: c_int) -> Result<c_int, i32> {
    // SAFETY: the program's socket.
    sys(unsafe { next::listen(fd, backlog) })?;
    let Some(at) = local_addr(fd) else {
        fds::remove(fd);
        return Ok(0);
    };
    let kernel_only = |why: String| {
        debug(|| format!("listen on {at}: kernel TCP only ({why})"));
        fds::remove(fd);
        Ok(0)
    };
    if fds::in_forked_child() {
        return kernel_only("xrdma is the parent process's".into());
    }
    if !policy().wants(at) {
        return kernel_only("XRDMA_TCP leaves it out".into());
    }
    let rs = rs::rsocket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
    if rs < 0 {
        return kernel_only(strerror(crate::errno()));
    }
    replay(rs, fresh);
    // On the address the kernel listens on: the program's, with the port the kernel gave
    // if it asked for any.
    if let Err(e) = listen_rs(rs, at, backlog) {
        rs::rclose(rs);
        return kernel_only(strerror(e));
    }
    match combine(fd, rs) {
        Ok(listener) => {
            fds::set(fd, Arc::new(Sock::Listener(listener)));
            crate::wait::register_again(fd, None, &fresh.epolls);
            debug(|| format!("listen on {at}: kernel TCP and xrdma"));
            Ok(0)
        }
        Err(e) => {
            rs::rclose(rs);
            kernel_only(strerror(e))
        }
    }
}

/// Binds rsocket `rs` to `at` and listens.
fn listen_rs(rs: c_int, at: SocketAddr, backlog: c_int) -> Result<(), i32> {
    let (storage, len) = sockaddr_of(at);
    // SAFETY: a live sockaddr of the length given.
    sys(unsafe { rs::rbind(rs, (&raw const storage).cast(), len) })?;
    sys(rs::rlisten(rs, backlog))?;
    Ok(())
}

/// `at` as a C socket address and its length.
fn sockaddr_of(at: SocketAddr) -> (libc::sockaddr_storage, socklen_t) {
    // SAFETY: plain data; zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = c_addr::to_storage(&at, &mut ss);
    (ss, len)
}

/// Makes the program's listening number `fd` an epoll set over the kernel listener (moved
/// to a number of its own) and rsocket listener `rs`.
fn combine(fd: c_int, rs: c_int) -> Result<Listener, i32> {
    let nonblocking = status_flags(fd) & libc::O_NONBLOCK != 0;
    let cloexec = cloexec_of(fd);
    // SAFETY: plain calls on the program's socket and descriptors made here; each new
    // descriptor is owned as soon as it exists.
    unsafe {
        let kernel = OwnedFd::from_raw_fd(sys(next::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0))?);
        let k = std::os::fd::AsRawFd::as_raw_fd(&kernel);
        sys(next::fcntl(
            k,
            libc::F_SETFL,
            c_long::from(libc::O_NONBLOCK),
        ))?;
        let set = OwnedFd::from_raw_fd(sys(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
        let s = std::os::fd::AsRawFd::as_raw_fd(&set);
        for member in [k, rs] {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: member as u64,
            };
            sys(next::epoll_ctl(s, libc::EPOLL_CTL_ADD, member, &mut ev))?;
        }
        sys(next::dup3(s, fd, cloexec))?;
        Ok(Listener {
            kernel,
            rs,
            nonblocking: nonblocking.into(),
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: accept(2)'s contract.
    unsafe { accept4(fd, addr, len, 0) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Some(sock) = ours(fd) else {
        // SAFETY: accept4(2)'s contract.
        return unsafe { next::accept4(fd, addr, len, flags) };
    };
    let Sock::Listener(l) = sock.as_ref() else {
        // A socket of ours that does not listen is as the kernel's would be.
        // SAFETY: as above.
        return unsafe { next::accept4(fd, addr, len, flags) };
    };
    // A forked child takes the kernel's connections only: xrdma is the parent's.
    let child = fds::in_forked_child();
    run(-1, || {
        loop {
            if !child {
                // SAFETY: our rsocket listener; the caller's address buffers.
                let rs = unsafe { rs::raccept(l.rs, addr, len) };
                if rs >= 0 {
                    let new = adopt_accepted(rs, flags)?;
                    debug(|| format!("accepted descriptor {new} on {fd}: xrdma"));
                    return Ok(new);
                }
                let e = crate::errno();
                if e != libc::EAGAIN {
                    return Err(e);
                }
            }
            // SAFETY: our kernel listener, non-blocking; the caller's buffers.
            let k = unsafe { next::accept4(l.kernel_fd(), addr, len, flags) };
            if k >= 0 {
                debug(|| format!("accepted descriptor {k} on {fd}: kernel TCP"));
                return Ok(k);
            }
            let e = crate::errno();
            if e != libc::EAGAIN || l.nonblocking.load(Ordering::Relaxed) {
                return Err(e);
            }
            let mut p = libc::pollfd {
                fd: if child { l.kernel_fd() } else { fd },
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            sys(unsafe { next::poll(&mut p, 1, -1) })?;
        }
    })
}

/// Gives the program a number of its own for the accepted rsocket `rs`.
fn adopt_accepted(rs: c_int, flags: c_int) -> Result<c_int, i32> {
    let cmd = if flags & libc::SOCK_CLOEXEC != 0 {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    // SAFETY: the accepted rsocket's descriptor.
    let fd = match sys(unsafe { next::fcntl(rs, cmd, 0) }) {
        Ok(fd) => fd,
        Err(e) => {
            rs::rclose(rs);
            return Err(e);
        }
    };
    fds::set(fd, Arc::new(Sock::Stream { rs }));
    if flags & libc::SOCK_NONBLOCK != 0 {
        rs::rfcntl(rs, libc::F_SETFL, c_long::from(libc::O_NONBLOCK));
    }
    Ok(fd)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(sock) = ours(fd) else {
        // SAFETY: connect(2)'s contract.
        return unsafe { next::connect(fd, addr, len) };
    };
    run(-1, || {
        let (domain, fresh) = match sock.as_ref() {
            Sock::Fresh { domain, fresh } => (*domain, fresh),
            _ => return Err(libc::EISCONN),
        };
        // SAFETY: the caller's address of `len` bytes.
        let to = unsafe { read_addr(addr, len) };
        let kernel = |why: &str| {
            if let Some(to) = to {
                debug(|| format!("connect to {to}: kernel TCP ({why})"));
            }
            fds::remove(fd);
            // SAFETY: connect(2)'s contract, as the program called it.
            sys(unsafe { next::connect(fd, addr, len) })
        };
        // First: in a forked child, the locks behind the rest may be the parent's.
        if fds::in_forked_child() {
            return kernel("xrdma is the parent process's");
        }
        let Some(to) = to else {
            return kernel("not an IP address");
        };
        if !policy().wants(to) {
            return kernel("XRDMA_TCP leaves it out");
        }
        if policy::known_without(to) {
            return kernel("no xrdma there a moment ago");
        }
        if fds::shared(&sock) {
            return kernel("the socket has more than one descriptor");
        }
        if policy::refuses_roce(to) {
            policy::found_without(to);
            return kernel("its host refuses RoCEv2");
        }
        let fresh = fresh.lock();
        match connect_rs(fd, domain, &fresh, addr, len) {
            Ok(rs) => {
                fds::set(fd, Arc::new(Sock::Stream { rs }));
                crate::wait::register_again(fd, Some(rs), &fresh.epolls);
                debug(|| format!("connect to {to}: xrdma"));
                Ok(0)
            }
            Err(e) => {
                if matches!(
                    e,
                    libc::ECONNREFUSED
                        | libc::ETIMEDOUT
                        | libc::EHOSTUNREACH
                        | libc::ENETUNREACH
                        | libc::EADDRNOTAVAIL
                        | libc::ENODEV
                ) {
                    policy::found_without(to);
                }
                kernel(&format!("xrdma: {}", strerror(e)))
            }
        }
    })
}

/// Connects a new rsocket to `addr` as the program's socket `fd` was set up; on success,
/// `fd` becomes a copy of the rsocket's descriptor and the rsocket is returned.
fn connect_rs(
    fd: c_int,
    domain: c_int,
    fresh: &Fresh,
    addr: *const sockaddr,
    len: socklen_t,
) -> Result<c_int, i32> {
    let nonblocking = status_flags(fd) & libc::O_NONBLOCK != 0;
    let cloexec = cloexec_of(fd);
    let rs = sys(rs::rsocket(domain, libc::SOCK_STREAM, 0))?;
    let made = (|| {
        replay(rs, fresh);
        if let Some(bound) = &fresh.bound {
            // SAFETY: the address the program bound, as it gave it.
            sys(unsafe { rs::rbind(rs, bound.as_ptr().cast(), bound.len() as socklen_t) })?;
        }
        // SAFETY: the program's address of `len` bytes. The attempt blocks: whether the
        // peer has xrdma is known only once it answers.
        sys(unsafe { rs::rconnect(rs, addr, len) })?;
        if nonblocking {
            sys(rs::rfcntl(
                rs,
                libc::F_SETFL,
                c_long::from(libc::O_NONBLOCK),
            ))?;
        }
        // SAFETY: the rsocket's descriptor takes the program's number.
        sys(unsafe { next::dup3(rs, fd, cloexec) })
    })();
    match made {
        Ok(_) => Ok(rs),
        Err(e) => {
            rs::rclose(rs);
            Err(e)
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if inside() {
        // SAFETY: close(2)'s contract.
        return unsafe { next::close(fd) };
    }
    if crate::wait::forget_set(fd) {
        return 0;
    }
    let sock = fds::remove(fd);
    // SAFETY: as above.
    let r = unsafe { next::close(fd) };
    // The last number of an rsocket closes it (see `Sock`'s drop).
    release_all(sock, &[]);
    r
}

/// `CLOSE_RANGE_CLOEXEC` of `<linux/close_range.h>`: mark, do not close.
const CLOSE_RANGE_CLOEXEC: c_int = 1 << 2;

/// `close_range(2)`: the range's sockets of ours close as `close` closes them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if inside() || flags & CLOSE_RANGE_CLOEXEC != 0 {
        // SAFETY: close_range(2)'s contract.
        return unsafe { next::close_range(first, last, flags) };
    }
    let (socks, sets) = forget_range(first, last);
    // SAFETY: as above.
    let r = unsafe { next::close_range(first, last, flags) };
    release_all(socks, &sets);
    r
}

/// `closefrom(3)`: the sockets of ours from `low` on close as `close` closes them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(low: c_int) {
    if inside() || low < 0 {
        // SAFETY: closefrom(3)'s contract.
        return unsafe { next::closefrom(low) };
    }
    let (socks, sets) = forget_range(low as c_uint, c_uint::MAX);
    // SAFETY: as above.
    unsafe { next::closefrom(low) };
    release_all(socks, &sets);
}

/// Takes the numbers from `first` to `last` out of the table and the epoll sets' record,
/// before the kernel closes them: the entries, and the sets.
fn forget_range(first: c_uint, last: c_uint) -> (Vec<Arc<Sock>>, Vec<c_int>) {
    let socks = fds::remove_range(first, last);
    let sets = crate::wait::sets_in(first, last);
    (socks, sets)
}

/// Lets go of entries taken out of the table, and of epoll sets closed (see
/// [`fds::release`]), keeping the caller's errno.
fn release_all(socks: impl IntoIterator<Item = Arc<Sock>>, sets: &[c_int]) {
    let mut socks = socks.into_iter().peekable();
    if socks.peek().is_none() && sets.is_empty() {
        return;
    }
    let saved = crate::errno();
    run((), || {
        for s in socks {
            fds::release(Some(s));
        }
        crate::wait::forget_closed_sets(sets);
        Ok(())
    });
    crate::set_errno(saved);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    match ours(fd).as_deref() {
        Some(Sock::Stream { rs }) => run(-1, || sys(rs::rshutdown(*rs, how))),
        // SAFETY: our listener's kernel socket.
        Some(Sock::Listener(l)) => unsafe { next::shutdown(l.kernel_fd(), how) },
        // SAFETY: shutdown(2)'s contract.
        _ => unsafe { next::shutdown(fd, how) },
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: getsockname(2)'s contract.
    unsafe { name_of(fd, addr, len, rs::rgetsockname, next::getsockname, false) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: getpeername(2)'s contract.
    unsafe { name_of(fd, addr, len, rs::rgetpeername, next::getpeername, true) }
}

type NameCall = unsafe fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;

/// getsockname or getpeername (`peer`): the rsocket's (`on_rs`) for a connection over
/// xrdma, the one kept for a relayed connection, the kernel listener's for a listener,
/// else the C library's (`kernel`).
///
/// # Safety
///
/// The calls' own contract for `addr` and `len`.
unsafe fn name_of(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    on_rs: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    kernel: NameCall,
    peer: bool,
) -> c_int {
    match ours(fd).as_deref() {
        // SAFETY: per the contract.
        Some(Sock::Stream { rs }) => run(-1, || sys(unsafe { on_rs(*rs, addr, len) })),
        Some(Sock::Relayed {
            local,
            peer: remote,
        }) => run(-1, || {
            let at = if peer { remote } else { local };
            let at = at.ok_or(libc::ENOTCONN)?;
            // SAFETY: per the contract.
            unsafe { write_addr(at, addr, len) }
        }),
        // SAFETY: as above.
        Some(Sock::Listener(l)) => unsafe { kernel(l.kernel_fd(), addr, len) },
        // SAFETY: as above.
        _ => unsafe { kernel(fd, addr, len) },
    }
}

/// Writes `at` to the caller's `addr` (`*len` bytes at most, as the kernel truncates) and
/// sets `*len` to its whole length.
///
/// # Safety
///
/// getsockname(2)'s contract for `addr` and `len`.
unsafe fn write_addr(
    at: SocketAddr,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Result<c_int, i32> {
    if addr.is_null() || len.is_null() {
        return Err(libc::EFAULT);
    }
    let (ss, whole) = sockaddr_of(at);
    // SAFETY: per the contract; at most the room the caller gave.
    unsafe {
        let n = (*len).min(whole) as usize;
        std::ptr::copy_nonoverlapping((&raw const ss).cast::<u8>(), addr.cast::<u8>(), n);
        *len = whole;
    }
    Ok(0)
}

/// Whether an option the rsocket refused is one a TCP socket takes, and so is left out
/// rather than failed: tuning (buffer sizes, congestion control, TOS, MSS) that has no
/// meaning on xrdma's connection, as it has none on TCP over loopback.
fn tcp_takes(level: c_int, name: c_int) -> bool {
    matches!(
        level,
        libc::SOL_SOCKET | libc::IPPROTO_TCP | libc::IPPROTO_IP | libc::IPPROTO_IPV6
    ) && name >= 0
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    let Some(sock) = ours(fd) else {
        // SAFETY: setsockopt(2)'s contract.
        return unsafe { next::setsockopt(fd, level, name, value, len) };
    };
    run(-1, || match sock.as_ref() {
        Sock::Fresh { fresh, .. } => {
            // SAFETY: as above.
            sys(unsafe { next::setsockopt(fd, level, name, value, len) })?;
            if !value.is_null() {
                // SAFETY: the kernel read `len` bytes at `value`.
                let v = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len as usize) };
                fresh.lock().opts.push((level, name, v.to_vec()));
            }
            Ok(0)
        }
        Sock::Listener(l) => {
            // SAFETY: as above, on both listeners.
            let r = sys(unsafe { next::setsockopt(l.kernel_fd(), level, name, value, len) });
            // SAFETY: as above.
            unsafe { rs::rsetsockopt(l.rs, level, name, value, len) };
            r
        }
        Sock::Stream { rs } => {
            // SAFETY: as above.
            match sys(unsafe { rs::rsetsockopt(*rs, level, name, value, len) }) {
                Err(libc::ENOTSUP | libc::ENOPROTOOPT) if tcp_takes(level, name) => {
                    debug(|| {
                        format!("setsockopt({level}, {name}) on descriptor {fd}: left out on xrdma")
                    });
                    Ok(0)
                }
                r => r,
            }
        }
        Sock::Inherited => Err(libc::ENOTCONN),
        // The number is a Unix socket: TCP's own options are left out.
        Sock::Relayed { .. } if level == libc::IPPROTO_TCP => Ok(0),
        // SAFETY: as above.
        Sock::Relayed { .. } => sys(unsafe { next::setsockopt(fd, level, name, value, len) }),
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    match ours(fd).as_deref() {
        Some(Sock::Stream { rs }) => run(-1, || {
            // SAFETY: getsockopt(2)'s contract.
            match sys(unsafe { rs::rgetsockopt(*rs, level, name, value, len) }) {
                // SAFETY: as above.
                Err(libc::ENOTSUP) => unsafe { stream_opt(level, name, value, len) },
                r => r,
            }
        }),
        // SAFETY: as above, on our kernel listener.
        Some(Sock::Listener(l)) => unsafe {
            next::getsockopt(l.kernel_fd(), level, name, value, len)
        },
        // SAFETY: as above; TCP's options as a connection over xrdma answers them.
        Some(Sock::Relayed { .. }) if level == libc::IPPROTO_TCP => {
            run(-1, || unsafe { stream_opt(level, name, value, len) })
        }
        // SAFETY: as above.
        _ => unsafe { next::getsockopt(fd, level, name, value, len) },
    }
}

/// The segment size a connection over xrdma reports: what one RoCE packet carries at the
/// smallest path MTU, 1024 bytes (the stream adds no header of its own).
const SEGMENT: u32 = 1024;

/// The options of a connection over xrdma that rsockets do not answer but TCP programs
/// ask: its protocol, its segment size, and `TCP_INFO`, which says the connection is
/// established with that segment size and nothing else (xrdma keeps no TCP state: no
/// window, no round-trip estimate, no retransmission count of TCP's kind). Others are
/// ENOPROTOOPT, as Linux answers for an option it does not know.
///
/// # Safety
///
/// getsockopt(2)'s contract for `value` and `len`.
unsafe fn stream_opt(
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> Result<c_int, i32> {
    if value.is_null() || len.is_null() {
        return Err(libc::EFAULT);
    }
    let int = |v: c_int| v.to_ne_bytes().to_vec();
    let bytes = match (level, name) {
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => int(libc::IPPROTO_TCP),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => int(SEGMENT as c_int),
        (libc::IPPROTO_TCP, libc::TCP_INFO) => {
            // SAFETY: plain data; zero is valid.
            let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
            info.tcpi_state = TCP_ESTABLISHED;
            info.tcpi_snd_mss = SEGMENT;
            info.tcpi_rcv_mss = SEGMENT;
            info.tcpi_advmss = SEGMENT;
            // SAFETY: the struct's bytes.
            unsafe {
                std::slice::from_raw_parts(
                    (&raw const info).cast::<u8>(),
                    size_of::<libc::tcp_info>(),
                )
            }
            .to_vec()
        }
        _ => return Err(libc::ENOPROTOOPT),
    };
    // SAFETY: the caller's buffers; at most `*len` bytes are written.
    unsafe {
        let n = (*len as usize).min(bytes.len());
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), value.cast::<u8>(), n);
        *len = n as socklen_t;
    }
    Ok(0)
}

/// `TCP_ESTABLISHED` of `<netinet/tcp.h>`.
const TCP_ESTABLISHED: u8 = 1;

/// `fcntl(2)`; the argument travels as a `long` (see [`next::fcntl`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    let Some(sock) = ours(fd) else {
        // SAFETY: fcntl(2)'s contract.
        return unsafe { next::fcntl(fd, cmd, arg) };
    };
    run(-1, || match (sock.as_ref(), cmd) {
        (_, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) => {
            // SAFETY: as above.
            let new = sys(unsafe { next::fcntl(fd, cmd, arg) })?;
            fds::set(new, sock.clone());
            Ok(new)
        }
        (Sock::Stream { rs }, libc::F_GETFL) => sys(rs::rfcntl(*rs, cmd, arg)),
        (Sock::Stream { rs }, libc::F_SETFL) => sys(rs::rfcntl(*rs, cmd, arg)),
        (Sock::Listener(l), libc::F_GETFL) => Ok(libc::O_RDWR
            | if l.nonblocking.load(Ordering::Relaxed) {
                libc::O_NONBLOCK
            } else {
                0
            }),
        (Sock::Listener(l), libc::F_SETFL) => {
            let on = arg as c_int & libc::O_NONBLOCK != 0;
            l.nonblocking.store(on, Ordering::Relaxed);
            Ok(0)
        }
        // SAFETY: as above.
        _ => sys(unsafe { next::fcntl(fd, cmd, arg) }),
    })
}

/// glibc's name for `fcntl` under `_FILE_OFFSET_BITS=64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    // SAFETY: fcntl(2)'s contract.
    unsafe { fcntl(fd, cmd, arg) }
}

/// `ioctl(2)`: `FIONBIO` and `FIONREAD` on a connection over xrdma.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    let rs = match ours(fd).as_deref() {
        Some(Sock::Stream { rs }) => *rs,
        Some(Sock::Listener(l)) if request == libc::FIONBIO => {
            if arg.is_null() {
                crate::set_errno(libc::EFAULT);
                return -1;
            }
            // SAFETY: FIONBIO's argument is an int.
            let on = unsafe { *arg.cast::<c_int>() } != 0;
            l.nonblocking.store(on, Ordering::Relaxed);
            return 0;
        }
        // SAFETY: ioctl(2)'s contract.
        _ => return unsafe { next::ioctl(fd, request, arg) },
    };
    run(-1, || {
        if arg.is_null() {
            return Err(libc::EFAULT);
        }
        match request {
            libc::FIONBIO => {
                // SAFETY: FIONBIO's argument is an int.
                let on = unsafe { *arg.cast::<c_int>() } != 0;
                let flags = sys(rs::rfcntl(rs, libc::F_GETFL, 0))?;
                let flags = if on {
                    flags | libc::O_NONBLOCK
                } else {
                    flags & !libc::O_NONBLOCK
                };
                sys(rs::rfcntl(rs, libc::F_SETFL, c_long::from(flags)))
            }
            libc::FIONREAD => {
                // What has arrived and is not read, counted where it lies.
                let n = rs::queued_bytes(rs)?;
                // SAFETY: FIONREAD's argument is an int.
                unsafe { *arg.cast::<c_int>() = c_int::try_from(n).unwrap_or(c_int::MAX) };
                Ok(0)
            }
            _ => Err(libc::ENOTTY),
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: dup(2)'s contract.
    let new = unsafe { next::dup(fd) };
    if new >= 0 {
        if let Some(sock) = ours(fd) {
            fds::set(new, sock);
        }
    }
    new
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    // SAFETY: dup2(2)'s contract.
    unsafe { dup_onto(fd, to, |fd, to| next::dup2(fd, to)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    // SAFETY: dup3(2)'s contract.
    unsafe { dup_onto(fd, to, |fd, to| next::dup3(fd, to, flags)) }
}

/// `dup2`/`dup3`: `to` stops being what it was (closing an rsocket whose last number it
/// was) and becomes what `fd` is.
///
/// # Safety
///
/// `dup` is dup2 or dup3.
unsafe fn dup_onto(fd: c_int, to: c_int, dup: impl FnOnce(c_int, c_int) -> c_int) -> c_int {
    if inside() || fd == to {
        return dup(fd, to);
    }
    let sock = fds::get(fd);
    let r = dup(fd, to);
    if r >= 0 {
        let old = match sock {
            Some(sock) => fds::set(to, sock),
            None => fds::remove(to),
        };
        release_all(old, &[]);
    }
    r
}

/// Defines a data call: on a connection over xrdma, the rsocket call; on anything else, the
/// C library's. A sending call names its flags after `pipe` (see [`broken_pipe`]).
macro_rules! data_call {
    ($(fn $name:ident($fd:ident: c_int $(, $arg:ident: $ty:ty)*) -> $ret:ty
        => $rs:ident $(, pipe $flags:expr)?;)*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($fd: c_int $(, $arg: $ty)*) -> $ret {
            match data_of($fd) {
                Data::Rs(rs) => {
                    // SAFETY: the caller's buffers, per the call's own contract.
                    let r = run(-1, || sys_len(unsafe { rs::$rs(rs $(, $arg)*) }));
                    $(broken_pipe(r as isize, $flags);)?
                    r
                }
                Data::Inherited => inherited(),
                // SAFETY: as above.
                Data::Kernel => unsafe { next::$name($fd $(, $arg)*) },
            }
        }
    )*};
}

/// After a send on a connection over xrdma: if it failed with EPIPE (the connection is
/// shut or gone) and `flags` lacks `MSG_NOSIGNAL`, the calling thread gets SIGPIPE, as a
/// TCP socket's sender does. Call outside [`run`], so that a handler's calls are the
/// program's.
fn broken_pipe(r: isize, flags: c_int) {
    if r < 0 && crate::errno() == libc::EPIPE && flags & libc::MSG_NOSIGNAL == 0 {
        // SAFETY: a signal to the calling thread.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGPIPE) };
        crate::set_errno(libc::EPIPE);
    }
}

data_call! {
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize => rread;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize => rwrite, pipe 0;
    fn readv(fd: c_int, iov: *const iovec, count: c_int) -> isize => rreadv;
    fn writev(fd: c_int, iov: *const iovec, count: c_int) -> isize => rwritev, pipe 0;
    fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize => rrecv;
    fn recvfrom(
        fd: c_int,
        buf: *mut c_void,
        len: usize,
        flags: c_int,
        addr: *mut sockaddr,
        alen: *mut socklen_t
    ) -> isize => rrecvfrom;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> isize => rrecvmsg;
    fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize
        => rsend, pipe flags;
}

/// `sendto(2)`: on a connection, as TCP does, the address is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> isize {
    match data_of(fd) {
        Data::Rs(rs) => {
            // SAFETY: the caller's buffer, per send(2).
            let r = run(-1, || sys_len(unsafe { rs::rsend(rs, buf, len, flags) }));
            broken_pipe(r, flags);
            r
        }
        Data::Inherited => inherited(),
        // SAFETY: sendto(2)'s contract.
        Data::Kernel => unsafe { next::sendto(fd, buf, len, flags, addr, alen) },
    }
}

/// `sendmsg(2)`: on a connection, as TCP does, the address is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> isize {
    match data_of(fd) {
        Data::Rs(rs) => {
            let r = run(-1, || {
                if msg.is_null() {
                    return Err(libc::EFAULT);
                }
                // SAFETY: the caller's message, per sendmsg(2).
                let mut m = unsafe { *msg };
                m.msg_name = std::ptr::null_mut();
                m.msg_namelen = 0;
                // SAFETY: the message's own buffers.
                sys_len(unsafe { rs::rsendmsg(rs, &m, flags) })
            });
            broken_pipe(r, flags);
            r
        }
        Data::Inherited => inherited(),
        // SAFETY: as above.
        Data::Kernel => unsafe { next::sendmsg(fd, msg, flags) },
    }
}

/// A byte count's result: `Ok` unless it failed.
fn sys_len(r: isize) -> Result<isize, i32> {
    if r < 0 { Err(crate::errno()) } else { Ok(r) }
}

/// `recvmmsg(2)` on a stream: one message per call as TCP gives it (the first blocks as a
/// recvmsg would, the rest do not wait).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    vlen: u32,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    let rs = match data_of(fd) {
        Data::Rs(rs) => rs,
        Data::Inherited => return inherited(),
        // SAFETY: recvmmsg(2)'s contract.
        Data::Kernel => return unsafe { next::recvmmsg(fd, msgs, vlen, flags, timeout) },
    };
    // SAFETY: the caller's `vlen` messages.
    unsafe {
        each_message(msgs, vlen, |m, first| {
            let wait = if first && flags & libc::MSG_WAITFORONE == 0 {
                flags
            } else {
                flags | libc::MSG_DONTWAIT
            } & !libc::MSG_WAITFORONE;
            // SAFETY: the message's own buffers.
            let n = rs::rrecvmsg(rs, m, wait);
            // End of stream: nothing follows.
            (n, n != 0)
        })
    }
}

/// `sendmmsg(2)` on a stream: the messages one after another.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: u32, flags: c_int) -> c_int {
    let rs = match data_of(fd) {
        Data::Rs(rs) => rs,
        Data::Inherited => return inherited(),
        // SAFETY: sendmmsg(2)'s contract.
        Data::Kernel => return unsafe { next::sendmmsg(fd, msgs, vlen, flags) },
    };
    // SAFETY: the caller's `vlen` messages.
    let r = unsafe { each_message(msgs, vlen, |m, _| (rs::rsendmsg(rs, m, flags), true)) };
    broken_pipe(r as isize, flags);
    r
}

/// Runs `one` (which says how many bytes it moved, and whether to go on) on each of the
/// `vlen` messages in turn, as recvmmsg and sendmmsg do: the number of messages done, or
/// the first one's failure.
///
/// # Safety
///
/// `msgs` points at `vlen` live messages, and `one` keeps each message's contract.
unsafe fn each_message(
    msgs: *mut mmsghdr,
    vlen: u32,
    mut one: impl FnMut(&mut msghdr, bool) -> (isize, bool),
) -> c_int {
    run(-1, || {
        let mut done = 0;
        while done < vlen {
            // SAFETY: per the contract.
            let m = unsafe { &mut *msgs.add(done as usize) };
            let (n, go_on) = one(&mut m.msg_hdr, done == 0);
            if n < 0 {
                if done > 0 {
                    break;
                }
                return Err(crate::errno());
            }
            m.msg_len = n as u32;
            done += 1;
            if !go_on {
                break;
            }
        }
        Ok(done as c_int)
    })
}

/// `sendfile(2)` to a connection over xrdma: the file read here (from `offset` if given,
/// which then moves; else from the file's position) and written to the rsocket.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendfile(
    out: c_int,
    input: c_int,
    offset: *mut off_t,
    count: usize,
) -> isize {
    let rs = match data_of(out) {
        Data::Rs(rs) => rs,
        Data::Inherited => return inherited(),
        // SAFETY: sendfile(2)'s contract.
        Data::Kernel => return unsafe { next::sendfile(out, input, offset, count) },
    };
    let r = run(-1, || {
        let mut buf = vec![0u8; count.min(1 << 16)];
        let mut sent = 0usize;
        while sent < count {
            let want = (count - sent).min(buf.len());
            // SAFETY: a live buffer of at least `want` bytes; the caller's offset.
            let got = unsafe {
                if offset.is_null() {
                    next::read(input, buf.as_mut_ptr().cast(), want)
                } else {
                    libc::pread(input, buf.as_mut_ptr().cast(), want, *offset)
                }
            };
            if got <= 0 {
                if got < 0 && sent == 0 {
                    return Err(crate::errno());
                }
                break;
            }
            // SAFETY: the bytes just read.
            let n = unsafe { rs::rwrite(rs, buf.as_ptr().cast(), got as usize) };
            if n < 0 {
                if sent == 0 {
                    return Err(crate::errno());
                }
                break;
            }
            sent += n as usize;
            if !offset.is_null() {
                // SAFETY: the caller's offset.
                unsafe { *offset += n as off_t };
            } else if (n as usize) < got as usize {
                // The file's position moved past what was written: move it back.
                // SAFETY: plain call.
                unsafe { libc::lseek(input, n as off_t - got as off_t, libc::SEEK_CUR) };
            }
            if (n as usize) < got as usize {
                break;
            }
        }
        Ok(sent as isize)
    });
    broken_pipe(r, 0);
    r
}

/// glibc's name for `sendfile` under `_FILE_OFFSET_BITS=64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendfile64(
    out: c_int,
    input: c_int,
    offset: *mut off_t,
    count: usize,
) -> isize {
    // SAFETY: sendfile(2)'s contract.
    unsafe { sendfile(out, input, offset, count) }
}
