//! Arbitrary packets at a live RC QP, as its peer could send them: requests (SEND, WRITE,
//! READ, atomics, with any keys, addresses and lengths) for its responder, responses
//! (ACKs, NAKs, READ responses, atomic acknowledgements) for its requester, which has READs
//! and atomics outstanding, and random bytes. Nothing panics, and no byte outside the one
//! registered region changes: canaries fill the memory on both sides of it.

use std::cell::{Cell, RefCell};

use proptest::prelude::*;
use xrdma_verbs::net::sim::{self, SimConfig, SimNetwork};
use xrdma_verbs::net::{FrameIo, TxMeta, send_copy};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::{
    AethRepr, AtomicAckEthRepr, AtomicEthRepr, BthRepr, ExtHeaders, Msn, Opcode, Psn, Qpn,
    RethRepr, Rkey as WireRkey, Syndrome, TransportRepr,
};

/// The memory: canary, registered region, canary.
const CANARY: usize = 64 << 10;
const REGION: usize = 256 << 10;
const PEER_QPN: u32 = 0x99;
/// The PSNs the peer starts at (what our responder expects) and ours.
const PEER_PSN: u32 = 0xff_fff0;
const OUR_PSN: u32 = 0x00_1000;
const CANARY_BYTE: u8 = 0xc5;

/// Which headers, payload and PSN base one generated packet has.
#[derive(Debug, Clone)]
struct Packet {
    opcode: u8,
    /// Offset from the PSN the QP started at (requests: the peer's first PSN; responses:
    /// ours), which a reset every few packets brings it back to.
    psn_delta: u32,
    /// RETH/AtomicETH address: an offset from the region's start (may fall outside).
    offset: i64,
    real_key: bool,
    key: u32,
    len: u32,
    syndrome: u8,
    value: u64,
    payload: Vec<u8>,
}

fn packet() -> impl Strategy<Value = Packet> {
    let opcodes = prop_oneof![0x00u8..=0x14, Just(0x16u8), Just(0x17u8), any::<u8>()];
    (
        opcodes,
        prop_oneof![6 => 0u32..3, 1 => 0u32..64, 1 => any::<u32>()],
        prop_oneof![
            0i64..REGION as i64,
            -(CANARY as i64)..(REGION + CANARY) as i64,
            any::<i64>()
        ],
        any::<bool>(),
        any::<u32>(),
        prop_oneof![0u32..2048, 0u32..(REGION as u32 + 4096), any::<u32>()],
        // Syndromes: NAKs, ACKs, RNR NAKs, anything.
        prop_oneof![0x60u8..=0x64, 0x00u8..=0x1f, 0x20u8..=0x3f, any::<u8>()],
        any::<u64>(),
        // Payloads: a full MTU (FIRST and MIDDLE packets), the last 952 bytes of the
        // requester's 3000-byte READ, anything.
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 1024),
            proptest::collection::vec(any::<u8>(), 952),
            proptest::collection::vec(any::<u8>(), 0..1100)
        ],
    )
        .prop_map(
            |(opcode, psn_delta, offset, real_key, key, len, syndrome, value, payload)| Packet {
                opcode,
                psn_delta,
                offset,
                real_key,
                key,
                len,
                syndrome,
                value,
                payload,
            },
        )
}

/// The packet's bytes, as well-formed as its opcode allows (random bytes for opcodes
/// xrdma cannot emit).
fn bytes(p: &Packet, qpn: Qpn, region: u64, rkey: u32, psns: (Psn, Psn)) -> Vec<u8> {
    let op = Opcode::new(p.opcode);
    let Some(info) = op.info() else {
        return p.payload.clone();
    };
    let response = matches!(p.opcode, 0x0d..=0x12);
    let psn = if response { psns.1 } else { psns.0 } + p.psn_delta;
    let va = region.wrapping_add_signed(p.offset);
    let key = WireRkey::new(if p.real_key { rkey } else { p.key });
    let h = info.headers;
    let mut repr = TransportRepr::new(BthRepr {
        ack_req: p.value & 1 == 1,
        ..BthRepr::new(op, qpn, psn)
    });
    if h.contains(ExtHeaders::RETH) {
        repr.reth = Some(RethRepr {
            va,
            rkey: key,
            dma_len: p.len,
        });
    }
    if h.contains(ExtHeaders::AETH) {
        let syndrome = Syndrome::from_byte(p.syndrome).unwrap_or(Syndrome::Ack { credit: 31 });
        repr.aeth = Some(AethRepr {
            syndrome,
            msn: Msn::new_masked(p.len),
        });
    }
    if h.contains(ExtHeaders::ATOMIC_ETH) {
        repr.atomic = Some(AtomicEthRepr {
            va,
            rkey: key,
            swap_add: p.value,
            compare: p.value.rotate_left(7),
        });
    }
    if h.contains(ExtHeaders::ATOMIC_ACK_ETH) {
        repr.atomic_ack = Some(AtomicAckEthRepr { orig: p.value });
    }
    if h.contains(ExtHeaders::IMM_DT) {
        repr.imm = Some(p.len);
    }
    if h.contains(ExtHeaders::IETH) {
        repr.ieth = Some(key);
    }
    if h.contains(ExtHeaders::DETH) {
        return p.payload.clone();
    }
    let payload: &[u8] = if info.has_payload { &p.payload } else { &[] };
    let mut buf = vec![0u8; repr.buffer_len(payload.len())];
    match repr.emit(payload, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => p.payload.clone(),
    }
}

#[test]
fn arbitrary_packets_never_panic_or_touch_memory_outside_the_region() {
    let net = SimNetwork::new(SimConfig::default());
    let io = net.endpoint(sim::host_addr(1)).unwrap();
    let ctx = Context::new(
        Box::new(io),
        ContextConfig {
            progress_thread: false,
            ..ContextConfig::seeded(3)
        },
    )
    .unwrap();
    let peer = RefCell::new(net.endpoint(sim::host_addr(9)).unwrap());
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(256, None).unwrap();
    let qp = pd.create_qp(&QpInitAttr::rc(&cq, &cq, 8)).unwrap();
    let mut mem = vec![CANARY_BYTE; CANARY + REGION + CANARY];
    let region = unsafe { mem.as_mut_ptr().add(CANARY) };
    let access = AccessFlags::LOCAL_WRITE
        | AccessFlags::REMOTE_WRITE
        | AccessFlags::REMOTE_READ
        | AccessFlags::REMOTE_ATOMIC;
    let mr = unsafe { pd.reg_mr(region, REGION, access) }.unwrap();
    let region = region as u64;
    // 8-aligned inside the region: the requester's READs and atomics land here.
    let local = region + 4096;
    let bring_up = || {
        qp.bring_up_rc(&RcPeer {
            ah: AhAttr::new(Gid::from_ip(sim::host_addr(9).ip())),
            qpn: PEER_QPN,
            psn: PEER_PSN,
            our_psn: OUR_PSN,
            path_mtu: Mtu::Mtu1024,
            access,
            rd_atomic: 4,
        })
        .unwrap()
    };
    bring_up();
    // Packets since the last reset: a fresh QP every few, so PSNs near the first ones are
    // often the ones expected.
    let since_reset = Cell::new(0u32);
    // Requester outcomes seen: an atomic completed by a response, a request failed by a NAK.
    let atomics_done = Cell::new(0usize);
    let naked = Cell::new(0usize);
    let config = ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(p in packet())| {
        let mut wcs = [WorkCompletion::default(); 32];
        loop {
            let n = cq.poll(&mut wcs);
            if n == 0 {
                break;
            }
            for w in &wcs[..n] {
                match (w.wr_id, w.status) {
                    (3, WcStatus::Success) => atomics_done.set(atomics_done.get() + 1),
                    (_, WcStatus::RemInvReqErr | WcStatus::RemAccessErr | WcStatus::RemOpErr) => {
                        naked.set(naked.get() + 1)
                    }
                    _ => {}
                }
            }
        }
        if qp.state() == QpState::Err || since_reset.get() == 4 {
            qp.modify(&QpAttr::new(QpState::Reset), AttrMask::STATE).unwrap();
            bring_up();
            since_reset.set(0);
        }
        since_reset.set(since_reset.get() + 1);
        // Keep receives posted, and a READ and an atomic outstanding for responses to hit.
        let sge = |length| Sge { addr: local, length, lkey: mr.lkey() };
        let _ = unsafe { qp.post_recv(&RecvWr { wr_id: 1, sg_list: &[sge(2048)] }) };
        let target = Some((region + 8192, mr.rkey()));
        let read = SendWr {
            wr_id: 2,
            opcode: SendOpcode::RdmaRead,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[sge(3000)],
            imm_data: 0,
            ud: None,
            rdma: target,
            atomic: None,
        };
        let atomic = SendWr {
            wr_id: 3,
            opcode: SendOpcode::AtomicFetchAndAdd,
            sg_list: &[sge(8)],
            atomic: Some(AtomicWr { remote_addr: region + 8192, rkey: mr.rkey(), compare_add: 1, swap: 0 }),
            ..read
        };
        let _ = unsafe { qp.post_send(&atomic) };
        let _ = unsafe { qp.post_send(&read) };
        let psns = (Psn::new_masked(PEER_PSN), Psn::new_masked(OUR_PSN));
        let packet = bytes(&p, qp.qpn(), region, mr.rkey().0, psns);
        let meta = TxMeta::to(sim::host_addr(1), 4791);
        let _ = send_copy(&mut *peer.borrow_mut(), &meta, &packet);
        let _ = peer.borrow_mut().flush();
        net.advance(std::time::Duration::from_micros(50));
        ctx.progress();
        // Drain what our QP sent the peer, unread.
        let _ = peer.borrow_mut().recv(usize::MAX, &mut |_, _| {});
        prop_assert!(mem[..CANARY].iter().all(|b| *b == CANARY_BYTE), "canary before the region changed");
        prop_assert!(mem[CANARY + REGION..].iter().all(|b| *b == CANARY_BYTE), "canary after the region changed");
    });
    drop(mr);
    let written = mem[CANARY..CANARY + REGION]
        .iter()
        .filter(|b| **b != CANARY_BYTE)
        .count();
    assert!(
        written > 1000,
        "only {written} bytes of the region written: the packets stopped short of memory"
    );
    assert!(
        atomics_done.get() > 0 && naked.get() > 0,
        "the requester saw {} atomic results and {} NAKs: responses stopped short of it",
        atomics_done.get(),
        naked.get()
    );
}
