//! `ud-lat` and `ud-bw`: UD SENDs through the verbs (context, PD, MR, CQ, UD QP, AH), as
//! perftest's `ib_send_lat`/`ib_send_bw` do with `-c UD`.

use std::time::{Duration, Instant};

use xrdma_verbs::net::FrameIo;
use xrdma_verbs::verbs::{
    AccessFlags, AddressHandle, AhAttr, Context, Cq, Gid, Mr, QpType, QueuePair, SendFlags,
    SendOpcode, SendWr, Sge, UdDest, WcOpcode, WorkCompletion,
};
use xrdma_verbs::wire::{Qkey, Qpn};

use super::oob::Message;
use super::verbs::{self, check};
use super::{Limit, Options, PerfError, Report, Result, Role, Test, meet};

/// Receives kept posted, and the send signaling interval.
const DEPTH: u32 = 512;
const SIGNAL_EVERY: u64 = 64;
const QKEY: u32 = 0x1111_1111;
/// The GRH at the start of every UD receive buffer.
const GRH: usize = 40;
/// A ping not answered within this is sent again.
const RESEND_AFTER: Duration = Duration::from_millis(200);
const WARMUP: u64 = 1000;

/// One end's verbs objects. Field order is drop order: QP before its CQ and PD.
struct Ud {
    qp: QueuePair,
    cq: Cq,
    ah: Option<AddressHandle>,
    peer_qpn: Qpn,
    recv: Vec<u8>,
    recv_mr: Mr,
    send: Vec<u8>,
    send_mr: Mr,
    /// Bytes per receive slot: the GRH and the largest message the link carries.
    slot: usize,
    /// Bytes per message, as the client asked (known once the two ends have met).
    size: usize,
    ctx: Context,
}

impl Ud {
    /// Opens the verbs objects, with receives posted for the largest message the link
    /// carries: they are posted before the server learns the client's message size.
    fn new(io: Box<dyn FrameIo>) -> Result<Ud> {
        let (ctx, pd, cq, qp) = verbs::open(io, QpType::Ud, (DEPTH, DEPTH), 64, false)?;
        qp.bring_up_ud(QKEY, 0)?;
        let max = ctx.query_port(1)?.active_mtu.bytes();
        let slot = GRH + max;
        let mut recv = vec![0u8; slot * DEPTH as usize];
        let mut send = vec![0u8; max];
        // SAFETY: both buffers live in the returned struct, which drops the regions (and the
        // QP that could still write into them) before the buffers.
        let recv_mr =
            unsafe { pd.reg_mr(recv.as_mut_ptr(), recv.len(), AccessFlags::LOCAL_WRITE) }?;
        // SAFETY: as above.
        let send_mr = unsafe { pd.reg_mr(send.as_mut_ptr(), send.len(), AccessFlags::empty()) }?;
        let ud = Ud {
            qp,
            cq,
            ah: None,
            peer_qpn: Qpn::new_masked(0),
            recv,
            recv_mr,
            send,
            send_mr,
            slot,
            size: 0,
            ctx,
        };
        for i in 0..DEPTH as u64 {
            ud.post_recv(i)?;
        }
        Ok(ud)
    }

    fn post_recv(&self, i: u64) -> Result<()> {
        let slot = self.slot;
        let sge = Sge {
            addr: self.recv.as_ptr() as u64 + i * slot as u64,
            length: slot as u32,
            lkey: self.recv_mr.lkey(),
        };
        // SAFETY: slot `i` of the registered receive buffer, which outlives the QP.
        unsafe { verbs::post_recv(&self.qp, i, sge) }
    }

    /// The sequence number at the start of receive slot `i`'s payload.
    fn seq_in(&self, i: u64) -> u64 {
        let at = i as usize * self.slot + GRH;
        u64::from_le_bytes(self.recv[at..at + 8].try_into().expect("8 bytes"))
    }

    fn send(&mut self, seq: u64, signaled: bool) -> Result<()> {
        self.send[..8].copy_from_slice(&seq.to_le_bytes());
        let ah = self.ah.as_ref().expect("peer known before sending");
        let sge = Sge {
            addr: self.send.as_ptr() as u64,
            length: self.size as u32,
            lkey: self.send_mr.lkey(),
        };
        let flags = if signaled {
            SendFlags::SIGNALED
        } else {
            SendFlags::default()
        };
        let wr = SendWr {
            wr_id: seq,
            opcode: SendOpcode::Send,
            send_flags: flags,
            sg_list: &[sge],
            imm_data: 0,
            rdma: None,
            atomic: None,
            ud: Some(UdDest {
                ah,
                remote_qpn: self.peer_qpn,
                remote_qkey: Qkey::new(QKEY),
            }),
        };
        // SAFETY: the registered send buffer outlives the QP; UD sends have left it by the
        // time post_send returns.
        unsafe { self.qp.post_send(&wr) }?;
        Ok(())
    }

    fn report(&self, test: Test) -> Report {
        verbs::report(&self.ctx, test, self.size)
    }
}

/// Runs `ud-lat` or `ud-bw` as `opts` says.
pub(super) fn run(opts: &Options, io: Box<dyn FrameIo>) -> Result<Report> {
    if opts.size < 8 {
        return Err(PerfError(format!(
            "{} needs --size 8 or more: each message carries its sequence number",
            opts.test
        )));
    }
    let mut ud = Ud::new(io)?;
    let max = ud.ctx.query_port(1)?.active_mtu.bytes();
    let link = ud.ctx.link().clone();
    let mut s = meet(
        opts,
        &link,
        max,
        &[("qpn", ud.qp.qpn().value().to_string())],
    )?;
    ud.size = s.size;
    ud.peer_qpn = Qpn::new(s.peer_says.parse("qpn")?).ok_or(PerfError("bad peer QPN".into()))?;
    let sgid = link
        .addrs
        .iter()
        .position(|a| a.is_ipv4() == s.peer.is_ipv4())
        .unwrap_or(0) as u8;
    let pd_ah = AhAttr {
        sgid_index: sgid,
        ..AhAttr::new(Gid::from_ip(s.peer.ip()))
    };
    ud.ah = Some(ud.qp_pd_ah(&pd_ah)?);
    match (opts.role, opts.test) {
        (Role::Client(_), Test::UdLat) => lat_client(&mut ud, &mut s.ctrl, s.limit),
        (Role::Server, Test::UdLat) => lat_server(&mut ud, &mut s.ctrl),
        (Role::Client(_), _) => bw_client(&mut ud, &mut s.ctrl, s.limit),
        (Role::Server, _) => bw_server(&mut ud, &mut s.ctrl),
    }
}

impl Ud {
    fn qp_pd_ah(&self, attr: &AhAttr) -> Result<AddressHandle> {
        Ok(self.qp.pd().create_ah(attr)?)
    }
}

fn lat_client(ud: &mut Ud, ctrl: &mut super::oob::Control, limit: Limit) -> Result<Report> {
    let mut samples = Vec::with_capacity(limit.iters.min(10_000_000) as usize);
    let mut wcs = [WorkCompletion::default(); 32];
    let (mut sent, mut lost, mut started, mut i) = (0u64, 0u64, None::<Instant>, 0u64);
    loop {
        if i >= WARMUP {
            let start = *started.get_or_insert_with(Instant::now);
            if limit.done(i - WARMUP, start) {
                break;
            }
        }
        let t0 = Instant::now();
        ud.send(i, i % SIGNAL_EVERY == 0)?;
        sent += 1;
        let (mut resent, mut last_send) = (false, t0);
        let answered = 'wait: loop {
            let n = ud.cq.poll(&mut wcs);
            for wc in &wcs[..n] {
                check(wc)?;
                if wc.opcode == WcOpcode::Recv {
                    let echoed = ud.seq_in(wc.wr_id);
                    ud.post_recv(wc.wr_id)?;
                    if echoed == i {
                        break 'wait true;
                    }
                }
            }
            if last_send.elapsed() > RESEND_AFTER {
                if resent {
                    break false;
                }
                resent = true;
                last_send = Instant::now();
                ud.send(i, false)?;
            }
        };
        let rtt = t0.elapsed();
        if !answered {
            lost += 1;
        } else if i >= WARMUP && !resent {
            samples.push(rtt / 2);
        }
        i += 1;
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    ctrl.send(&Message::new("END").with("sent", sent))?;
    ctrl.recv()?;
    samples.sort_unstable();
    let mut r = ud.report(Test::UdLat);
    r.iters = samples.len() as u64;
    r.sent = samples.len() as u64 + lost;
    r.elapsed = elapsed;
    r.latencies = samples;
    Ok(r)
}

fn lat_server(ud: &mut Ud, ctrl: &mut super::oob::Control) -> Result<Report> {
    let mut wcs = [WorkCompletion::default(); 32];
    let (mut echoed, mut first, mut last_check) = (0u64, None::<Instant>, Instant::now());
    loop {
        let n = ud.cq.poll(&mut wcs);
        for wc in &wcs[..n] {
            check(wc)?;
            if wc.opcode == WcOpcode::Recv {
                let seq = ud.seq_in(wc.wr_id);
                ud.post_recv(wc.wr_id)?;
                ud.send(seq, echoed % SIGNAL_EVERY == 0)?;
                first.get_or_insert_with(Instant::now);
                echoed += 1;
            }
        }
        if last_check.elapsed() > Duration::from_millis(5) {
            last_check = Instant::now();
            if let Some(end) = ctrl.try_recv()? {
                ctrl.send(&Message::new("RESULT").with("received", echoed))?;
                let mut r = ud.report(Test::UdLat);
                r.iters = echoed;
                r.sent = end.parse("sent")?;
                r.elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
                return Ok(r);
            }
        }
    }
}

fn bw_client(ud: &mut Ud, ctrl: &mut super::oob::Control, limit: Limit) -> Result<Report> {
    let mut wcs = [WorkCompletion::default(); 64];
    let start = Instant::now();
    let mut sent = 0u64;
    while !limit.done(sent, start) {
        ud.send(sent, sent % SIGNAL_EVERY == SIGNAL_EVERY - 1)?;
        sent += 1;
        if sent.is_multiple_of(SIGNAL_EVERY) {
            let n = ud.cq.poll(&mut wcs);
            for wc in &wcs[..n] {
                check(wc)?;
            }
        }
    }
    ctrl.send(&Message::new("END").with("sent", sent))?;
    let result = ctrl.recv()?;
    let mut r = ud.report(Test::UdBw);
    r.iters = result.parse("received")?;
    r.sent = sent;
    r.elapsed = Duration::from_nanos(result.parse("elapsed_ns")?);
    Ok(r)
}

fn bw_server(ud: &mut Ud, ctrl: &mut super::oob::Control) -> Result<Report> {
    let report = ud.report(Test::UdBw);
    verbs::count_receives(&ud.cq, ctrl, |slot| ud.post_recv(slot), report)
}
