//! Property tests of the CM codecs: no input makes `CmMessage::parse` or
//! `CmaHeaderRepr::parse` panic, whatever parses re-emits to bytes that
//! parse to the same message, and every repr whose fields fit their bits
//! round-trips through emit and parse.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::wire::cm::*;
use crate::wire::cma::{CMA_HEADER_LEN, CmaHeaderRepr};
use crate::wire::mad::{MAD_HEADER_LEN, MAD_LEN, MadHeaderRepr, MadPacket};
use crate::wire::{Error, Psn, Qkey, Qpn};

/// Parses `bytes` as a MAD and as an rdma_cm header; where either parses,
/// checks that its re-emitted form parses to the same repr.
fn parse_everything(bytes: &[u8]) {
    match CmMessage::parse(bytes) {
        Ok((header, message)) => {
            assert!(bytes.len() >= MAD_LEN);
            let mut out = [0u8; MAD_LEN];
            message.emit(header.tid, &mut out).unwrap();
            let (reheader, reparsed) = CmMessage::parse(&out).unwrap();
            assert_eq!(reparsed, message);
            assert_eq!(reheader, MadHeaderRepr::cm(message.attr_id(), header.tid));
        }
        Err(Error::Truncated) => assert!(bytes.len() < MAD_LEN),
        Err(Error::Unsupported | Error::Malformed) => {}
        Err(Error::BadChecksum) => panic!("no checksum in a MAD"),
    }
    if let Some(body) = bytes.get(MAD_HEADER_LEN..) {
        // Every body parser over the same bytes, whatever the attribute.
        let _ = (
            ReqRepr::parse(body),
            RepRepr::parse(body),
            RtuRepr::parse(body),
        );
        let _ = (RejRepr::parse(body), MraRepr::parse(body));
        let _ = (DreqRepr::parse(body), DrepRepr::parse(body));
        let _ = (SidrReqRepr::parse(body), SidrRepRepr::parse(body));
    }
    match CmaHeaderRepr::parse(bytes) {
        Ok(repr) => {
            let mut out = [0u8; CMA_HEADER_LEN];
            repr.emit(&mut out).unwrap();
            assert_eq!(CmaHeaderRepr::parse(&out), Ok(repr));
        }
        Err(Error::Truncated) => assert!(bytes.len() < CMA_HEADER_LEN),
        Err(error) => assert_eq!(error, Error::Unsupported),
    }
}

/// `N` arbitrary bytes (proptest's array strategies stop at 32).
fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    vec(any::<u8>(), N).prop_map(|v| v.try_into().expect("N bytes"))
}

fn comm_id() -> impl Strategy<Value = CommId> {
    any::<u32>().prop_map(CommId)
}

fn qpn() -> impl Strategy<Value = Qpn> {
    (0..=Qpn::MAX.value()).prop_map(Qpn::new_masked)
}

fn psn() -> impl Strategy<Value = Psn> {
    (0..=Psn::MASK).prop_map(Psn::new_masked)
}

fn msg_kind() -> impl Strategy<Value = MsgKind> {
    select(vec![MsgKind::Req, MsgKind::Rep, MsgKind::Other])
}

fn path() -> impl Strategy<Value = CmPath> {
    (
        (
            any::<u16>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
        ),
        (0..=0xf_ffffu32, 0..64u8, any::<u8>(), any::<u8>()),
        (0..16u8, any::<bool>(), 0..32u8),
    )
        .prop_map(
            |(
                (local_lid, remote_lid, local_gid, remote_gid),
                (flow_label, packet_rate, traffic_class, hop_limit),
                (sl, subnet_local, local_ack_timeout),
            )| CmPath {
                local_lid,
                remote_lid,
                local_gid: local_gid.into(),
                remote_gid: remote_gid.into(),
                flow_label,
                packet_rate,
                traffic_class,
                hop_limit,
                sl,
                subnet_local,
                local_ack_timeout,
            },
        )
}

fn req() -> impl Strategy<Value = ReqRepr> {
    let ids = (
        comm_id(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        qpn(),
        any::<[u8; 2]>(),
        0..=0xff_ffffu32,
        0..=0xff_ffffu32,
    );
    let flags = (
        0..32u8,
        select(vec![CmTransport::Rc, CmTransport::Uc, CmTransport::Xrc]),
        any::<bool>(),
        psn(),
        0..32u8,
        0..8u8,
        any::<u16>(),
        0..16u8,
        any::<[bool; 3]>(),
        0..8u8,
        0..16u8,
        0..8u8,
    );
    (ids, flags, path(), path(), bytes::<REQ_PRIVATE_LEN>()).prop_map(
        |(
            (local_comm_id, sid, local_ca_guid, qkey, local_qpn, [rr, depth], leecn, reecn),
            (
                rto,
                transport,
                e2e,
                starting_psn,
                lto,
                retry,
                pkey,
                mtu,
                [rdc, srq, _],
                rnr,
                max,
                ext,
            ),
            primary_path,
            alternate_path,
            private_data,
        )| ReqRepr {
            local_comm_id,
            service_id: ServiceId(sid),
            local_ca_guid,
            local_qkey: Qkey::new(qkey),
            local_qpn,
            responder_resources: rr,
            initiator_depth: depth,
            local_eecn: leecn,
            remote_eecn: reecn,
            remote_cm_response_timeout: rto,
            transport,
            e2e_flow_control: e2e,
            starting_psn,
            local_cm_response_timeout: lto,
            retry_count: retry,
            pkey,
            path_mtu: mtu,
            rdc_exists: rdc,
            rnr_retry_count: rnr,
            max_cm_retries: max,
            srq,
            extended_transport: ext,
            primary_path,
            alternate_path,
            private_data,
        },
    )
}

fn rep() -> impl Strategy<Value = RepRepr> {
    (
        (
            comm_id(),
            comm_id(),
            any::<u32>(),
            qpn(),
            0..=0xff_ffffu32,
            psn(),
        ),
        (
            any::<[u8; 2]>(),
            0..32u8,
            0..4u8,
            any::<[bool; 2]>(),
            0..8u8,
        ),
        any::<u64>(),
        bytes::<REP_PRIVATE_LEN>(),
    )
        .prop_map(
            |(
                (local_comm_id, remote_comm_id, qkey, local_qpn, local_eecn, starting_psn),
                ([rr, depth], delay, failover, [e2e, srq], rnr),
                local_ca_guid,
                private_data,
            )| RepRepr {
                local_comm_id,
                remote_comm_id,
                local_qkey: Qkey::new(qkey),
                local_qpn,
                local_eecn,
                starting_psn,
                responder_resources: rr,
                initiator_depth: depth,
                target_ack_delay: delay,
                failover_accepted: failover,
                e2e_flow_control: e2e,
                rnr_retry_count: rnr,
                srq,
                local_ca_guid,
                private_data,
            },
        )
}

fn rtu() -> impl Strategy<Value = RtuRepr> {
    (comm_id(), comm_id(), bytes::<RTU_PRIVATE_LEN>()).prop_map(
        |(local_comm_id, remote_comm_id, private_data)| RtuRepr {
            local_comm_id,
            remote_comm_id,
            private_data,
        },
    )
}

fn rej() -> impl Strategy<Value = RejRepr> {
    (
        comm_id(),
        comm_id(),
        msg_kind(),
        0..128u8,
        any::<u16>(),
        bytes::<REJ_ARI_LEN>(),
        bytes::<REJ_PRIVATE_LEN>(),
    )
        .prop_map(
            |(local_comm_id, remote_comm_id, msg_rejected, ari_len, reason, ari, private_data)| {
                RejRepr {
                    local_comm_id,
                    remote_comm_id,
                    msg_rejected,
                    ari_len,
                    reason,
                    ari,
                    private_data,
                }
            },
        )
}

fn mra() -> impl Strategy<Value = MraRepr> {
    (
        comm_id(),
        comm_id(),
        msg_kind(),
        0..32u8,
        bytes::<MRA_PRIVATE_LEN>(),
    )
        .prop_map(
            |(local_comm_id, remote_comm_id, msg_mraed, service_timeout, private_data)| MraRepr {
                local_comm_id,
                remote_comm_id,
                msg_mraed,
                service_timeout,
                private_data,
            },
        )
}

fn dreq() -> impl Strategy<Value = DreqRepr> {
    (comm_id(), comm_id(), qpn(), bytes::<DREQ_PRIVATE_LEN>()).prop_map(
        |(local_comm_id, remote_comm_id, remote_qpn, private_data)| DreqRepr {
            local_comm_id,
            remote_comm_id,
            remote_qpn,
            private_data,
        },
    )
}

fn drep() -> impl Strategy<Value = DrepRepr> {
    (comm_id(), comm_id(), bytes::<DREP_PRIVATE_LEN>()).prop_map(
        |(local_comm_id, remote_comm_id, private_data)| DrepRepr {
            local_comm_id,
            remote_comm_id,
            private_data,
        },
    )
}

fn sidr_req() -> impl Strategy<Value = SidrReqRepr> {
    (
        comm_id(),
        any::<u16>(),
        any::<u64>(),
        bytes::<SIDR_REQ_PRIVATE_LEN>(),
    )
        .prop_map(|(request_id, pkey, sid, private_data)| SidrReqRepr {
            request_id,
            pkey,
            service_id: ServiceId(sid),
            private_data,
        })
}

fn sidr_rep() -> impl Strategy<Value = SidrRepRepr> {
    (
        (
            comm_id(),
            any::<[u8; 2]>(),
            qpn(),
            any::<u64>(),
            any::<u32>(),
        ),
        bytes::<SIDR_REP_INFO_LEN>(),
        bytes::<SIDR_REP_PRIVATE_LEN>(),
    )
        .prop_map(
            |((request_id, [status, info_len], qpn, sid, qkey), info, private_data)| SidrRepRepr {
                request_id,
                status,
                info_len,
                qpn,
                service_id: ServiceId(sid),
                qkey: Qkey::new(qkey),
                info,
                private_data,
            },
        )
}

/// Any CM message whose fields fit their bits.
fn message() -> impl Strategy<Value = CmMessage> {
    prop_oneof![
        req().prop_map(CmMessage::Req),
        mra().prop_map(CmMessage::Mra),
        rej().prop_map(CmMessage::Rej),
        rep().prop_map(CmMessage::Rep),
        rtu().prop_map(CmMessage::Rtu),
        dreq().prop_map(CmMessage::Dreq),
        drep().prop_map(CmMessage::Drep),
        sidr_req().prop_map(CmMessage::SidrReq),
        sidr_rep().prop_map(CmMessage::SidrRep),
    ]
}

fn cma_header() -> impl Strategy<Value = CmaHeaderRepr> {
    let v4 = (any::<[u8; 4]>(), any::<[u8; 4]>())
        .prop_map(|(src, dst)| (std::net::IpAddr::from(src), std::net::IpAddr::from(dst)));
    let v6 = (any::<[u8; 16]>(), any::<[u8; 16]>())
        .prop_map(|(src, dst)| (std::net::IpAddr::from(src), std::net::IpAddr::from(dst)));
    (any::<u16>(), prop_oneof![v4, v6]).prop_map(|(src_port, (src, dst))| CmaHeaderRepr {
        src_port,
        src,
        dst,
    })
}

/// Edits applied to a valid MAD: bytes XORed with nonzero masks, then an
/// optional truncation.
fn mutate(mut mad: Vec<u8>, flips: &[(usize, u8)], truncate_to: Option<usize>) -> Vec<u8> {
    for &(at, mask) in flips {
        let len = mad.len();
        mad[at % len] ^= mask;
    }
    if let Some(to) = truncate_to {
        mad.truncate(to % (mad.len() + 1));
    }
    mad
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        parse_everything(&bytes);
    }

    /// Random bodies behind a valid CM header, so that the body parsers
    /// run on nearly every case.
    #[test]
    fn arbitrary_bodies_behind_a_cm_header(
        attr_id in 0x0fu16..=0x1b,
        tid in any::<u64>(),
        body in vec(any::<u8>(), MAD_LEN - MAD_HEADER_LEN..=MAD_LEN),
    ) {
        let mut mad = vec![0u8; MAD_HEADER_LEN];
        mad.extend_from_slice(&body);
        MadHeaderRepr::cm(attr_id, tid)
            .emit(&mut MadPacket::new_checked(&mut mad[..]).unwrap())
            .unwrap();
        let known = (attr::REQ..=attr::SIDR_REP).contains(&attr_id);
        match CmMessage::parse(&mad) {
            Ok((header, message)) => {
                prop_assert_eq!(header, MadHeaderRepr::cm(attr_id, tid));
                prop_assert_eq!(message.attr_id(), attr_id);
            }
            Err(Error::Unsupported) => prop_assert!(!known),
            Err(error) => prop_assert_eq!(error, Error::Malformed),
        }
        parse_everything(&mad);
    }

    #[test]
    fn messages_round_trip(message in message(), tid in any::<u64>()) {
        let mut mad = [0u8; MAD_LEN];
        message.emit(tid, &mut mad).unwrap();
        let (header, parsed) = CmMessage::parse(&mad).unwrap();
        prop_assert_eq!(header, MadHeaderRepr::cm(message.attr_id(), tid));
        prop_assert_eq!(parsed, message);
    }

    #[test]
    fn cma_headers_round_trip(repr in cma_header(), user in vec(any::<u8>(), 0..64)) {
        let mut private = vec![0u8; CMA_HEADER_LEN];
        private.extend_from_slice(&user);
        repr.emit(&mut private).unwrap();
        prop_assert_eq!(&private[CMA_HEADER_LEN..], &user[..]);
        prop_assert_eq!(CmaHeaderRepr::parse(&private), Ok(repr));
    }

    #[test]
    fn mutated_messages_never_panic(
        message in message(),
        flips in vec((any::<usize>(), 1..=255u8), 1..6),
        truncate_to in proptest::option::of(any::<usize>()),
    ) {
        let mut mad = vec![0u8; MAD_LEN];
        message.emit(7, &mut mad).unwrap();
        parse_everything(&mutate(mad, &flips, truncate_to));
    }

    /// Every single-byte change of a valid REQ with a CMA header, where
    /// the CMA header starts the private data.
    #[test]
    fn mutated_req_private_data_never_panics(
        req in req(),
        header in cma_header(),
        at in 0..CMA_HEADER_LEN,
        mask in 1..=255u8,
    ) {
        let mut req = req;
        header.emit(&mut req.private_data).unwrap();
        let mut mad = vec![0u8; MAD_LEN];
        CmMessage::Req(req).emit(1, &mut mad).unwrap();
        let private_at = MAD_HEADER_LEN + 140;
        mad[private_at + at] ^= mask;
        parse_everything(&mad);
        let (_, parsed) = CmMessage::parse(&mad).unwrap();
        let CmMessage::Req(parsed) = parsed else { unreachable!("a REQ") };
        parse_everything(&parsed.private_data);
    }
}
