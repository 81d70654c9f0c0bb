//! Property tests: no input makes a parser panic, and whatever parses
//! re-emits to bytes that parse to the same repr.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::icrc_vectors::VECTORS;
use super::util::{emit_frame, emit_transport, hex, normalized, outer_repr};
use crate::wire::frame::{self, FrameRepr, IpRepr, IpVersion};
use crate::wire::*;

/// Runs every view and `Repr` over `bytes`; where one parses, checks that
/// its re-emitted form parses to the same repr.
fn parse_everything(bytes: &[u8]) {
    if let Ok(frame) = EthernetFrame::new_checked(bytes) {
        let _ = (frame.src_addr(), frame.dst_addr(), frame.payload().len());
        let repr = EthernetRepr::parse(&frame).unwrap();
        let mut out = [0; ethernet::HEADER_LEN];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            EthernetRepr::parse(&EthernetFrame::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(packet) = Ipv4Packet::new_checked(bytes) {
        let _ = (
            packet.payload().len(),
            packet.verify_checksum(),
            packet.src_addr(),
        );
    }
    if let Ok(repr) = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(bytes)) {
        let mut out = vec![0; repr.buffer_len()];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(packet) = Ipv6Packet::new_checked(bytes) {
        let _ = (
            packet.payload().len(),
            packet.flow_label(),
            packet.dst_addr(),
        );
    }
    if let Ok(repr) = Ipv6Repr::parse(&Ipv6Packet::new_unchecked(bytes)) {
        let mut out = vec![0; repr.buffer_len()];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(packet) = UdpPacket::new_checked(bytes) {
        let _ = (packet.payload().len(), packet.checksum());
    }
    if let Ok(repr) = UdpRepr::parse(&UdpPacket::new_unchecked(bytes)) {
        let mut out = vec![0; repr.buffer_len()];
        repr.emit(&mut UdpPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            UdpRepr::parse(&UdpPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(packet) = BthPacket::new_checked(bytes) {
        let _ = (
            packet.payload().len(),
            packet.psn(),
            packet.dest_qp(),
            packet.tver(),
        );
    }
    if let Ok(repr) = BthRepr::parse(&BthPacket::new_unchecked(bytes)) {
        let mut out = [0; bth::HEADER_LEN];
        repr.emit(&mut BthPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            BthRepr::parse(&BthPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(repr) = RethRepr::parse(&RethPacket::new_unchecked(bytes)) {
        let mut out = [0; reth::HEADER_LEN];
        repr.emit(&mut RethPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            RethRepr::parse(&RethPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(repr) = AethRepr::parse(&AethPacket::new_unchecked(bytes)) {
        let mut out = [0; aeth::HEADER_LEN];
        repr.emit(&mut AethPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            AethRepr::parse(&AethPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(repr) = DethRepr::parse(&DethPacket::new_unchecked(bytes)) {
        let mut out = [0; deth::HEADER_LEN];
        repr.emit(&mut DethPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            DethRepr::parse(&DethPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(repr) = ImmDtRepr::parse(&ImmDtPacket::new_unchecked(bytes)) {
        let mut out = [0; immdt::HEADER_LEN];
        repr.emit(&mut ImmDtPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            ImmDtRepr::parse(&ImmDtPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(repr) = IethRepr::parse(&IethPacket::new_unchecked(bytes)) {
        let mut out = [0; immdt::HEADER_LEN];
        repr.emit(&mut IethPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            IethRepr::parse(&IethPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(repr) = AtomicEthRepr::parse(&AtomicEthPacket::new_unchecked(bytes)) {
        let mut out = [0; atomic::ATOMIC_ETH_LEN];
        repr.emit(&mut AtomicEthPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            AtomicEthRepr::parse(&AtomicEthPacket::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(repr) = AtomicAckEthRepr::parse(&AtomicAckEthPacket::new_unchecked(bytes)) {
        let mut out = [0; atomic::ATOMIC_ACK_ETH_LEN];
        repr.emit(&mut AtomicAckEthPacket::new_unchecked(&mut out[..]))
            .unwrap();
        let reparsed = AtomicAckEthRepr::parse(&AtomicAckEthPacket::new_unchecked(&out[..]));
        assert_eq!(reparsed, Ok(repr));
    }
    if let Ok((repr, payload)) = TransportRepr::parse(bytes) {
        let out = emit_transport(&repr, payload);
        assert_eq!(out.len(), bytes.len(), "aligned packets keep their length");
        let (reparsed, reparsed_payload) = TransportRepr::parse(&out).unwrap();
        assert_eq!((reparsed, reparsed_payload), (repr, payload));
    }
    for headers_len in [icrc::V4_HEADERS_LEN, icrc::V6_HEADERS_LEN] {
        if let Some((headers, transport)) = bytes.split_at_checked(headers_len) {
            let _ = icrc::check(headers, transport);
        }
    }
    check_frame_round_trip(bytes);
}

/// If `bytes` parses as a frame, rebuilds it from the parsed reprs and the
/// raw transport, and checks that the rebuilt frame parses to the same
/// reprs (IPv4 normalised to ident 0 and DF, which xrdma always emits).
fn check_frame_round_trip(bytes: &[u8]) {
    let Ok(parsed) = frame::parse_frame(bytes) else {
        return;
    };
    let rebuilt = emit_frame(&outer_repr(&parsed), parsed.transport);
    let reparsed = frame::parse_frame(&rebuilt).expect("rebuilt frame parses");
    assert_eq!(reparsed.eth, parsed.eth);
    assert_eq!(reparsed.ip, normalized(parsed.ip));
    assert_eq!(reparsed.udp, parsed.udp);
    assert_eq!(reparsed.transport, parsed.transport);
    if let Ok(transport) = TransportRepr::parse(parsed.transport) {
        assert_eq!(TransportRepr::parse(reparsed.transport), Ok(transport));
    }
}

fn valid_opcode() -> impl Strategy<Value = Opcode> {
    let valid: Vec<Opcode> = (0..=255u8)
        .map(Opcode::new)
        .filter(|op| op.is_valid())
        .collect();
    select(valid)
}

fn arb_bth() -> impl Strategy<Value = BthRepr> {
    (
        valid_opcode(),
        any::<[bool; 6]>(),
        any::<u16>(),
        0..=Qpn::MAX.value(),
        0..=Psn::MASK,
    )
        .prop_map(
            |(opcode, [solicited, mig_req, fecn, becn, ack_req, _], pkey, qpn, psn)| BthRepr {
                opcode,
                solicited,
                mig_req,
                pad_count: 0,
                pkey,
                fecn,
                becn,
                dest_qp: Qpn::new_masked(qpn),
                ack_req,
                psn: Psn::new_masked(psn),
            },
        )
}

fn arb_syndrome() -> impl Strategy<Value = Syndrome> {
    let naks = vec![
        NakCode::PsnSequenceError,
        NakCode::InvalidRequest,
        NakCode::RemoteAccessError,
        NakCode::RemoteOperationalError,
        NakCode::InvalidRdRequest,
    ];
    prop_oneof![
        (0..32u8).prop_map(|credit| Syndrome::Ack { credit }),
        (0..32u8).prop_map(|timer| Syndrome::RnrNak { timer }),
        select(naks).prop_map(Syndrome::Nak),
    ]
}

/// A valid transport packet: the headers its opcode needs and a payload if
/// it may carry one.
fn arb_transport() -> impl Strategy<Value = (TransportRepr, Vec<u8>)> {
    (
        arb_bth(),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (arb_syndrome(), 0..=0xff_ffffu32, any::<u32>(), any::<u32>()),
        vec(any::<u8>(), 0..80),
    )
        .prop_map(
            |(bth, (va, key, len, swap, compare), (syndrome, seq, imm, qp), payload)| {
                let info = bth.opcode.info().expect("valid opcode");
                let has = |h| info.headers.contains(h);
                let repr = TransportRepr {
                    bth,
                    reth: has(ExtHeaders::RETH).then_some(RethRepr {
                        va,
                        rkey: Rkey::new(key),
                        dma_len: len,
                    }),
                    aeth: has(ExtHeaders::AETH).then_some(AethRepr {
                        syndrome,
                        msn: Msn::new_masked(seq),
                    }),
                    deth: has(ExtHeaders::DETH).then_some(DethRepr {
                        qkey: Qkey::new(key),
                        src_qp: Qpn::new_masked(qp),
                    }),
                    imm: has(ExtHeaders::IMM_DT).then_some(imm),
                    ieth: has(ExtHeaders::IETH).then_some(Rkey::new(imm)),
                    atomic: has(ExtHeaders::ATOMIC_ETH).then_some(AtomicEthRepr {
                        va,
                        rkey: Rkey::new(key),
                        swap_add: swap,
                        compare,
                    }),
                    atomic_ack: has(ExtHeaders::ATOMIC_ACK_ETH)
                        .then_some(AtomicAckEthRepr { orig: swap }),
                };
                let payload = if info.has_payload {
                    payload
                } else {
                    Vec::new()
                };
                (repr, payload)
            },
        )
}

/// A valid outer header set for a transport packet of `transport_len`.
fn arb_outer(transport_len: usize) -> impl Strategy<Value = FrameRepr> {
    let udp = (any::<u16>(), any::<u16>()).prop_map(move |(src_port, dst_port)| UdpRepr {
        src_port,
        dst_port,
        payload_len: transport_len + icrc::ICRC_LEN,
    });
    let v4 = (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u8>(), any::<u8>()).prop_map(
        move |(src, dst, ttl, tos)| {
            IpRepr::V4(Ipv4Repr {
                src: src.into(),
                dst: dst.into(),
                protocol: 17,
                payload_len: transport_len + icrc::ICRC_LEN + 8,
                ttl,
                tos,
                ident: 0,
                dont_frag: true,
            })
        },
    );
    let v6 = (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u8>(),
        any::<u8>(),
        0..=0xf_ffffu32,
    )
        .prop_map(move |(src, dst, hop_limit, traffic_class, flow_label)| {
            IpRepr::V6(Ipv6Repr {
                src: src.into(),
                dst: dst.into(),
                next_header: 17,
                payload_len: transport_len + icrc::ICRC_LEN + 8,
                hop_limit,
                traffic_class,
                flow_label,
            })
        });
    (prop_oneof![v4, v6], udp, any::<[u8; 6]>(), any::<[u8; 6]>()).prop_map(
        |(ip, udp, src, dst)| {
            let ethertype = match ip.version() {
                IpVersion::V4 => EtherType::Ipv4,
                IpVersion::V6 => EtherType::Ipv6,
            };
            let eth = EthernetRepr {
                src: MacAddr(src),
                dst: MacAddr(dst),
                ethertype,
            };
            FrameRepr { eth, ip, udp }
        },
    )
}

/// A valid frame, the reprs it was built from and its payload.
fn arb_frame() -> impl Strategy<Value = (Vec<u8>, FrameRepr, TransportRepr, Vec<u8>)> {
    arb_transport().prop_flat_map(|(transport, payload)| {
        let bytes = emit_transport(&transport, &payload);
        arb_outer(bytes.len()).prop_map(move |outer| {
            (
                emit_frame(&outer, &bytes),
                outer,
                transport,
                payload.clone(),
            )
        })
    })
}

/// Edits applied to a valid frame.
#[derive(Debug, Clone)]
struct Mutation {
    flips: Vec<(usize, u8)>,
    truncate_to: Option<usize>,
    reseal: bool,
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    (
        vec((any::<usize>(), 1..=255u8), 0..4),
        proptest::option::of(any::<usize>()),
        any::<bool>(),
    )
        .prop_map(|(flips, truncate_to, reseal)| Mutation {
            flips,
            truncate_to,
            reseal,
        })
}

fn mutate(mut frame: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    for &(at, mask) in &mutation.flips {
        let len = frame.len();
        frame[at % len] ^= mask;
    }
    if let Some(to) = mutation.truncate_to {
        frame.truncate(to % (frame.len() + 1));
    }
    if mutation.reseal {
        // Recompute the ICRC (when the headers allow it) so the mutation
        // reaches the parsers behind the ICRC check.
        for version in [IpVersion::V4, IpVersion::V6] {
            let _ = frame::seal_frame(&mut frame, version);
        }
    }
    frame
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2000)) {
        parse_everything(&bytes);
    }

    #[test]
    fn generated_frames_parse_to_their_reprs((bytes, outer, transport, payload) in arb_frame()) {
        let parsed = frame::parse_frame(&bytes).unwrap();
        prop_assert_eq!((parsed.eth, parsed.ip, parsed.udp), (outer.eth, outer.ip, outer.udp));
        let (reparsed, reparsed_payload) = TransportRepr::parse(parsed.transport).unwrap();
        let pad_count = transport::pad_len(payload.len()) as u8;
        let expected = TransportRepr { bth: BthRepr { pad_count, ..transport.bth }, ..transport };
        prop_assert_eq!(reparsed, expected);
        prop_assert_eq!(reparsed_payload, &payload[..]);
        parse_everything(&bytes);
    }

    #[test]
    fn mutated_generated_frames_never_panic(
        (bytes, ..) in arb_frame(),
        mutation in arb_mutation(),
    ) {
        parse_everything(&mutate(bytes, &mutation));
    }

    #[test]
    fn mutated_scapy_frames_never_panic(
        index in 0..VECTORS.len(),
        mutation in arb_mutation(),
    ) {
        let bytes = mutate(hex(VECTORS[index].frame), &mutation);
        parse_everything(&bytes);
        // Also the transport alone, where the ICRC does not get in the way.
        if let Some(transport) = bytes.get(42..) {
            parse_everything(transport);
        }
    }
}
