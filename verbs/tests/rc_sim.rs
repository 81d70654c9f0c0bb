//! RC queue pairs between two contexts on a simulated network: SEND, RDMA WRITE and WRITE
//! with immediate data, RDMA READ and the atomics land intact and complete in order, also
//! on a lossy network; atomics are atomic against the CPU's; the QP's and the region's
//! rights are checked; bad requests are EINVAL; a vanished peer ends in RETRY_EXC_ERR.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xrdma_verbs::net::sim::{self, SimConfig, SimNetwork};
use xrdma_verbs::verbs::*;

struct End {
    ctx: Context,
    _pd: Pd,
    cq: Cq,
    qp: QueuePair,
    buf: Vec<u8>,
    mr: Mr,
}

fn end(net: &SimNetwork, n: u8) -> End {
    let io = net.endpoint(sim::host_addr(n)).unwrap();
    let ctx = Context::new(
        Box::new(io),
        ContextConfig {
            progress_thread: false,
            ..ContextConfig::seeded(n as u64)
        },
    )
    .unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(512, None).unwrap();
    let cap = QpCap {
        max_send_wr: 128,
        max_recv_wr: 128,
        max_send_sge: 2,
        max_recv_sge: 2,
        max_inline_data: 64,
    };
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            cap,
            ..QpInitAttr::ud(&cq, &cq, 1)
        })
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let access = AccessFlags::LOCAL_WRITE
        | AccessFlags::REMOTE_WRITE
        | AccessFlags::REMOTE_READ
        | AccessFlags::REMOTE_ATOMIC;
    let mr = unsafe { pd.reg_mr(buf.as_mut_ptr(), buf.len(), access) }.unwrap();
    End {
        ctx,
        _pd: pd,
        cq,
        qp,
        buf,
        mr,
    }
}

/// INIT, RTR, RTS as ibv_rc_pingpong does it, towards `peer`; the peer may WRITE, READ and
/// perform atomics.
fn connect(e: &End, peer: &End, timeout: u8, retry_cnt: u8) {
    connect_with(
        e,
        peer,
        timeout,
        retry_cnt,
        AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_ATOMIC,
    );
}

fn connect_with(e: &End, peer: &End, timeout: u8, retry_cnt: u8, access: AccessFlags) {
    to_rtr(e, peer, access);
    to_rts(e, timeout, retry_cnt);
}

/// RESET to INIT; the peer may do `access`.
fn to_init(e: &End, access: AccessFlags) {
    let init = QpAttr {
        qp_access_flags: access,
        ..QpAttr::new(QpState::Init)
    };
    e.qp.modify(
        &init,
        AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::ACCESS_FLAGS,
    )
    .unwrap();
}

/// RESET to INIT to RTR towards `peer`, as ibv_rc_pingpong does it.
fn to_rtr(e: &End, peer: &End, access: AccessFlags) {
    to_init(e, access);
    let rtr = QpAttr {
        ah_attr: Some(AhAttr::new(peer.ctx.gid(0).unwrap())),
        path_mtu: Mtu::Mtu1024,
        dest_qp_num: peer.qp.qpn().value(),
        rq_psn: 0xfffff0,
        max_dest_rd_atomic: 4,
        min_rnr_timer: 1,
        ..QpAttr::new(QpState::Rtr)
    };
    let rtr_mask = AttrMask::STATE
        | AttrMask::AV
        | AttrMask::PATH_MTU
        | AttrMask::DEST_QPN
        | AttrMask::RQ_PSN
        | AttrMask::MAX_DEST_RD_ATOMIC
        | AttrMask::MIN_RNR_TIMER;
    e.qp.modify(&rtr, rtr_mask).unwrap();
}

/// RTR to RTS, as ibv_rc_pingpong does it.
fn to_rts(e: &End, timeout: u8, retry_cnt: u8) {
    let rts = QpAttr {
        timeout,
        retry_cnt,
        rnr_retry: 7,
        sq_psn: 0xfffff0,
        max_rd_atomic: 4,
        ..QpAttr::new(QpState::Rts)
    };
    let rts_mask = AttrMask::STATE
        | AttrMask::TIMEOUT
        | AttrMask::RETRY_CNT
        | AttrMask::RNR_RETRY
        | AttrMask::SQ_PSN
        | AttrMask::MAX_QP_RD_ATOMIC;
    e.qp.modify(&rts, rts_mask).unwrap();
}

/// Polls until `n` completions arrived on the CQ of `ends[cq_of]`, moving the network's
/// (virtual) time on by 10 us each round.
fn poll_n(net: &SimNetwork, ends: &[&End], cq_of: usize, n: usize) -> Vec<WorkCompletion> {
    let mut got = Vec::new();
    let mut wc = [WorkCompletion::default(); 16];
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completions",
            got.len()
        );
        for (i, e) in ends.iter().enumerate() {
            if i == cq_of {
                let k = e.cq.poll(&mut wc);
                got.extend_from_slice(&wc[..k]);
            } else {
                // The other end only needs to make progress; its completions stay queued.
                e.ctx.progress();
            }
        }
        net.advance(Duration::from_micros(10));
    }
    got
}

fn run(loss: f64, seed: u64) {
    let net = SimNetwork::new(SimConfig {
        seed,
        loss,
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let (mut a, mut b) = (end(&net, 1), end(&net, 2));
    connect(&a, &b, 8, 7);
    connect(&b, &a, 8, 7);
    for (i, x) in a.buf.iter_mut().enumerate() {
        *x = (i * 13 % 251) as u8;
    }
    const N: u64 = 60;
    for i in 0..N {
        let sge = Sge {
            addr: b.buf.as_ptr() as u64 + i * 4096,
            length: 4096,
            lkey: b.mr.lkey(),
        };
        unsafe {
            b.qp.post_recv(&RecvWr {
                wr_id: 100 + i,
                sg_list: &[sge],
            })
        }
        .unwrap();
    }
    // b's bytes 256 KiB..512 KiB are what READs read; its last 8 bytes are a counter
    // the fetch-and-adds add to.
    for (i, x) in b.buf[256 << 10..512 << 10].iter_mut().enumerate() {
        *x = (i * 7 % 253) as u8;
    }
    let counter = b.buf.len() - 8;
    let mut expect = Vec::new();
    for i in 0..N {
        let len = 1 + (i as usize * 997) % 3000;
        let src = Sge {
            addr: a.buf.as_ptr() as u64 + i * 4096,
            length: len as u32,
            lkey: a.mr.lkey(),
        };
        let b_at = |off: usize| b.buf.as_ptr() as u64 + off as u64;
        let (opcode, rdma, atomic) = match i % 5 {
            0 => (SendOpcode::Send, None, None),
            1 => (
                SendOpcode::RdmaWrite,
                Some((b_at((512 << 10) + i as usize * 4096), b.mr.rkey())),
                None,
            ),
            2 => (
                SendOpcode::RdmaWriteWithImm,
                Some((b_at((512 << 10) + i as usize * 4096), b.mr.rkey())),
                None,
            ),
            3 => (
                SendOpcode::RdmaRead,
                Some((b_at((256 << 10) + i as usize * 1000), b.mr.rkey())),
                None,
            ),
            _ => (
                SendOpcode::AtomicFetchAndAdd,
                None,
                Some(AtomicWr {
                    remote_addr: b_at(counter),
                    rkey: b.mr.rkey(),
                    compare_add: i,
                    swap: 0,
                }),
            ),
        };
        let src = if atomic.is_some() {
            Sge { length: 8, ..src }
        } else {
            src
        };
        let wr = SendWr {
            wr_id: i,
            opcode,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[src],
            imm_data: i as u32,
            ud: None,
            rdma,
            atomic,
        };
        unsafe { a.qp.post_send(&wr) }.unwrap();
        expect.push((i, opcode, src.length as usize));
    }
    let sends = poll_n(&net, &[&a, &b], 0, N as usize);
    assert!(
        sends.iter().all(|w| w.status == WcStatus::Success),
        "{sends:?}"
    );
    assert_eq!(
        sends.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>(),
        "posting order"
    );
    for (wc, (_, opcode, len)) in sends.iter().zip(&expect) {
        let want = match opcode {
            SendOpcode::Send => WcOpcode::Send,
            SendOpcode::RdmaRead => WcOpcode::RdmaRead,
            SendOpcode::AtomicFetchAndAdd => WcOpcode::FetchAdd,
            _ => WcOpcode::RdmaWrite,
        };
        assert_eq!((wc.opcode, wc.byte_len as usize), (want, *len));
    }
    let recvs = poll_n(
        &net,
        &[&a, &b],
        1,
        expect
            .iter()
            .filter(|e| matches!(e.1, SendOpcode::Send | SendOpcode::RdmaWriteWithImm))
            .count(),
    );
    let mut r = recvs.iter();
    let mut sum = 0u64;
    for (i, opcode, len) in &expect {
        let off = *i as usize * 4096;
        let sent = &a.buf[off..off + len];
        match opcode {
            SendOpcode::Send => {
                let wc = r.next().unwrap();
                assert_eq!(
                    (wc.opcode, wc.byte_len as usize, wc.status),
                    (WcOpcode::Recv, *len, WcStatus::Success)
                );
                let at = (wc.wr_id - 100) as usize * 4096;
                assert_eq!(&b.buf[at..at + len], sent, "SEND {i}");
            }
            SendOpcode::RdmaRead => {
                let at = (256 << 10) + *i as usize * 1000;
                assert_eq!(sent, &b.buf[at..at + len], "READ {i}");
            }
            SendOpcode::AtomicFetchAndAdd => {
                let orig = u64::from_ne_bytes(sent.try_into().unwrap());
                assert_eq!(orig, sum, "fetch and add {i}: the value before");
                sum += i;
            }
            _ => {
                let at = (512 << 10) + off;
                assert_eq!(&b.buf[at..at + len], sent, "WRITE {i}");
                if *opcode == SendOpcode::RdmaWriteWithImm {
                    let wc = r.next().unwrap();
                    assert_eq!(wc.opcode, WcOpcode::RecvRdmaWithImm);
                    assert_eq!(wc.imm_data.wire_bytes(), (*i as u32).to_be_bytes());
                }
            }
        }
    }
    assert_eq!(
        u64::from_ne_bytes(b.buf[counter..].try_into().unwrap()),
        sum,
        "the counter after every fetch and add"
    );
    a.buf.clear();
    b.buf.clear();
}

#[test]
fn rc_operations_land_in_order() {
    run(0.0, 1);
}

#[test]
fn rc_survives_a_lossy_network() {
    run(0.1, 2);
}

/// A send request of `opcode` from `sg_list`, with no target.
/// Two ends on a network without delay, connected both ways with `timeout` and
/// `retry_cnt`.
fn connected_pair(timeout: u8, retry_cnt: u8) -> (SimNetwork, End, End) {
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let (a, b) = (end(&net, 1), end(&net, 2));
    connect(&a, &b, timeout, retry_cnt);
    connect(&b, &a, timeout, retry_cnt);
    (net, a, b)
}

/// The first `len` bytes of `e`'s buffer.
fn head(e: &End, len: u32) -> [Sge; 1] {
    [Sge {
        addr: e.buf.as_ptr() as u64,
        length: len,
        lkey: e.mr.lkey(),
    }]
}

/// Posts the first `len` bytes of `e`'s buffer as receive `wr_id`.
fn post_recv(e: &End, wr_id: u64, len: u32) {
    let sge = [Sge {
        addr: e.buf.as_ptr() as u64,
        length: len,
        lkey: e.mr.lkey(),
    }];
    unsafe {
        e.qp.post_recv(&RecvWr {
            wr_id,
            sg_list: &sge,
        })
    }
    .unwrap();
}

fn wr(opcode: SendOpcode, sg_list: &[Sge]) -> SendWr<'_> {
    SendWr {
        wr_id: 9,
        opcode,
        send_flags: SendFlags::SIGNALED,
        sg_list,
        imm_data: 0,
        ud: None,
        rdma: None,
        atomic: None,
    }
}

#[test]
fn a_vanished_rc_peer_ends_in_retry_exceeded() {
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let (a, b) = (end(&net, 1), end(&net, 2));
    connect(&a, &b, 1, 2);
    connect(&b, &a, 1, 2);
    let target = Some((b.buf.as_ptr() as u64, b.mr.rkey()));
    drop(b);
    let src = head(&a, 8);
    let read = SendWr {
        rdma: target,
        ..wr(SendOpcode::RdmaRead, &src)
    };
    unsafe { a.qp.post_send(&read) }.unwrap();
    unsafe { a.qp.post_send(&wr(SendOpcode::Send, &src)) }.unwrap();
    let wcs = poll_n(&net, &[&a], 0, 2);
    assert_eq!(
        (wcs[0].status, wcs[1].status),
        (WcStatus::RetryExcErr, WcStatus::WrFlushErr)
    );
    assert_eq!(a.qp.state(), QpState::Err);
}

#[test]
fn a_receive_is_acknowledged_although_its_qp_is_destroyed_right_after() {
    // B's poll hands the receive over and leaves its ACK for the next poll; B destroys the
    // QP instead. The ACK must leave all the same, or A retries until RETRY_EXC_ERR.
    let (net, a, b) = connected_pair(1, 2);
    post_recv(&b, 5, 8);
    let src = head(&a, 8);
    unsafe { a.qp.post_send(&wr(SendOpcode::Send, &src)) }.unwrap();
    let got = poll_n(&net, &[&a, &b], 1, 1);
    assert_eq!((got[0].wr_id, got[0].status), (5, WcStatus::Success));
    drop(b);
    let sent = poll_n(&net, &[&a], 0, 1);
    assert_eq!((sent[0].wr_id, sent[0].status), (9, WcStatus::Success));
}

#[test]
fn err_flushes_outstanding_sends_and_still_acknowledges_what_arrived() {
    // rdma_disconnect's path. B has a send outstanding (A posted no receive for it), takes
    // a receive of its own (its poll hands the completion over and leaves the ACK for the
    // next pass), and moves its QP to ERR. B's send flushes at once, not after retries,
    // and the ACK B owed still reaches A, whose send succeeds.
    let (net, a, b) = connected_pair(31, 7);
    let b_src = head(&b, 8);
    let b_send = SendWr {
        wr_id: 7,
        ..wr(SendOpcode::Send, &b_src)
    };
    unsafe { b.qp.post_send(&b_send) }.unwrap();
    post_recv(&b, 5, 8);
    let src = head(&a, 8);
    unsafe { a.qp.post_send(&wr(SendOpcode::Send, &src)) }.unwrap();
    let got = poll_n(&net, &[&a, &b], 1, 1);
    assert_eq!((got[0].wr_id, got[0].status), (5, WcStatus::Success));
    b.qp.modify(&QpAttr::new(QpState::Err), AttrMask::STATE)
        .unwrap();
    let flushed = poll_n(&net, &[&b], 0, 1);
    assert_eq!(
        (flushed[0].wr_id, flushed[0].status),
        (7, WcStatus::WrFlushErr)
    );
    let sent = poll_n(&net, &[&a, &b], 0, 1);
    assert_eq!((sent[0].wr_id, sent[0].status), (9, WcStatus::Success));
}

#[test]
fn bad_reads_and_atomics_are_einval() {
    let net = SimNetwork::new(SimConfig::default());
    let (a, b) = (end(&net, 1), end(&net, 2));
    connect(&a, &b, 8, 7);
    let at = b.buf.as_ptr() as u64;
    let sge = |length| Sge {
        addr: a.buf.as_ptr() as u64,
        length,
        lkey: a.mr.lkey(),
    };
    let atomic = |remote_addr| {
        Some(AtomicWr {
            remote_addr,
            rkey: b.mr.rkey(),
            compare_add: 1,
            swap: 2,
        })
    };
    let (eight, four) = ([sge(8)], [sge(4)]);
    for (what, w) in [
        ("READ without a target", wr(SendOpcode::RdmaRead, &eight)),
        (
            "atomic without a target",
            wr(SendOpcode::AtomicFetchAndAdd, &eight),
        ),
        (
            "atomic at an unaligned address",
            SendWr {
                atomic: atomic(at + 4),
                ..wr(SendOpcode::AtomicCmpAndSwp, &eight)
            },
        ),
        (
            "atomic into 4 bytes",
            SendWr {
                atomic: atomic(at),
                ..wr(SendOpcode::AtomicFetchAndAdd, &four)
            },
        ),
    ] {
        let err = unsafe { a.qp.post_send(&w) }.unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL, "{what}: {err}");
    }
}

#[test]
fn reads_and_atomics_need_the_qp_to_allow_them() {
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    for (opcode, allowed) in [
        (
            SendOpcode::RdmaRead,
            AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_ATOMIC,
        ),
        (
            SendOpcode::AtomicCmpAndSwp,
            AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ,
        ),
    ] {
        let (a, b) = (end(&net, 1), end(&net, 2));
        connect(&a, &b, 8, 7);
        connect_with(&b, &a, 8, 7, allowed);
        let src = [Sge {
            addr: a.buf.as_ptr() as u64,
            length: 8,
            lkey: a.mr.lkey(),
        }];
        let target = b.buf.as_ptr() as u64;
        let w = SendWr {
            rdma: Some((target, b.mr.rkey())),
            atomic: Some(AtomicWr {
                remote_addr: target,
                rkey: b.mr.rkey(),
                compare_add: 0,
                swap: 5,
            }),
            ..wr(opcode, &src)
        };
        unsafe { a.qp.post_send(&w) }.unwrap();
        let wcs = poll_n(&net, &[&a, &b], 0, 1);
        assert_eq!(wcs[0].status, WcStatus::RemAccessErr, "{opcode:?}");
        assert_eq!(b.buf[..8], [0; 8], "{opcode:?} left the target alone");
    }
}

#[test]
fn atomics_are_atomic_against_the_cpu() {
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let (a, b) = (end(&net, 1), end(&net, 2));
    connect(&a, &b, 8, 7);
    connect(&b, &a, 8, 7);
    const REMOTE: u64 = 2_000;
    let target = b.buf.as_ptr() as u64;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cpu = std::thread::spawn({
        let stop = stop.clone();
        move || {
            // SAFETY: b's buffer lives until after this thread is joined, and everyone
            // touches these 8 aligned bytes only atomically.
            let counter = unsafe { std::sync::atomic::AtomicU64::from_ptr(target as *mut u64) };
            let mut adds = 0u64;
            // Until the remote side is done, and at least long enough to overlap it.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || adds < 1000 {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                adds += 1;
            }
            adds
        }
    });
    for i in 0..REMOTE {
        let src = [Sge {
            addr: a.buf.as_ptr() as u64 + (i % 64) * 8,
            length: 8,
            lkey: a.mr.lkey(),
        }];
        let w = SendWr {
            atomic: Some(AtomicWr {
                remote_addr: target,
                rkey: b.mr.rkey(),
                compare_add: 1 << 32,
                swap: 0,
            }),
            ..wr(SendOpcode::AtomicFetchAndAdd, &src)
        };
        unsafe { a.qp.post_send(&w) }.unwrap();
        let wcs = poll_n(&net, &[&a, &b], 0, 1);
        assert_eq!(wcs[0].status, WcStatus::Success);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let local = cpu.join().unwrap();
    let value = u64::from_ne_bytes(b.buf[..8].try_into().unwrap());
    assert_eq!(value, (REMOTE << 32) + local, "no update lost");
}

#[test]
fn rc_qps_share_an_srq() {
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    // Host 1 sends from two RC QPs; host 2's two RC QPs take their receives from one SRQ.
    let (a, b) = (end(&net, 1), end(&net, 2));
    let pd = b.qp.pd();
    let srq = pd
        .create_srq(&SrqAttr {
            max_wr: 16,
            max_sge: 1,
            srq_limit: 0,
        })
        .unwrap();
    let rc_qp = |pd: &Pd, cq: &Cq, srq: Option<&Srq>| {
        pd.create_qp(&QpInitAttr {
            srq,
            ..QpInitAttr::rc(cq, cq, 16)
        })
        .unwrap()
    };
    let senders = [rc_qp(a.qp.pd(), &a.cq, None), rc_qp(a.qp.pd(), &a.cq, None)];
    let receivers = [rc_qp(pd, &b.cq, Some(&srq)), rc_qp(pd, &b.cq, Some(&srq))];
    for (s, r) in senders.iter().zip(&receivers) {
        let peer = |ctx: &Context, qp: &QueuePair| RcPeer {
            ah: AhAttr::new(ctx.gid(0).unwrap()),
            qpn: qp.qpn().value(),
            psn: 0x77,
            our_psn: 0x77,
            path_mtu: Mtu::Mtu1024,
            access: AccessFlags::empty(),
            rd_atomic: 1,
        };
        s.bring_up_rc(&peer(&b.ctx, r)).unwrap();
        r.bring_up_rc(&peer(&a.ctx, s)).unwrap();
    }
    for i in 0..8u64 {
        let sge = Sge {
            addr: b.buf.as_ptr() as u64 + i * 4096,
            length: 4096,
            lkey: b.mr.lkey(),
        };
        unsafe {
            srq.post_recv(&RecvWr {
                wr_id: 100 + i,
                sg_list: &[sge],
            })
        }
        .unwrap();
    }
    // Three SENDs of 3000 bytes from each sender, interleaved.
    for i in 0..6u64 {
        let sge = [Sge {
            addr: a.buf.as_ptr() as u64 + i * 4096,
            length: 3000,
            lkey: a.mr.lkey(),
        }];
        let wr = SendWr {
            wr_id: i,
            ..wr(SendOpcode::Send, &sge)
        };
        unsafe { senders[(i % 2) as usize].post_send(&wr) }.unwrap();
    }
    let recvs = poll_n(&net, &[&a, &b], 1, 6);
    let sent = poll_n(&net, &[&a, &b], 0, 6);
    assert!(
        sent.iter().all(|w| w.status == WcStatus::Success),
        "{sent:?}"
    );
    let mut per_qp = [0; 2];
    for w in &recvs {
        assert_eq!((w.status, w.byte_len), (WcStatus::Success, 3000), "{w:?}");
        let q = receivers
            .iter()
            .position(|r| r.qpn().value() == w.qp_num)
            .expect("a receiver's QP number");
        per_qp[q] += 1;
        // Receives are taken from the SRQ in posting order, across both QPs.
        assert!(w.wr_id < 106, "{w:?}");
        let slot = (w.wr_id - 100) as usize * 4096;
        assert!(
            (0..6).any(|i| a.buf[i * 4096..i * 4096 + 3000] == b.buf[slot..slot + 3000]),
            "receive {} holds no SEND's bytes",
            w.wr_id
        );
    }
    assert_eq!(per_qp, [3, 3], "each receiver QP completed its three SENDs");
}

#[test]
fn inline_sends_and_writes_copy_at_post_time() {
    let (net, a, b) = connected_pair(8, 7);
    post_recv(&b, 7, 64);
    // Unregistered memory, changed right after posting: the bytes sent are those at post
    // time.
    let mut data = *b"inline bytes, two SGEs, not registered anywhere!";
    let (first, second) = data.split_at(20);
    let sges = [
        Sge {
            addr: first.as_ptr() as u64,
            length: first.len() as u32,
            lkey: Lkey(0),
        },
        Sge {
            addr: second.as_ptr() as u64,
            length: second.len() as u32,
            lkey: Lkey(0),
        },
    ];
    let inline = |opcode, rdma| SendWr {
        send_flags: SendFlags::SIGNALED | SendFlags::INLINE,
        rdma,
        ..wr(opcode, &sges)
    };
    unsafe { a.qp.post_send(&inline(SendOpcode::Send, None)) }.unwrap();
    let target = Some((b.buf.as_ptr() as u64 + 4096, b.mr.rkey()));
    unsafe { a.qp.post_send(&inline(SendOpcode::RdmaWrite, target)) }.unwrap();
    let sent = data;
    data.fill(b'x');
    let wcs = poll_n(&net, &[&a, &b], 0, 2);
    assert!(wcs.iter().all(|w| w.status == WcStatus::Success), "{wcs:?}");
    let recv = poll_n(&net, &[&a, &b], 1, 1);
    assert_eq!(recv[0].byte_len as usize, sent.len());
    assert_eq!(&b.buf[..sent.len()], &sent[..]);
    assert_eq!(&b.buf[4096..4096 + sent.len()], &sent[..]);

    // Too long, or on a READ: EINVAL.
    let long = [0u8; 65];
    let long_sge = [Sge {
        addr: long.as_ptr() as u64,
        length: 65,
        lkey: Lkey(0),
    }];
    let too_long = SendWr {
        send_flags: SendFlags::INLINE,
        ..wr(SendOpcode::Send, &long_sge)
    };
    let read = inline(SendOpcode::RdmaRead, target);
    for (what, w) in [("65 inline bytes", too_long), ("an inline READ", read)] {
        let err = unsafe { a.qp.post_send(&w) }.unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL, "{what}: {err}");
    }
}

#[test]
fn an_rc_qp_in_rtr_answers_its_peer() {
    // perftest's bandwidth servers leave their QP in RTR: it must act as responder there,
    // answering WRITEs, READs, atomics and SENDs and acknowledging them.
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let (a, b) = (end(&net, 1), end(&net, 2));
    connect(&a, &b, 8, 2);
    to_rtr(
        &b,
        &a,
        AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_ATOMIC,
    );
    assert_eq!(b.qp.state(), QpState::Rtr);
    let (a_buf, b_buf) = (a.buf.as_ptr() as u64, b.buf.as_ptr() as u64);
    // SAFETY (of the writes through the buffers' pointers below): no verb touches these
    // bytes meanwhile; the buffers live until the end of the test.
    unsafe {
        std::ptr::copy_nonoverlapping(b"written by A".as_ptr(), a_buf as *mut u8, 12);
        std::ptr::copy_nonoverlapping(b"read from B!".as_ptr(), (b_buf + 4096) as *mut u8, 12);
        ((b_buf + 8192) as *mut u64).write(40);
    }
    post_recv(&b, 77, 64);
    let sge = |offset: u64, length| Sge {
        addr: a_buf + offset,
        length,
        lkey: a.mr.lkey(),
    };
    let (write, read, add, send) = ([sge(0, 12)], [sge(4096, 12)], [sge(8192, 8)], [sge(0, 12)]);
    let posts = [
        SendWr {
            rdma: Some((b_buf + 1024, b.mr.rkey())),
            ..wr(SendOpcode::RdmaWrite, &write)
        },
        SendWr {
            rdma: Some((b_buf + 4096, b.mr.rkey())),
            ..wr(SendOpcode::RdmaRead, &read)
        },
        SendWr {
            atomic: Some(AtomicWr {
                remote_addr: b_buf + 8192,
                rkey: b.mr.rkey(),
                compare_add: 2,
                swap: 0,
            }),
            ..wr(SendOpcode::AtomicFetchAndAdd, &add)
        },
        wr(SendOpcode::Send, &send),
    ];
    for w in &posts {
        unsafe { a.qp.post_send(w) }.unwrap();
    }
    let done = poll_n(&net, &[&a, &b], 0, 4);
    assert!(
        done.iter().all(|wc| wc.status == WcStatus::Success),
        "{done:?}"
    );
    assert_eq!(&b.buf[1024..1036], b"written by A");
    assert_eq!(&a.buf[4096..4108], b"read from B!");
    assert_eq!(
        u64::from_ne_bytes(a.buf[8192..8200].try_into().unwrap()),
        40
    );
    assert_eq!(
        u64::from_ne_bytes(b.buf[8192..8200].try_into().unwrap()),
        42
    );
    let got = poll_n(&net, &[&a, &b], 1, 1);
    assert_eq!(
        (got[0].wr_id, got[0].status, got[0].byte_len),
        (77, WcStatus::Success, 12)
    );
    assert_eq!(&b.buf[..12], b"written by A");
    assert_eq!(b.ctx.rx_drops().qp_state.load(Ordering::Relaxed), 0);

    // At RTS the requester starts; the responder keeps its sequence.
    to_rts(&b, 8, 2);
    post_recv(&a, 78, 64);
    let reply = [Sge {
        addr: b_buf + 1024,
        length: 12,
        lkey: b.mr.lkey(),
    }];
    unsafe { b.qp.post_send(&wr(SendOpcode::Send, &reply)) }.unwrap();
    let sent = poll_n(&net, &[&a, &b], 1, 1);
    assert_eq!((sent[0].wr_id, sent[0].status), (9, WcStatus::Success));
    let got = poll_n(&net, &[&a, &b], 0, 1);
    assert_eq!((got[0].wr_id, got[0].status), (78, WcStatus::Success));
    post_recv(&b, 79, 64);
    unsafe { a.qp.post_send(&wr(SendOpcode::Send, &send)) }.unwrap();
    let sent = poll_n(&net, &[&a, &b], 0, 1);
    assert_eq!((sent[0].wr_id, sent[0].status), (9, WcStatus::Success));
    let got = poll_n(&net, &[&a, &b], 1, 1);
    assert_eq!((got[0].wr_id, got[0].status), (79, WcStatus::Success));
}

#[test]
fn packets_for_a_qp_that_does_not_receive_yet_are_counted() {
    // B's QP is in INIT: it drops A's requests, counting each, and A retries until
    // RETRY_EXC_ERR.
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let (a, b) = (end(&net, 1), end(&net, 2));
    connect(&a, &b, 1, 1);
    to_init(&b, AccessFlags::empty());
    let src = head(&a, 8);
    unsafe { a.qp.post_send(&wr(SendOpcode::Send, &src)) }.unwrap();
    let wcs = poll_n(&net, &[&a, &b], 0, 1);
    assert_eq!(wcs[0].status, WcStatus::RetryExcErr);
    assert!(b.ctx.rx_drops().qp_state.load(Ordering::Relaxed) >= 2);
}

#[test]
fn receives_posted_with_one_wr_id_take_multi_packet_sends() {
    // perftest's ib_send_bw posts every receive with the same wr_id; each multi-packet
    // SEND must still land whole in its own receive.
    let (net, a, b) = connected_pair(8, 2);
    const LEN: u32 = 3000;
    // More packets than one progress pass receives (64), so that a pass ends mid-message.
    const N: u64 = 30;
    for i in 0..N {
        let sge = [Sge {
            addr: b.buf.as_ptr() as u64 + i * 4096,
            length: LEN,
            lkey: b.mr.lkey(),
        }];
        unsafe {
            b.qp.post_recv(&RecvWr {
                wr_id: 0,
                sg_list: &sge,
            })
        }
        .unwrap();
    }
    let src = [Sge {
        addr: a.buf.as_ptr() as u64,
        length: LEN,
        lkey: a.mr.lkey(),
    }];
    for _ in 0..N {
        unsafe { a.qp.post_send(&wr(SendOpcode::Send, &src)) }.unwrap();
    }
    let got = poll_n(&net, &[&a, &b], 1, N as usize);
    for wc in &got {
        assert_eq!(
            (wc.wr_id, wc.status, wc.byte_len),
            (0, WcStatus::Success, LEN),
            "{got:?}"
        );
    }
    let sent = poll_n(&net, &[&a, &b], 0, N as usize);
    assert!(sent.iter().all(|wc| wc.status == WcStatus::Success));
}

#[test]
fn a_write_outside_the_responders_memory_stops_both_qps() {
    // As rxe: the responder NAKs a remote access error, completes the receive a WRITE
    // with immediate data took in error, and goes to ERR (its other receives flush), so
    // that its owner hears of it; the requester's WRITE fails with REM_ACCESS_ERR.
    let (net, a, b) = connected_pair(14, 7);
    post_recv(&b, 5, 8);
    post_recv(&b, 6, 8);
    let src = head(&a, 8);
    let outside = SendWr {
        imm_data: 1,
        rdma: Some((b.buf.as_ptr() as u64 + b.buf.len() as u64, b.mr.rkey())),
        ..wr(SendOpcode::RdmaWriteWithImm, &src)
    };
    unsafe { a.qp.post_send(&outside) }.unwrap();
    let sent = poll_n(&net, &[&a, &b], 0, 1);
    assert_eq!((sent[0].wr_id, sent[0].status), (9, WcStatus::RemAccessErr));
    let got = poll_n(&net, &[&b], 0, 2);
    let statuses: Vec<_> = got.iter().map(|w| (w.wr_id, w.status)).collect();
    assert_eq!(
        statuses,
        vec![(5, WcStatus::RemAccessErr), (6, WcStatus::WrFlushErr)]
    );
    assert_eq!(b.qp.state(), QpState::Err);
}
