//! fork: a child goes on using the connections over xrdma it inherits, through a relay in
//! the parent.
//!
//! xrdma (its devices, queue pairs and threads) cannot be shared with a child, so the
//! child's copy of each connection becomes one end of a Unix socket pair whose other end
//! the parent's relay thread joins to the connection: what the child writes goes to the
//! peer at once; what the peer sends goes to the child once the parent has closed its own
//! copy (until then it is the parent's to read, as a process that keeps using a connection
//! after fork would expect). The parent's own copy is left as it was, so a fork that
//! changes nothing (a child that execs or exits, a server forking to save its data) costs
//! the parent nothing. The relay ends when the child closes its end; the connection closes
//! when neither process has it.
//!
//! The handlers run at fork: `prepare` in the parent before it, `in_parent` and `in_child`
//! after. The child's handler makes only system calls and takes no lock another thread of
//! the parent could have held, as a forked child of a threaded process must.

use std::ffi::c_int;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::fds::{self, Sock};
use crate::{Inside, next, rs};

/// A connection the child will get a relayed copy of: the program's number, the rsocket,
/// its entry (which keeps the rsocket, and so its number, alive), and the connection's
/// addresses (which the child can no longer ask xrdma for).
struct Inherited {
    fd: c_int,
    rs: c_int,
    sock: Arc<Sock>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

/// Made by `prepare` for the fork in progress.
static PENDING: Mutex<Vec<Inherited>> = Mutex::new(Vec::new());
/// The two ends of the fork in progress's channel, on which the child sends the parent its
/// relay ends: the parent's and the child's.
static PARENT_END: AtomicI32 = AtomicI32::new(-1);
static CHILD_END: AtomicI32 = AtomicI32::new(-1);

type NameCall = unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> c_int;

/// One of the rsocket `rs`'s addresses, as `call` (rgetsockname or rgetpeername) gives it.
fn name(rs: c_int, call: NameCall) -> Option<SocketAddr> {
    // SAFETY: plain data; zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a live buffer of the length given.
    let ok = unsafe { call(rs, (&raw mut ss).cast(), &mut len) } == 0;
    ok.then(|| xrdma_verbs::net::sockaddr::from_storage(&ss))
        .flatten()
}

/// Before fork, in the parent: notes the connections over xrdma, holding the table until
/// after the fork so that no thread closes or makes one meanwhile, and opens the channel.
pub(crate) extern "C" fn prepare() {
    let _inside = Inside::enter();
    let streams = fds::freeze();
    // A forked child has no connections over xrdma of its own.
    if streams.is_empty() || fds::in_forked_child() {
        return;
    }
    let mut pending = PENDING.lock();
    pending.clear();
    for (fd, rs, sock) in streams {
        pending.push(Inherited {
            fd,
            rs,
            sock,
            local: name(rs, rs::rgetsockname),
            peer: name(rs, rs::rgetpeername),
        });
    }
    let mut pair = [-1; 2];
    // SAFETY: a live two-element array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } == 0
    {
        PARENT_END.store(pair[0], Ordering::SeqCst);
        CHILD_END.store(pair[1], Ordering::SeqCst);
    } else {
        pending.clear();
    }
}

/// After fork, in the parent: the relay thread takes the channel and the connections.
pub(crate) extern "C" fn in_parent() {
    fds::thaw();
    let _inside = Inside::enter();
    let pending = std::mem::take(&mut *PENDING.lock());
    let (p, c) = (
        PARENT_END.swap(-1, Ordering::SeqCst),
        CHILD_END.swap(-1, Ordering::SeqCst),
    );
    if p < 0 {
        return;
    }
    // SAFETY: the channel's ends, ours alone.
    let (p, c) = unsafe { (OwnedFd::from_raw_fd(p), OwnedFd::from_raw_fd(c)) };
    drop(c);
    let expected = pending.into_iter().map(|i| (i.rs, i.sock)).collect();
    RELAYS_STARTED.store(true, Ordering::Relaxed);
    relays().adopt(p, expected);
}

/// After fork, in the child: each inherited connection's number becomes a relayed Unix
/// socket, its other end sent to the parent.
pub(crate) extern "C" fn in_child() {
    fds::renew();
    fds::forked();
    let (p, c) = (
        PARENT_END.swap(-1, Ordering::SeqCst),
        CHILD_END.swap(-1, Ordering::SeqCst),
    );
    if p < 0 {
        return;
    }
    // SAFETY: the parent's end is the parent's; closing our copy.
    unsafe { next::close(p) };
    if let Some(pending) = PENDING.try_lock() {
        for i in pending.iter() {
            if relay_in_child(c, i) {
                fds::relayed(i.fd, i.local, i.peer);
                crate::policy::debug(|| format!("fork: descriptor {} relayed by the parent", i.fd));
            } else {
                crate::policy::debug(|| {
                    format!(
                        "fork: descriptor {} not relayed: {}",
                        i.fd,
                        std::io::Error::last_os_error()
                    )
                });
            }
        }
    }
    // SAFETY: our end, done with: the parent reads to its end.
    unsafe { next::close(c) };
}

/// Puts a new Unix socket under `i.fd` and sends its other end on `channel`, naming the
/// rsocket; true if done.
fn relay_in_child(channel: RawFd, i: &Inherited) -> bool {
    let mut pair = [-1; 2];
    // SAFETY: a live two-element array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } != 0
    {
        return false;
    }
    let cloexec = crate::calls::cloexec_of(i.fd);
    let sent = send_fd(channel, i.rs, pair[1])
        // SAFETY: descriptors we hold; `i.fd` is the program's number, which now names
        // our end.
        && unsafe { next::dup3(pair[0], i.fd, cloexec) } >= 0;
    // SAFETY: as above.
    unsafe {
        next::close(pair[0]);
        next::close(pair[1]);
    }
    sent
}

/// Runs `f` on a message whose data is `id` and whose control buffer (`control`, of which
/// `controllen` bytes are in use) has room for one descriptor.
fn on_message<R>(
    id: &mut c_int,
    control: &mut [u64; 4],
    controllen: usize,
    f: impl FnOnce(&mut libc::msghdr) -> R,
) -> R {
    let mut iov = libc::iovec {
        iov_base: (id as *mut c_int).cast(),
        iov_len: size_of::<c_int>(),
    };
    // SAFETY: plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = controllen;
    f(&mut msg)
}

/// Sends `fd` over the Unix socket `channel`, with `id` as the message.
fn send_fd(channel: RawFd, id: c_int, fd: RawFd) -> bool {
    let mut id = id;
    // Room for one descriptor's control message, aligned as cmsghdr wants.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE is arithmetic.
    let len = unsafe { libc::CMSG_SPACE(size_of::<c_int>() as u32) } as usize;
    on_message(&mut id, &mut control, len, |msg| {
        // SAFETY: the control buffer holds one cmsghdr with one descriptor.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<c_int>() as u32) as usize;
            libc::CMSG_DATA(cmsg).cast::<c_int>().write_unaligned(fd);
        }
        // SAFETY: a live message.
        unsafe { next::sendmsg(channel, msg, libc::MSG_NOSIGNAL) >= 0 }
    })
}

/// Receives one message of [`send_fd`]'s: the rsocket it names and the descriptor; `None`
/// at the end of the channel (or on a malformed message, whose descriptor is closed).
fn recv_fd(channel: RawFd) -> Option<(c_int, OwnedFd)> {
    let mut id: c_int = -1;
    let mut control = [0u64; 4];
    let len = size_of_val(&control);
    let (n, msg) = on_message(&mut id, &mut control, len, |msg| {
        // SAFETY: a live message.
        let n = unsafe { next::recvmsg(channel, msg, libc::MSG_CMSG_CLOEXEC) };
        (n, *msg)
    });
    if n <= 0 {
        return None;
    }
    // SAFETY: the kernel filled the control buffer it was given.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return None;
    }
    // SAFETY: as above.
    let fd = unsafe {
        if (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        OwnedFd::from_raw_fd(libc::CMSG_DATA(cmsg).cast::<c_int>().read_unaligned())
    };
    (n as usize == size_of::<c_int>()).then_some((id, fd))
}

/// One relayed connection: the rsocket, the parent's end of the child's Unix socket, and
/// what is on its way each way.
struct Relay {
    /// The connection's entry, which the relay keeps open while the child uses it.
    sock: Arc<Sock>,
    rs: c_int,
    child: OwnedFd,
    to_peer: Vec<u8>,
    to_child: Vec<u8>,
    /// The child shut its end for writing: the peer was told.
    child_done_writing: bool,
    /// The peer sent its end of stream: the child was told.
    peer_done_writing: bool,
}

/// What each relay waits for, as pollfd events: on the child's end, and on the rsocket.
impl Relay {
    /// The parent has no copy of the connection left: the peer's data is the child's.
    fn parent_gone(&self) -> bool {
        // Ours, and nothing in the table.
        Arc::strong_count(&self.sock) == 1
    }

    fn child_events(&self) -> i16 {
        let mut ev = 0;
        if self.to_peer.is_empty() && !self.child_done_writing {
            ev |= libc::POLLIN;
        }
        if !self.to_child.is_empty() {
            ev |= libc::POLLOUT;
        }
        ev
    }

    fn rs_events(&self) -> i16 {
        let mut ev = 0;
        if self.to_child.is_empty() && !self.peer_done_writing && self.parent_gone() {
            ev |= libc::POLLIN;
        }
        if !self.to_peer.is_empty() {
            ev |= libc::POLLOUT;
        }
        ev
    }

    /// Moves what it can; false once the relay is over (the child closed its end and what
    /// it wrote is delivered, or the connection failed).
    fn pump(&mut self, child_revents: i16) -> bool {
        let mut buf = [0u8; 65536];
        // The child's writes, to the peer.
        if self.to_peer.is_empty() && !self.child_done_writing && child_revents & libc::POLLIN != 0
        {
            // SAFETY: a live buffer of the length given.
            let n = unsafe {
                next::recv(
                    self.child.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                n if n > 0 => self.to_peer.extend_from_slice(&buf[..n as usize]),
                0 => {
                    self.child_done_writing = true;
                    // Shut for writing, the child shut the connection (for the parent too,
                    // as a shared TCP socket is); closed, the child only let go of it.
                    if child_revents & libc::POLLHUP == 0 {
                        rs::rshutdown(self.rs, libc::SHUT_WR);
                    }
                }
                _ if crate::errno() == libc::EAGAIN => {}
                _ => return false,
            }
        }
        if !self.to_peer.is_empty() {
            // SAFETY: the bytes held.
            let n = unsafe {
                rs::rsend(
                    self.rs,
                    self.to_peer.as_ptr().cast(),
                    self.to_peer.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                n if n > 0 => {
                    self.to_peer.drain(..n as usize);
                }
                _ if crate::errno() == libc::EAGAIN => {}
                _ => return false,
            }
        }
        // The peer's data, to the child, once the parent has let go.
        if self.to_child.is_empty() && !self.peer_done_writing && self.parent_gone() {
            // SAFETY: a live buffer of the length given.
            let n = unsafe {
                rs::rrecv(
                    self.rs,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                n if n > 0 => self.to_child.extend_from_slice(&buf[..n as usize]),
                0 => {
                    self.peer_done_writing = true;
                    // SAFETY: our end of the child's socket.
                    unsafe { next::shutdown(self.child.as_raw_fd(), libc::SHUT_WR) };
                }
                _ if crate::errno() == libc::EAGAIN => {}
                _ => return false,
            }
        }
        if !self.to_child.is_empty() {
            // SAFETY: the bytes held.
            let n = unsafe {
                next::send(
                    self.child.as_raw_fd(),
                    self.to_child.as_ptr().cast(),
                    self.to_child.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match n {
                n if n > 0 => {
                    self.to_child.drain(..n as usize);
                }
                _ if crate::errno() == libc::EAGAIN => {}
                _ => return false,
            }
        }
        // The child closed its end (not just shut it for writing): done once what it wrote
        // is on its way.
        let closed = child_revents & libc::POLLHUP != 0;
        !(closed && self.to_peer.is_empty())
    }
}

/// The parent's relays, and the channels on which children send them.
struct Relays {
    state: Mutex<RelayState>,
    /// Wakes the relay thread for a new channel.
    wake: OwnedFd,
}

/// A fork's channel, and the connections (by rsocket) its child will relay.
type Channel = (OwnedFd, Vec<(c_int, Arc<Sock>)>);

#[derive(Default)]
struct RelayState {
    /// Channels being read, each with the connections its child will relay (by rsocket).
    channels: Vec<Channel>,
    relays: Vec<Relay>,
}

fn relays() -> &'static Relays {
    static RELAYS: std::sync::OnceLock<Relays> = std::sync::OnceLock::new();
    RELAYS.get_or_init(|| {
        // SAFETY: eventfd takes no pointers.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(wake >= 0, "eventfd for the fork relays");
        let r = Relays {
            state: Mutex::new(RelayState::default()),
            // SAFETY: new, ours alone.
            wake: unsafe { OwnedFd::from_raw_fd(wake) },
        };
        std::thread::Builder::new()
            .name("xrdma-relay".into())
            .spawn(|| {
                let _inside = Inside::enter();
                relays().run()
            })
            .expect("the fork relay thread");
        r
    })
}

impl Relays {
    /// Takes a new fork's channel, from which the child sends the ends of `expected`.
    fn adopt(&self, channel: OwnedFd, expected: Vec<(c_int, Arc<Sock>)>) {
        self.state.lock().channels.push((channel, expected));
        let one = 1u64;
        // SAFETY: 8 bytes to our eventfd.
        unsafe { next::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Whether any relay is still running.
    fn busy(&self) -> bool {
        let s = self.state.lock();
        !s.relays.is_empty() || !s.channels.is_empty()
    }

    fn run(&self) {
        loop {
            let st = self.state.lock();
            let mut fds = vec![libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            for (c, _) in &st.channels {
                fds.push(libc::pollfd {
                    fd: c.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            for r in &st.relays {
                fds.push(libc::pollfd {
                    fd: r.child.as_raw_fd(),
                    events: r.child_events(),
                    revents: 0,
                });
                fds.push(libc::pollfd {
                    fd: r.rs,
                    events: r.rs_events(),
                    revents: 0,
                });
            }
            // While a parent keeps its copy, look again now and then for it to let go.
            let timeout = if st.relays.iter().any(|r| !r.parent_gone()) {
                50
            } else {
                -1
            };
            drop(st);
            // SAFETY: a live array of the length given.
            unsafe { rs::rpoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            let mut st = self.state.lock();
            if fds[0].revents != 0 {
                let mut v = 0u64;
                // SAFETY: 8 bytes into a live u64.
                unsafe { next::read(self.wake.as_raw_fd(), (&raw mut v).cast(), 8) };
            }
            let nchannels = fds.len() - 1 - 2 * st.relays.len();
            // Channels: the child's relay ends.
            let mut ended = Vec::new();
            for (k, p) in fds[1..1 + nchannels].iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                let (channel, expected) = &mut st.channels[k];
                match recv_fd(channel.as_raw_fd()) {
                    Some((id, end)) => {
                        if let Some(at) = expected.iter().position(|(rs, _)| *rs == id) {
                            let (rs, sock) = expected.swap_remove(at);
                            st.relays.push(Relay {
                                sock,
                                rs,
                                child: end,
                                to_peer: Vec::new(),
                                to_child: Vec::new(),
                                child_done_writing: false,
                                peer_done_writing: false,
                            });
                        }
                    }
                    None => ended.push(k),
                }
            }
            // Relays: move what they can. (Relays added above were not polled yet.)
            let polled = &fds[1 + nchannels..];
            let mut k = 0;
            st.relays.retain_mut(|r| {
                let revents = polled.get(2 * k).map_or(0, |p| p.revents);
                k += 1;
                r.pump(revents)
            });
            for k in ended.into_iter().rev() {
                st.channels.remove(k);
            }
        }
    }
}

/// At exit: waits up to `limit` for the relays to end (the children to close the
/// connections they use), as nothing would serve them once the parent is gone.
pub(crate) fn wait_relays(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !RELAYS_STARTED.load(Ordering::Relaxed) || !relays().busy() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a relay was ever needed (so that exit need not start the thread to ask).
static RELAYS_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
