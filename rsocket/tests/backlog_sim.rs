//! A listener whose backlog is full refuses new connections with ECONNREFUSED, keeps those
//! it queued, and takes new ones again once `accept` makes room: on the simulated network.

use std::io::{Read, Write};

use xrdma_rsocket::{Builder, RsStream};

mod common;

use common::{at, hosts};

const PORT: u16 = 7201;
const BACKLOG: usize = 2;

fn client() -> std::io::Result<RsStream> {
    let (a, b) = hosts();
    Builder::new().bind(at(a, 0)).connect(at(b, PORT))
}

fn assert_refused(r: std::io::Result<RsStream>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{what}: {e}");
}

#[test]
fn a_full_backlog_refuses_connections_then_takes_them_again_after_accept() {
    let (_, b) = hosts();
    let listener = Builder::new().backlog(BACKLOG).listen(at(b, PORT)).unwrap();
    let mut clients: Vec<RsStream> = (0..BACKLOG).map(|_| client().unwrap()).collect();
    assert_refused(client(), "a connection beyond the backlog");
    assert_refused(client(), "a second one beyond the backlog");

    let (first, _) = listener.accept().unwrap();
    clients.push(client().expect("a connection once accept made room"));
    assert_refused(client(), "a connection when the backlog is full again");

    // The queued connections are whole: each carries data to the one accepted for it, and
    // no refused one was queued.
    let mut servers = vec![first];
    servers.extend((0..BACKLOG).map(|_| listener.accept().unwrap().0));
    listener.set_nonblocking(true).unwrap();
    let e = listener.accept().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
    for (i, c) in clients.iter().enumerate() {
        let local = c.local_addr().unwrap();
        let s = servers
            .iter()
            .find(|s| s.peer_addr().unwrap() == local)
            .unwrap_or_else(|| panic!("client {i} ({local}) was not accepted"));
        (&*c).write_all(&[i as u8; 3]).unwrap();
        let mut got = [0u8; 3];
        (&*s).read_exact(&mut got).unwrap();
        assert_eq!(got, [i as u8; 3], "client {i}");
    }
    assert_eq!(xrdma_rsocket::stats().service_panics, 0);
}
