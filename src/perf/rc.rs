//! The RC tests, through RC QPs brought up as ibv_rc_pingpong does, as perftest's
//! `ib_send_lat`/`_bw`, `ib_write_lat`/`_bw`, `ib_read_lat`/`_bw` and `ib_atomic_lat` run
//! them:
//!
//! - `rc-send-lat`: SEND ping-pong; one-way latency is half the round trip.
//! - `rc-write-lat`: RDMA WRITE ping-pong: each end spins on the last 8 bytes of its buffer
//!   until the peer's WRITE changes them, then writes back; one-way latency as above.
//! - `rc-read-lat`, `rc-atomic-lat`: one READ (or fetch-and-add) at a time; the latency is
//!   the whole operation, as perftest reports it.
//! - `rc-send-bw`: SENDs streamed, counted by the receiver.
//! - `rc-write-bw`, `rc-read-bw`: WRITEs or READs streamed, counted by the requester as
//!   they complete (the responder's CPU takes no part, as on a real HCA).
//!
//! After the usual HELLO/OK, each end sends `QP qpn=.. psn=.. va=.. rkey=..`: its QP and
//! the buffer the peer may write, read or update.

use std::time::{Duration, Instant};

use xrdma_verbs::net::FrameIo;
use xrdma_verbs::verbs::{
    AccessFlags, AhAttr, AtomicWr, Context, Cq, Gid, Mr, QpType, QueuePair, RcPeer, Rkey,
    SendFlags, SendOpcode, SendWr, Sge, WcOpcode, WorkCompletion,
};

use super::oob::{Control, Message};
use super::verbs::{self, check};
use super::{Limit, Options, PerfError, Report, Result, Role, Test, meet};

/// Send queue depth.
const DEPTH: u32 = 128;
/// The most receives kept posted: as perftest's send tests (`--rx-depth` 512), more than a
/// window of SENDs, so that a receiver that is not scheduled for a while (a busy machine)
/// still has receives for what arrives meanwhile, rather than RNR NAKs that hold the
/// sender for 0.64 ms each. With 128, `rc-send-bw` fell from 776k to 16k messages/s with a
/// `yes` per core; with 512, to 180-195k.
const RECV_DEPTH: u32 = 512;
/// READs and atomics outstanding at once.
const RD_ATOMIC: u8 = 16;
/// Receive buffers take at most this many bytes in all (fewer receives for big messages).
const RECV_POOL: usize = 256 << 20;
/// The largest message.
pub(super) const MAX_SIZE: usize = 1 << 30;
const WARMUP: u64 = 100;

/// A buffer registered with the PD, reached through its pointer only: the peer's WRITEs,
/// READs and atomics touch it behind Rust's back. Its first slot is what we send, write
/// and read into; the slots after it are where the peer's SENDs land (one receive each) or
/// what the peer writes, reads and updates.
struct Buffer {
    // Field order is drop order: the region before the memory it covers.
    mr: Mr,
    ptr: *mut u8,
    len: usize,
    /// Bytes per slot: the message size, at least 8, a multiple of 8 (atomics' alignment).
    slot: usize,
    _mem: Vec<u64>,
}

impl Buffer {
    /// The address of byte `at`.
    fn addr(&self, at: usize) -> u64 {
        self.ptr as u64 + at as u64
    }

    /// The 8 bytes at `at`, read afresh each time (the peer writes them).
    fn word(&self, at: usize) -> u64 {
        assert!(at + 8 <= self.len);
        // SAFETY: in bounds (checked above) of memory this buffer owns; progress runs on
        // this thread, so nothing writes it during the read.
        u64::from_le_bytes(unsafe { self.ptr.add(at).cast::<[u8; 8]>().read_volatile() })
    }

    fn set_word(&self, at: usize, v: u64) {
        assert!(at + 8 <= self.len);
        // SAFETY: as in `word`.
        unsafe {
            self.ptr
                .add(at)
                .cast::<[u8; 8]>()
                .write_volatile(v.to_le_bytes())
        };
    }

    /// Where the marker of the message in slot `i` is: its last 8 bytes.
    fn marker(&self, i: usize, size: usize) -> usize {
        i * self.slot + size.max(8) - 8
    }

    fn sge(&self, at: usize, length: usize) -> Sge {
        Sge {
            addr: self.addr(at),
            length: length as u32,
            lkey: self.mr.lkey(),
        }
    }
}

/// One end's verbs objects. Field order is drop order: the QP before its CQ and buffer.
struct Rc {
    qp: QueuePair,
    cq: Cq,
    buf: Buffer,
    /// Receives posted (send tests), in slots 1 and up of `buf`.
    slots: usize,
    size: usize,
    /// The peer's buffer.
    peer_va: u64,
    peer_rkey: Rkey,
    ctx: Context,
}

impl Rc {
    fn new(io: Box<dyn FrameIo>, test: Test, size: usize) -> Result<Rc> {
        let (ctx, pd, cq, qp) = verbs::open(io, QpType::Rc, (DEPTH, RECV_DEPTH), 0, true)?;
        let slot = size.max(8).next_multiple_of(8);
        let slots = if matches!(test, Test::RcSendLat | Test::RcSendBw) {
            (RECV_POOL / slot).clamp(1, RECV_DEPTH as usize)
        } else {
            1
        };
        let len = slot * (1 + slots);
        let mut mem = vec![0u64; len / 8];
        let ptr = mem.as_mut_ptr().cast::<u8>();
        let access = AccessFlags::LOCAL_WRITE
            | AccessFlags::REMOTE_WRITE
            | AccessFlags::REMOTE_READ
            | AccessFlags::REMOTE_ATOMIC;
        // SAFETY: the memory lives in the returned struct, which drops the region (and the
        // QP that could still touch it) before the memory.
        let mr = unsafe { pd.reg_mr(ptr, len, access) }?;
        let rc = Rc {
            qp,
            cq,
            buf: Buffer {
                mr,
                ptr,
                len,
                slot,
                _mem: mem,
            },
            slots,
            size,
            peer_va: 0,
            peer_rkey: Rkey(0),
            ctx,
        };
        Ok(rc)
    }

    /// Exchanges QPs and buffers over the control connection and brings the QP to RTS.
    fn connect(&mut self, ctrl: &mut Control, peer: std::net::SocketAddr) -> Result<()> {
        let qpn = self.qp.qpn().value();
        let psn = qpn.wrapping_mul(2_654_435_761) & 0xff_ffff;
        // The peer writes, reads and updates our slot 1.
        ctrl.send(
            &Message::new("QP")
                .with("qpn", qpn)
                .with("psn", psn)
                .with("va", self.buf.addr(self.buf.slot))
                .with("rkey", self.buf.mr.rkey().0),
        )?;
        let theirs = ctrl.recv()?;
        if theirs.verb != "QP" {
            return Err(PerfError(format!("expected QP, got {}", theirs.verb)));
        }
        self.peer_va = theirs.parse("va")?;
        self.peer_rkey = Rkey(theirs.parse("rkey")?);
        let link = self.ctx.link();
        let sgid = link
            .addrs
            .iter()
            .position(|a| a.is_ipv4() == peer.is_ipv4())
            .unwrap_or(0) as u8;
        self.qp.bring_up_rc(&RcPeer {
            ah: AhAttr {
                sgid_index: sgid,
                ..AhAttr::new(Gid::from_ip(peer.ip()))
            },
            qpn: theirs.parse("qpn")?,
            psn: theirs.parse("psn")?,
            our_psn: psn,
            path_mtu: self.ctx.query_port(1)?.active_mtu,
            access: AccessFlags::REMOTE_WRITE
                | AccessFlags::REMOTE_READ
                | AccessFlags::REMOTE_ATOMIC,
            rd_atomic: RD_ATOMIC,
        })?;
        for i in 1..=self.slots as u64 {
            self.post_recv(i)?;
        }
        Ok(())
    }

    /// Posts a receive into slot `i` (1 and up).
    fn post_recv(&self, i: u64) -> Result<()> {
        let slot = self.buf.slot;
        let sge = self.buf.sge(i as usize * slot, slot);
        // SAFETY: slot `i` of the registered buffer, which outlives the QP.
        unsafe { verbs::post_recv(&self.qp, i, sge) }
    }

    /// Posts one request of `test`'s kind, from or into our slot 0.
    fn post(&self, test: Test, wr_id: u64) -> Result<()> {
        let (opcode, length) = match test {
            Test::RcSendLat | Test::RcSendBw => (SendOpcode::Send, self.size),
            Test::RcWriteLat | Test::RcWriteBw => (SendOpcode::RdmaWrite, self.size),
            Test::RcReadLat | Test::RcReadBw => (SendOpcode::RdmaRead, self.size),
            _ => (SendOpcode::AtomicFetchAndAdd, 8),
        };
        let sge = self.buf.sge(0, length);
        let atomic = (opcode == SendOpcode::AtomicFetchAndAdd).then_some(AtomicWr {
            remote_addr: self.peer_va,
            rkey: self.peer_rkey,
            compare_add: 1,
            swap: 0,
        });
        let wr = SendWr {
            wr_id,
            opcode,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[sge],
            imm_data: 0,
            ud: None,
            rdma: Some((self.peer_va, self.peer_rkey)),
            atomic,
        };
        // SAFETY: the registered buffer outlives the QP.
        unsafe { self.qp.post_send(&wr) }?;
        Ok(())
    }

    fn report(&self, test: Test) -> Report {
        verbs::report(&self.ctx, test, self.size)
    }
}

/// Runs one of the RC tests as `opts` says.
pub(super) fn run(opts: &Options, io: Box<dyn FrameIo>) -> Result<Report> {
    if opts.test == Test::RcWriteLat && opts.size < 8 {
        return Err(PerfError(
            "rc-write-lat needs --size 8 or more: it marks each message in its last 8 bytes".into(),
        ));
    }
    let link = io.link().clone();
    let mut s = meet(opts, &link, MAX_SIZE, &[])?;
    let size = if opts.test == Test::RcAtomicLat {
        8
    } else {
        s.size
    };
    let mut rc = Rc::new(io, opts.test, size)?;
    if opts.test == Test::RcWriteLat {
        // Nothing written yet: no marker may match message 0 before it arrives.
        rc.buf.set_word(rc.buf.marker(1, size), u64::MAX);
    }
    rc.connect(&mut s.ctrl, s.peer)?;
    let test = opts.test;
    let outcome = match (opts.role, test) {
        (Role::Client(_), Test::RcSendLat | Test::RcWriteLat) => {
            ping_pong_client(&rc, test, &mut s.ctrl, s.limit)
        }
        (Role::Server, Test::RcSendLat | Test::RcWriteLat) => {
            ping_pong_server(&mut rc, test, &mut s.ctrl)
        }
        (Role::Client(_), Test::RcReadLat | Test::RcAtomicLat) => {
            one_at_a_time(&rc, test, &mut s.ctrl, s.limit)
        }
        (Role::Client(_), _) => stream(&mut rc, test, &mut s.ctrl, s.limit),
        (Role::Server, Test::RcSendBw) => receive_sends(&rc, &mut s.ctrl),
        (Role::Server, _) => respond(&mut rc, test, &mut s.ctrl),
    };
    match (opts.role, outcome) {
        // The client's errors that call for them carry the counters already.
        (Role::Server, Err(PerfError(e))) => {
            Err(PerfError(format!("{e}; {}", verbs::counters(&rc.ctx))))
        }
        (_, outcome) => outcome,
    }
}

/// Polls the CQ until a receive completes (re-posting it; returns its slot) or, for WRITE
/// ping-pong, until the last 8 bytes of the buffer hold `seq`. Send completions are
/// checked on the way. `None` if `give_up` says so first.
fn wait_for(
    rc: &Rc,
    test: Test,
    seq: u64,
    mut give_up: impl FnMut() -> Result<bool>,
) -> Result<Option<u64>> {
    let mut wcs = [WorkCompletion::default(); 16];
    let mut polls = 0u32;
    loop {
        let n = rc.cq.poll(&mut wcs);
        for wc in &wcs[..n] {
            check(wc)?;
            if wc.opcode == WcOpcode::Recv {
                rc.post_recv(wc.wr_id)?;
                return Ok(Some(wc.wr_id));
            }
        }
        if test == Test::RcWriteLat && rc.buf.word(rc.buf.marker(1, rc.size)) == seq {
            return Ok(Some(1));
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(1024) && give_up()? {
            return Ok(None);
        }
    }
}

/// Runs `op` (which returns one latency sample of message `i`) after a warm-up until the
/// limit, then tells the server END and reports the samples.
fn timed(
    rc: &Rc,
    test: Test,
    ctrl: &mut Control,
    limit: Limit,
    mut op: impl FnMut(&Rc, u64) -> Result<Duration>,
) -> Result<Report> {
    let mut samples = Vec::with_capacity(limit.iters.min(10_000_000) as usize);
    let (mut started, mut i) = (None::<Instant>, 0u64);
    loop {
        if i >= WARMUP {
            let start = *started.get_or_insert_with(Instant::now);
            if limit.done(i - WARMUP, start) {
                break;
            }
        }
        let sample = op(rc, i)?;
        if i >= WARMUP {
            samples.push(sample);
        }
        i += 1;
    }
    // Each fetch-and-add brought back the count before it.
    if test == Test::RcAtomicLat && rc.buf.word(0) != i - 1 {
        return Err(PerfError(format!(
            "the last fetch-and-add found {} where {} was due",
            rc.buf.word(0),
            i - 1
        )));
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    ctrl.send(&Message::new("END").with("sent", i))?;
    ctrl.recv()?;
    samples.sort_unstable();
    let mut r = rc.report(test);
    r.iters = samples.len() as u64;
    r.sent = samples.len() as u64;
    r.elapsed = elapsed;
    r.latencies = samples;
    Ok(r)
}

/// SEND or WRITE ping-pong: half of each round trip.
fn ping_pong_client(rc: &Rc, test: Test, ctrl: &mut Control, limit: Limit) -> Result<Report> {
    timed(rc, test, ctrl, limit, |rc, i| {
        let t0 = Instant::now();
        rc.buf.set_word(rc.buf.marker(0, rc.size), i);
        rc.post(test, i)?;
        let deadline = t0 + Duration::from_secs(10);
        wait_for(rc, test, i, || Ok(Instant::now() > deadline))?
            .ok_or_else(|| PerfError(format!("no answer to message {i} within 10 s")))?;
        Ok(t0.elapsed() / 2)
    })
}

/// Answers each SEND with a SEND, or each WRITE with a WRITE of what it wrote, until the
/// client says END.
fn ping_pong_server(rc: &mut Rc, test: Test, ctrl: &mut Control) -> Result<Report> {
    let (mut echoed, mut first) = (0u64, None::<Instant>);
    let mut end = None;
    let mut last_check = Instant::now();
    loop {
        let got = wait_for(rc, test, echoed, || {
            if last_check.elapsed() > Duration::from_millis(5) {
                last_check = Instant::now();
                end = ctrl.try_recv()?;
            }
            Ok(end.is_some())
        })?;
        let Some(slot) = got else { break };
        first.get_or_insert_with(Instant::now);
        // Send or write back the marker that arrived.
        let marker = rc.buf.word(rc.buf.marker(slot as usize, rc.size));
        rc.buf.set_word(rc.buf.marker(0, rc.size), marker);
        rc.post(test, echoed)?;
        echoed += 1;
    }
    let end = end.expect("the loop ends on END");
    ctrl.send(&Message::new("RESULT").with("received", echoed))?;
    let mut r = rc.report(test);
    r.iters = echoed;
    r.sent = end.parse("sent")?;
    r.elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
    Ok(r)
}

/// One READ or fetch-and-add at a time, each timed from post to completion.
fn one_at_a_time(rc: &Rc, test: Test, ctrl: &mut Control, limit: Limit) -> Result<Report> {
    let mut wcs = [WorkCompletion::default(); 4];
    timed(rc, test, ctrl, limit, |rc, i| {
        let t0 = Instant::now();
        rc.post(test, i)?;
        loop {
            let n = rc.cq.poll(&mut wcs);
            if n > 0 {
                check(&wcs[0])?;
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(PerfError(format!(
                    "operation {i} not done within 10 s; {}",
                    verbs::counters(&rc.ctx)
                )));
            }
        }
    })
}

/// Streams requests, `DEPTH` outstanding, until the limit; counts completions.
fn stream(rc: &mut Rc, test: Test, ctrl: &mut Control, limit: Limit) -> Result<Report> {
    let mut wcs = [WorkCompletion::default(); 64];
    let start = Instant::now();
    let (mut posted, mut done) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    loop {
        let stop = limit.done(posted, start);
        if stop && done == posted {
            break;
        }
        while !limit.done(posted, start) && posted - done < u64::from(DEPTH) {
            rc.post(test, posted)?;
            posted += 1;
        }
        let n = rc.cq.poll(&mut wcs);
        for wc in &wcs[..n] {
            check(wc)?;
        }
        if n > 0 {
            done += n as u64;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(10) {
            return Err(PerfError(format!(
                "{done} of {posted} requests done, none for 10 s; {}",
                verbs::counters(&rc.ctx)
            )));
        }
    }
    let elapsed = start.elapsed();
    ctrl.send(&Message::new("END").with("sent", posted))?;
    let result = ctrl.recv()?;
    let mut r = rc.report(test);
    r.sent = posted;
    if test == Test::RcSendBw {
        // The receiver's count and time.
        r.iters = result.parse("received")?;
        r.elapsed = Duration::from_nanos(result.parse("elapsed_ns")?);
    } else {
        r.iters = done;
        r.elapsed = elapsed;
    }
    Ok(r)
}

/// The receiver of `rc-send-bw`: counts SENDs and re-posts their receives.
fn receive_sends(rc: &Rc, ctrl: &mut Control) -> Result<Report> {
    let report = rc.report(Test::RcSendBw);
    verbs::count_receives(&rc.cq, ctrl, |slot| rc.post_recv(slot), report)
}

/// The responder of WRITE, READ and atomic tests: only makes progress (as an HCA would,
/// without the application) until the client says END.
fn respond(rc: &mut Rc, test: Test, ctrl: &mut Control) -> Result<Report> {
    let mut last_check = Instant::now();
    let start = Instant::now();
    let end = loop {
        rc.ctx.progress();
        if last_check.elapsed() > Duration::from_millis(5) {
            last_check = Instant::now();
            if let Some(end) = ctrl.try_recv()? {
                break end;
            }
        }
    };
    let sent: u64 = end.parse("sent")?;
    ctrl.send(&Message::new("RESULT").with("received", sent))?;
    let mut r = rc.report(test);
    r.iters = sent;
    r.sent = sent;
    r.elapsed = start.elapsed();
    Ok(r)
}
