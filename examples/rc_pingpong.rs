//! What rdma-core's `ibv_rc_pingpong` does, written against xrdma's Rust API: an RC QP on
//! each side, addresses exchanged over TCP as `lid:qpn:psn:gid`, INIT, RTR and RTS, then
//! `--iters` round trips of `--size`-byte SENDs, and the same two result lines. It speaks
//! to `ibv_rc_pingpong -g 0` running over libxrdma.so.
//!
//! ```text
//! cargo run --example rc_pingpong -- -d veth0                 # server
//! cargo run --example rc_pingpong -- -d veth1 198.18.0.1      # client
//! ```

mod common;

use clap::Parser;
use common::{Common, Dest, RECV_WRID, Result, SEND_WRID, exchange, ping_pong, rand_psn};
use xrdma_verbs::verbs::*;

/// RC ping-pong over xrdma (like ibv_rc_pingpong).
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Bytes per message.
    #[arg(short, long, default_value_t = 4096)]
    size: usize,
    /// Path MTU: 256, 512, 1024, 2048 or 4096 (at most the port's).
    #[arg(short, long, default_value_t = 1024)]
    mtu: usize,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("rc_pingpong: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let (ctx, channel) = args.common.open()?;
    let path_mtu = Mtu::ALL
        .into_iter()
        .find(|m| m.bytes() == args.mtu)
        .ok_or_else(|| format!("invalid MTU {}", args.mtu))?;
    let pd = ctx.alloc_pd()?;
    let mut buf = vec![0u8; args.size.max(1)];
    // SAFETY: `buf` outlives the QP that uses the region (dropped at the end of `run`
    // after the QP).
    let mr = unsafe { pd.reg_mr(buf.as_mut_ptr(), buf.len(), AccessFlags::LOCAL_WRITE) }?;
    let cq = ctx.create_cq(args.common.rx_depth + 1, channel.as_ref())?;
    let mut attr = QpInitAttr::rc(&cq, &cq, 1);
    attr.cap.max_recv_wr = args.common.rx_depth;
    let qp = pd.create_qp(&attr)?;
    let sge = Sge {
        addr: buf.as_ptr() as u64,
        length: args.size as u32,
        lkey: mr.lkey(),
    };
    let post_recv = || {
        // SAFETY: the registered buffer outlives the QP.
        unsafe {
            qp.post_recv(&RecvWr {
                wr_id: RECV_WRID,
                sg_list: &[sge],
            })
        }
    };
    let me = Dest {
        qpn: qp.qpn().value(),
        psn: rand_psn(),
        gid: ctx.gid(args.common.gid_idx)?,
    };
    // Armed before the exchange, as ibv_rc_pingpong does: the client's first SEND can
    // arrive the moment the server has answered, and a completion that lands before the CQ
    // is armed raises no event, so the server would wait for one for ever.
    if channel.is_some() {
        cq.req_notify(false)?;
    }
    // Up to RTS with receives posted before the server answers (and so before the client
    // can send).
    exchange(
        args.common.servername.as_deref(),
        args.common.port,
        &me,
        ',',
        |peer| {
            qp.bring_up_rc(&RcPeer {
                ah: AhAttr {
                    sgid_index: args.common.gid_idx as u8,
                    ..AhAttr::new(peer.gid)
                },
                qpn: peer.qpn,
                psn: peer.psn,
                our_psn: me.psn,
                path_mtu,
                access: AccessFlags::empty(),
                rd_atomic: 1,
            })?;
            for _ in 0..args.common.rx_depth {
                post_recv()?;
            }
            Ok(())
        },
    )?;
    let post_send = || {
        let wr = SendWr {
            wr_id: SEND_WRID,
            opcode: SendOpcode::Send,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[sge],
            imm_data: 0,
            ud: None,
            rdma: None,
            atomic: None,
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
