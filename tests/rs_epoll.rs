//! One epoll instance over a stream rsocket, a pipe and a kernel TCP socket, between two
//! namespaced hosts: each source is reported when data comes to it, alone or with the
//! others, and nothing is reported while nothing is ready.
//!
//! Both hosts' sockets live in this process. Needs root (namespaces).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use xrdma_rsocket::{Builder, RsStream};
use xrdma_testnet::Topology;

mod common;

use common::{connect, listen, open_devices};

const PORT: u16 = 7474;
/// How long a wait that expects an event may take before the test fails: a guard against a
/// hang, not a timing bound.
const WAIT_MS: i32 = 10_000;

const RS: u64 = 1;
const PIPE: u64 = 2;
const TCP: u64 = 3;

/// A level-triggered epoll instance watching descriptors for input.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> Epoll {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(
            fd >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor owned by nothing else.
        Epoll(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn watch(&self, fd: RawFd, token: u64) {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a live epoll_event.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(r, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }

    /// The tokens reported within `ms` milliseconds, sorted.
    fn wait(&self, ms: i32) -> Vec<u64> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: `events` is a live array of the length passed.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        assert!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
        let mut tokens: Vec<u64> = events[..n as usize].iter().map(|e| e.u64).collect();
        tokens.sort_unstable();
        tokens
    }
}

/// The three sources, each with a writer at the other end.
struct Sources {
    rs: RsStream,
    rs_peer: RsStream,
    pipe_r: std::fs::File,
    pipe_w: std::fs::File,
    tcp: TcpStream,
    tcp_peer: TcpStream,
}

impl Sources {
    /// Writes a message to source `token`, from its other end.
    fn feed(&mut self, token: u64) {
        match token {
            RS => self.rs_peer.write_all(b"hello").unwrap(),
            PIPE => self.pipe_w.write_all(b"hello").unwrap(),
            TCP => self.tcp_peer.write_all(b"hello").unwrap(),
            _ => unreachable!(),
        }
    }

    /// Reads the message fed to source `token`.
    fn drain(&mut self, token: u64) {
        let mut got = [0u8; 5];
        match token {
            RS => self.rs.read_exact(&mut got).unwrap(),
            PIPE => self.pipe_r.read_exact(&mut got).unwrap(),
            TCP => self.tcp.read_exact(&mut got).unwrap(),
            _ => unreachable!(),
        }
        assert_eq!(&got, b"hello", "source {token}");
    }
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the live two-element array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

#[test]
fn one_epoll_reports_rsockets_pipes_and_tcp_sockets_as_data_comes() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    open_devices(t.hosts());
    let to = SocketAddr::new(t.b().ipv4().into(), PORT);
    let builder = Builder::new();
    let listener = listen(t.b(), PORT, &builder);
    let rs_peer = connect(t.a(), to, &builder);
    let (rs, from) = listener.accept().unwrap();
    assert_eq!(from.ip(), t.a().ipv4(), "the rsocket crosses the link");
    // Kernel TCP between the same hosts (rsockets use no kernel TCP port).
    let tcp_listener = t.b().ns().run(|| TcpListener::bind(to)).unwrap();
    let tcp_peer = t.a().ns().run(|| TcpStream::connect(to)).unwrap();
    let (tcp, _) = tcp_listener.accept().unwrap();
    let (pipe_r, pipe_w) = pipe();
    let ep = Epoll::new();
    ep.watch(rs.as_raw_fd(), RS);
    ep.watch(pipe_r.as_raw_fd(), PIPE);
    ep.watch(tcp.as_raw_fd(), TCP);
    let mut s = Sources {
        rs,
        rs_peer,
        pipe_r,
        pipe_w,
        tcp,
        tcp_peer,
    };
    assert_eq!(ep.wait(0), [0u64; 0], "nothing to read yet");

    // Each alone: reported when its data comes, and no longer once it is read.
    for token in [RS, PIPE, TCP] {
        s.feed(token);
        assert_eq!(ep.wait(WAIT_MS), [token], "only source {token} has data");
        s.drain(token);
        assert_eq!(ep.wait(0), [0u64; 0], "source {token} was read");
    }

    // All three at once: each is reported, and no longer once read.
    for token in [RS, PIPE, TCP] {
        s.feed(token);
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ready = ep.wait(WAIT_MS);
        assert!(!ready.is_empty(), "only {seen:?} reported within the wait");
        for token in ready {
            assert!(
                !seen.contains(&token),
                "source {token} reported after it was read"
            );
            s.drain(token);
            seen.push(token);
        }
    }
    assert_eq!(ep.wait(0), [0u64; 0], "everything was read");
}
