//! The reliable connected transport, without I/O: an [`RcEngine`] per QP holds the
//! requester (segmentation, PSNs, retransmission from the oldest unacknowledged packet,
//! RNR waits, retry counts, completions in posting order) and the responder (expected PSN,
//! ACK coalescing, NAK on sequence errors, duplicates re-ACKed, RNR NAKs, remote access
//! checks) for SEND and RDMA WRITE (with immediate data), RDMA READ, and the atomics
//! (compare and swap, fetch and add).
//!
//! A READ request takes one packet but as many PSNs as its responses; each response
//! acknowledges everything before it, and an ACK beyond a READ or atomic whose response
//! never arrived means that response was lost, so the requester asks again from there. The
//! responder keeps its last `max_dest_rd_atomic` READs and atomics, to answer a duplicate
//! READ again and to replay a duplicate atomic's result without executing it twice.
//!
//! # Loss and congestion
//!
//! Go-back-N, as the IBTA has it, with two additions for lossy paths:
//! - a congestion window (AIMD): halved on each loss (a sequence NAK, a gap in READ
//!   responses, a timer), grown by one packet per window acknowledged, between 4 and the
//!   128-packet limit; ACKs are asked for every quarter window, so they come back before it
//!   closes. Go-back-N resends everything in flight after a loss, so a smaller window on a
//!   lossy path wastes less; on a clean path the window stays at 128.
//! - a probe timer that follows the round trip the peer really has: the smoothed round trip
//!   plus four times its mean deviation, as TCP's retransmission timer is, but at least four
//!   round trips (0.5 to 20 ms; never past the ACK timeout). With no ACK progress by then the
//!   requester resends from the oldest unacknowledged packet without counting a retry. A
//!   lost last packet or a lost NAK then costs a few round trips, not the 67 ms ACK
//!   timeout ibv_rc_pingpong sets; only the ACK timeout counts retries towards
//!   RETRY_EXC_ERR. A probe resends only the oldest packet, asking for an ACK: a peer that
//!   was only slow (Linux rxe in a VM answers in 1-10 ms, and later now and then in tens)
//!   answers with how far it got, and nothing more is sent twice; an ACK of just that
//!   packet shows the rest lost, and everything after it goes again. Until the round trip
//!   is known each probe doubles the next one's delay, and the ACK to the probe, which may
//!   answer either copy, still teaches a longer round trip (see `Timing`). Once it is
//!   known, a probe that brings nothing back is followed by a resend of everything
//!   unacknowledged, without backoff, which would slow recovery on a lossy path.
//! - exponential backoff: each ACK timeout without progress doubles the next one (and the
//!   probe's), up to 32 times the configured timeout, until an ACK makes progress. A peer
//!   whose process is not scheduled for a while (a busy machine: nothing acknowledges for
//!   it as a NIC would) is not given up on after half a second of rdma_cm's 67 ms timeout,
//!   and a dead one still ends in RETRY_EXC_ERR, after about 8.5 s with retry_cnt 7.
//!
//! # Call order
//!
//! Like quinn's `Connection`: time is always an argument, and the engine does nothing on
//! its own.
//! 1. [`RcEngine::post_send`] queues a message.
//! 2. [`RcEngine::handle_packet`] takes each packet received for the QP;
//!    [`RcEngine::handle_timeout`] runs once [`RcEngine::poll_timeout`] has passed.
//! 3. [`RcEngine::poll_transmit`] yields packets to send, until `None`.
//! 4. [`RcEngine::poll_completion`] yields completions, until `None`.
//!
//! Application memory is reached only through [`Memory`], which the QP owner implements
//! (checking keys and bounds there).

pub mod segment;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use self::segment::{MessageKind, packet_count, segment};
use super::timer::{Timer, TimerTable};
use crate::wire::{
    AethRepr, AtomicAckEthRepr, AtomicEthRepr, BthRepr, Msn, NakCode, Opcode, Psn, Qpn, RethRepr,
    Rkey, Syndrome, TransportRepr,
};

/// At most this many PSNs are outstanding (unacknowledged) at once, as rxe allows.
const WINDOW: u32 = 128;
/// READ responses sent per round of `poll_transmit` calls (a round ends when it returns
/// `None`), at most. A long READ's responses then go out over many rounds, so a request
/// arriving meanwhile, such as the requester asking again after a lost response, is heard
/// before the rest of the stream is already on its way.
const REPLY_BURST: usize = 64;

/// Request packets a plain ACK lets go ahead of it in one round of `poll_transmit`. The ACK
/// still leaves in the same round, but in a ping-pong the reply no longer waits behind the
/// acknowledgement of what it answers; a few, so that under two-way traffic the peer's
/// window is not held up behind a window of ours.
const REQUESTS_BEFORE_ACK: usize = 4;
/// The congestion window never closes below this many packets.
const MIN_CWND: u32 = 4;
/// Bounds of the probe timer before backoff.
const MIN_PROBE: Duration = Duration::from_micros(500);
const MAX_PROBE: Duration = Duration::from_millis(20);
/// Unanswered probes (before the round trip is known) double the next at most this many
/// times.
const MAX_PROBE_SHIFT: u8 = 6;
/// The ACK timeout doubles with each retry, at most this many times.
const MAX_BACKOFF_SHIFT: u8 = 5;
/// The round-trip estimate before the first sample.
const INITIAL_RTT: Duration = Duration::from_micros(250);

/// How an RC QP was set up (the attributes of its RTR and RTS transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RcConfig {
    /// The peer's QP number.
    pub dest_qpn: Qpn,
    /// Payload bytes per packet.
    pub mtu: usize,
    /// First PSN we send.
    pub sq_psn: Psn,
    /// First PSN we expect.
    pub rq_psn: Psn,
    /// Retransmission timeout (4.096 us * 2^timeout); `None` waits forever.
    pub timeout: Option<Duration>,
    /// Retransmissions after a timeout before giving up (7: unlimited, as rxe does).
    pub retry_cnt: u8,
    /// Resends after an RNR NAK before giving up (7: unlimited).
    pub rnr_retry: u8,
    /// The RNR timer code we send in our RNR NAKs.
    pub min_rnr_timer: u8,
    /// READs and atomics we may have outstanding at the peer at once.
    pub max_rd_atomic: u8,
    /// READs and atomics of the peer we keep, to answer their duplicates.
    pub max_dest_rd_atomic: u8,
}

/// How a message ended, as the requester or responder completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcStatus {
    /// Done.
    Success,
    /// Retransmissions exhausted (`IBV_WC_RETRY_EXC_ERR`).
    RetryExceeded,
    /// RNR resends exhausted (`IBV_WC_RNR_RETRY_EXC_ERR`).
    RnrRetryExceeded,
    /// The peer refused an access (`IBV_WC_REM_ACCESS_ERR`).
    RemoteAccess,
    /// The peer found the request invalid (`IBV_WC_REM_INV_REQ_ERR`).
    RemoteInvalidRequest,
    /// The peer failed (`IBV_WC_REM_OP_ERR`).
    RemoteOperation,
    /// Our own memory could not be read or written (`IBV_WC_LOC_PROT_ERR`).
    LocalProtection,
    /// A receive buffer was too small (`IBV_WC_LOC_LEN_ERR`).
    LocalLength,
    /// Flushed: the QP failed first (`IBV_WC_WR_FLUSH_ERR`).
    Flushed,
}

/// A completed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcCompletion {
    /// A send queue request (SEND or RDMA WRITE) ended.
    Send {
        /// The request's handle, as given to `post_send`.
        handle: u64,
        /// How it ended.
        status: RcStatus,
    },
    /// A received SEND (or RDMA WRITE with immediate data) consumed a receive.
    Recv {
        /// The receive's handle, as `Memory::take_recv` gave it.
        handle: u64,
        /// How it ended.
        status: RcStatus,
        /// Message bytes received.
        len: usize,
        /// Immediate data, if the message carried some.
        imm: Option<u32>,
        /// True for RDMA WRITE with immediate data (no bytes land in the receive).
        write: bool,
    },
}

/// A message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRequest {
    /// The owner's handle: given back in the completion and to `Memory::gather`.
    pub handle: u64,
    /// SEND, RDMA WRITE (with or without immediate data), RDMA READ or an atomic.
    pub kind: MessageKind,
    /// Message bytes (8 for the atomics).
    pub len: usize,
    /// Immediate data, for the `*WithImm` kinds.
    pub imm: u32,
    /// Target of an RDMA WRITE, READ or atomic: address and key.
    pub remote: Option<(u64, Rkey)>,
    /// The atomics' operands: (compare, swap) for compare and swap, (add, unused) for
    /// fetch and add.
    pub atomic: (u64, u64),
    /// Start only once every earlier READ and atomic has completed (`IBV_SEND_FENCE`).
    pub fence: bool,
}

/// An atomic operation on 8 bytes of a peer's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    /// If the value is `compare`, replace it with `swap`.
    CompareSwap {
        /// Value expected.
        compare: u64,
        /// Value stored if it matched.
        swap: u64,
    },
    /// Add `add` (wrapping).
    FetchAdd {
        /// Addend.
        add: u64,
    },
}

/// Application memory, as the QP owner exposes it to the engine.
pub trait Memory {
    /// Copies bytes `offset..offset + buf.len()` of send request `handle` into `buf`;
    /// false if they cannot be read (a bad key, say).
    fn gather(&mut self, handle: u64, offset: usize, buf: &mut [u8]) -> bool;
    /// Takes the next posted receive (its handle), or `None` when none is posted.
    fn take_recv(&mut self) -> Option<u64>;
    /// Copies `data` into receive `handle` at `offset`; false if it does not fit or
    /// cannot be written.
    fn scatter(&mut self, handle: u64, offset: usize, data: &[u8]) -> bool;
    /// Writes `data` at `va` of the region with key `rkey`, for a peer's RDMA WRITE.
    fn remote_write(&mut self, rkey: Rkey, va: u64, data: &[u8]) -> Result<(), NakCode>;
    /// Checks that a peer may RDMA READ `len` bytes at `va` of the region with key `rkey`.
    fn check_remote_read(&mut self, rkey: Rkey, va: u64, len: usize) -> Result<(), NakCode>;
    /// Copies `buf.len()` bytes at `va` of the region with key `rkey` into `buf`, for a
    /// response to a peer's RDMA READ.
    fn remote_read(&mut self, rkey: Rkey, va: u64, buf: &mut [u8]) -> Result<(), NakCode>;
    /// Performs `op` on the 8 bytes at `va` of the region with key `rkey`, atomically
    /// against other atomics (ours and the CPU's); returns the value before.
    fn remote_atomic(&mut self, rkey: Rkey, va: u64, op: AtomicOp) -> Result<u64, NakCode>;
    /// Stores response bytes (READ data at `offset`, or an atomic's original value as 8
    /// native-endian bytes at 0) into send request `handle`'s own buffers; false if they
    /// cannot be written.
    fn read_response(&mut self, handle: u64, offset: usize, data: &[u8]) -> bool;
}

/// A queued send request and where its packets are.
#[derive(Debug, Clone, Copy)]
struct Wqe {
    req: SendRequest,
    first_psn: Psn,
    packets: u32,
}

impl Wqe {
    fn last_psn(&self) -> Psn {
        self.first_psn + (self.packets - 1)
    }

    fn holds(&self, psn: Psn) -> bool {
        psn >= self.first_psn && psn <= self.last_psn()
    }
}

/// The requester half.
#[derive(Debug)]
struct Requester {
    queue: VecDeque<Wqe>,
    /// PSN of the next packet to send (new or retransmitted).
    next_psn: Psn,
    /// PSN the next new message starts at.
    new_psn: Psn,
    /// Oldest PSN not yet acknowledged.
    una: Psn,
    retries: u8,
    rnr_retries: u8,
    /// True while an RNR wait holds transmission.
    rnr_wait: bool,
    /// The oldest unacknowledged PSN when a gap in READ responses last sent us back to it:
    /// go back once per gap, not once per packet after it.
    gap_at: Option<Psn>,
    /// Congestion window, in packets: halved on each loss, grown by one per window of
    /// packets acknowledged, between `MIN_CWND` and `WINDOW`.
    cwnd: u32,
    /// Packets acknowledged towards the next growth of `cwnd`.
    cwnd_acked: u32,
    /// The last packet sent that asked for an ACK.
    ack_req_psn: Psn,
    /// Smoothed round-trip time, from one timed packet at a time, and its smoothed mean
    /// deviation; `INITIAL_RTT` and half that before the first sample.
    srtt: Duration,
    rttvar: Duration,
    sampled: bool,
    /// Probes sent, before the round trip is known, since an ACK last made progress: each
    /// doubles the next probe's delay.
    probe_shift: u8,
    /// While a one-packet probe waits to leave: where sending resumes after it.
    probe_resume: Option<Psn>,
    /// The packet a probe resent alone, until an ACK answers it.
    probed: Option<Psn>,
    /// The packet being timed.
    timing: Option<Timing>,
    failed: bool,
}

/// A packet whose acknowledgement times the round trip.
#[derive(Debug, Clone, Copy)]
struct Timing {
    psn: Psn,
    /// When it was first sent, and when last (the same unless it was resent).
    first: Instant,
    last: Instant,
}

impl Timing {
    /// The round trip its acknowledgement at `now` measures, if it measures one. Sent once,
    /// the time since. Resent alone by a probe, the ACK may answer either copy (Karn), but
    /// the round trip is at least the time since the probe: a measure only where that is
    /// longer than the estimate `srtt`, which is then too short. So a peer slower than the
    /// first guess is learnt even when its first packets were probed before their ACK came.
    fn rtt(&self, now: Instant, srtt: Duration) -> Option<Duration> {
        let since_last = now.saturating_duration_since(self.last);
        if self.first == self.last {
            Some(since_last)
        } else {
            (since_last > srtt).then_some(since_last)
        }
    }
}

impl Requester {
    /// An idle requester whose first packet will have PSN `config.sq_psn`.
    fn new(config: &RcConfig) -> Requester {
        Requester {
            queue: VecDeque::new(),
            next_psn: config.sq_psn,
            new_psn: config.sq_psn,
            una: config.sq_psn,
            retries: config.retry_cnt,
            rnr_retries: config.rnr_retry,
            rnr_wait: false,
            gap_at: None,
            cwnd: WINDOW,
            cwnd_acked: 0,
            ack_req_psn: config.sq_psn - 1,
            srtt: INITIAL_RTT,
            rttvar: INITIAL_RTT / 2,
            sampled: false,
            probe_shift: 0,
            probe_resume: None,
            probed: None,
            timing: None,
            failed: false,
        }
    }

    /// Sending goes on where it was before a one-packet probe, if it was further on.
    fn resume_after_probe(&mut self) {
        if let Some(resume) = self.probe_resume.take() {
            if self.next_psn < resume {
                self.next_psn = resume;
            }
        }
    }

    /// Takes a round-trip sample, as TCP does (RFC 6298): the first sets the estimate, the
    /// rest move it by an eighth and the deviation by a quarter.
    fn sample_rtt(&mut self, rtt: Duration) {
        if self.sampled {
            let deviation = self.srtt.abs_diff(rtt);
            self.rttvar = (self.rttvar * 3 + deviation) / 4;
            self.srtt = (self.srtt * 7 + rtt) / 8;
        } else {
            self.srtt = rtt;
            self.rttvar = rtt / 2;
            self.sampled = true;
        }
    }

    /// The queued request whose PSNs include `psn`. The queue is in PSN order, so a binary
    /// search finds it: a stream of small messages keeps a long queue, and this runs for
    /// every packet sent.
    fn holding(&self, psn: Psn) -> Option<Wqe> {
        let at = self.queue.partition_point(|w| w.last_psn() < psn);
        self.queue.get(at).filter(|w| w.holds(psn)).copied()
    }
}

/// A SEND or RDMA WRITE arriving over several packets.
#[derive(Debug, Clone, Copy)]
enum InProgress {
    None,
    Send { handle: u64, offset: usize },
    Write { va: u64, rkey: Rkey, offset: usize },
}

/// A READ or atomic the responder executed, kept to answer its duplicates.
#[derive(Debug, Clone, Copy)]
enum Resource {
    /// A READ's PSN range.
    Read { first_psn: Psn, last_psn: Psn },
    /// An atomic's PSN and the value it found.
    Atomic { psn: Psn, orig: u64 },
}

/// Responses the responder owes, sent in order before any ACK.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// READ responses for `len` bytes at `va` whose first response has PSN `first_psn`;
    /// `next` is the PSN of the next one to send.
    Read {
        first_psn: Psn,
        next: Psn,
        va: u64,
        rkey: Rkey,
        len: usize,
    },
    /// An atomic's acknowledgement with the value it found.
    Atomic { psn: Psn, orig: u64 },
}

impl Reply {
    /// The PSN of its first response.
    fn first_psn(&self) -> Psn {
        match *self {
            Reply::Read { first_psn, .. } => first_psn,
            Reply::Atomic { psn, .. } => psn,
        }
    }
}

/// The responder half.
#[derive(Debug)]
struct Responder {
    epsn: Psn,
    msn: Msn,
    in_progress: InProgress,
    /// An ACK or NAK owed: its syndrome and PSN.
    pending: Option<(Syndrome, Psn)>,
    /// A sequence NAK was sent and no in-order packet arrived since (send only one).
    nak_sent: bool,
    replies: VecDeque<Reply>,
    /// The last `max_dest_rd_atomic` READs and atomics, oldest first.
    resources: VecDeque<Resource>,
    /// Responses sent in this round of `poll_transmit` calls (see `REPLY_BURST`).
    replies_this_round: usize,
    /// Requests sent ahead of the owed ACK in this round (see `REQUESTS_BEFORE_ACK`).
    requests_before_ack: usize,
}

/// One RC QP's transport state. See the [module documentation](self).
#[derive(Debug)]
pub struct RcEngine {
    config: RcConfig,
    req: Requester,
    resp: Responder,
    timers: TimerTable,
    completions: VecDeque<RcCompletion>,
    /// The latest time the owner gave, once it gave one.
    now: Option<Instant>,
}

/// RNR NAK timer code to delay (IBTA table 45; code 0 is the longest).
pub fn rnr_delay(code: u8) -> Duration {
    const MICROS: [u32; 32] = [
        655_360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1_280, 1_920, 2_560,
        3_840, 5_120, 7_680, 10_240, 15_360, 20_480, 30_720, 40_960, 61_440, 81_920, 122_880,
        163_840, 245_760, 327_680, 491_520,
    ];
    Duration::from_micros(u64::from(MICROS[(code & 31) as usize]))
}

impl RcEngine {
    /// An engine for a QP moved to RTS with `config`: responder and requester both run.
    pub fn new(config: RcConfig) -> Self {
        RcEngine {
            config,
            req: Requester::new(&config),
            resp: Responder {
                epsn: config.rq_psn,
                msn: Msn::new_masked(0),
                in_progress: InProgress::None,
                pending: None,
                nak_sent: false,
                replies: VecDeque::new(),
                resources: VecDeque::new(),
                replies_this_round: 0,
                requests_before_ack: 0,
            },
            timers: TimerTable::default(),
            completions: VecDeque::new(),
            now: None,
        }
    }

    /// The move to RTS of an engine made at RTR: the requester starts afresh from
    /// `config` (its first PSN `sq_psn`, its timeout, retry counts and `max_rd_atomic`),
    /// while the responder keeps what it has received. An RC QP answers its peer from RTR
    /// on (the IBTA's RTR state processes incoming requests and responds to them); only
    /// sending needs RTS. The owner posts nothing before this.
    pub fn start_requester(&mut self, config: RcConfig) {
        self.config = config;
        self.req = Requester::new(&config);
        self.timers.stop(Timer::Retransmit);
        self.timers.stop(Timer::Rnr);
        self.timers.stop(Timer::Probe);
    }

    /// Queues a message. Messages complete in posting order.
    pub fn post_send(&mut self, req: SendRequest) {
        if self.req.failed {
            self.completions.push_back(RcCompletion::Send {
                handle: req.handle,
                status: RcStatus::Flushed,
            });
            return;
        }
        let packets = match req.kind {
            MessageKind::CompareSwap | MessageKind::FetchAdd => 1,
            _ => packet_count(req.len, self.config.mtu) as u32,
        };
        let wqe = Wqe {
            req,
            first_psn: self.req.new_psn,
            packets,
        };
        self.req.new_psn += packets;
        self.req.queue.push_back(wqe);
    }

    /// True once the requester failed (the QP is in ERR).
    pub fn is_failed(&self) -> bool {
        self.req.failed
    }

    /// When [`RcEngine::handle_timeout`] is next due; while READ responses are queued,
    /// the last time the engine was given (they are due at once: an owner that sends a
    /// bounded number of packets per round learns from this to come back).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.now {
            Some(now) if !self.resp.replies.is_empty() => Some(now),
            _ => self.timers.next_timeout(),
        }
    }

    /// Takes the next completion.
    pub fn poll_completion(&mut self) -> Option<RcCompletion> {
        self.completions.pop_front()
    }

    /// Handles the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_expired(now) {
            match timer {
                Timer::Retransmit => {
                    if self.req.queue.is_empty() {
                        continue;
                    }
                    // Unlike the RNR retry count, 7 is no infinity here (IBTA 9.7.5.2.8;
                    // rxe alone retries for ever): a dead peer ends in RETRY_EXC_ERR.
                    if self.req.retries == 0 {
                        self.fail(RcStatus::RetryExceeded);
                        continue;
                    }
                    self.req.retries -= 1;
                    // Go back N: resend from the oldest unacknowledged packet.
                    self.go_back();
                }
                Timer::Rnr => self.req.rnr_wait = false,
                Timer::Probe => {
                    let r = &mut self.req;
                    if !r.queue.is_empty() && r.una < r.next_psn {
                        if r.sampled && r.probed.is_some() {
                            // The packet probed alone brought nothing back either: loss.
                            self.go_back();
                        } else {
                            if !r.sampled {
                                r.probe_shift = (r.probe_shift + 1).min(MAX_PROBE_SHIFT);
                            }
                            self.probe_oldest(now);
                        }
                    }
                }
            }
        }
    }

    /// The QP went to ERR: the requester stops, forgetting its queue without completions
    /// (the QP's owner flushes the work requests it holds), and so do READ responses not
    /// yet sent. An acknowledgement owed to the peer is kept, for one last
    /// [`RcEngine::poll_transmit`]: a NIC would have sent it already.
    pub fn halt(&mut self) {
        self.req.failed = true;
        self.req.queue.clear();
        self.resp.replies.clear();
        self.timers.stop(Timer::Retransmit);
        self.timers.stop(Timer::Rnr);
        self.timers.stop(Timer::Probe);
    }

    /// The responder refused a request for its access rights (a class C error, IBTA
    /// 9.9.3.1.3): after the NAK leaves, the QP goes to ERR, as rxe's does, so that its
    /// owner hears of it (its receives flush) instead of waiting for data that will not
    /// come. What the requester had queued is flushed.
    fn responder_error(&mut self) {
        self.fail(RcStatus::Flushed);
    }

    /// Ends every queued request: the first with `status`, the rest flushed.
    fn fail(&mut self, status: RcStatus) {
        self.req.failed = true;
        self.timers.stop(Timer::Retransmit);
        self.timers.stop(Timer::Rnr);
        self.timers.stop(Timer::Probe);
        let mut first = true;
        while let Some(w) = self.req.queue.pop_front() {
            let s = if first { status } else { RcStatus::Flushed };
            first = false;
            self.completions.push_back(RcCompletion::Send {
                handle: w.req.handle,
                status: s,
            });
        }
    }

    /// Completes the requests acknowledged up to and including `psn`. An ACK cannot
    /// complete a READ or atomic whose responses did not all arrive: they were lost, so
    /// the requester goes back to ask again from the first one missing.
    fn acknowledge(&mut self, psn: Psn, now: Instant) {
        let mut una = psn + 1;
        let mut lost_response = false;
        while let Some(w) = self.req.queue.front() {
            if w.last_psn() > psn {
                break;
            }
            if w.req.kind.is_read_or_atomic() && self.req.una <= w.last_psn() {
                una = if self.req.una > w.first_psn {
                    self.req.una
                } else {
                    w.first_psn
                };
                lost_response = true;
                break;
            }
            let w = self.req.queue.pop_front().expect("front exists");
            self.completions.push_back(RcCompletion::Send {
                handle: w.req.handle,
                status: RcStatus::Success,
            });
        }
        let hole = una > self.req.una && self.advance(una, now);
        if lost_response || hole {
            self.go_back();
        }
        self.rearm(now);
    }

    /// Moves the oldest unacknowledged PSN up to `una`: progress, so the retry count is
    /// whole again, the round trip may be sampled, and the congestion window grows. True if
    /// this answers a packet probed alone and shows the peer had nothing after it: it took
    /// the probe as new, and what followed, sent before, was lost.
    fn advance(&mut self, una: Psn, now: Instant) -> bool {
        let r = &mut self.req;
        let acked = (una - r.una) as u32;
        r.una = una;
        r.retries = self.config.retry_cnt;
        r.resume_after_probe();
        if r.next_psn < r.una {
            r.next_psn = r.una;
        }
        let hole = r
            .probed
            .take()
            .is_some_and(|p| una == p + 1 && r.next_psn > una);
        // Something came back: probes need not wait longer.
        r.probe_shift = 0;
        if let Some(t) = r.timing {
            if una > t.psn {
                if let Some(rtt) = t.rtt(now, r.srtt) {
                    r.sample_rtt(rtt);
                }
                r.timing = None;
            }
        }
        r.cwnd_acked += acked;
        while r.cwnd_acked >= r.cwnd && r.cwnd < WINDOW {
            r.cwnd_acked -= r.cwnd;
            r.cwnd += 1;
        }
        if r.cwnd >= WINDOW {
            r.cwnd_acked = 0;
        }
        hole
    }

    /// After an ACK: the timers run while packets are outstanding, from now.
    fn rearm(&mut self, now: Instant) {
        if self.req.una < self.req.next_psn {
            match self.ack_timeout() {
                Some(t) => self.timers.set(Timer::Retransmit, now + t),
                None => self.timers.stop(Timer::Retransmit),
            }
            self.timers.set(Timer::Probe, now + self.probe_delay());
        } else {
            self.timers.stop(Timer::Retransmit);
            self.timers.stop(Timer::Probe);
        }
    }

    /// The smoothed round trip and four deviations, at least four round trips, within
    /// bounds; doubled for each probe (before the round trip is known) since an ACK last
    /// made progress; never past the ACK timeout, and backed off as it is.
    fn probe_delay(&self) -> Duration {
        let r = &self.req;
        let d = (r.srtt + r.rttvar * 4)
            .max(r.srtt * 4)
            .clamp(MIN_PROBE, MAX_PROBE)
            * (1 << r.probe_shift);
        let d = self.config.timeout.map_or(d, |t| d.min(t));
        d * (1 << self.backoff_shift())
    }

    /// The ACK timeout now: the configured one, doubled for each retry since the last
    /// progress (at most `MAX_BACKOFF_SHIFT` times).
    fn ack_timeout(&self) -> Option<Duration> {
        self.config.timeout.map(|t| t * (1 << self.backoff_shift()))
    }

    fn backoff_shift(&self) -> u8 {
        self.config
            .retry_cnt
            .saturating_sub(self.req.retries)
            .min(MAX_BACKOFF_SHIFT)
    }

    /// A probe resends only the oldest unacknowledged packet, asking for an ACK, then
    /// sending goes on where it was: the peer may simply be slower than thought (a busy
    /// machine, rxe in a VM), and its answer says where it is. An ACK of just that packet
    /// means the peer had nothing after it, and everything after it goes again (see
    /// `advance`); once the round trip is known, a probe that brings nothing back either is
    /// followed by a resend of everything unacknowledged.
    fn probe_oldest(&mut self, now: Instant) {
        let r = &mut self.req;
        if r.probe_resume.is_none() {
            r.probe_resume = Some(r.next_psn);
        }
        r.probed = Some(r.una);
        r.next_psn = r.una;
        if let Some(t) = r.timing.as_mut().filter(|t| t.psn == r.una) {
            t.last = now;
        }
    }

    /// A packet was lost: resend from the oldest unacknowledged one, with half the window.
    fn go_back(&mut self) {
        let r = &mut self.req;
        r.next_psn = r.una;
        r.probe_resume = None;
        r.probed = None;
        // Karn: the ACKs to come may answer either copy. (Unlike a one-packet probe's, a
        // resent window's ACK measures the resending too: no bound worth taking.)
        r.timing = None;
        r.cwnd = (r.cwnd / 2).max(MIN_CWND);
        r.cwnd_acked = 0;
    }

    /// Handles one received transport packet addressed to this QP.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8], mem: &mut dyn Memory) {
        self.now = Some(now);
        if self.req.failed {
            // The QP is going to ERR: it takes nothing more (a copy of the request it
            // refused, arriving before its owner moved it, included).
            return;
        }
        let Ok((repr, payload)) = TransportRepr::parse(packet) else {
            return;
        };
        match repr.bth.opcode {
            Opcode::RC_ACKNOWLEDGE => {
                if let Some(aeth) = repr.aeth {
                    self.handle_ack(now, repr.bth.psn, aeth);
                }
            }
            Opcode::RC_RDMA_READ_RESPONSE_FIRST
            | Opcode::RC_RDMA_READ_RESPONSE_MIDDLE
            | Opcode::RC_RDMA_READ_RESPONSE_LAST
            | Opcode::RC_RDMA_READ_RESPONSE_ONLY
            | Opcode::RC_ATOMIC_ACKNOWLEDGE => {
                // A NAK comes as an ACKNOWLEDGE; a response with a NAK syndrome is bogus.
                if repr
                    .aeth
                    .is_none_or(|a| matches!(a.syndrome, Syndrome::Ack { .. }))
                {
                    self.handle_response(now, &repr, payload, mem);
                }
            }
            _ => self.handle_request(&repr, payload, mem),
        }
    }

    /// A READ response or atomic acknowledgement: in order, it acknowledges everything
    /// before it and lands its data in the request's buffers.
    fn handle_response(
        &mut self,
        now: Instant,
        repr: &TransportRepr,
        payload: &[u8],
        mem: &mut dyn Memory,
    ) {
        let psn = repr.bth.psn;
        if self.req.failed || psn < self.req.una || psn >= self.req.new_psn {
            return; // a duplicate, or not ours
        }
        let Some(w) = self.req.holding(psn) else {
            return;
        };
        let atomic_ack = repr.bth.opcode == Opcode::RC_ATOMIC_ACKNOWLEDGE;
        let fits = match w.req.kind {
            MessageKind::Read => !atomic_ack,
            MessageKind::CompareSwap | MessageKind::FetchAdd => atomic_ack,
            _ => false,
        };
        if !fits {
            return;
        }
        if psn != self.req.una {
            // The first response of a request implicitly acknowledges what came before.
            if psn == w.first_psn {
                self.acknowledge(psn - 1, now);
            }
            if psn != self.req.una {
                // Responses before this one were lost: ask again from the first missing.
                if self.req.gap_at != Some(self.req.una) {
                    self.req.gap_at = Some(self.req.una);
                    self.go_back();
                }
                return;
            }
        }
        let stored = if atomic_ack {
            match repr.atomic_ack {
                Some(ack) => mem.read_response(w.req.handle, 0, &ack.orig.to_ne_bytes()),
                None => return,
            }
        } else {
            let index = (psn - w.first_psn) as usize;
            let offset = index * self.config.mtu;
            let want = (w.req.len - offset).min(self.config.mtu);
            let ends = repr
                .bth
                .opcode
                .info()
                .is_some_and(|i| i.position.ends_message());
            if payload.len() != want || ends != (psn == w.last_psn()) {
                return; // malformed: drop it, the request is asked again on timeout
            }
            mem.read_response(w.req.handle, offset, payload)
        };
        if !stored {
            self.fail(RcStatus::LocalProtection);
            return;
        }
        self.req.gap_at = None;
        self.advance(psn + 1, now);
        self.acknowledge(psn, now);
    }

    fn handle_ack(&mut self, now: Instant, psn: Psn, aeth: AethRepr) {
        if self.req.failed || self.req.queue.is_empty() {
            return;
        }
        // Ignore ACKs for PSNs not sent (bogus), and NAKs from before what is already
        // acknowledged (overtaken on the way).
        let nak = !matches!(aeth.syndrome, Syndrome::Ack { .. });
        if psn >= self.req.new_psn || (nak && psn < self.req.una) {
            return;
        }
        match aeth.syndrome {
            Syndrome::Ack { .. } => {
                self.req.rnr_retries = self.config.rnr_retry;
                self.acknowledge(psn, now);
            }
            Syndrome::RnrNak { timer } => {
                self.acknowledge(psn - 1, now);
                if self.config.rnr_retry != 7 {
                    if self.req.rnr_retries == 0 {
                        self.fail(RcStatus::RnrRetryExceeded);
                        return;
                    }
                    self.req.rnr_retries -= 1;
                }
                // From `psn`, or from an earlier READ or atomic response found lost.
                self.req.next_psn = self.req.una;
                self.req.rnr_wait = true;
                // Waiting out the RNR delay is not a lost packet: no retransmission timeout
                // meanwhile (sending again re-arms it).
                self.timers.stop(Timer::Retransmit);
                self.timers.stop(Timer::Probe);
                self.timers.set(Timer::Rnr, now + rnr_delay(timer));
            }
            Syndrome::Nak(NakCode::PsnSequenceError) => {
                // Everything before `psn` arrived; resend from it (or from an earlier READ
                // or atomic response found lost).
                self.acknowledge(psn - 1, now);
                self.go_back();
            }
            Syndrome::Nak(code) => {
                self.acknowledge(psn - 1, now);
                let status = match code {
                    NakCode::RemoteAccessError => RcStatus::RemoteAccess,
                    NakCode::RemoteOperationalError => RcStatus::RemoteOperation,
                    _ => RcStatus::RemoteInvalidRequest,
                };
                self.fail(status);
            }
        }
    }

    fn handle_request(&mut self, repr: &TransportRepr, payload: &[u8], mem: &mut dyn Memory) {
        let psn = repr.bth.psn;
        let op = repr.bth.opcode;
        let r = &mut self.resp;
        if psn != r.epsn {
            if psn < r.epsn {
                match op {
                    Opcode::RC_RDMA_READ_REQUEST => Self::duplicate_read(r, repr, mem),
                    Opcode::RC_COMPARE_SWAP | Opcode::RC_FETCH_ADD => {
                        Self::duplicate_atomic(r, psn);
                    }
                    // A duplicate: the requester missed our ACK. Say again how far we got.
                    _ => r.pending = Some((Syndrome::Ack { credit: 31 }, r.epsn - 1)),
                }
            } else if !r.nak_sent {
                r.nak_sent = true;
                r.pending = Some((Syndrome::Nak(NakCode::PsnSequenceError), r.epsn));
            }
            return;
        }
        let Some(info) = op.info() else { return };
        if matches!(
            op,
            Opcode::RC_RDMA_READ_REQUEST | Opcode::RC_COMPARE_SWAP | Opcode::RC_FETCH_ADD
        ) {
            if !matches!(r.in_progress, InProgress::None) {
                r.in_progress = InProgress::None;
                r.pending = Some((Syndrome::Nak(NakCode::InvalidRequest), psn));
                return;
            }
            let max = usize::from(self.config.max_dest_rd_atomic);
            let mtu = self.config.mtu;
            let r = &mut self.resp;
            let outcome = if max == 0 {
                Err(NakCode::InvalidRequest)
            } else if op == Opcode::RC_RDMA_READ_REQUEST {
                Self::new_read(r, repr, mtu, mem)
            } else {
                Self::new_atomic(r, repr, mem)
            };
            match outcome {
                Ok(resource) => {
                    if r.resources.len() == max {
                        r.resources.pop_front();
                    }
                    r.resources.push_back(resource);
                    r.epsn = match resource {
                        Resource::Read { last_psn, .. } => last_psn + 1,
                        Resource::Atomic { psn, .. } => psn + 1,
                    };
                    r.msn = r.msn.wrapping_add(1);
                    r.nak_sent = false;
                }
                Err(code) => {
                    r.pending = Some((Syndrome::Nak(code), psn));
                    self.responder_error();
                }
            }
            return;
        }
        let starts = info.position.starts_message();
        let ends = info.position.ends_message();
        let is_send = matches!(
            op,
            Opcode::RC_SEND_FIRST
                | Opcode::RC_SEND_MIDDLE
                | Opcode::RC_SEND_LAST
                | Opcode::RC_SEND_LAST_WITH_IMMEDIATE
                | Opcode::RC_SEND_ONLY
                | Opcode::RC_SEND_ONLY_WITH_IMMEDIATE
        );
        let is_write = matches!(
            op,
            Opcode::RC_RDMA_WRITE_FIRST
                | Opcode::RC_RDMA_WRITE_MIDDLE
                | Opcode::RC_RDMA_WRITE_LAST
                | Opcode::RC_RDMA_WRITE_LAST_WITH_IMMEDIATE
                | Opcode::RC_RDMA_WRITE_ONLY
                | Opcode::RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE
        );
        let mtu = self.config.mtu;
        // FIRST and MIDDLE packets carry exactly one MTU; a message continues where the
        // last one left off.
        let continuing = !matches!(r.in_progress, InProgress::None);
        if (!ends && payload.len() != mtu) || (starts == continuing) || !(is_send || is_write) {
            r.pending = Some((Syndrome::Nak(NakCode::InvalidRequest), psn));
            return;
        }
        if is_send {
            let (handle, offset) = match r.in_progress {
                InProgress::Send { handle, offset } => (handle, offset),
                InProgress::None => match mem.take_recv() {
                    Some(h) => (h, 0),
                    None => {
                        r.pending = Some((
                            Syndrome::RnrNak {
                                timer: self.config.min_rnr_timer,
                            },
                            psn,
                        ));
                        return;
                    }
                },
                InProgress::Write { .. } => {
                    // A SEND packet in the middle of a WRITE: not a valid stream.
                    r.in_progress = InProgress::None;
                    r.pending = Some((Syndrome::Nak(NakCode::InvalidRequest), psn));
                    return;
                }
            };
            if !mem.scatter(handle, offset, payload) {
                self.completions.push_back(RcCompletion::Recv {
                    handle,
                    status: RcStatus::LocalLength,
                    len: offset + payload.len(),
                    imm: None,
                    write: false,
                });
                r.in_progress = InProgress::None;
                r.pending = Some((Syndrome::Nak(NakCode::InvalidRequest), psn));
                return;
            }
            r.in_progress = InProgress::Send {
                handle,
                offset: offset + payload.len(),
            };
            if ends {
                r.in_progress = InProgress::None;
                r.msn = r.msn.wrapping_add(1);
                self.completions.push_back(RcCompletion::Recv {
                    handle,
                    status: RcStatus::Success,
                    len: offset + payload.len(),
                    imm: repr.imm,
                    write: false,
                });
            }
        } else {
            let (va, rkey, offset) = match (r.in_progress, repr.reth) {
                (InProgress::Write { va, rkey, offset }, _) => (va, rkey, offset),
                (InProgress::None, Some(reth)) => (reth.va, reth.rkey, 0),
                _ => {
                    r.pending = Some((Syndrome::Nak(NakCode::InvalidRequest), psn));
                    return;
                }
            };
            // WRITE with immediate data consumes a receive: make sure one is there before
            // any byte lands (else RNR NAK, and the requester resends from here).
            let recv = if repr.imm.is_some() {
                match mem.take_recv() {
                    Some(h) => Some(h),
                    None => {
                        r.pending = Some((
                            Syndrome::RnrNak {
                                timer: self.config.min_rnr_timer,
                            },
                            psn,
                        ));
                        return;
                    }
                }
            } else {
                None
            };
            if let Err(code) = mem.remote_write(rkey, va + offset as u64, payload) {
                r.in_progress = InProgress::None;
                r.pending = Some((Syndrome::Nak(code), psn));
                // The receive a WRITE with immediate data took completes in error, as
                // rxe completes it, and the QP stops.
                if let Some(handle) = recv {
                    self.completions.push_back(RcCompletion::Recv {
                        handle,
                        status: RcStatus::RemoteAccess,
                        len: 0,
                        imm: None,
                        write: true,
                    });
                }
                self.responder_error();
                return;
            }
            r.in_progress = InProgress::Write {
                va,
                rkey,
                offset: offset + payload.len(),
            };
            if ends {
                r.in_progress = InProgress::None;
                r.msn = r.msn.wrapping_add(1);
                if let Some(handle) = recv {
                    self.completions.push_back(RcCompletion::Recv {
                        handle,
                        status: RcStatus::Success,
                        len: offset + payload.len(),
                        imm: repr.imm,
                        write: true,
                    });
                }
            }
        }
        r.epsn = psn + 1;
        r.nak_sent = false;
        if repr.bth.ack_req {
            r.pending = Some((Syndrome::Ack { credit: 31 }, psn));
        }
    }

    /// A new READ request at the expected PSN: checks the access and queues its responses.
    fn new_read(
        r: &mut Responder,
        repr: &TransportRepr,
        mtu: usize,
        mem: &mut dyn Memory,
    ) -> Result<Resource, NakCode> {
        let reth = repr.reth.ok_or(NakCode::InvalidRequest)?;
        let len = reth.dma_len as usize;
        mem.check_remote_read(reth.rkey, reth.va, len)?;
        let first_psn = repr.bth.psn;
        let last_psn = first_psn + (packet_count(len, mtu) as u32 - 1);
        r.replies.push_back(Reply::Read {
            first_psn,
            next: first_psn,
            va: reth.va,
            rkey: reth.rkey,
            len,
        });
        Ok(Resource::Read {
            first_psn,
            last_psn,
        })
    }

    /// A new atomic at the expected PSN: performs it and queues its acknowledgement.
    fn new_atomic(
        r: &mut Responder,
        repr: &TransportRepr,
        mem: &mut dyn Memory,
    ) -> Result<Resource, NakCode> {
        let eth = repr.atomic.ok_or(NakCode::InvalidRequest)?;
        let op = if repr.bth.opcode == Opcode::RC_COMPARE_SWAP {
            AtomicOp::CompareSwap {
                compare: eth.compare,
                swap: eth.swap_add,
            }
        } else {
            AtomicOp::FetchAdd { add: eth.swap_add }
        };
        let orig = mem.remote_atomic(eth.rkey, eth.va, op)?;
        let psn = repr.bth.psn;
        r.replies.push_back(Reply::Atomic { psn, orig });
        Ok(Resource::Atomic { psn, orig })
    }

    /// A READ request again (its responses were lost): answers it again from its PSN, if
    /// it lies in a READ we executed; earlier responses to it still queued are dropped.
    fn duplicate_read(r: &mut Responder, repr: &TransportRepr, mem: &mut dyn Memory) {
        let psn = repr.bth.psn;
        let Some(reth) = repr.reth else { return };
        let Some(read_first) = r.resources.iter().find_map(|res| match *res {
            Resource::Read {
                first_psn,
                last_psn,
            } if psn >= first_psn && psn <= last_psn => Some(first_psn),
            _ => None,
        }) else {
            return;
        };
        let len = reth.dma_len as usize;
        if mem.check_remote_read(reth.rkey, reth.va, len).is_err() {
            return;
        }
        r.replies.retain(|reply| match *reply {
            // Asked again from `psn` within the same READ, the requester has this READ's
            // responses before it: what is still queued of them is waste. Replies to other
            // READs stay: a requester going back resends several READs in a row, and each
            // is owed its own.
            Reply::Read { first_psn, .. } => !(first_psn >= read_first && first_psn <= psn),
            Reply::Atomic { .. } => true,
        });
        // Responses go out in PSN order.
        let at = r.replies.partition_point(|reply| reply.first_psn() < psn);
        r.replies.insert(
            at,
            Reply::Read {
                first_psn: psn,
                next: psn,
                va: reth.va,
                rkey: reth.rkey,
                len,
            },
        );
    }

    /// An atomic again (its acknowledgement was lost): replays the value it found, without
    /// performing it twice.
    fn duplicate_atomic(r: &mut Responder, psn: Psn) {
        let orig = r.resources.iter().find_map(|res| match *res {
            Resource::Atomic { psn: p, orig } if p == psn => Some(orig),
            _ => None,
        });
        if let Some(orig) = orig {
            let at = r.replies.partition_point(|reply| reply.first_psn() < psn);
            r.replies.insert(at, Reply::Atomic { psn, orig });
        }
    }

    /// Writes the next owed READ response or atomic acknowledgement into `buf`.
    fn poll_reply(&mut self, buf: &mut [u8], mem: &mut dyn Memory) -> Option<usize> {
        let mtu = self.config.mtu;
        let dest = self.config.dest_qpn;
        let msn = self.resp.msn;
        let ack = AethRepr {
            syndrome: Syndrome::Ack { credit: 31 },
            msn,
        };
        let reply = self.resp.replies.front_mut()?;
        match reply {
            Reply::Atomic { psn, orig } => {
                let repr = TransportRepr {
                    aeth: Some(ack),
                    atomic_ack: Some(AtomicAckEthRepr { orig: *orig }),
                    ..TransportRepr::new(BthRepr::new(Opcode::RC_ATOMIC_ACKNOWLEDGE, dest, *psn))
                };
                self.resp.replies.pop_front();
                repr.emit(&[], buf).ok()
            }
            Reply::Read {
                first_psn,
                next,
                va,
                rkey,
                len,
            } => {
                let index = (*next - *first_psn) as usize;
                let seg = segment(MessageKind::ReadResponse, *len, mtu, index)?;
                let info = seg.opcode.info()?;
                let mut repr = TransportRepr::new(BthRepr::new(seg.opcode, dest, *next));
                if info.headers.contains(crate::wire::ExtHeaders::AETH) {
                    repr.aeth = Some(ack);
                }
                let (va, rkey) = (*va + seg.offset as u64, *rkey);
                *next += 1;
                if seg.is_last() {
                    self.resp.replies.pop_front();
                }
                let at = repr.emit_headers(seg.len, buf).ok()?;
                if let Err(code) = mem.remote_read(rkey, va, &mut buf[at..at + seg.len]) {
                    // The region went away since the request was checked.
                    self.resp.replies.clear();
                    self.resp.pending = Some((Syndrome::Nak(code), repr.bth.psn));
                    return None;
                }
                Some(repr.buffer_len(seg.len))
            }
        }
    }

    /// Writes the next packet to send into `buf` and returns its length; `None` when
    /// there is nothing to send now.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        mem: &mut dyn Memory,
    ) -> Option<usize> {
        self.now = Some(now);
        let sent = self.next_packet(now, buf, mem);
        if sent.is_none() {
            // The round is over: the next call may send another burst of responses.
            self.resp.replies_this_round = 0;
            self.resp.requests_before_ack = 0;
        }
        sent
    }

    /// The packet `poll_transmit` sends next.
    fn next_packet(&mut self, now: Instant, buf: &mut [u8], mem: &mut dyn Memory) -> Option<usize> {
        // The responder's responses, NAKs and ACKs go first: they unblock the peer. READ
        // responses and atomic acknowledgements come before any later ACK, in PSN order.
        // A plain ACK lets a few requests go ahead of it (`REQUESTS_BEFORE_ACK`).
        if !self.resp.replies.is_empty() && self.resp.replies_this_round < REPLY_BURST {
            if let Some(len) = self.poll_reply(buf, mem) {
                self.resp.replies_this_round += 1;
                return Some(len);
            }
        }
        let ack_may_wait = matches!(self.resp.pending, Some((Syndrome::Ack { .. }, _)))
            && self.resp.requests_before_ack < REQUESTS_BEFORE_ACK;
        if ack_may_wait {
            if let Some(len) = self.next_request(now, buf, mem) {
                self.resp.requests_before_ack += 1;
                return Some(len);
            }
        }
        if let Some((syndrome, psn)) = self.resp.pending.take() {
            let repr = TransportRepr {
                aeth: Some(AethRepr {
                    syndrome,
                    msn: self.resp.msn,
                }),
                ..TransportRepr::new(BthRepr::new(
                    Opcode::RC_ACKNOWLEDGE,
                    self.config.dest_qpn,
                    psn,
                ))
            };
            return repr.emit(&[], buf).ok();
        }
        self.next_request(now, buf, mem)
    }

    /// The requester's next packet, if the window and the ordering rules let one go; a
    /// probe's packet first, after which sending goes on where it was.
    fn next_request(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        mem: &mut dyn Memory,
    ) -> Option<usize> {
        let sent = self.next_request_in_order(now, buf, mem);
        if sent.is_some() {
            self.req.resume_after_probe();
        }
        sent
    }

    /// The packet at `next_psn`, if the window and the ordering rules let it go.
    fn next_request_in_order(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        mem: &mut dyn Memory,
    ) -> Option<usize> {
        let req = &mut self.req;
        if req.failed
            || req.rnr_wait
            || req.next_psn >= req.new_psn
            || (req.next_psn - req.una) as u32 >= req.cwnd
        {
            return None;
        }
        // The request holding `next_psn`, and which of its packets that is.
        let psn = req.next_psn;
        let w = req.holding(psn)?;
        if w.req.kind.is_read_or_atomic() || w.req.fence {
            // Earlier READs and atomics still outstanding: at most max_rd_atomic at once,
            // and a fenced request waits for all of them.
            let earlier = req
                .queue
                .iter()
                .take_while(|x| x.first_psn < w.first_psn)
                .filter(|x| x.req.kind.is_read_or_atomic())
                .count();
            let limit = if w.req.fence {
                0
            } else {
                usize::from(self.config.max_rd_atomic).saturating_sub(1)
            };
            if earlier > limit || (w.req.kind.is_read_or_atomic() && self.config.max_rd_atomic == 0)
            {
                return None;
            }
        }
        if w.req.kind.is_read_or_atomic() {
            return self.transmit_read_or_atomic(now, w, psn, buf);
        }
        let index = (psn - w.first_psn) as usize;
        let seg = segment(w.req.kind, w.req.len, self.config.mtu, index)?;
        let with_imm = matches!(
            w.req.kind,
            MessageKind::SendWithImm | MessageKind::WriteWithImm
        );
        let info = seg.opcode.info()?;
        // An ACK for each message's end, and every quarter window within long ones so ACKs
        // arrive before the window closes.
        let spacing = (self.req.cwnd / 4).max(1);
        let ack_req = seg.is_last()
            || self.req.probe_resume.is_some()
            || (psn - self.req.ack_req_psn) as u32 >= spacing;
        if ack_req {
            self.req.ack_req_psn = psn;
        }
        let mut repr = TransportRepr::new(BthRepr {
            ack_req,
            ..BthRepr::new(seg.opcode, self.config.dest_qpn, psn)
        });
        if info.headers.contains(crate::wire::ExtHeaders::RETH) {
            let (va, rkey) = w.req.remote.unwrap_or((0, Rkey::new(0)));
            repr.reth = Some(RethRepr {
                va,
                rkey,
                dma_len: w.req.len as u32,
            });
        }
        if with_imm && seg.is_last() {
            repr.imm = Some(w.req.imm);
        }
        let at = repr.emit_headers(seg.len, buf).ok()?;
        if !mem.gather(w.req.handle, seg.offset, &mut buf[at..at + seg.len]) {
            self.fail(RcStatus::LocalProtection);
            return None;
        }
        let len = repr.buffer_len(seg.len);
        self.req.next_psn = psn + 1;
        self.arm_retransmit(now, psn);
        Some(len)
    }

    /// The requester's position and the timers, for test failures.
    #[cfg(test)]
    fn summary(&self) -> String {
        let r = &self.req;
        format!(
            "una {:?} next {:?} new {:?} rnr_wait {} failed {} gap_at {:?} front {:?} timers {:?}",
            r.una,
            r.next_psn,
            r.new_psn,
            r.rnr_wait,
            r.failed,
            r.gap_at,
            r.queue.front(),
            self.timers
        )
    }

    /// After sending packet `psn`: arms the retransmission and probe timers if they are
    /// not running, and times the packet if none is being timed.
    fn arm_retransmit(&mut self, now: Instant, psn: Psn) {
        if !self.timers.is_armed(Timer::Retransmit) {
            if let Some(t) = self.ack_timeout() {
                self.timers.set(Timer::Retransmit, now + t);
            }
        }
        if !self.timers.is_armed(Timer::Probe) {
            self.timers.set(Timer::Probe, now + self.probe_delay());
        }
        if self.req.timing.is_none() {
            self.req.timing = Some(Timing {
                psn,
                first: now,
                last: now,
            });
        }
    }

    /// Sends the READ request or atomic of `w`, from `psn`: a READ asked again after lost
    /// responses asks only for the bytes from the first one missing.
    fn transmit_read_or_atomic(
        &mut self,
        now: Instant,
        w: Wqe,
        psn: Psn,
        buf: &mut [u8],
    ) -> Option<usize> {
        let (va, rkey) = w.req.remote.unwrap_or((0, Rkey::new(0)));
        let dest = self.config.dest_qpn;
        let repr = match w.req.kind {
            MessageKind::Read => {
                let offset = ((psn - w.first_psn) as usize * self.config.mtu).min(w.req.len);
                TransportRepr {
                    reth: Some(RethRepr {
                        va: va + offset as u64,
                        rkey,
                        dma_len: (w.req.len - offset) as u32,
                    }),
                    ..TransportRepr::new(BthRepr::new(Opcode::RC_RDMA_READ_REQUEST, dest, psn))
                }
            }
            kind => {
                let (opcode, swap_add, compare) = if kind == MessageKind::CompareSwap {
                    (Opcode::RC_COMPARE_SWAP, w.req.atomic.1, w.req.atomic.0)
                } else {
                    (Opcode::RC_FETCH_ADD, w.req.atomic.0, 0)
                };
                TransportRepr {
                    atomic: Some(AtomicEthRepr {
                        va,
                        rkey,
                        swap_add,
                        compare,
                    }),
                    ..TransportRepr::new(BthRepr::new(opcode, dest, psn))
                }
            }
        };
        let len = repr.emit(&[], buf).ok()?;
        self.req.next_psn = w.last_psn() + 1;
        self.arm_retransmit(now, w.last_psn());
        Some(len)
    }
}

#[cfg(test)]
mod tests;
