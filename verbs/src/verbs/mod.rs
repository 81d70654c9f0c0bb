//! The verbs object model: contexts, protection domains, memory regions, completion queues
//! and channels, address handles and queue pairs, with libibverbs' semantics.
//!
//! Parents are held by `Arc`: a QP keeps its PD and CQs alive, every object keeps its
//! context alive. All objects are `Send + Sync`; their methods take `&self`.
//!
//! Posting work is `unsafe`: the memory a work request names must stay valid until its
//! completion is polled (or, for sends, until the post returns when `INLINE` is set).
//!
//! # Example: UD between two endpoints of a simulated network
//!
//! ```
//! use xrdma_verbs::net::sim::{self, SimConfig, SimNetwork};
//! use xrdma_verbs::verbs::*;
//! use xrdma_verbs::wire::{Qkey, Qpn};
//!
//! let net = SimNetwork::new(SimConfig { delay: std::time::Duration::ZERO, ..SimConfig::default() });
//! let open = |n| Context::new(Box::new(net.endpoint(sim::host_addr(n)).unwrap()), ContextConfig::seeded(n as u64)).unwrap();
//! let (a, b) = (open(1), open(2));
//! let ud = |ctx: &Context| {
//!     let pd = ctx.alloc_pd().unwrap();
//!     let cq = ctx.create_cq(16, None).unwrap();
//!     let qp = pd.create_qp(&QpInitAttr::ud(&cq, &cq, 8)).unwrap();
//!     qp.modify(&QpAttr { qkey: 0x11, ..QpAttr::new(QpState::Init) },
//!               AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY).unwrap();
//!     qp.modify(&QpAttr::new(QpState::Rtr), AttrMask::STATE).unwrap();
//!     qp.modify(&QpAttr::new(QpState::Rts), AttrMask::STATE | AttrMask::SQ_PSN).unwrap();
//!     (pd, cq, qp)
//! };
//! let ((pd_a, cq_a, qp_a), (pd_b, cq_b, qp_b)) = (ud(&a), ud(&b));
//!
//! let mut rx = vec![0u8; 40 + 5];
//! let rx_mr = unsafe { pd_b.reg_mr(rx.as_mut_ptr(), rx.len(), AccessFlags::LOCAL_WRITE) }.unwrap();
//! let sge = Sge { addr: rx.as_ptr() as u64, length: rx.len() as u32, lkey: rx_mr.lkey() };
//! unsafe { qp_b.post_recv(&RecvWr { wr_id: 7, sg_list: &[sge] }) }.unwrap();
//!
//! let ah = pd_a.create_ah(&AhAttr::new(b.gid(0).unwrap())).unwrap();
//! let tx = *b"hello";
//! let wr = SendWr { wr_id: 1, opcode: SendOpcode::Send, send_flags: SendFlags::SIGNALED | SendFlags::INLINE,
//!                   sg_list: &[Sge { addr: tx.as_ptr() as u64, length: 5, lkey: Lkey(0) }], imm_data: 0,
//!                   ud: Some(UdDest { ah: &ah, remote_qpn: qp_b.qpn(), remote_qkey: Qkey::new(0x11) }), rdma: None, atomic: None };
//! unsafe { qp_a.post_send(&wr) }.unwrap();
//!
//! // Polling drives progress; the helper thread may get there first, so poll until done.
//! let poll_one = |cq: &Cq| {
//!     let mut wc = [WorkCompletion::default(); 1];
//!     while cq.poll(&mut wc) == 0 {}
//!     wc[0]
//! };
//! assert_eq!(poll_one(&cq_a).status, WcStatus::Success);
//! let wc = [poll_one(&cq_b)];
//! assert_eq!((wc[0].wr_id, wc[0].byte_len, wc[0].src_qp), (7, 45, qp_a.qpn().value()));
//! assert_eq!(&rx[40..], b"hello");
//! drop(rx_mr);
//! ```

pub mod channel;
pub mod completion;
pub mod device;
pub mod mr;
pub mod qp_state;

mod ah;
mod async_event;
pub(crate) mod context;
mod cq;
mod error;
mod pd;
mod qp;
mod rc;
mod recv_queue;
mod srq;
mod txbuf;
mod wr;

pub use ah::{AddressHandle, AhAttr};
pub use channel::CompletionChannel;
pub use completion::{WcFlags, WcOpcode, WcStatus, WorkCompletion};
pub use context::{
    AsyncEvent, Context, ContextConfig, QP1_QKEY, Qp1Agent, RxDrops, mark_service_thread,
};
pub use cq::Cq;
pub use device::{AtomicCap, DeviceAttr, Gid, Mtu, PortAttr};
pub use error::Error;
pub use mr::{AccessFlags, Lkey, MemoryRegion, Rkey};
pub use pd::{Mr, Pd};
pub use qp::{QpAttr, QpCap, QpHandle, QpInitAttr, QueuePair, RcPeer};
pub use qp_state::{AttrMask, QpState, QpType};
pub use srq::{Srq, SrqAttr, SrqAttrMask};
pub use txbuf::TxBufs;
pub use wr::{AtomicWr, RecvWr, SendFlags, SendOpcode, SendWr, Sge, UdDest};
