//! UD verbs between two namespaced hosts, over xdp on one end and xdp or udp on the other:
//! the data path, the GRH, drops that must be counted, and the path-MTU limit.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xrdma_testnet::{Host, Topology};
use xrdma_verbs::net::{
    FrameIo,
    udp::{UdpConfig, UdpIo},
    xdp::{XdpConfig, XdpIo},
};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::{Qkey, Qpn};

const QKEY: u32 = 0x1111_1111;

fn context(host: &Host, backend: &str) -> Context {
    let iface = host.iface().to_string();
    let backend = backend.to_string();
    host.ns().run(move || {
        let io: Box<dyn FrameIo> = match backend.as_str() {
            "xdp" => Box::new(XdpIo::open(&XdpConfig::new(iface)).expect("xdp")),
            _ => Box::new(UdpIo::open(&UdpConfig::new(iface)).expect("udp")),
        };
        Context::new(io, ContextConfig::default()).unwrap()
    })
}

struct End {
    ctx: Context,
    pd: Pd,
    cq: Cq,
    qp: QueuePair,
    buf: Vec<u8>,
    mr: Mr,
}

fn end(ctx: Context) -> End {
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(64, None).unwrap();
    let qp = pd.create_qp(&QpInitAttr::ud(&cq, &cq, 16)).unwrap();
    qp.bring_up_ud(QKEY, 0).unwrap();
    let mut buf = vec![0u8; 16 * 2048];
    let mr = unsafe { pd.reg_mr(buf.as_mut_ptr(), buf.len(), AccessFlags::LOCAL_WRITE) }.unwrap();
    End {
        ctx,
        pd,
        cq,
        qp,
        buf,
        mr,
    }
}

impl End {
    fn sge(&self, slot: usize, len: usize) -> Sge {
        Sge {
            addr: self.buf.as_ptr() as u64 + (slot * 2048) as u64,
            length: len as u32,
            lkey: self.mr.lkey(),
        }
    }

    fn post_recv(&self, slot: usize) {
        unsafe {
            self.qp.post_recv(&RecvWr {
                wr_id: slot as u64,
                sg_list: &[self.sge(slot, 2048)],
            })
        }
        .unwrap();
    }

    fn send(
        &self,
        to: &End,
        ah: &AddressHandle,
        len: usize,
        qkey: u32,
        imm: Option<u32>,
    ) -> WorkCompletion {
        let wr = SendWr {
            wr_id: len as u64,
            opcode: if imm.is_some() {
                SendOpcode::SendWithImm
            } else {
                SendOpcode::Send
            },
            send_flags: SendFlags::SIGNALED,
            sg_list: &[self.sge(15, len)],
            imm_data: imm.unwrap_or(0),
            rdma: None,
            atomic: None,
            ud: Some(UdDest {
                ah,
                remote_qpn: to.qp.qpn(),
                remote_qkey: Qkey::new(qkey),
            }),
        };
        unsafe { self.qp.post_send(&wr) }.unwrap();
        poll_one(&self.cq, Duration::from_secs(5)).expect("send completion")
    }
}

fn poll_one(cq: &Cq, timeout: Duration) -> Option<WorkCompletion> {
    let mut wc = [WorkCompletion::default(); 1];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cq.poll(&mut wc) == 1 {
            return Some(wc[0]);
        }
    }
    None
}

fn exercise(a: End, b: End, a_host: &Host) {
    let ah = a.pd.create_ah(&AhAttr::new(b.ctx.gid(0).unwrap())).unwrap();
    b.post_recv(0);
    assert_eq!(
        a.send(&b, &ah, 1024, QKEY, Some(0xabcd_ef01)).status,
        WcStatus::Success
    );
    let wc = poll_one(&b.cq, Duration::from_secs(5)).expect("receive completion");
    assert_eq!(
        (wc.status, wc.byte_len, wc.src_qp),
        (WcStatus::Success, 40 + 1024, a.qp.qpn().value())
    );
    assert!(wc.wc_flags.contains(WcFlags::WITH_IMM));
    assert_eq!(wc.imm_data.wire_bytes(), 0xabcd_ef01u32.to_be_bytes());
    assert_eq!(
        &b.buf[20 + 12..20 + 16],
        &a_host.ipv4().octets(),
        "GRH names the sender"
    );

    // Wrong Q_Key, and nothing posted: both dropped and counted, no completion.
    b.post_recv(1);
    a.send(&b, &ah, 8, 0x2222, None);
    let drops = &b.ctx.rx_drops();
    let deadline = Instant::now() + Duration::from_secs(5);
    while drops.bad_qkey.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        b.ctx.progress();
    }
    assert_eq!(drops.bad_qkey.load(Ordering::Relaxed), 1);
    assert!(poll_one(&b.cq, Duration::from_millis(100)).is_none());
    a.send(&b, &ah, 8, QKEY, None);
    assert_eq!(poll_one(&b.cq, Duration::from_secs(5)).unwrap().wr_id, 1);
    a.send(&b, &ah, 8, QKEY, None);
    while drops.rq_empty.load(Ordering::Relaxed) == 0
        && Instant::now() < deadline + Duration::from_secs(5)
    {
        b.ctx.progress();
    }
    assert_eq!(drops.rq_empty.load(Ordering::Relaxed), 1);
    // A QPN that does not exist.
    let wr_to_nobody = SendWr {
        wr_id: 99,
        opcode: SendOpcode::Send,
        send_flags: SendFlags::SIGNALED,
        sg_list: &[a.sge(15, 8)],
        imm_data: 0,
        rdma: None,
        atomic: None,
        ud: Some(UdDest {
            ah: &ah,
            remote_qpn: Qpn::new_masked(0xfedcba),
            remote_qkey: Qkey::new(QKEY),
        }),
    };
    unsafe { a.qp.post_send(&wr_to_nobody) }.unwrap();
    poll_one(&a.cq, Duration::from_secs(5)).unwrap();
    while drops.no_qp.load(Ordering::Relaxed) == 0
        && Instant::now() < deadline + Duration::from_secs(10)
    {
        b.ctx.progress();
    }
    assert_eq!(drops.no_qp.load(Ordering::Relaxed), 1);

    // The veths' 1500-byte MTU makes the path MTU 1024: a longer message fails locally.
    assert_eq!(a.ctx.query_port(1).unwrap().active_mtu, Mtu::Mtu1024);
    assert_eq!(
        a.send(&b, &ah, 1025, QKEY, None).status,
        WcStatus::LocLenErr
    );
    assert_eq!(a.qp.state(), QpState::Err);
}

#[test]
fn ud_verbs_between_xdp_and_udp_hosts() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let a = end(context(t.a(), "xdp"));
    let b = end(context(t.b(), "udp"));
    exercise(a, b, t.a());
}

#[test]
fn ud_verbs_between_two_xdp_hosts() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let a = end(context(t.a(), "xdp"));
    let b = end(context(t.b(), "xdp"));
    exercise(a, b, t.a());
}
