//! A thousand stream rsockets over `xdp` on one listener, between two namespaced hosts: all
//! connect at once and each carries its own message there and back, a few threads
//! multiplexing them with poll(2) on their descriptors; then, with every connection open
//! and idle, the process uses next to no CPU.
//!
//! Both hosts' sockets live in this process, alone in its test binary (the backend is set
//! once per process, and the CPU count is the process's). Needs root (namespaces, AF_XDP).

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use xrdma_rsocket::{Backend, Builder, Config, RsStream, Settings, configure};
use xrdma_testnet::Topology;

mod common;

use common::{listen, open_devices};

const CONNS: usize = 1000;
/// Threads on each side, each serving `CONNS / THREADS` sockets.
const THREADS: usize = 4;
const PORT: u16 = 7475;
/// Bytes of each connection's message.
const LEN: usize = 1024;
/// How long one poll(2) may wait for the next socket to move before the test fails: a
/// guard against a hang, not a timing bound.
const POLL_MS: i32 = 30_000;
/// CPU ticks (utime + stime, usually 10 ms each) the idle process may use in `IDLE`:
/// generous, as the test harness's own threads and the scheduler's accounting add a few.
const IDLE_TICKS: u64 = 10;
const IDLE: Duration = Duration::from_secs(2);

/// The message of connection `i`.
fn message(i: usize) -> Vec<u8> {
    (0..LEN).map(|k| (i * 31 + k * 7 + k / 253) as u8).collect()
}

/// Polls `socks` for `events` and returns the indices of those that show one; fails if none
/// does within `POLL_MS`.
fn ready<'a>(socks: impl Iterator<Item = (usize, &'a RsStream)>, events: i16) -> Vec<usize> {
    let (index, mut fds): (Vec<usize>, Vec<libc::pollfd>) = socks
        .map(|(i, s)| {
            let p = libc::pollfd {
                fd: s.as_raw_fd(),
                events,
                revents: 0,
            };
            (i, p)
        })
        .unzip();
    // SAFETY: `fds` is a live array of the length passed.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
    assert!(n > 0, "none of {} sockets moved: poll gave {n}", fds.len());
    index
        .into_iter()
        .zip(&fds)
        .filter(|(_, p)| p.revents != 0)
        .map(|(i, _)| i)
        .collect()
}

/// The process's CPU ticks so far: utime + stime of /proc/self/stat.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command: utime and stime are the 12th and 13th.
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Lets the process open a descriptor or four per socket.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a live rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    assert!(
        lim.rlim_cur >= 8 * CONNS as u64,
        "the descriptor limit {} is too low for {CONNS} connections on each side",
        lim.rlim_cur
    );
}

/// Echoes one message on each of `socks`, reading without blocking what poll says is there.
fn echo(socks: &[RsStream]) {
    let mut left: Vec<usize> = vec![LEN; socks.len()];
    let mut buf = [0u8; LEN];
    while left.iter().any(|&n| n > 0) {
        let open = socks.iter().enumerate().filter(|(i, _)| left[*i] > 0);
        for i in ready(open, libc::POLLIN) {
            let s = &socks[i];
            let n = s
                .recv_with_flags(&mut buf[..left[i]], libc::MSG_DONTWAIT)
                .unwrap();
            assert!(n > 0, "a client closed before its echo");
            (&*s).write_all(&buf[..n]).unwrap();
            left[i] -= n;
        }
    }
}

/// Sends connection `first + k`'s message on each socket `k` of `socks`, and checks its echo.
fn exchange(first: usize, socks: &[RsStream]) {
    for (k, s) in socks.iter().enumerate() {
        (&*s).write_all(&message(first + k)).unwrap();
    }
    let mut got: Vec<Vec<u8>> = vec![Vec::with_capacity(LEN); socks.len()];
    let mut buf = [0u8; LEN];
    while got.iter().any(|g| g.len() < LEN) {
        let open = socks
            .iter()
            .enumerate()
            .filter(|(k, _)| got[*k].len() < LEN);
        for k in ready(open, libc::POLLIN) {
            let want = LEN - got[k].len();
            let n = socks[k]
                .recv_with_flags(&mut buf[..want], libc::MSG_DONTWAIT)
                .unwrap();
            assert!(n > 0, "connection {} ended before its echo", first + k);
            got[k].extend_from_slice(&buf[..n]);
        }
    }
    for (k, g) in got.iter().enumerate() {
        assert!(*g == message(first + k), "echo of connection {}", first + k);
    }
}

#[test]
fn a_thousand_connections_carry_data_then_idle_without_cpu() {
    configure(Settings {
        backend: Some(Backend::Xdp),
        ..Settings::default()
    })
    .unwrap();
    raise_fd_limit();
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    open_devices(t.hosts());
    // Small rings: a thousand connections on each side need no 256 KiB each.
    let builder = Builder::new()
        .config(Config {
            sq_size: 16,
            rq_size: 16,
            rmem: 8192,
            wmem: 8192,
            ..Config::default()
        })
        .backlog(CONNS);
    let listener = listen(t.b(), PORT, &builder);
    let to = SocketAddr::new(t.b().ipv4().into(), PORT);
    let from = SocketAddr::new(t.a().ipv4().into(), 0);

    // Every connection started at once, then waited for through writability.
    let client_ip = t.a().ipv4();
    let acceptor = std::thread::spawn(move || {
        (0..CONNS)
            .map(|_| {
                let (s, from) = listener.accept().unwrap();
                assert_eq!(from.ip(), client_ip, "the connections cross the link");
                s
            })
            .collect::<Vec<_>>()
    });
    let clients: Vec<RsStream> = t.a().ns().run(|| {
        (0..CONNS)
            .map(|_| builder.clone().bind(from).connect_nonblocking(to).unwrap())
            .collect()
    });
    let mut connecting: Vec<usize> = (0..CONNS).collect();
    while !connecting.is_empty() {
        let done = ready(connecting.iter().map(|&i| (i, &clients[i])), libc::POLLOUT);
        for &i in &done {
            if let Some(e) = clients[i].take_error().unwrap() {
                panic!("connection {i}: {e}");
            }
        }
        connecting.retain(|i| !done.contains(i));
    }
    let servers = acceptor.join().unwrap();

    // Each connection's message there and back, THREADS threads a side.
    std::thread::scope(|scope| {
        let per = CONNS / THREADS;
        for k in 0..THREADS {
            let part = &servers[k * per..(k + 1) * per];
            scope.spawn(move || echo(part));
            let part = &clients[k * per..(k + 1) * per];
            scope.spawn(move || exchange(k * per, part));
        }
    });

    // Idle, with every connection open.
    let before = cpu_ticks();
    std::thread::sleep(IDLE);
    let used = cpu_ticks() - before;
    assert!(
        used <= IDLE_TICKS,
        "{used} CPU ticks in {IDLE:?} with {CONNS} idle connections (at most {IDLE_TICKS})"
    );
    println!("{used} CPU ticks in {IDLE:?} with {CONNS} idle connections");
    drop((clients, servers));
}
