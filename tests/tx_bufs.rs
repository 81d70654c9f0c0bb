//! Send buffers inside the UMEM: UD sends from them go out in place over xdp (their
//! payload never copied), complete once the NIC is done, refuse reuse while in flight, and
//! work as ordinary buffers on the udp backend.

use std::time::{Duration, Instant};

use xrdma_testnet::{Host, Topology};
use xrdma_verbs::net::{
    FrameIo,
    udp::{UdpConfig, UdpIo},
    xdp::{XdpConfig, XdpIo},
};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::Qkey;

const QKEY: u32 = 0x4242;

fn context(host: &Host, backend: &'static str) -> Context {
    let iface = host.iface().to_string();
    host.ns().run(move || {
        let io: Box<dyn FrameIo> = match backend {
            "xdp" => Box::new(XdpIo::open(&XdpConfig::new(iface)).expect("xdp")),
            _ => Box::new(UdpIo::open(&UdpConfig::new(iface)).expect("udp")),
        };
        Context::new(
            io,
            ContextConfig {
                progress_thread: false,
                ..ContextConfig::seeded(5)
            },
        )
        .unwrap()
    })
}

fn ud(ctx: &Context) -> (Pd, Cq, QueuePair) {
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(256, None).unwrap();
    let qp = pd.create_qp(&QpInitAttr::ud(&cq, &cq, 64)).unwrap();
    qp.bring_up_ud(QKEY, 0).unwrap();
    (pd, cq, qp)
}

fn poll_until(cq: &Cq, what: &str) -> WorkCompletion {
    let mut wc = [WorkCompletion::default(); 1];
    let deadline = Instant::now() + Duration::from_secs(5);
    while cq.poll(&mut wc) == 0 {
        assert!(Instant::now() < deadline, "no {what} completion within 5 s");
    }
    wc[0]
}

fn run(t: &Topology, sender: &'static str) {
    let (a, b) = (context(t.a(), sender), context(t.b(), "udp"));
    let ((pd_a, cq_a, qp_a), (pd_b, cq_b, qp_b)) = (ud(&a), ud(&b));
    let bufs = pd_a.alloc_tx_bufs(16).unwrap();
    assert_eq!(bufs.in_place(), sender == "xdp");
    let mut rx = vec![0u8; 2048];
    let rx_mr =
        unsafe { pd_b.reg_mr(rx.as_mut_ptr(), rx.len(), AccessFlags::LOCAL_WRITE) }.unwrap();
    let ah = pd_a.create_ah(&AhAttr::new(b.gid(0).unwrap())).unwrap();
    let before = a.net_stats().tx_in_place;
    for n in 0..200usize {
        let (i, len, imm) = (n % 16, 1 + n * 5 % 1000, n % 3 == 0);
        let payload = unsafe { bufs.ud_payload_mut(i, len, false, imm) }.unwrap();
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(k, x)| *x = (k + n) as u8);
        let sge = bufs.ud_sge(i, len, false, imm).unwrap();
        unsafe {
            qp_b.post_recv(&RecvWr {
                wr_id: n as u64,
                sg_list: &[Sge {
                    addr: rx.as_ptr() as u64,
                    length: 2048,
                    lkey: rx_mr.lkey(),
                }],
            })
        }
        .unwrap();
        let wr = SendWr {
            wr_id: n as u64,
            opcode: if imm {
                SendOpcode::SendWithImm
            } else {
                SendOpcode::Send
            },
            send_flags: SendFlags::SIGNALED,
            sg_list: &[sge],
            imm_data: n as u32,
            rdma: None,
            atomic: None,
            ud: Some(UdDest {
                ah: &ah,
                remote_qpn: qp_b.qpn(),
                remote_qkey: Qkey::new(QKEY),
            }),
        };
        unsafe { qp_a.post_send(&wr) }.unwrap();
        let sent = poll_until(&cq_a, "send");
        assert_eq!((sent.wr_id, sent.status), (n as u64, WcStatus::Success));
        let got = poll_until(&cq_b, "receive");
        assert_eq!(
            (got.wr_id, got.status, got.byte_len as usize),
            (n as u64, WcStatus::Success, 40 + len)
        );
        assert_eq!(got.wc_flags.contains(WcFlags::WITH_IMM), imm);
        assert!(
            rx[40..40 + len]
                .iter()
                .enumerate()
                .all(|(k, x)| *x == (k + n) as u8),
            "message {n} corrupted"
        );
    }
    let in_place = a.net_stats().tx_in_place - before;
    assert_eq!(in_place, if sender == "xdp" { 200 } else { 0 });

    // In-place and copied sends mixed: completions come in posting order although the
    // in-place ones complete only when the medium is done with their buffers.
    let plain = [7u8; 64];
    let plain_mr =
        unsafe { pd_a.reg_mr(plain.as_ptr().cast_mut(), plain.len(), AccessFlags::empty()) }
            .unwrap();
    for n in 0..8u64 {
        let sge = if n % 2 == 0 {
            bufs.ud_sge(n as usize, 32, false, false).unwrap()
        } else {
            Sge {
                addr: plain.as_ptr() as u64,
                length: 32,
                lkey: plain_mr.lkey(),
            }
        };
        let wr = SendWr {
            wr_id: 500 + n,
            opcode: SendOpcode::Send,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[sge],
            imm_data: 0,
            rdma: None,
            atomic: None,
            ud: Some(UdDest {
                ah: &ah,
                remote_qpn: qp_b.qpn(),
                remote_qkey: Qkey::new(QKEY),
            }),
        };
        unsafe { qp_a.post_send(&wr) }.unwrap();
    }
    let order: Vec<u64> = (0..8).map(|_| poll_until(&cq_a, "send").wr_id).collect();
    assert_eq!(order, (500..508).collect::<Vec<_>>());
    drop(plain_mr);

    if sender == "xdp" {
        // A buffer in flight cannot be sent from again: the first send completes only when
        // the NIC is done, which takes a poll.
        let sge = bufs.ud_sge(0, 8, false, false).unwrap();
        let wr = SendWr {
            wr_id: 1000,
            opcode: SendOpcode::Send,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[sge],
            imm_data: 0,
            rdma: None,
            atomic: None,
            ud: Some(UdDest {
                ah: &ah,
                remote_qpn: qp_b.qpn(),
                remote_qkey: Qkey::new(QKEY),
            }),
        };
        unsafe { qp_a.post_send(&wr) }.unwrap();
        assert_eq!(
            unsafe { qp_a.post_send(&wr) }.unwrap_err().errno(),
            libc::EBUSY
        );
        assert_eq!(poll_until(&cq_a, "send").wr_id, 1000);
        // Done: the buffer can go again.
        unsafe { qp_a.post_send(&wr) }.unwrap();
        assert_eq!(poll_until(&cq_a, "send").wr_id, 1000);
    }
    drop(rx_mr);
}

#[test]
fn sends_from_umem_buffers_go_out_in_place_over_xdp() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    run(&t, "xdp");
}

#[test]
fn the_same_buffers_work_by_copy_on_udp() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    run(&t, "udp");
}
