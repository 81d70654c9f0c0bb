//! Wireshark (tshark) must decode frames built by `emit_frame_headers`,
//! `TransportRepr::emit` and `seal_frame` as RoCEv2 (UDP 4791 carrying an
//! InfiniBand BTH) with the fields and ICRC we meant.
//!
//! Wireshark 4.0 displays the ICRC (`infiniband.invariant.crc`) but does
//! not verify it: it has no checksum-status field for it. So the ICRCs of
//! the frames rebuilt from the scapy vectors are compared with scapy's
//! values; for the other frames tshark's field shows that the trailer sits
//! where the IP and UDP lengths say.

use std::process::Command;

use super::icrc_vectors::VECTORS;
use super::pcap::write_pcap;
use super::util::{emit_frame, emit_transport, hex, reemit};
use crate::wire::frame::{FrameRepr, IpRepr, IpVersion, parse_frame};
use crate::wire::{
    AethRepr, AtomicAckEthRepr, AtomicEthRepr, BthRepr, DethRepr, EthernetRepr, Ipv4Repr, Ipv6Repr,
    MacAddr, Msn, NakCode, Opcode, Psn, Qkey, Qpn, Rkey, Syndrome, TransportRepr, UdpRepr,
};

/// The tshark fields the test reads, in output order.
const FIELDS: [&str; 5] = [
    "frame.protocols",
    "infiniband.bth.opcode",
    "infiniband.bth.destqp",
    "infiniband.bth.psn",
    "infiniband.invariant.crc",
];

fn bth(opcode: Opcode, qpn: u32, psn: u32) -> BthRepr {
    BthRepr {
        ack_req: true,
        ..BthRepr::new(opcode, Qpn::new_masked(qpn), Psn::new_masked(psn))
    }
}

/// A frame around `transport`, with `version` addressing.
fn frame(version: IpVersion, transport: &TransportRepr, payload: &[u8]) -> Vec<u8> {
    let transport = emit_transport(transport, payload);
    let udp = UdpRepr {
        src_port: 0xc0de,
        dst_port: 4791,
        payload_len: transport.len() + 4,
    };
    let ip = match version {
        IpVersion::V4 => IpRepr::V4(Ipv4Repr {
            src: [198, 18, 1, 1].into(),
            dst: [198, 18, 1, 2].into(),
            protocol: 17,
            payload_len: udp.buffer_len(),
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
        }),
        IpVersion::V6 => IpRepr::V6(Ipv6Repr {
            src: "2001:2::1".parse().unwrap(),
            dst: "2001:2::2".parse().unwrap(),
            next_header: 17,
            payload_len: udp.buffer_len(),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }),
    };
    let eth = EthernetRepr {
        src: MacAddr([2, 0, 0, 0, 0, 0x0a]),
        dst: MacAddr([2, 0, 0, 0, 0, 0x0b]),
        ethertype: version.ethertype(),
    };
    emit_frame(&FrameRepr { eth, ip, udp }, &transport)
}

/// Frames whose ICRC no independent tool checked: extra opcodes.
fn extra_frames() -> Vec<Vec<u8>> {
    let mut atomic_ack = TransportRepr::new(bth(Opcode::RC_ATOMIC_ACKNOWLEDGE, 0x42, 9));
    atomic_ack.aeth = Some(AethRepr {
        syndrome: Syndrome::Ack { credit: 31 },
        msn: Msn::new_masked(5),
    });
    atomic_ack.atomic_ack = Some(AtomicAckEthRepr {
        orig: 0x1122_3344_5566_7788,
    });

    let mut cas = TransportRepr::new(bth(Opcode::RC_COMPARE_SWAP, 0x43, 10));
    cas.atomic = Some(AtomicEthRepr {
        va: 0x2000,
        rkey: Rkey::new(7),
        swap_add: 1,
        compare: 2,
    });

    let mut nak = TransportRepr::new(bth(Opcode::RC_ACKNOWLEDGE, 0x44, 0xffffff));
    nak.aeth = Some(AethRepr {
        syndrome: Syndrome::Nak(NakCode::PsnSequenceError),
        msn: Msn::new_masked(0x10),
    });

    let mut ud_imm = TransportRepr::new(bth(Opcode::UD_SEND_ONLY_WITH_IMMEDIATE, 0x2a, 0x100));
    ud_imm.deth = Some(DethRepr {
        qkey: Qkey::new(0x8001_0000),
        src_qp: Qpn::new_masked(0x99),
    });
    ud_imm.imm = Some(0xdead_beef);

    let write_first = {
        let mut t = TransportRepr::new(bth(Opcode::RC_RDMA_WRITE_FIRST, 0x45, 77));
        t.reth = Some(crate::wire::RethRepr {
            va: 0x10_0000,
            rkey: Rkey::new(0x1234),
            dma_len: 8192,
        });
        t
    };
    vec![
        frame(IpVersion::V4, &atomic_ack, &[]),
        frame(IpVersion::V6, &cas, &[]),
        frame(IpVersion::V4, &nak, &[]),
        frame(IpVersion::V6, &ud_imm, b"ud imm payload"),
        frame(IpVersion::V4, &write_first, &[0x5a; 1024]),
    ]
}

/// What tshark should print for `frame`: opcode, QPN, PSN, ICRC as tshark
/// shows it (the trailer bytes read big-endian).
fn expected_fields(frame: &[u8]) -> (u8, u32, u32, u32) {
    let parsed = parse_frame(frame).expect("our frame parses");
    let (t, _) = TransportRepr::parse(parsed.transport).expect("our transport parses");
    let trailer: [u8; 4] = frame[frame.len() - 4..].try_into().unwrap();
    (
        t.bth.opcode.value(),
        t.bth.dest_qp.value(),
        t.bth.psn.value(),
        u32::from_be_bytes(trailer),
    )
}

fn parse_hex(field: &str) -> u32 {
    u32::from_str_radix(field.trim_start_matches("0x"), 16).expect("hex field")
}

#[test]
fn wireshark_decodes_emitted_frames_as_rocev2() {
    match Command::new("tshark").arg("-v").output() {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "tshark is not on PATH or does not run: install Wireshark's tshark \
             (Debian/Ubuntu: apt-get install -y tshark) to run this test"
        ),
    }

    // Frames rebuilt by xrdma from the scapy vectors, then the extras.
    let mut frames: Vec<Vec<u8>> = VECTORS.iter().map(|v| reemit(&hex(v.frame))).collect();
    frames.extend(extra_frames());

    let path = std::env::temp_dir().join(format!("xrdma-wire-tshark-{}.pcap", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("create pcap");
    write_pcap(&mut file, &frames).expect("write pcap");
    drop(file);

    let mut command = Command::new("tshark");
    command
        .arg("-n")
        .arg("-r")
        .arg(&path)
        .args(["-T", "fields", "-E", "separator=/t"]);
    for field in FIELDS {
        command.args(["-e", field]);
    }
    let output = command.output().expect("run tshark");
    if std::env::var_os("XRDMA_KEEP_PCAP").is_none() {
        let _ = std::fs::remove_file(&path);
    }
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), frames.len(), "one line per frame:\n{stdout}");
    for (index, (line, frame)) in lines.iter().zip(&frames).enumerate() {
        let columns: Vec<&str> = line.split('\t').collect();
        assert_eq!(columns.len(), FIELDS.len(), "frame {index}: {line}");
        assert!(
            columns[0].contains("udp:infiniband"),
            "frame {index} not decoded as RoCEv2: {}",
            columns[0]
        );
        let (opcode, qpn, psn, icrc) = expected_fields(frame);
        assert_eq!(
            columns[1].parse::<u8>().ok(),
            Some(opcode),
            "frame {index} opcode"
        );
        assert_eq!(parse_hex(columns[2]), qpn, "frame {index} QPN");
        assert_eq!(
            columns[3].parse::<u32>().ok(),
            Some(psn),
            "frame {index} PSN"
        );
        assert_eq!(
            parse_hex(columns[4]),
            icrc,
            "frame {index} ICRC as tshark locates it"
        );
        if let Some(vector) = VECTORS.get(index) {
            assert_eq!(
                parse_hex(columns[4]),
                vector.icrc.swap_bytes(),
                "{}: tshark shows a different ICRC than scapy computed",
                vector.name
            );
        }
    }
}
