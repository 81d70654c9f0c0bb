//! The definitions this library stands in front of: each function here calls the next
//! definition of its name after ours (`dlsym(RTLD_NEXT)`, normally libc's), looked up on
//! first use.

use std::ffi::{CStr, c_int, c_long, c_uint, c_ulong, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The next definition of `name` after this library's, or an abort saying which is missing:
/// without it the process could not make the call at all.
fn lookup(name: &CStr) -> usize {
    // SAFETY: a NUL-terminated name; RTLD_NEXT is a valid pseudo-handle.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if p.is_null() {
        let msg = b"xrdma preload: a socket call the C library must have is missing\n";
        // SAFETY: a live buffer of the length given; then the process ends.
        unsafe {
            libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len());
            libc::abort()
        }
    }
    p as usize
}

/// The address of the next `name`, cached in `slot`.
fn resolve(slot: &AtomicUsize, name: &CStr) -> usize {
    match slot.load(Ordering::Relaxed) {
        0 => {
            let p = lookup(name);
            slot.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Defines, for each `fn name(args) -> ret`, a function of that signature calling the next
/// definition of `name`.
macro_rules! next {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)*) => {$(
        pub(crate) unsafe fn $name($($arg: $ty),*) -> $ret {
            static SLOT: AtomicUsize = AtomicUsize::new(0);
            let p = resolve(&SLOT, const {
                match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(name) => name,
                    Err(_) => panic!("a function name has no NUL"),
                }
            });
            // SAFETY: `p` is the C library's definition of this very function, whose C
            // signature this one matches.
            let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
            // SAFETY: the caller keeps the function's own contract.
            unsafe { f($($arg),*) }
        }
    )*};
}

use libc::{
    epoll_event, fd_set, iovec, mmsghdr, msghdr, nfds_t, off_t, pollfd, sigset_t, sockaddr,
    socklen_t, timespec, timeval,
};

next! {
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn readv(fd: c_int, iov: *const iovec, count: c_int) -> isize;
    fn writev(fd: c_int, iov: *const iovec, count: c_int) -> isize;
    fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    fn recvfrom(
        fd: c_int,
        buf: *mut c_void,
        len: usize,
        flags: c_int,
        addr: *mut sockaddr,
        alen: *mut socklen_t,
    ) -> isize;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> isize;
    fn recvmmsg(
        fd: c_int,
        msgs: *mut mmsghdr,
        vlen: u32,
        flags: c_int,
        timeout: *mut timespec,
    ) -> c_int;
    fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
    fn sendto(
        fd: c_int,
        buf: *const c_void,
        len: usize,
        flags: c_int,
        addr: *const sockaddr,
        alen: socklen_t,
    ) -> isize;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> isize;
    fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: u32, flags: c_int) -> c_int;
    fn sendfile(out: c_int, input: c_int, offset: *mut off_t, count: usize) -> isize;
    fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int;
    fn ppoll(
        fds: *mut pollfd,
        nfds: nfds_t,
        timeout: *const timespec,
        sigmask: *const sigset_t,
    ) -> c_int;
    fn select(
        nfds: c_int,
        r: *mut fd_set,
        w: *mut fd_set,
        e: *mut fd_set,
        timeout: *mut timeval,
    ) -> c_int;
    fn pselect(
        nfds: c_int,
        r: *mut fd_set,
        w: *mut fd_set,
        e: *mut fd_set,
        timeout: *const timespec,
        sigmask: *const sigset_t,
    ) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut epoll_event) -> c_int;
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: c_int) -> c_int;
    fn epoll_pwait(
        epfd: c_int,
        events: *mut epoll_event,
        max: c_int,
        timeout: c_int,
        sigmask: *const sigset_t,
    ) -> c_int;
    fn shutdown(fd: c_int, how: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    fn closefrom(low: c_int) -> ();
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        value: *const c_void,
        len: socklen_t,
    ) -> c_int;
    fn getsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        value: *mut c_void,
        len: *mut socklen_t,
    ) -> c_int;
    fn dup(fd: c_int) -> c_int;
    fn dup2(fd: c_int, to: c_int) -> c_int;
    fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int;
}

/// `fcntl(2)` with its one optional argument, which is an int or a pointer for every
/// command and so travels in a register as a `long` does.
pub(crate) unsafe fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    let p = resolve(&SLOT, c"fcntl");
    // SAFETY: the C library's fcntl, variadic as declared.
    let f: unsafe extern "C" fn(c_int, c_int, ...) -> c_int = unsafe { std::mem::transmute(p) };
    // SAFETY: the caller keeps fcntl's contract.
    unsafe { f(fd, cmd, arg) }
}

/// `ioctl(2)` with its one optional argument (a pointer or an int).
pub(crate) unsafe fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    let p = resolve(&SLOT, c"ioctl");
    // SAFETY: the C library's ioctl, variadic as declared.
    let f: unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int = unsafe { std::mem::transmute(p) };
    // SAFETY: the caller keeps ioctl's contract.
    unsafe { f(fd, request, arg) }
}
