//! Stream sockets between two contexts of a simulated network, in one process: connect,
//! echo of every size, half-close both ways, refusal, readiness of the descriptor.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::Duration;

use xrdma_rsocket::{Builder, Config, RsListener};
use xrdma_verbs::net::sim;

mod common;

use common::{at, hosts, net, pair, pattern, poll};

#[test]
fn echo_of_every_size() {
    let (mut client, server, _l) = pair(7001);
    let echo = std::thread::spawn(move || {
        let mut s = server;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return total,
                n => {
                    s.write_all(&buf[..n]).unwrap();
                    total += n;
                }
            }
        }
    });
    let mut size = 1;
    let mut sent = 0;
    while size <= 1 << 20 {
        let data = pattern(size);
        let reader = client.try_clone().unwrap();
        let expect = data.clone();
        let check = std::thread::spawn(move || {
            let mut r = reader;
            let mut got = vec![0u8; expect.len()];
            r.read_exact(&mut got).unwrap();
            assert!(got == expect, "echo of {} bytes differs", expect.len());
        });
        client.write_all(&data).unwrap();
        check.join().unwrap();
        sent += size;
        size *= 4;
    }
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(echo.join().unwrap(), sent);
}

#[test]
fn half_close_both_ways() {
    let (mut client, mut server, _l) = pair(7002);
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request");
    // The other direction still works after the client's half-close.
    server.write_all(b"answer").unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"answer");
    let e = client.write(b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
}

#[test]
fn close_with_data_in_flight_delivers_it() {
    let (client, mut server, _l) = pair(7003);
    let data = pattern(600_000);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            let mut c = client;
            c.write_all(&data).unwrap();
            // Dropped with most of it still unread at the peer.
        })
    };
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == data);
}

#[test]
fn nobody_listening_is_refused() {
    let (a, b) = hosts();
    let e = Builder::new()
        .bind(at(a, 0))
        .connect(at(b, 7099))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
}

#[test]
fn the_descriptor_polls_as_the_socket_is() {
    let (mut client, server, listener) = pair(7004);
    assert_eq!(poll(listener.as_raw_fd(), libc::POLLIN, 0), 0);
    assert_eq!(
        poll(server.as_raw_fd(), libc::POLLIN, 0),
        0,
        "nothing to read yet"
    );
    assert_eq!(poll(client.as_raw_fd(), libc::POLLOUT, 0), libc::POLLOUT);
    client.write_all(b"hello").unwrap();
    assert_eq!(poll(server.as_raw_fd(), libc::POLLIN, 5000), libc::POLLIN);
    let mut buf = [0u8; 5];
    (&server).read_exact(&mut buf).unwrap();
    assert_eq!(poll(server.as_raw_fd(), libc::POLLIN, 0), 0, "all read");
    server.set_nonblocking(true).unwrap();
    let e = (&server).read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    drop(client);
    assert_eq!(
        poll(server.as_raw_fd(), libc::POLLIN, 5000),
        libc::POLLIN,
        "end of file"
    );
    assert_eq!((&server).read(&mut buf).unwrap(), 0);
}

#[test]
fn non_blocking_connect_completes_through_writability() {
    let (a, b) = hosts();
    let listener = RsListener::bind(at(b, 7005)).unwrap();
    let client = Builder::new()
        .bind(at(a, 0))
        .connect_nonblocking(at(b, 7005))
        .unwrap();
    assert_eq!(poll(client.as_raw_fd(), libc::POLLOUT, 5000), libc::POLLOUT);
    assert!(client.take_error().unwrap().is_none());
    let (server, _) = listener.accept().unwrap();
    (&client).write_all(b"x").unwrap();
    let mut b1 = [0u8; 1];
    (&server).read_exact(&mut b1).unwrap();

    let refused = Builder::new()
        .bind(at(a, 0))
        .connect_nonblocking(at(b, 7098))
        .unwrap();
    assert_eq!(
        poll(refused.as_raw_fd(), libc::POLLOUT, 5000),
        libc::POLLOUT
    );
    let e = refused.take_error().unwrap().expect("an error");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
}

#[test]
fn a_vanished_peer_ends_reads_with_keepalive_and_writes_with_etimedout() {
    let (a, _) = hosts();
    let c = sim::host_addr(3);
    let listener = RsListener::bind(at(c, 7480)).unwrap();
    let keepalive = Config {
        keepalive: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    let reader = Builder::new()
        .config(keepalive)
        .bind(at(a, 0))
        .connect(at(c, 7480))
        .unwrap();
    assert_eq!(reader.keepalive().unwrap(), Some(Duration::from_secs(1)));
    let (_r_peer, _) = listener.accept().unwrap();
    let writer = Builder::new().bind(at(a, 0)).connect(at(c, 7480)).unwrap();
    let (mut w_peer, _) = listener.accept().unwrap();
    (&writer).write_all(b"alive").unwrap();
    let mut got = [0u8; 5];
    w_peer.read_exact(&mut got).unwrap();
    // Host 3 goes away without a word, as a killed process's host does for its peers.
    net().set_host_down(c.ip(), true);
    let writing = std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 16];
        loop {
            if let Err(e) = (&writer).write(&chunk) {
                return e;
            }
        }
    });
    // Nothing comes to the reader; its keepalive finds the peer gone.
    let e = (&reader).read(&mut got).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT), "reader: {e}");
    let e = writing.join().unwrap();
    assert!(
        matches!(e.raw_os_error(), Some(libc::ETIMEDOUT | libc::ECONNRESET)),
        "writer: {e}"
    );
}

#[test]
fn a_program_that_spins_then_sleeps_in_poll_sees_what_comes() {
    // As the datagram test of the same name: reads in a loop leave the events unarmed,
    // and the descriptor must still show data that comes once the program sleeps in
    // poll(2) without any call of ours between.
    let (client, server, _l) = pair(7487);
    server.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..1000 {
        let e = (&server).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }
    let (go, went) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        went.recv().unwrap();
        (&client).write_all(b"late").unwrap();
        client
    });
    go.send(()).unwrap();
    assert_eq!(poll(server.as_raw_fd(), libc::POLLIN, 10_000), libc::POLLIN);
    assert_eq!((&server).read(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"late");
    writer.join().unwrap();
}

/// A client on host 1 connected to host 2 at `port`, each with an iomap table of one
/// entry; the listener is kept in the pair's scope by returning it.
fn iomap_pair(port: u16) -> (xrdma_rsocket::RsStream, xrdma_rsocket::RsStream, RsListener) {
    let (a, b) = hosts();
    let with_iomap = Config {
        iomap_size: 1,
        ..Config::default()
    };
    let listener = Builder::new()
        .config(with_iomap)
        .listen(at(b, port))
        .unwrap();
    let client = Builder::new()
        .config(with_iomap)
        .bind(at(a, 0))
        .connect(at(b, port))
        .unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server, listener)
}

#[test]
fn iowrite_lands_in_the_peers_mapped_buffer() {
    let (client, mut server, _l) = iomap_pair(7481);
    // The server maps a buffer at offset 0 and says so in band, as riostream does.
    let len = 1 << 20;
    let mut target = vec![0u8; len];
    // SAFETY: `target` outlives the mapping (unmapped below) and is read only after the
    // client said it wrote.
    let offset = unsafe { server.iomap(target.as_mut_ptr(), len, Some(0)) }.unwrap();
    assert_eq!(offset, 0);
    server.write_all(b"ready").unwrap();
    let mut word = [0u8; 5];
    (&client).read_exact(&mut word).unwrap();
    let data = pattern(len);
    let mut at_off = 0;
    while at_off < len {
        at_off += client.iowrite(&data[at_off..], at_off as u64, 0).unwrap();
    }
    // Past the mapping's end: no mapping holds it.
    let e = client.iowrite(b"x", len as u64, 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    (&client).write_all(b"done!").unwrap();
    server.read_exact(&mut word).unwrap();
    assert_eq!(&word, b"done!");
    assert!(target == data, "the mapped buffer holds other bytes");
    server.iounmap(target.as_mut_ptr(), len).unwrap();
    let e = server.iounmap(target.as_mut_ptr(), len).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    // The client's table has one slot; the unmapping freed it for a new mapping.
    let mut other = vec![0u8; 64];
    // SAFETY: as above; unmapped before it is dropped.
    unsafe { server.iomap(other.as_mut_ptr(), 64, None) }.unwrap();
    server.iounmap(other.as_mut_ptr(), 64).unwrap();
}

#[test]
fn iomap_needs_a_table_at_the_peer() {
    let (client, _server, _l) = pair(7482);
    let mut buf = vec![0u8; 64];
    // SAFETY: refused, so nothing is mapped.
    let e = unsafe { client.iomap(buf.as_mut_ptr(), 64, None) }.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOMEM));
}

#[test]
fn a_lingering_close_returns_once_its_data_is_delivered() {
    let (client, mut server, _l) = pair(7483);
    client.set_linger(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(client.linger().unwrap(), Some(Duration::from_secs(30)));
    let data = pattern(300_000);
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            let mut c = client;
            c.write_all(&data).unwrap();
            // Returns once the peer's QP took every byte (here: once the reader made room
            // for the last of them), not before, and not 30 s later.
            drop(c);
            closed_tx.send(()).unwrap();
        })
    };
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    closed_rx.recv().unwrap();
    writer.join().unwrap();
    assert!(got == data);
}

#[test]
fn a_zero_linger_close_ends_the_connection_at_once() {
    let (client, mut server, _l) = pair(7484);
    client.set_linger(Some(Duration::ZERO)).unwrap();
    (&client).write_all(b"last words").unwrap();
    drop(client);
    // Whatever arrived before the abort may be read; then the connection is over.
    let mut got = Vec::new();
    let end = server.read_to_end(&mut got);
    assert!(got.len() <= 10, "{got:?}");
    assert!(
        end.is_ok()
            || end
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::ECONNRESET)),
        "{end:?}"
    );
}

#[test]
fn a_port_is_free_again_once_its_listener_and_connections_are_closed() {
    // rsocket's ports are the CM's, freed when the ids go: no TIME_WAIT to wait out, so a
    // restarted server binds at once (SO_REUSEADDR has nothing to add).
    let (client, server, listener) = pair(7485);
    (&client).write_all(b"x").unwrap();
    drop((client, server, listener));
    let (a, b) = hosts();
    let again = RsListener::bind(at(b, 7485)).unwrap();
    let c = Builder::new().bind(at(a, 0)).connect(at(b, 7485)).unwrap();
    let (s, _) = again.accept().unwrap();
    (&c).write_all(b"y").unwrap();
    let mut got = [0u8; 1];
    (&s).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"y");
    // While a listener holds it, the port is taken.
    let e = RsListener::bind(at(b, 7485)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
}

/// rstream's bandwidth test turns inline sends off (`RDMA_INLINE` 0) at one end.
#[test]
fn no_inline_data_at_one_end_still_carries_both_ways() {
    let (a, b) = hosts();
    let listener = RsListener::bind(at(b, 7020)).unwrap();
    let no_inline = Config {
        inline: 0,
        ..Config::default()
    };
    let mut client = Builder::new()
        .config(no_inline)
        .bind(at(a, 0))
        .connect(at(b, 7020))
        .unwrap();
    let (mut server, _) = listener.accept().unwrap();
    for size in [1, 64, 4096, 1 << 16] {
        let data = pattern(size);
        client.write_all(&data).unwrap();
        let mut got = vec![0u8; size];
        server.read_exact(&mut got).unwrap();
        assert!(got == data);
        server.write_all(&data).unwrap();
        client.read_exact(&mut got).unwrap();
        assert!(got == data);
    }
}

/// riostream's latency test: each side `iowrite`s a message into the other's mapping and
/// spins, calling nothing, until the last byte of the other's arrives.
#[test]
fn iowrite_ping_pong_needs_no_reads_or_writes_between() {
    let (client, server, _l) = iomap_pair(7486);
    const LEN: usize = 64;
    const ROUNDS: usize = 2000;
    let side = move |s: xrdma_rsocket::RsStream, first: bool| {
        let target: &'static mut [u8] = Box::leak(vec![0xffu8; LEN].into_boxed_slice());
        let at = target.as_mut_ptr();
        // SAFETY: the leaked buffer lives for ever; its last byte is read volatile.
        unsafe { s.iomap(at, LEN, Some(0)) }.unwrap();
        // Both mappings are announced before the first write.
        (&s).write_all(b"m").unwrap();
        let mut one = [0u8; 1];
        (&s).read_exact(&mut one).unwrap();
        let wait = |marker: u8| {
            // SAFETY: inside the leaked buffer, which the peer writes by RDMA.
            while unsafe { std::ptr::read_volatile(at.add(LEN - 1)) } != marker {
                std::hint::spin_loop();
            }
        };
        // As riostream: one buffer is both the mapping the peer writes and what is sent,
        // its last byte the marker, set just before sending.
        let mut marker = 0u8;
        for _ in 0..ROUNDS {
            if !first {
                wait(marker);
                marker = marker.wrapping_add(1);
            }
            // SAFETY: as above; the peer writes it only after this round's write.
            unsafe { std::ptr::write_volatile(at.add(LEN - 1), marker) };
            marker = marker.wrapping_add(1);
            // SAFETY: as above.
            let msg = unsafe { std::slice::from_raw_parts(at, LEN) };
            let mut done = 0;
            while done < LEN {
                done += s.iowrite(&msg[done..], done as u64, 0).unwrap();
            }
            if first {
                wait(marker);
                marker = marker.wrapping_add(1);
            }
        }
        s
    };
    let server = std::thread::spawn(move || side(server, false));
    let _client = side(client, true);
    let _server = server.join().unwrap();
}
