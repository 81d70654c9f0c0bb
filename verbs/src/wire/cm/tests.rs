//! Tests of the whole-MAD layer: dispatch on the header, and the shared
//! helpers. Each message's layout is tested in its own file.

use super::*;
use crate::wire::mad::{MAD_BODY_LEN, MAD_HEADER_LEN};
use crate::wire::{Psn, Qpn};

/// One message of each kind, with distinct comm IDs.
fn samples() -> Vec<CmMessage> {
    vec![
        CmMessage::Req(ReqRepr {
            local_comm_id: CommId(1),
            service_id: ServiceId::from_port(port_space::TCP, 7174),
            local_qpn: Qpn::new(0x11).unwrap(),
            starting_psn: Psn::new(0x12_3456).unwrap(),
            ..ReqRepr::default()
        }),
        CmMessage::Mra(MraRepr {
            local_comm_id: CommId(2),
            service_timeout: 24,
            ..MraRepr::default()
        }),
        CmMessage::Rej(RejRepr {
            remote_comm_id: CommId(3),
            reason: rej_reason::INVALID_SERVICE_ID,
            ..RejRepr::default()
        }),
        CmMessage::Rep(RepRepr {
            local_comm_id: CommId(4),
            local_qpn: Qpn::new(0x22).unwrap(),
            ..RepRepr::default()
        }),
        CmMessage::Rtu(RtuRepr {
            local_comm_id: CommId(5),
            ..RtuRepr::default()
        }),
        CmMessage::Dreq(DreqRepr {
            local_comm_id: CommId(6),
            remote_qpn: Qpn::new(0x33).unwrap(),
            ..DreqRepr::default()
        }),
        CmMessage::Drep(DrepRepr {
            local_comm_id: CommId(7),
            ..DrepRepr::default()
        }),
        CmMessage::SidrReq(SidrReqRepr {
            request_id: CommId(8),
            service_id: ServiceId::from_port(port_space::UDP, 19000),
            ..SidrReqRepr::default()
        }),
        CmMessage::SidrRep(SidrRepRepr {
            request_id: CommId(9),
            qkey: crate::wire::Qkey::new(0x0123_4567),
            ..SidrRepRepr::default()
        }),
    ]
}

#[test]
fn attribute_ids() {
    let ids: Vec<u16> = samples().iter().map(CmMessage::attr_id).collect();
    assert_eq!(
        ids,
        [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18],
        "REQ MRA REJ REP RTU DREQ DREP SIDR_REQ SIDR_REP"
    );
}

#[test]
fn every_message_round_trips_through_a_mad() {
    for (index, message) in samples().into_iter().enumerate() {
        let tid = 0x0000_0001_0000_0000 | index as u64;
        let mut mad = [0xa5u8; MAD_LEN];
        message.emit(tid, &mut mad).unwrap();
        assert_eq!(
            mad[..MAD_HEADER_LEN],
            [
                1,
                0x07,
                2,
                0x03,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                index as u8,
                0,
                message.attr_id() as u8,
                0,
                0,
                0,
                0,
                0,
                0
            ],
            "header of {message:?}"
        );
        let (header, parsed) = CmMessage::parse(&mad).unwrap();
        assert_eq!(header, MadHeaderRepr::cm(message.attr_id(), tid));
        assert_eq!(parsed, message);
    }
}

#[test]
fn the_body_is_the_message_emitted_alone() {
    let message = samples()[3];
    let CmMessage::Rep(rep) = message else {
        unreachable!()
    };
    let mut mad = [0u8; MAD_LEN];
    message.emit(7, &mut mad).unwrap();
    let mut body = [0u8; MAD_BODY_LEN];
    rep.emit(&mut body).unwrap();
    assert_eq!(mad[MAD_HEADER_LEN..], body);
}

#[test]
fn parse_ignores_bytes_past_the_mad() {
    let message = samples()[0];
    let mut buf = [0xeeu8; MAD_LEN + 40];
    message.emit(1, &mut buf).unwrap();
    assert_eq!(buf[MAD_LEN..], [0xee; 40], "emit stays in the MAD");
    assert_eq!(CmMessage::parse(&buf).unwrap().1, message);
}

#[test]
fn short_buffers_are_truncated() {
    let mut mad = [0u8; MAD_LEN];
    samples()[4].emit(1, &mut mad).unwrap();
    for len in [0, 1, MAD_HEADER_LEN, MAD_LEN - 1] {
        assert_eq!(
            CmMessage::parse(&mad[..len]),
            Err(Error::Truncated),
            "{len}"
        );
        let mut short = vec![0xa5u8; len];
        assert_eq!(samples()[4].emit(1, &mut short), Err(Error::Truncated));
        assert!(short.iter().all(|&b| b == 0xa5), "nothing written");
    }
}

#[test]
fn only_cm_sends_of_known_attributes_are_supported() {
    let mut mad = [0u8; MAD_LEN];
    samples()[4].emit(1, &mut mad).unwrap();
    // (offset, value): base version, class, class version, method (a
    // response, a GET), then the attributes LAP, APR, ClassPortInfo and
    // unknown ones.
    let edits: [(usize, &[u8]); 11] = [
        (0, &[2]),
        (1, &[0x01]),
        (1, &[0x81]),
        (2, &[1]),
        (3, &[0x83]),
        (3, &[0x01]),
        (16, &[0x00, 0x19]),
        (16, &[0x00, 0x1a]),
        (16, &[0x00, 0x01]),
        (16, &[0x00, 0x0f]),
        (16, &[0x01, 0x10]),
    ];
    for (at, value) in edits {
        let mut edited = mad;
        edited[at..at + value.len()].copy_from_slice(value);
        assert_eq!(
            CmMessage::parse(&edited),
            Err(Error::Unsupported),
            "{at}: {value:?}"
        );
    }
    // Status, class-specific word, reserved word and attribute modifier do
    // not matter.
    let mut edited = mad;
    edited[4..8].fill(0xff);
    edited[18..24].fill(0xff);
    let (header, message) = CmMessage::parse(&edited).unwrap();
    assert_eq!(message, samples()[4]);
    assert_eq!(
        (header.status, header.class_specific, header.attr_mod),
        (0xffff, 0xffff, 0xffff_ffff)
    );
}

#[test]
fn malformed_bodies_surface_as_malformed() {
    let mut mad = [0u8; MAD_LEN];
    samples()[0].emit(1, &mut mad).unwrap();
    mad[MAD_HEADER_LEN + 43] |= 2 << 1; // transport type 2 (RD)
    assert_eq!(CmMessage::parse(&mad), Err(Error::Malformed));

    let mut mad = [0u8; MAD_LEN];
    samples()[2].emit(1, &mut mad).unwrap();
    mad[MAD_HEADER_LEN + 8] = 0xc0; // message REJected 3
    assert_eq!(CmMessage::parse(&mad), Err(Error::Malformed));
}

#[test]
fn emit_of_a_wide_field_writes_nothing() {
    let message = CmMessage::Mra(MraRepr {
        service_timeout: 32,
        ..MraRepr::default()
    });
    let mut mad = [0xa5u8; MAD_LEN];
    assert_eq!(message.emit(1, &mut mad), Err(Error::Malformed));
    assert_eq!(mad, [0xa5; MAD_LEN]);
}

#[test]
fn service_ids_from_port_spaces() {
    let tcp = ServiceId::from_port(port_space::TCP, 7174);
    assert_eq!(tcp, ServiceId(0x0000_0000_0106_1c06));
    assert_eq!((tcp.port_space(), tcp.port()), (0x0106, 7174));
    assert_eq!(
        ServiceId::from_port(port_space::UDP, 0xffff),
        ServiceId(0x0111_ffff)
    );
    assert_eq!(
        ServiceId::from_port(port_space::IB, 1),
        ServiceId(0x013f_0001)
    );
    // Bits above 31 (the kernel's IB_CMA_SERVICE_ID prefix) are neither
    // port space nor port.
    let sid = ServiceId(0x1234_5678_0106_0050);
    assert_eq!((sid.port_space(), sid.port()), (0x0106, 0x50));
}

#[test]
fn enumerations_have_their_wire_codes() {
    for transport in [CmTransport::Rc, CmTransport::Uc, CmTransport::Xrc] {
        assert_eq!(CmTransport::from_value(transport.value()), Ok(transport));
    }
    assert_eq!(
        [CmTransport::Rc, CmTransport::Uc, CmTransport::Xrc].map(CmTransport::value),
        [0, 1, 3]
    );
    assert_eq!(CmTransport::from_value(2), Err(Error::Malformed));
    assert_eq!(CmTransport::from_value(4), Err(Error::Malformed));
    for kind in [MsgKind::Req, MsgKind::Rep, MsgKind::Other] {
        assert_eq!(MsgKind::from_value(kind.value()), Ok(kind));
    }
    assert_eq!(
        [MsgKind::Req, MsgKind::Rep, MsgKind::Other].map(MsgKind::value),
        [0, 1, 2]
    );
    assert_eq!(MsgKind::from_value(3), Err(Error::Malformed));
}

#[test]
fn private_data_lengths_fill_the_body() {
    // Each message's fixed fields plus its private data (and ARI/info) make
    // up the 232-byte body (cm-facts 1.2).
    assert_eq!(140 + REQ_PRIVATE_LEN, MAD_BODY_LEN);
    assert_eq!(36 + REP_PRIVATE_LEN, MAD_BODY_LEN);
    assert_eq!(8 + RTU_PRIVATE_LEN, MAD_BODY_LEN);
    assert_eq!(12 + REJ_ARI_LEN + REJ_PRIVATE_LEN, MAD_BODY_LEN);
    assert_eq!(10 + MRA_PRIVATE_LEN, MAD_BODY_LEN);
    assert_eq!(12 + DREQ_PRIVATE_LEN, MAD_BODY_LEN);
    assert_eq!(8 + DREP_PRIVATE_LEN, MAD_BODY_LEN);
    assert_eq!(16 + SIDR_REQ_PRIVATE_LEN, MAD_BODY_LEN);
    assert_eq!(24 + SIDR_REP_INFO_LEN + SIDR_REP_PRIVATE_LEN, MAD_BODY_LEN);
}

#[test]
fn bit_fields_keep_their_neighbours() {
    let field = Bits::new(1, 5, 3);
    let mut bytes = [0xffu8, 0xff];
    field.put(&mut bytes, 0b010).unwrap();
    assert_eq!(bytes, [0xff, 0b1101_0111]);
    assert_eq!(field.get(&bytes), 0b010);
    assert_eq!(field.put(&mut bytes, 8), Err(Error::Malformed));
    assert_eq!(bytes, [0xff, 0b1101_0111]);
    let whole = Bits::new(0, 7, 0);
    whole.put(&mut bytes, 0x5a).unwrap();
    assert_eq!(whole.get(&bytes), 0x5a);
    let flag = Bits::new(0, 0, 0);
    flag.put_flag(&mut bytes, true);
    assert!(flag.flag(&bytes));
    assert_eq!(bytes[0], 0x5b);
}
