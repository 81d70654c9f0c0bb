//! The UD steady-state path allocates nothing over AF_XDP either: 10,000 round trips between
//! two namespaced hosts with a counting global allocator. Contexts run without a helper
//! thread so that all progress happens on the thread under test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use xrdma_testnet::{Host, Topology};
use xrdma_verbs::net::xdp::{XdpConfig, XdpIo};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::Qkey;

struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` unchanged; counting touches only a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract, which is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from System through this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for realloc.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const QKEY: u32 = 0x55;

fn context(host: &Host) -> Context {
    let iface = host.iface().to_string();
    host.ns().run(move || {
        let io = XdpIo::open(&XdpConfig::new(iface)).expect("xdp");
        Context::new(
            Box::new(io),
            ContextConfig {
                progress_thread: false,
                ..ContextConfig::seeded(9)
            },
        )
        .unwrap()
    })
}

#[test]
fn ud_steady_state_allocates_nothing_over_xdp() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (context(t.a()), context(t.b()));
    let setup = |ctx: &Context| {
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(64, None).unwrap();
        let qp = pd.create_qp(&QpInitAttr::ud(&cq, &cq, 16)).unwrap();
        qp.modify(
            &QpAttr {
                qkey: QKEY,
                ..QpAttr::new(QpState::Init)
            },
            AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
        )
        .unwrap();
        qp.modify(&QpAttr::new(QpState::Rtr), AttrMask::STATE)
            .unwrap();
        qp.modify(
            &QpAttr::new(QpState::Rts),
            AttrMask::STATE | AttrMask::SQ_PSN,
        )
        .unwrap();
        (pd, cq, qp)
    };
    let ((pd_a, cq_a, qp_a), (pd_b, cq_b, qp_b)) = (setup(&a), setup(&b));
    let mut tx = vec![5u8; 64];
    let mut rx = vec![0u8; 104];
    let tx_mr = unsafe { pd_a.reg_mr(tx.as_mut_ptr(), tx.len(), AccessFlags::empty()) }.unwrap();
    let rx_mr =
        unsafe { pd_b.reg_mr(rx.as_mut_ptr(), rx.len(), AccessFlags::LOCAL_WRITE) }.unwrap();
    let ah = pd_a
        .create_ah(&AhAttr {
            dgid: b.gid(0).unwrap(),
            sgid_index: 0,
            hop_limit: 64,
            traffic_class: 0,
            port_num: 1,
        })
        .unwrap();
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
        ud: Some(UdDest {
            ah: &ah,
            remote_qpn: qp_b.qpn(),
            remote_qkey: Qkey::new(QKEY),
        }),
    };
    let mut wcs = [WorkCompletion::default(); 4];
    let mut round = || {
        unsafe {
            qp_b.post_recv(&RecvWr {
                wr_id: 2,
                sg_list: &rx_sge,
            })
        }
        .unwrap();
        unsafe { qp_a.post_send(&wr) }.unwrap();
        assert_eq!(cq_a.poll(&mut wcs), 1);
        let mut got = 0;
        for _ in 0..10_000_000 {
            got += cq_b.poll(&mut wcs);
            if got > 0 {
                break;
            }
        }
        assert_eq!(
            (got, wcs[0].status, wcs[0].byte_len),
            (1, WcStatus::Success, 104),
            "a datagram was lost on the veth"
        );
    };
    for _ in 0..200 {
        round();
    }
    let before = allocations();
    for _ in 0..10_000 {
        round();
    }
    let allocated = allocations() - before;
    assert_eq!(
        allocated, 0,
        "{allocated} heap allocations in 10,000 UD round trips over xdp"
    );
}
