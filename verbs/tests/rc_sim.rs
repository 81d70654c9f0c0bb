//! RC queue pairs between two contexts on a simulated network: SEND, RDMA WRITE and WRITE
//! with immediate data arrive intact and complete in order, also on a lossy network; a
//! vanished peer ends in RETRY_EXC_ERR; READ and atomics say they are not there yet.

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
        max_inline_data: 0,
    };
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            cap,
            ..QpInitAttr::ud(&cq, &cq, 1)
        })
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE;
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

/// INIT, RTR, RTS as ibv_rc_pingpong does it, towards `peer`.
fn connect(e: &End, peer: &End, timeout: u8, retry_cnt: u8) {
    let init = QpAttr {
        qp_access_flags: AccessFlags::REMOTE_WRITE,
        ..QpAttr::new(QpState::Init)
    };
    e.qp.modify(
        &init,
        AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::ACCESS_FLAGS,
    )
    .unwrap();
    let rtr = QpAttr {
        ah_attr: Some(AhAttr::new(peer.ctx.gid(0).unwrap())),
        path_mtu: Mtu::Mtu1024,
        dest_qp_num: peer.qp.qpn().value(),
        rq_psn: 0xfffff0,
        max_dest_rd_atomic: 1,
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
    let rts = QpAttr {
        timeout,
        retry_cnt,
        rnr_retry: 7,
        sq_psn: 0xfffff0,
        max_rd_atomic: 1,
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

fn poll_n(ends: &[&End], cq_of: usize, n: usize) -> Vec<WorkCompletion> {
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
    let mut expect = Vec::new();
    for i in 0..N {
        let len = 1 + (i as usize * 997) % 3000;
        let src = Sge {
            addr: a.buf.as_ptr() as u64 + i * 4096,
            length: len as u32,
            lkey: a.mr.lkey(),
        };
        let (opcode, rdma) = match i % 3 {
            0 => (SendOpcode::Send, None),
            1 => (
                SendOpcode::RdmaWrite,
                Some((b.buf.as_ptr() as u64 + (512 << 10) + i * 4096, b.mr.rkey())),
            ),
            _ => (
                SendOpcode::RdmaWriteWithImm,
                Some((b.buf.as_ptr() as u64 + (512 << 10) + i * 4096, b.mr.rkey())),
            ),
        };
        let wr = SendWr {
            wr_id: i,
            opcode,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[src],
            imm_data: i as u32,
            ud: None,
            rdma,
        };
        unsafe { a.qp.post_send(&wr) }.unwrap();
        expect.push((i, opcode, len));
    }
    let sends = poll_n(&[&a, &b], 0, N as usize);
    assert!(
        sends.iter().all(|w| w.status == WcStatus::Success),
        "{sends:?}"
    );
    assert_eq!(
        sends.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>(),
        "posting order"
    );
    let recvs = poll_n(
        &[&a, &b],
        1,
        expect
            .iter()
            .filter(|e| e.1 != SendOpcode::RdmaWrite)
            .count(),
    );
    let mut r = recvs.iter();
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
    a.buf.clear();
    b.buf.clear();
}

#[test]
fn rc_sends_and_writes_arrive_in_order() {
    run(0.0, 1);
}

#[test]
fn rc_survives_a_lossy_network() {
    run(0.1, 2);
}

#[test]
fn a_vanished_rc_peer_ends_in_retry_exceeded_and_read_is_not_there_yet() {
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let (a, b) = (end(&net, 1), end(&net, 2));
    connect(&a, &b, 1, 2);
    connect(&b, &a, 1, 2);
    drop(b);
    let src = [Sge {
        addr: a.buf.as_ptr() as u64,
        length: 8,
        lkey: a.mr.lkey(),
    }];
    let wr = |opcode| SendWr {
        wr_id: 9,
        opcode,
        send_flags: SendFlags::SIGNALED,
        sg_list: &src,
        imm_data: 0,
        ud: None,
        rdma: None,
    };
    assert_eq!(
        unsafe { a.qp.post_send(&wr(SendOpcode::RdmaRead)) }
            .unwrap_err()
            .errno(),
        libc::EOPNOTSUPP
    );
    unsafe { a.qp.post_send(&wr(SendOpcode::Send)) }.unwrap();
    let wcs = poll_n(&[&a], 0, 1);
    assert_eq!(wcs[0].status, WcStatus::RetryExcErr);
    assert_eq!(a.qp.state(), QpState::Err);
}
