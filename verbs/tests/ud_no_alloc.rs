//! The UD steady-state path allocates nothing: post_send, receive, scatter, complete and
//! poll, 10,000 times over, on the simulator, on kernel UDP over loopback, and over AF_XDP
//! between two namespaced hosts.
//!
//! A counting global allocator counts the allocations of the thread under test only. Both
//! contexts run without a helper thread, so all progress happens on that thread.

use std::time::Duration;

use xrdma_testnet::Topology;
use xrdma_testnet::alloc::{CountingAlloc, allocations, assert_allocates_nothing};
use xrdma_verbs::net::{
    FrameIo,
    sim::{self, SimConfig, SimNetwork},
    udp::{UdpConfig, UdpIo},
    xdp::{XdpConfig, XdpIo},
};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::Qkey;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const QKEY: u32 = 0x77;

/// Sends `n` 64-byte UD messages a -> b, each received, polled and reposted.
fn ping(a_io: Box<dyn FrameIo>, b_io: Box<dyn FrameIo>, net: Option<&SimNetwork>) {
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
        let qp = pd.create_qp(&QpInitAttr::ud(&cq, &cq, 16)).unwrap();
        qp.bring_up_ud(QKEY, 0).unwrap();
        (pd, cq, qp)
    };
    let ((pd_a, cq_a, qp_a), (pd_b, cq_b, qp_b)) = (setup(&a), setup(&b));
    let mut tx = vec![5u8; 64];
    let mut rx = vec![0u8; 104];
    let tx_mr = unsafe { pd_a.reg_mr(tx.as_mut_ptr(), tx.len(), AccessFlags::empty()) }.unwrap();
    let rx_mr =
        unsafe { pd_b.reg_mr(rx.as_mut_ptr(), rx.len(), AccessFlags::LOCAL_WRITE) }.unwrap();
    let ah = pd_a.create_ah(&AhAttr::new(b.gid(0).unwrap())).unwrap();
    let tx_sge = [Sge {
        addr: tx.as_ptr() as u64,
        length: 64,
        lkey: tx_mr.lkey(),
    }];
    let rx_sge = [Sge {
        addr: rx.as_ptr() as u64,
        length: 104,
        lkey: rx_mr.lkey(),
    }];
    let wr = SendWr {
        wr_id: 1,
        opcode: SendOpcode::Send,
        send_flags: SendFlags::SIGNALED,
        sg_list: &tx_sge,
        imm_data: 0,
        rdma: None,
        atomic: None,
        ud: Some(UdDest {
            ah: &ah,
            remote_qpn: qp_b.qpn(),
            remote_qkey: Qkey::new(QKEY),
        }),
    };
    let mut wcs = [WorkCompletion::default(); 4];
    let round = || {
        unsafe {
            qp_b.post_recv(&RecvWr {
                wr_id: 2,
                sg_list: &rx_sge,
            })
        }
        .unwrap();
        unsafe { qp_a.post_send(&wr) }.unwrap();
        assert_eq!(cq_a.poll(&mut wcs), 1);
        if let Some(net) = net {
            net.advance(Duration::from_micros(10));
        }
        let mut got = 0;
        for _ in 0..1_000_000 {
            got += cq_b.poll(&mut wcs);
            if got > 0 {
                break;
            }
        }
        assert_eq!(
            (got, wcs[0].status, wcs[0].byte_len),
            (1, WcStatus::Success, 104)
        );
    };
    assert_allocates_nothing("UD round trips", 10_000, round);
}

#[test]
fn ud_steady_state_allocates_nothing_on_the_simulator() {
    let net = SimNetwork::new(SimConfig::default());
    let a = Box::new(net.endpoint(sim::host_addr(1)).unwrap());
    let b = Box::new(net.endpoint(sim::host_addr(2)).unwrap());
    ping(a, b, Some(&net));
}

#[test]
fn ud_steady_state_allocates_nothing_over_kernel_udp() {
    let open = |ip: &str| -> Box<dyn FrameIo> {
        Box::new(
            UdpIo::open(&UdpConfig {
                addr: Some(ip.parse().unwrap()),
                port: 47_911,
                ..UdpConfig::new("lo")
            })
            .unwrap(),
        )
    };
    ping(open("127.0.0.1"), open("127.0.0.2"), None);
}

#[test]
fn ud_steady_state_allocates_nothing_over_xdp() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let open = |host: &xrdma_testnet::Host| -> Box<dyn FrameIo> {
        let iface = host.iface().to_string();
        host.ns().run(move || {
            Box::new(XdpIo::open(&XdpConfig::new(iface)).expect("xdp")) as Box<dyn FrameIo>
        })
    };
    ping(open(t.a()), open(t.b()), None);
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 32]);
    assert!(allocations() > before);
    drop(v);
}
