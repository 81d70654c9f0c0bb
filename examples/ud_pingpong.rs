//! What rdma-core's `ibv_ud_pingpong` does, written against xrdma's Rust API: a UD QP on each
//! side, addresses exchanged over TCP as `lid:qpn:psn:gid`, then `--iters` round trips of
//! `--size`-byte SENDs, and the same two result lines.
//!
//! ```text
//! cargo run --example ud_pingpong -- --iface veth0                 # server
//! cargo run --example ud_pingpong -- --iface veth1 198.18.0.1      # client
//! ```

mod common;

use clap::Parser;
use common::{Common, Dest, RECV_WRID, Result, SEND_WRID, exchange, ping_pong, rand_psn};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::{Qkey, Qpn};

const QKEY: u32 = 0x1111_1111;
const GRH: usize = 40;

/// UD ping-pong over xrdma (like ibv_ud_pingpong).
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Bytes per message (at most the path MTU).
    #[arg(short, long, default_value_t = 1024)]
    size: usize,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("ud_pingpong: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let (ctx, channel) = args.common.open()?;
    let mtu = ctx.query_port(1)?.active_mtu.bytes();
    if args.size > mtu {
        return Err(format!(
            "requested size {} is larger than the port MTU {mtu}",
            args.size
        )
        .into());
    }
    let pd = ctx.alloc_pd()?;
    let mut buf = vec![0u8; args.size + GRH];
    // SAFETY: `buf` outlives every QP that uses the region (dropped at the end of `run`
    // after the QP).
    let mr = unsafe { pd.reg_mr(buf.as_mut_ptr(), buf.len(), AccessFlags::LOCAL_WRITE) }?;
    let cq = ctx.create_cq(args.common.rx_depth + 1, channel.as_ref())?;
    let cap = QpCap {
        max_send_wr: 1,
        max_recv_wr: args.common.rx_depth,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 0,
    };
    let qp = pd.create_qp(&QpInitAttr {
        cap,
        ..QpInitAttr::ud(&cq, &cq, 1)
    })?;
    qp.modify(
        &QpAttr {
            qkey: QKEY,
            ..QpAttr::new(QpState::Init)
        },
        AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
    )?;
    let recv_sge = Sge {
        addr: buf.as_ptr() as u64,
        length: buf.len() as u32,
        lkey: mr.lkey(),
    };
    let post_recv = || {
        // SAFETY: the registered buffer outlives the QP.
        unsafe {
            qp.post_recv(&RecvWr {
                wr_id: RECV_WRID,
                sg_list: &[recv_sge],
            })
        }
    };
    for _ in 0..args.common.rx_depth {
        post_recv()?;
    }
    if channel.is_some() {
        cq.req_notify(false)?;
    }
    let psn = rand_psn();
    qp.modify(&QpAttr::new(QpState::Rtr), AttrMask::STATE)?;
    qp.modify(
        &QpAttr {
            sq_psn: psn,
            ..QpAttr::new(QpState::Rts)
        },
        AttrMask::STATE | AttrMask::SQ_PSN,
    )?;

    let me = Dest {
        qpn: qp.qpn().value(),
        psn,
        gid: ctx.gid(args.common.gid_idx)?,
    };
    let peer = exchange(
        args.common.servername.as_deref(),
        args.common.port,
        &me,
        ':',
        |_| Ok(()),
    )?;
    let ah = pd.create_ah(&AhAttr {
        sgid_index: args.common.gid_idx as u8,
        ..AhAttr::new(peer.gid)
    })?;
    let send_sge = Sge {
        addr: buf.as_ptr() as u64 + GRH as u64,
        length: args.size as u32,
        lkey: mr.lkey(),
    };
    let post_send = || {
        let wr = SendWr {
            wr_id: SEND_WRID,
            opcode: SendOpcode::Send,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[send_sge],
            imm_data: 0,
            rdma: None,
            atomic: None,
            ud: Some(UdDest {
                ah: &ah,
                remote_qpn: Qpn::new_masked(peer.qpn),
                remote_qkey: Qkey::new(QKEY),
            }),
        };
        // SAFETY: the registered buffer outlives the QP.
        unsafe { qp.post_send(&wr) }
    };

    ping_pong(
        &ctx,
        &cq,
        channel.as_ref(),
        &args.common,
        args.size,
        post_send,
        post_recv,
    )?;
    drop(qp);
    drop(mr);
    Ok(())
}
