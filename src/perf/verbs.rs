//! What the UD and RC tests share: a context whose progress happens inline (both ends spin
//! on their CQ), one CQ and one QP on it, completion checks and the report's header.

use xrdma_verbs::net::FrameIo;
use xrdma_verbs::verbs::{
    Context, ContextConfig, Cq, Pd, QpCap, QpInitAttr, QpType, QueuePair, RecvWr, Sge, WcOpcode,
    WcStatus, WorkCompletion,
};

use super::oob::Control;
use super::{PerfError, Report, Result, Test, count_until_end};

impl From<xrdma_verbs::verbs::Error> for PerfError {
    fn from(e: xrdma_verbs::verbs::Error) -> Self {
        PerfError(e.to_string())
    }
}

/// A context on `io` without a helper thread, its PD, a CQ for both queues, and a QP of
/// `qp_type` with `depth` sends and receives of one SGE each.
pub(super) fn open(
    io: Box<dyn FrameIo>,
    qp_type: QpType,
    (depth, recv_depth): (u32, u32),
    max_inline_data: u32,
    sq_sig_all: bool,
) -> Result<(Context, Pd, Cq, QueuePair)> {
    let ctx = Context::new(
        io,
        ContextConfig {
            progress_thread: false,
            ..ContextConfig::default()
        },
    )?;
    let pd = ctx.alloc_pd()?;
    let cq = ctx.create_cq(depth + recv_depth + 64, None)?;
    let cap = QpCap {
        max_send_wr: depth,
        max_recv_wr: recv_depth,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data,
    };
    let qp = pd.create_qp(&QpInitAttr {
        qp_type,
        cap,
        sq_sig_all,
        ..QpInitAttr::ud(&cq, &cq, recv_depth)
    })?;
    Ok((ctx, pd, cq, qp))
}

/// An error unless the work request succeeded.
pub(super) fn check(wc: &WorkCompletion) -> Result<()> {
    if wc.status == WcStatus::Success {
        Ok(())
    } else {
        Err(PerfError(format!(
            "work request {} failed: {}",
            wc.wr_id,
            wc.status.as_str()
        )))
    }
}

/// A report of `test` with `size`-byte messages on `ctx`'s link, counts still empty.
pub(super) fn report(ctx: &Context, test: Test, size: usize) -> Report {
    let link = ctx.link();
    Report {
        test: test.name().into(),
        backend: link.backend.to_string(),
        mode: link.mode.to_string(),
        size,
        ..Report::default()
    }
}

/// The context's packet counters and receive drops, for an error that says where packets
/// went when a test stops making progress.
pub(super) fn counters(ctx: &Context) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let d = ctx.rx_drops();
    format!(
        "{:?}; dropped above the backend: malformed {}, no QP {}, QP state {}, Q_Key {}, \
         no receive {}, QP1 {}",
        ctx.net_stats(),
        d.malformed.load(Relaxed),
        d.no_qp.load(Relaxed),
        d.qp_state.load(Relaxed),
        d.bad_qkey.load(Relaxed),
        d.rq_empty.load(Relaxed),
        d.qp1.load(Relaxed),
    )
}

/// The receiver of a SEND stream: counts the receives completing on `cq`, handing each to
/// `repost`, until the client says END; fills `report` with the counts.
pub(super) fn count_receives(
    cq: &Cq,
    ctrl: &mut Control,
    mut repost: impl FnMut(u64) -> Result<()>,
    mut report: Report,
) -> Result<Report> {
    let mut wcs = [WorkCompletion::default(); 64];
    let counted = count_until_end(ctrl, || {
        let n = cq.poll(&mut wcs);
        let mut received = 0;
        for wc in &wcs[..n] {
            check(wc)?;
            if wc.opcode == WcOpcode::Recv {
                repost(wc.wr_id)?;
                received += 1;
            }
        }
        Ok(received)
    })?;
    report.iters = counted.received;
    report.sent = counted.sent;
    report.elapsed = counted.elapsed;
    Ok(report)
}

/// Posts receive `wr_id` into `sge`.
///
/// # Safety
///
/// The memory `sge` names must stay valid until the receive completes or the QP is gone
/// (`QueuePair::post_recv`'s contract).
pub(super) unsafe fn post_recv(qp: &QueuePair, wr_id: u64, sge: Sge) -> Result<()> {
    // SAFETY: the caller's contract.
    unsafe {
        qp.post_recv(&RecvWr {
            wr_id,
            sg_list: &[sge],
        })
    }?;
    Ok(())
}
