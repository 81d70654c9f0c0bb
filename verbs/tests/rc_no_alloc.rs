//! The RC steady-state path allocates nothing: 10,000 rounds of a 4 KiB SEND (four packets
//! at the 1024-byte MTU), an RDMA WRITE, an RDMA READ and a fetch-and-add, each completed and
//! polled, on the simulator and over AF_XDP between two namespaced hosts.
//!
//! A counting global allocator counts the allocations of the thread under test only. Both
//! contexts run without a helper thread, so all progress happens on that thread.

use std::time::Duration;

use xrdma_testnet::Topology;
use xrdma_testnet::alloc::{CountingAlloc, assert_allocates_nothing};
use xrdma_verbs::net::{
    FrameIo,
    sim::{self, SimConfig, SimNetwork},
    xdp::{XdpConfig, XdpIo},
};
use xrdma_verbs::verbs::*;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const SIZE: usize = 4096;

/// A registered buffer of `len` bytes (8-aligned, for atomics).
struct Buf {
    mr: Mr,
    mem: Vec<u64>,
}

impl Buf {
    fn new(pd: &Pd, len: usize) -> Buf {
        let mut mem = vec![0u64; len / 8];
        let access = AccessFlags::LOCAL_WRITE
            | AccessFlags::REMOTE_WRITE
            | AccessFlags::REMOTE_READ
            | AccessFlags::REMOTE_ATOMIC;
        let mr = unsafe { pd.reg_mr(mem.as_mut_ptr().cast(), len, access) }.unwrap();
        Buf { mr, mem }
    }

    fn addr(&self) -> u64 {
        self.mem.as_ptr() as u64
    }

    fn sge(&self, length: usize) -> Sge {
        Sge {
            addr: self.addr(),
            length: length as u32,
            lkey: self.mr.lkey(),
        }
    }
}

fn rounds(a_io: Box<dyn FrameIo>, b_io: Box<dyn FrameIo>, net: Option<&SimNetwork>, path_mtu: Mtu) {
    let config = || ContextConfig {
        progress_thread: false,
        ..ContextConfig::seeded(1)
    };
    let (a, b) = (
        Context::new(a_io, config()).unwrap(),
        Context::new(b_io, config()).unwrap(),
    );
    let setup = |ctx: &Context| {
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(64, None).unwrap();
        let qp = pd.create_qp(&QpInitAttr::rc(&cq, &cq, 16)).unwrap();
        (pd, cq, qp)
    };
    let ((pd_a, cq_a, qp_a), (pd_b, cq_b, qp_b)) = (setup(&a), setup(&b));
    let peer = |ctx: &Context, qp: &QueuePair| RcPeer {
        ah: AhAttr::new(ctx.gid(0).unwrap()),
        qpn: qp.qpn().value(),
        psn: 0xff_ff00,
        our_psn: 0xff_ff00,
        path_mtu,
        access: AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_ATOMIC,
        rd_atomic: 4,
    };
    qp_a.bring_up_rc(&peer(&b, &qp_b)).unwrap();
    qp_b.bring_up_rc(&peer(&a, &qp_a)).unwrap();
    let (src, dst) = (Buf::new(&pd_a, SIZE), Buf::new(&pd_b, SIZE));
    let (src_sge, dst_sge) = ([src.sge(SIZE)], [dst.sge(SIZE)]);
    let atomic_sge = [src.sge(8)];
    let remote = Some((dst.addr(), dst.mr.rkey()));
    let wr = |opcode, sg_list| SendWr {
        wr_id: opcode as u64,
        opcode,
        send_flags: SendFlags::SIGNALED,
        sg_list,
        imm_data: 0,
        ud: None,
        rdma: remote,
        atomic: Some(AtomicWr {
            remote_addr: dst.addr(),
            rkey: dst.mr.rkey(),
            compare_add: 1,
            swap: 0,
        }),
    };
    let requests = [
        wr(SendOpcode::Send, &src_sge),
        wr(SendOpcode::RdmaWrite, &src_sge),
        wr(SendOpcode::RdmaRead, &src_sge),
        wr(SendOpcode::AtomicFetchAndAdd, &atomic_sge),
    ];
    let mut wcs = [WorkCompletion::default(); 4];
    let round = || {
        unsafe {
            qp_b.post_recv(&RecvWr {
                wr_id: 9,
                sg_list: &dst_sge,
            })
        }
        .unwrap();
        for w in &requests {
            unsafe { qp_a.post_send(w) }.unwrap();
        }
        let (mut sent, mut received) = (0, 0);
        for _ in 0..1_000_000 {
            if let Some(net) = net {
                net.advance(Duration::from_micros(5));
            }
            let n = cq_a.poll(&mut wcs);
            for wc in &wcs[..n] {
                assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
                sent += 1;
            }
            let n = cq_b.poll(&mut wcs);
            for wc in &wcs[..n] {
                assert_eq!((wc.status, wc.byte_len as usize), (WcStatus::Success, SIZE));
                received += 1;
            }
            if sent == requests.len() && received == 1 {
                return;
            }
        }
        panic!("round not done: {sent} sent, {received} received");
    };
    assert_allocates_nothing("SEND, WRITE, READ and fetch-and-add", 10_000, round);
}

#[test]
fn rc_steady_state_allocates_nothing_on_the_simulator() {
    let net = SimNetwork::new(SimConfig::default());
    let a = Box::new(net.endpoint(sim::host_addr(1)).unwrap());
    let b = Box::new(net.endpoint(sim::host_addr(2)).unwrap());
    rounds(a, b, Some(&net), Mtu::Mtu1024);
}

#[test]
fn rc_steady_state_allocates_nothing_over_xdp() {
    over_xdp(Topology::pair(), Mtu::Mtu1024);
}

#[test]
fn rc_steady_state_allocates_nothing_over_xdp_with_jumbo_frames() {
    // Path MTU 4096: the 4 KiB SEND, WRITE and READ are one packet each, spanning two UMEM
    // frames on the way out and copied together on the way in.
    over_xdp(Topology::builder().mtu(9000).pair(), Mtu::Mtu4096);
}

fn over_xdp(t: Result<Topology, xrdma_testnet::Error>, path_mtu: Mtu) {
    let t = t.unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let open = |host: &xrdma_testnet::Host| -> Box<dyn FrameIo> {
        let iface = host.iface().to_string();
        host.ns().run(move || {
            Box::new(XdpIo::open(&XdpConfig::new(iface)).expect("xdp")) as Box<dyn FrameIo>
        })
    };
    rounds(open(t.a()), open(t.b()), None, path_mtu);
}
