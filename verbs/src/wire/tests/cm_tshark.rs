//! Wireshark (tshark 4.0) must decode CM MADs built by [`CmMessage::emit`]
//! and carried as Linux carries them on RoCEv2 (a UD SEND to QP1, P_Key
//! 0xFFFF, Q_Key 0x80010000, source QP 1) with the field values we meant:
//! an independent reading of the offsets in `wire::cm` and `wire::cma`.
//!
//! Field names are those of `reference/cm-facts.md` section 5. Wireshark
//! 4.0 mis-decodes the REQ flow label and packet rate, so they are not
//! checked here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use super::pcap::write_pcap;
use super::util::{emit_frame, emit_transport};
use crate::wire::cm::{
    CmMessage, CmPath, CmTransport, CommId, DrepRepr, DreqRepr, MsgKind, REJ_ARI_LEN,
    REQ_PRIVATE_LEN, RejRepr, RepRepr, ReqRepr, RtuRepr, ServiceId, port_space, rej_reason,
};
use crate::wire::cma::CmaHeaderRepr;
use crate::wire::frame::{FrameRepr, IpRepr, IpVersion};
use crate::wire::mad::MAD_LEN;
use crate::wire::{
    BthRepr, DethRepr, EthernetRepr, Ipv4Repr, MacAddr, Opcode, Psn, Qkey, Qpn, TransportRepr,
    UdpRepr,
};

/// The Q_Key of QP1 (`IB_QP1_QKEY`).
const GSI_QKEY: u32 = 0x8001_0000;

/// A RoCEv2 frame from 198.18.0.1 to 198.18.0.2 carrying `message` to QP1
/// with transaction ID `tid`.
fn cm_frame(message: &CmMessage, tid: u64) -> Vec<u8> {
    let mut mad = [0u8; MAD_LEN];
    message.emit(tid, &mut mad).expect("emit CM message");
    let mut transport = TransportRepr::new(BthRepr::new(
        Opcode::UD_SEND_ONLY,
        Qpn::new(1).unwrap(),
        Psn::new(0x42).unwrap(),
    ));
    transport.deth = Some(DethRepr {
        qkey: Qkey::new(GSI_QKEY),
        src_qp: Qpn::new(1).unwrap(),
    });
    let transport = emit_transport(&transport, &mad);
    let udp = UdpRepr {
        src_port: 0xc001,
        dst_port: 4791,
        payload_len: transport.len() + 4,
    };
    let ip = IpRepr::V4(Ipv4Repr {
        src: [198, 18, 0, 1].into(),
        dst: [198, 18, 0, 2].into(),
        protocol: 17,
        payload_len: udp.buffer_len(),
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: true,
    });
    let eth = EthernetRepr {
        src: MacAddr([2, 0, 0, 0, 0, 1]),
        dst: MacAddr([2, 0, 0, 0, 0, 2]),
        ethertype: IpVersion::V4.ethertype(),
    };
    emit_frame(&FrameRepr { eth, ip, udp }, &transport)
}

/// A REQ like the one Linux's rdma_cm sends from 198.18.0.1:49152 to
/// port 7174 (cm-facts 1.4), with a CMA header.
fn req() -> ReqRepr {
    let mut private_data = [0u8; REQ_PRIVATE_LEN];
    CmaHeaderRepr {
        src_port: 49152,
        src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
    }
    .emit(&mut private_data)
    .unwrap();
    private_data[36..41].copy_from_slice(b"hello");
    let path = CmPath {
        local_lid: 0xffff,
        remote_lid: 0xffff,
        local_gid: "::ffff:198.18.0.1".parse().unwrap(),
        remote_gid: "::ffff:198.18.0.2".parse().unwrap(),
        flow_label: 0,
        packet_rate: 0,
        traffic_class: 0x20,
        hop_limit: 64,
        sl: 3,
        subnet_local: false,
        local_ack_timeout: 18,
    };
    ReqRepr {
        local_comm_id: CommId(0x1a2b_3c4d),
        service_id: ServiceId::from_port(port_space::TCP, 7174),
        local_ca_guid: 0x0200_00ff_fe00_0001,
        local_qkey: Qkey::new(0),
        local_qpn: Qpn::new(0x00_0123).unwrap(),
        responder_resources: 4,
        initiator_depth: 2,
        remote_cm_response_timeout: 20,
        transport: CmTransport::Rc,
        starting_psn: Psn::new(0xab_cdef).unwrap(),
        local_cm_response_timeout: 19,
        retry_count: 6,
        pkey: 0xffff,
        path_mtu: 3,
        rnr_retry_count: 5,
        max_cm_retries: 15,
        srq: true,
        primary_path: path,
        private_data,
        ..ReqRepr::default()
    }
}

fn rep() -> RepRepr {
    RepRepr {
        local_comm_id: CommId(0x5566_7788),
        remote_comm_id: CommId(0x1a2b_3c4d),
        local_qpn: Qpn::new(0x00_0456).unwrap(),
        starting_psn: Psn::new(0x12_3456).unwrap(),
        responder_resources: 2,
        initiator_depth: 4,
        target_ack_delay: 15,
        failover_accepted: 1,
        rnr_retry_count: 7,
        srq: true,
        local_ca_guid: 0x0200_00ff_fe00_0002,
        ..RepRepr::default()
    }
}

/// A value tshark must print for a field.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// A number, which tshark prints in hex (`0x…`) or decimal.
    Num(u64),
    /// Text as printed (addresses, the Info column).
    Text(&'static str),
}

use Want::{Num, Text};

/// A frame and the fields tshark must decode from it.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    fields: Vec<(&'static str, Want)>,
}

/// A case for `message` with the envelope and MAD header fields every CM
/// frame shares, then `fields`.
fn case(
    name: &'static str,
    message: CmMessage,
    tid: u64,
    info: &'static str,
    fields: Vec<(&'static str, Want)>,
) -> Case {
    let mut all = vec![
        ("frame.protocols", Text("eth:ethertype:ip:udp:infiniband")),
        ("_ws.col.Info", Text(info)),
        ("infiniband.bth.opcode", Num(0x64)),
        ("infiniband.bth.p_key", Num(0xffff)),
        ("infiniband.bth.destqp", Num(1)),
        ("infiniband.deth.q_key", Num(u64::from(GSI_QKEY))),
        ("infiniband.deth.srcqp", Num(1)),
        ("infiniband.mad.baseversion", Num(1)),
        ("infiniband.mad.mgmtclass", Num(7)),
        ("infiniband.mad.classversion", Num(2)),
        ("infiniband.mad.method", Num(3)),
        ("infiniband.mad.status", Num(0)),
        ("infiniband.mad.transactionid", Num(tid)),
        (
            "infiniband.mad.attributeid",
            Num(u64::from(message.attr_id())),
        ),
        ("infiniband.mad.attributemodifier", Num(0)),
    ];
    all.extend(fields);
    Case {
        name,
        frame: cm_frame(&message, tid),
        fields: all,
    }
}

/// A REQ whose CMA header is IPv6, with IPv6 GIDs.
fn req_v6() -> ReqRepr {
    let mut private_data = [0u8; REQ_PRIVATE_LEN];
    CmaHeaderRepr {
        src_port: 0x1234,
        src: "2001:2::1".parse().unwrap(),
        dst: "2001:2::2".parse().unwrap(),
    }
    .emit(&mut private_data)
    .unwrap();
    let mut repr = req();
    repr.local_comm_id = CommId(0x0bad_cafe);
    repr.service_id = ServiceId::from_port(port_space::TCP, 18515);
    repr.transport = CmTransport::Uc;
    repr.e2e_flow_control = true;
    repr.srq = false;
    repr.rdc_exists = true;
    repr.primary_path.local_gid = "2001:2::1".parse().unwrap();
    repr.primary_path.remote_gid = "2001:2::2".parse().unwrap();
    repr.primary_path.subnet_local = true;
    repr.primary_path.sl = 15;
    repr.primary_path.local_ack_timeout = 31;
    repr.private_data = private_data;
    repr
}

fn cases() -> Vec<Case> {
    let tid = 0x0000_0001_1a2b_3c4d;
    let rtu = RtuRepr {
        local_comm_id: CommId(0x1a2b_3c4d),
        remote_comm_id: CommId(0x5566_7788),
        ..RtuRepr::default()
    };
    let rej_no_listener = RejRepr {
        local_comm_id: CommId(0),
        remote_comm_id: CommId(0x1a2b_3c4d),
        msg_rejected: MsgKind::Req,
        reason: rej_reason::INVALID_SERVICE_ID,
        ..RejRepr::default()
    };
    let mut ari = [0u8; REJ_ARI_LEN];
    ari[..8].copy_from_slice(&0x0200_00ff_fe00_0002u64.to_be_bytes());
    let rej_timeout = RejRepr {
        local_comm_id: CommId(0x5566_7788),
        remote_comm_id: CommId(0x1a2b_3c4d),
        msg_rejected: MsgKind::Rep,
        ari_len: 8,
        reason: rej_reason::TIMEOUT,
        ari,
        ..RejRepr::default()
    };
    let dreq = DreqRepr {
        local_comm_id: CommId(0x1a2b_3c4d),
        remote_comm_id: CommId(0x5566_7788),
        remote_qpn: Qpn::new(0x00_0456).unwrap(),
        ..DreqRepr::default()
    };
    let drep = DrepRepr {
        local_comm_id: CommId(0x5566_7788),
        remote_comm_id: CommId(0x1a2b_3c4d),
        ..DrepRepr::default()
    };
    vec![
        case(
            "REQ",
            CmMessage::Req(req()),
            tid,
            "CM: ConnectRequest",
            vec![
                ("infiniband.cm.req", Num(0x1a2b_3c4d)),
                ("infiniband.cm.req.serviceid", Num(0x0000_0000_0106_1c06)),
                ("infiniband.cm.req.serviceid.protocol", Num(0x06)),
                ("infiniband.cm.req.serviceid.dport", Num(7174)),
                ("infiniband.cm.req.localcaguid", Num(0x0200_00ff_fe00_0001)),
                ("infiniband.cm.req.localqkey", Num(0)),
                ("infiniband.cm.req.localqpn", Num(0x123)),
                ("infiniband.cm.req.responderres", Num(4)),
                ("infiniband.cm.req.initdepth", Num(2)),
                ("infiniband.cm.req.remoteresptout", Num(20)),
                ("infiniband.cm.req.transpsvctype", Num(0)),
                ("infiniband.cm.req.e2eflowctrl", Num(0)),
                ("infiniband.cm.req.startpsn", Num(0xab_cdef)),
                ("infiniband.cm.req.localresptout", Num(19)),
                ("infiniband.cm.req.retrcount", Num(6)),
                ("infiniband.cm.req.pkey", Num(0xffff)),
                ("infiniband.cm.req.pppmtu", Num(3)),
                ("infiniband.cm.req.rdcexist", Num(0)),
                ("infiniband.cm.req.rnrretrcount", Num(5)),
                ("infiniband.cm.req.maxcmretr", Num(15)),
                ("infiniband.cm.req.srq", Num(1)),
                ("infiniband.cm.req.prim_locallid", Num(0xffff)),
                ("infiniband.cm.req.prim_remotelid", Num(0xffff)),
                ("infiniband.cm.req.prim_localgid_ipv4", Text("198.18.0.1")),
                ("infiniband.cm.req.prim_remotegid_ipv4", Text("198.18.0.2")),
                ("infiniband.cm.req.prim_tfcclass", Num(0x20)),
                ("infiniband.cm.req.prim_hoplim", Num(64)),
                ("infiniband.cm.req.prim_sl", Num(3)),
                ("infiniband.cm.req.prim_subnetlocal", Num(0)),
                ("infiniband.cm.req.prim_localacktout", Num(18)),
                ("infiniband.cm.req.alt_locallid", Num(0)),
                ("infiniband.cm.req.ip_cm.majv", Num(0)),
                ("infiniband.cm.req.ip_cm.ipv", Num(4)),
                ("infiniband.cm.req.ip_cm.sport", Num(49152)),
                ("infiniband.cm.req.ip_cm.sip4", Text("198.18.0.1")),
                ("infiniband.cm.req.ip_cm.dip4", Text("198.18.0.2")),
            ],
        ),
        case(
            "REQ over IPv6",
            CmMessage::Req(req_v6()),
            tid + 1,
            "CM: ConnectRequest",
            vec![
                ("infiniband.cm.req", Num(0x0bad_cafe)),
                ("infiniband.cm.req.serviceid", Num(0x0000_0000_0106_4853)),
                ("infiniband.cm.req.transpsvctype", Num(1)),
                ("infiniband.cm.req.e2eflowctrl", Num(1)),
                ("infiniband.cm.req.rdcexist", Num(1)),
                ("infiniband.cm.req.srq", Num(0)),
                ("infiniband.cm.req.prim_sl", Num(15)),
                ("infiniband.cm.req.prim_subnetlocal", Num(1)),
                ("infiniband.cm.req.prim_localacktout", Num(31)),
                ("infiniband.cm.req.ip_cm.ipv", Num(6)),
                ("infiniband.cm.req.ip_cm.sport", Num(0x1234)),
                ("infiniband.cm.req.ip_cm.sip6", Text("2001:2::1")),
                ("infiniband.cm.req.ip_cm.dip6", Text("2001:2::2")),
            ],
        ),
        case(
            "REP",
            CmMessage::Rep(rep()),
            tid,
            "CM: ConnectReply",
            vec![
                ("infiniband.cm.rep", Num(0x5566_7788)),
                ("infiniband.cm.rep.remotecommid", Num(0x1a2b_3c4d)),
                ("infiniband.cm.rep.localqkey", Num(0)),
                ("infiniband.cm.rep.localqpn", Num(0x456)),
                ("infiniband.cm.rep.startpsn", Num(0x12_3456)),
                ("infiniband.cm.rep.respres", Num(2)),
                ("infiniband.cm.rep.initdepth", Num(4)),
                ("infiniband.cm.rep.tgtackdelay", Num(15)),
                ("infiniband.cm.rep.failoveracc", Num(1)),
                ("infiniband.cm.rep.e2eflowctrl", Num(0)),
                ("infiniband.cm.rep.rnrretrcount", Num(7)),
                ("infiniband.cm.rep.srq", Num(1)),
                ("infiniband.cm.rep.localcaguid", Num(0x0200_00ff_fe00_0002)),
            ],
        ),
        case(
            "RTU",
            CmMessage::Rtu(rtu),
            tid,
            "CM: ReadyToUse",
            vec![
                ("infiniband.cm.rtu.localcommid", Num(0x1a2b_3c4d)),
                ("infiniband.cm.rtu.remotecommid", Num(0x5566_7788)),
            ],
        ),
        case(
            "REJ no listener",
            CmMessage::Rej(rej_no_listener),
            tid,
            "CM: ConnectReject",
            vec![
                ("infiniband.cm.rej.localcommid", Num(0)),
                ("infiniband.cm.rej.remotecommid", Num(0x1a2b_3c4d)),
                ("infiniband.cm.rej.msgrej", Num(0)),
                ("infiniband.cm.rej.rejinfolen", Num(0)),
                ("infiniband.cm.rej.reason", Num(8)),
            ],
        ),
        case(
            "REJ timeout",
            CmMessage::Rej(rej_timeout),
            tid,
            "CM: ConnectReject",
            vec![
                ("infiniband.cm.rej.localcommid", Num(0x5566_7788)),
                ("infiniband.cm.rej.msgrej", Num(1)),
                ("infiniband.cm.rej.rejinfolen", Num(8)),
                ("infiniband.cm.rej.reason", Num(4)),
                (
                    "infiniband.cm.rej.ari",
                    Text(
                        "020000fffe000002000000000000000000000000000000000000000000000000\
                         0000000000000000000000000000000000000000000000000000000000000000\
                         0000000000000000",
                    ),
                ),
            ],
        ),
        case(
            "DREQ",
            CmMessage::Dreq(dreq),
            tid + 2,
            "CM: DisconnectRequest",
            vec![
                ("infiniband.cm.dreq.localcommid", Num(0x1a2b_3c4d)),
                ("infiniband.cm.dreq.remotecommid", Num(0x5566_7788)),
                ("infiniband.cm.req.remoteqpneecn", Num(0x456)),
            ],
        ),
        case(
            "DREP",
            CmMessage::Drep(drep),
            tid + 2,
            "CM: DisconnectReply",
            vec![
                ("infiniband.cm.drsp.localcommid", Num(0x5566_7788)),
                ("infiniband.cm.drsp.remotecommid", Num(0x1a2b_3c4d)),
            ],
        ),
    ]
}

/// Reads a number as tshark prints it: `0x…` hex or decimal.
fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[test]
fn wireshark_decodes_cm_messages() {
    match Command::new("tshark").arg("-v").output() {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "tshark is not on PATH or does not run: install Wireshark's tshark \
             (Debian/Ubuntu: apt-get install -y tshark) to run this test"
        ),
    }
    let cases = cases();
    let frames: Vec<Vec<u8>> = cases.iter().map(|case| case.frame.clone()).collect();
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in cases.iter().flat_map(|case| &case.fields) {
        if !names.contains(name) {
            names.push(name);
        }
    }

    let path = std::env::temp_dir().join(format!("xrdma-wire-cm-{}.pcap", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("create pcap");
    write_pcap(&mut file, &frames).expect("write pcap");
    drop(file);
    let mut command = Command::new("tshark");
    command.arg("-n").arg("-r").arg(&path).args([
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=f",
    ]);
    for name in &names {
        command.args(["-e", name]);
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
    assert_eq!(lines.len(), cases.len(), "one line per frame:\n{stdout}");
    for (case, line) in cases.iter().zip(lines) {
        let values: HashMap<&str, &str> = names.iter().copied().zip(line.split('\t')).collect();
        for &(name, want) in &case.fields {
            let got = values.get(name).copied().unwrap_or("");
            match want {
                Num(value) => assert_eq!(
                    number(got),
                    Some(value),
                    "{}: {name} is {got:?}, want {value:#x}",
                    case.name
                ),
                Text(text) => assert_eq!(got, text, "{}: {name}", case.name),
            }
        }
    }
}
