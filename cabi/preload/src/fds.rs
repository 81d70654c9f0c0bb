//! The program's descriptors this library stands behind, by number.
//!
//! Every number is one the kernel knows: a socket still on the kernel, the readiness
//! descriptor of an rsocket (see `xrdma-rsocket`'s `readiness`), or for a listener an epoll
//! set over its kernel and xrdma listeners. So poll, epoll and close on it behave even
//! where the program reaches the kernel without us. A bitmap answers "not ours" for every
//! other descriptor without a lock: that is the cost each read or write of a file pays.

use std::ffi::c_int;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

/// A kernel TCP socket not yet connected or listening, and what was done to it that an
/// rsocket made in its place must have too.
#[derive(Debug, Default)]
pub(crate) struct Fresh {
    /// Options set, in order: level, name, value.
    pub opts: Vec<(c_int, c_int, Vec<u8>)>,
    /// The address `bind` was given.
    pub bound: Option<Vec<u8>>,
    /// The epoll sets the socket is in: set, events, data.
    pub epolls: Vec<(c_int, u32, u64)>,
}

impl Fresh {
    /// Keeps track of `epoll_ctl(epfd, op)` with `event`, which the kernel took.
    pub(crate) fn epoll(&mut self, epfd: c_int, op: c_int, event: Option<(u32, u64)>) {
        self.epolls.retain(|&(set, _, _)| set != epfd);
        if let (libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD, Some((events, data))) = (op, event) {
            self.epolls.push((epfd, events, data));
        }
    }
}

/// A listener on both the kernel and xrdma. The program's number is an epoll set over the
/// two, readable when either has a connection waiting.
#[derive(Debug)]
pub(crate) struct Listener {
    /// The kernel's listening socket, under a number of its own; non-blocking.
    pub kernel: OwnedFd,
    /// The rsocket listening on the same address and port; non-blocking.
    pub rs: c_int,
    /// What the program set with `O_NONBLOCK`.
    pub nonblocking: AtomicBool,
}

/// What a number of the program's is.
#[derive(Debug)]
pub(crate) enum Sock {
    /// A TCP socket on the kernel, not yet connected or listening.
    Fresh {
        domain: c_int,
        fresh: Mutex<Fresh>,
    },
    /// A connection over xrdma: the rsocket numbered `rs`, whose descriptor the program's
    /// number is a copy of.
    Stream {
        rs: c_int,
    },
    Listener(Listener),
    /// In a child process, a connection over xrdma of the parent's that could not be
    /// relayed (see `fork.rs`): unusable here.
    Inherited,
    /// In a child process, a connection over xrdma of the parent's, relayed by the parent:
    /// the number is a Unix socket the kernel serves; its addresses are the connection's.
    Relayed {
        local: Option<std::net::SocketAddr>,
        peer: Option<std::net::SocketAddr>,
    },
}

impl Drop for Sock {
    fn drop(&mut self) {
        let _inside = crate::Inside::enter();
        match self {
            Sock::Fresh { .. } | Sock::Inherited | Sock::Relayed { .. } => {}
            // The last number of a connection closes it as TCP's close does: at once, the
            // rest delivered in the background (see `at_exit`).
            Sock::Stream { rs } => {
                crate::rs::close_as_tcp(*rs);
            }
            // The rsocket this entry owned; no number maps to it any more.
            Sock::Listener(l) => {
                crate::rs::rclose(l.rs);
            }
        }
    }
}

/// Set in a child process after fork: the table's entries are the parent's.
static FORKED: AtomicBool = AtomicBool::new(false);

/// What every entry of the parent's is in a forked child.
static INHERITED: std::sync::LazyLock<Arc<Sock>> =
    std::sync::LazyLock::new(|| Arc::new(Sock::Inherited));

/// Called in the child after fork (and only there): from now on the entries are the
/// parent's, never to be used or closed as ours.
pub(crate) fn forked() {
    FORKED.store(true, Ordering::SeqCst);
}

/// Whether this is a forked child, where xrdma (its devices, queue pairs and threads) is
/// the parent's: the child's sockets stay on the kernel.
pub(crate) fn in_forked_child() -> bool {
    FORKED.load(Ordering::Relaxed)
}

/// Lets go of an entry taken out of the table: closing what it holds in the process that
/// made it, and nothing in a forked child, where it is the parent's.
pub(crate) fn release(sock: Option<Arc<Sock>>) {
    if FORKED.load(Ordering::SeqCst) {
        std::mem::forget(sock);
    } else {
        drop(sock);
    }
}

/// Takes every entry out, for the process's exit: what it holds is closed as the kernel
/// closes a process's sockets. Nothing in a forked child.
pub(crate) fn close_all() {
    if in_forked_child() {
        return;
    }
    let all: Vec<Arc<Sock>> = {
        let mut t = table().write();
        for b in &BITMAP {
            b.store(0, Ordering::Release);
        }
        t.drain(..).flatten().collect()
    };
    drop(all);
}

impl Listener {
    pub(crate) fn kernel_fd(&self) -> c_int {
        self.kernel.as_raw_fd()
    }
}

/// Numbers covered by the bitmap; a larger number is looked up in the table.
const BITMAP_FDS: usize = 1 << 16;

static BITMAP: [AtomicU64; BITMAP_FDS / 64] = [const { AtomicU64::new(0) }; BITMAP_FDS / 64];

type Table = RwLock<Vec<Option<Arc<Sock>>>>;

/// The table, behind a pointer so that a forked child can start a new one (see
/// [`freeze`]).
static TABLE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());

fn table() -> &'static Table {
    let t = TABLE.load(Ordering::Acquire);
    if !t.is_null() {
        // SAFETY: tables are leaked, never freed.
        return unsafe { &*t };
    }
    let new = Box::into_raw(Box::new(Table::new(Vec::new())));
    match TABLE.compare_exchange(
        std::ptr::null_mut(),
        new,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: as above; ours just now.
        Ok(_) => unsafe { &*new },
        Err(other) => {
            // SAFETY: ours, never shared; another thread's won.
            drop(unsafe { Box::from_raw(new) });
            // SAFETY: as above.
            unsafe { &*other }
        }
    }
}

fn mark(fd: usize, on: bool) {
    if fd < BITMAP_FDS {
        let bit = 1u64 << (fd % 64);
        if on {
            BITMAP[fd / 64].fetch_or(bit, Ordering::Release);
        } else {
            BITMAP[fd / 64].fetch_and(!bit, Ordering::Release);
        }
    }
}

/// The entry of `fd`, if it is one of ours.
pub(crate) fn get(fd: c_int) -> Option<Arc<Sock>> {
    let i = usize::try_from(fd).ok()?;
    if i < BITMAP_FDS && BITMAP[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) == 0 {
        return None;
    }
    let sock = table().read().get(i).and_then(Clone::clone)?;
    if FORKED.load(Ordering::Relaxed) && matches!(*sock, Sock::Stream { .. }) {
        let inherited = INHERITED.clone();
        std::mem::forget(sock);
        return Some(inherited);
    }
    Some(sock)
}

/// Whether [`freeze`] holds the table.
static FROZEN: AtomicBool = AtomicBool::new(false);

/// For fork, in the parent before it: holds the table, so that no thread has it (or
/// changes it) as the process forks, until [`thaw`] in the parent and [`renew`] in the
/// child; returns the program's connections over xrdma (each number, rsocket and entry).
pub(crate) fn freeze() -> Vec<(c_int, c_int, Arc<Sock>)> {
    let t = table().write();
    let streams = t
        .iter()
        .enumerate()
        .filter_map(|(fd, s)| match s.as_deref() {
            Some(Sock::Stream { rs }) => Some((fd as c_int, *rs, s.clone()?)),
            _ => None,
        })
        .collect();
    std::mem::forget(t);
    FROZEN.store(true, Ordering::SeqCst);
    streams
}

/// After fork, in the parent: lets go of the table [`freeze`] held.
pub(crate) fn thaw() {
    if FROZEN.swap(false, Ordering::SeqCst) {
        // SAFETY: `freeze` took this write lock and forgot its guard.
        unsafe { table().force_unlock_write() };
    }
}

/// After fork, in the child: a new table with the entries the parent had. The parent's
/// lock is left as the fork found it: its waiters are the parent's threads, which the
/// child does not have.
pub(crate) fn renew() {
    if FROZEN.swap(false, Ordering::SeqCst) {
        let old = table();
        // SAFETY: `freeze` holds the old table, so nothing changes it; the child has no
        // other thread.
        let entries = unsafe { (*old.data_ptr()).clone() };
        let new = Box::into_raw(Box::new(Table::new(entries)));
        TABLE.store(new, Ordering::Release);
    }
}

/// In a forked child, after [`renew`]: `fd`, a connection of the parent's, is now relayed
/// (see `fork.rs`).
pub(crate) fn relayed(
    fd: c_int,
    local: Option<std::net::SocketAddr>,
    peer: Option<std::net::SocketAddr>,
) {
    let mut t = table().write();
    if let Some(slot) = t.get_mut(fd as usize) {
        // The parent's entry is the parent's to drop.
        std::mem::forget(slot.replace(Arc::new(Sock::Relayed { local, peer })));
    }
}

/// Puts `sock` under `fd`; what was there before is returned.
pub(crate) fn set(fd: c_int, sock: Arc<Sock>) -> Option<Arc<Sock>> {
    let i = fd as usize;
    let mut t = table().write();
    if t.len() <= i {
        t.resize_with(i + 1, || None);
    }
    mark(i, true);
    t[i].replace(sock)
}

/// Takes `fd` out.
pub(crate) fn remove(fd: c_int) -> Option<Arc<Sock>> {
    let i = usize::try_from(fd).ok()?;
    let mut t = table().write();
    let old = t.get_mut(i).and_then(Option::take);
    mark(i, false);
    old
}

/// Takes the numbers from `first` to `last` out; their entries.
pub(crate) fn remove_range(first: std::ffi::c_uint, last: std::ffi::c_uint) -> Vec<Arc<Sock>> {
    let mut t = table().write();
    let (first, last) = (
        first as usize,
        (last as usize).min(t.len().saturating_sub(1)),
    );
    let mut taken = Vec::new();
    for i in first..=last {
        if let Some(sock) = t.get_mut(i).and_then(Option::take) {
            mark(i, false);
            taken.push(sock);
        }
    }
    taken
}

/// Whether another number than `fd` holds `sock`.
pub(crate) fn shared(sock: &Arc<Sock>) -> bool {
    // The table holds one reference per number, the caller one.
    Arc::strong_count(sock) > 2
}
