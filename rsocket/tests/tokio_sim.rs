//! The tokio sockets between two contexts of a simulated network, in one process: echo of
//! every size, fifty connections on one runtime, tasks that wait before data (or a
//! connection, or room to write) comes, end of file after shutdown, refusal.
//!
//! Every test runs under a deadline, so that a lost wake-up fails it instead of hanging.

#![cfg(feature = "tokio")]

mod common;

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xrdma_rsocket::Builder;
use xrdma_rsocket::tokio::{RsListener, RsStream};

use common::{at, hosts};

/// `f`, or a panic if it takes a minute: a task that nothing wakes ends the test.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("a task was never woken")
}

/// Connects from host 1 to host 2.
async fn connect(port: u16) -> std::io::Result<RsStream> {
    let (a, b) = hosts();
    RsStream::connect_with(&Builder::new().bind(at(a, 0)), at(b, port)).await
}

/// A client on host 1 connected to a listener on host 2 at `port`.
async fn pair(port: u16) -> (RsStream, RsStream, RsListener) {
    let (a, b) = hosts();
    let listener = RsListener::bind(at(b, port)).await.unwrap();
    let client = connect(port).await.unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    assert_eq!(peer.ip(), a.ip());
    assert_eq!(client.peer_addr().unwrap(), at(b, port));
    assert_eq!(server.local_addr().unwrap(), at(b, port));
    (client, server, listener)
}

fn pattern(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251 + salt) as u8).collect()
}

/// Echoes `s` until its end of file, then ends its own; the bytes echoed.
async fn echo(mut s: RsStream) -> u64 {
    let (mut r, mut w) = s.split();
    let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
    w.shutdown().await.unwrap();
    n
}

#[tokio::test]
async fn echo_of_every_size() {
    within(async {
        let (client, server, _l) = pair(7101).await;
        let echoed = tokio::spawn(echo(server));
        let (mut r, mut w) = client.into_split();
        let mut size = 1;
        let mut sent = 0;
        while size <= 1 << 20 {
            let data = pattern(size, size);
            let mut got = vec![0u8; size];
            // Written and read at once: the rings on the way hold less than the largest size.
            let (wrote, read) = tokio::join!(w.write_all(&data), r.read_exact(&mut got));
            wrote.unwrap();
            read.unwrap();
            assert!(got == data, "echo of {size} bytes differs");
            sent += size as u64;
            size *= 4;
        }
        w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(echoed.await.unwrap(), sent);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_connections_on_one_runtime() {
    within(async {
        let (_, b) = hosts();
        let listener = RsListener::bind(at(b, 7102)).await.unwrap();
        let server = tokio::spawn(async move {
            let mut echoes = Vec::new();
            for _ in 0..50 {
                let (s, _) = listener.accept().await.unwrap();
                echoes.push(tokio::spawn(echo(s)));
            }
            let mut total = 0;
            for e in echoes {
                total += e.await.unwrap();
            }
            total
        });
        let clients: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(async move {
                    let s = connect(7102).await.unwrap();
                    let (mut r, mut w) = s.into_split();
                    let data = pattern(64 << 10, i);
                    let mut got = Vec::new();
                    let (wrote, read) = tokio::join!(
                        async {
                            w.write_all(&data).await?;
                            w.shutdown().await
                        },
                        r.read_to_end(&mut got)
                    );
                    wrote.unwrap();
                    read.unwrap();
                    assert!(got == data, "connection {i}'s echo differs");
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        assert_eq!(server.await.unwrap(), 50 * (64 << 10));
    })
    .await
}

#[tokio::test]
async fn a_reader_waiting_before_data_comes_is_woken() {
    within(async {
        let (mut client, server, _l) = pair(7103).await;
        let (mut r, _w) = server.into_split();
        for word in [&b"first"[..], b"second", b"third"] {
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; word.len()];
                r.read_exact(&mut buf).await.unwrap();
                (r, buf)
            });
            // Meanwhile the reader has run, found nothing and gone to sleep.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!reader.is_finished(), "read before anything was sent");
            client.write_all(word).await.unwrap();
            let (back, got) = reader.await.unwrap();
            assert_eq!(got, word);
            r = back;
        }
    })
    .await
}

#[tokio::test]
async fn an_accept_waiting_before_the_connection_is_woken() {
    within(async {
        let (_, b) = hosts();
        let listener = RsListener::bind(at(b, 7104)).await.unwrap();
        let accepting = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!accepting.is_finished());
        let mut client = connect(7104).await.unwrap();
        let mut server = accepting.await.unwrap().unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    })
    .await
}

#[tokio::test]
async fn a_writer_waiting_for_room_is_woken() {
    within(async {
        let (client, mut server, _l) = pair(7105).await;
        // More than the send and receive rings hold: the writer must wait for the reader.
        let data = pattern(2 << 20, 3);
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            let mut c = client;
            c.write_all(&data).await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!writer.is_finished(), "2 MiB written with nobody reading");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == expect);
        writer.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn end_of_file_after_shutdown_both_ways() {
    within(async {
        let (mut client, mut server, _l) = pair(7106).await;
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // The other way still works after the client's half-close.
        server.write_all(b"answer").await.unwrap();
        // Dropping an owned writing half ends the stream too.
        let (_r, w) = server.into_split();
        drop(w);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        let e = client.write(b"x").await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    })
    .await
}

#[tokio::test]
async fn nobody_listening_is_refused() {
    within(async {
        let e = connect(7199).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
    })
    .await
}
