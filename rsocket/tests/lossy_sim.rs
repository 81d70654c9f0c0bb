//! Stream rsockets on a simulated network that loses, duplicates and reorders datagrams
//! (seeded): every size from 1 B to 1 MiB echoes intact both ways, and a half-close still
//! ends the stream after all its data.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::{net, pair};

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt ^ (i >> 11) as u8)
        .collect()
}

#[test]
fn every_size_echoes_intact_through_loss_duplication_and_reordering() {
    // Connected on a clean network, then the impairments begin (the CM's own retries are
    // tested elsewhere); RC's go-back-N and the rsocket's credits carry the data.
    let (client, server, _l) = pair(7701);
    net().reconfigure(|c| {
        c.seed = 11;
        c.loss = 0.05;
        c.duplicate = 0.02;
        c.reorder = 0.05;
        c.reorder_delay = Duration::from_micros(300);
    });
    let echo = std::thread::spawn(move || {
        let mut s = server;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                s.shutdown(Shutdown::Write).unwrap();
                return;
            }
            s.write_all(&buf[..n]).unwrap();
        }
    });
    let mut c = client;
    let mut len = 1;
    let mut salt = 0u8;
    while len <= 1 << 20 {
        let data = pattern(len, salt);
        let reader = {
            let r = c.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut got = vec![0u8; len];
                (&r).read_exact(&mut got).unwrap();
                got
            })
        };
        c.write_all(&data).unwrap();
        assert!(reader.join().unwrap() == data, "{len} bytes echoed differ");
        len *= 4;
        salt = salt.wrapping_add(1);
    }
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{} bytes after the last echo", rest.len());
    echo.join().unwrap();
    let stats = net().stats();
    assert!(
        stats.lost > 0 && stats.duplicated > 0,
        "the network was not impaired: {stats:?}"
    );
}
