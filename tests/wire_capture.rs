//! Frames an `xdp` endpoint puts on a real wire, captured with tshark on the receiving
//! host, decode as RoCEv2 with the fields we sent, and the ICRC Wireshark shows is the one the
//! receiving `udp` endpoint checked against its own reconstruction of the headers.
//!
//! Needs root (namespaces, AF_XDP) and tshark; fails saying so without them.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xrdma_testnet::Topology;
use xrdma_verbs::net::{
    FrameIo, TxMeta, send_copy,
    udp::{UdpConfig, UdpIo},
    xdp::{XdpConfig, XdpIo},
};
use xrdma_verbs::wire::{self, BthRepr, DethRepr, Opcode, Psn, Qkey, Qpn, TransportRepr};

const COUNT: u32 = 20;

fn transport(psn: u32) -> Vec<u8> {
    let repr = TransportRepr {
        deth: Some(DethRepr {
            qkey: Qkey::new(0x1111_1111),
            src_qp: Qpn::new_masked(0x12),
        }),
        ..TransportRepr::new(BthRepr::new(
            Opcode::UD_SEND_ONLY,
            Qpn::new_masked(0xabc),
            Psn::new_masked(psn),
        ))
    };
    let payload: Vec<u8> = (0..100u32).map(|i| (i + psn) as u8).collect();
    let mut buf = vec![0u8; 256];
    let len = repr.emit(&payload, &mut buf).unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn captured_xdp_frames_decode_as_rocev2_in_tshark() {
    assert!(
        Command::new("tshark")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tshark is needed to decode captured frames: apt-get install tshark (scripts/setup.sh does)"
    );
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    let a_iface = a.iface().to_string();
    let b_iface = b.iface().to_string();
    let mut x = a
        .ns()
        .run(move || XdpIo::open(&XdpConfig::new(a_iface)))
        .unwrap();
    let mut u = b
        .ns()
        .run(move || UdpIo::open(&UdpConfig::new(b_iface)))
        .unwrap();

    let pcap = std::env::temp_dir().join(format!("xrdma-capture-{}.pcap", std::process::id()));
    let mut tshark = b
        .ns()
        .command("tshark")
        .args([
            "-i",
            b.iface(),
            "-f",
            "udp dst port 4791",
            "-c",
            &COUNT.to_string(),
            "-a",
            "duration:20",
            "-w",
        ])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tshark");
    // tshark says "Capturing on ..." as it starts; the capture may go live a little later,
    // so frames are sent in rounds until tshark has caught COUNT of them and exits.
    let mut stderr = BufReader::new(tshark.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Capturing on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "tshark exited before capturing"
        );
    }

    let to = SocketAddr::new(IpAddr::V4(b.ipv4()), wire::ROCEV2_PORT);
    let mut sent = 0u32;
    let mut received = 0usize;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = tshark.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tshark caught fewer than {COUNT} of {sent} frames"
        );
        for _ in 0..COUNT {
            let t = transport(sent);
            assert!(send_copy(&mut x, &TxMeta::to(to, src_port(sent)), &t).unwrap());
            sent += 1;
        }
        x.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        u.recv(1024, &mut |_, _| received += 1).unwrap();
    };
    assert!(status.success());
    let settle = Instant::now() + Duration::from_secs(2);
    while received < sent as usize && Instant::now() < settle {
        u.recv(1024, &mut |_, _| received += 1).unwrap();
    }
    assert_eq!(
        received, sent as usize,
        "the udp endpoint accepted (ICRC-checked) every frame"
    );

    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "frame.protocols",
            "-e",
            "infiniband.bth.opcode",
            "-e",
            "infiniband.bth.destqp",
        ])
        .args([
            "-e",
            "infiniband.bth.psn",
            "-e",
            "infiniband.deth.q_key",
            "-e",
            "infiniband.invariant.crc",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&pcap);
    assert!(
        out.status.success(),
        "tshark -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), COUNT as usize, "{text}");
    for row in &rows {
        let psn: u32 = row[3].parse().unwrap();
        assert!(psn < sent, "{row:?}");
        assert!(row[0].contains("udp:infiniband"), "{row:?}");
        assert_eq!(row[1], "100", "opcode 0x64 (UD SEND_ONLY) is 100: {row:?}");
        assert_eq!(row[2], "0x000abc", "{row:?}");
        assert_eq!(row[4], "0x0000000011111111", "{row:?}");
        // The ICRC tshark shows (the trailer read big-endian) is the one we computed: rebuild
        // it the way the receiving udp endpoint did, from the headers it reconstructs.
        let shown = u32::from_str_radix(row[5].trim_start_matches("0x"), 16).unwrap();
        let t = transport(psn);
        let headers = wire::icrc::pseudo_headers_v4(
            a.ipv4(),
            b.ipv4(),
            0xc000 + psn as u16,
            4791,
            t.len() + 4,
        )
        .unwrap();
        let ours = wire::icrc::compute(&headers, &t).unwrap();
        assert_eq!(shown, ours.swap_bytes(), "{row:?}");
    }
}

/// UDP source port of frame `n`: varied, as RoCEv2 uses it for entropy.
fn src_port(n: u32) -> u16 {
    0xc000 + (n % 0x4000) as u16
}
