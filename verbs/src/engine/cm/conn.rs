//! One connection's (or SIDR request's) CM state: where it is in the IB CM state machine,
//! the peer's identifiers, the MAD awaiting an answer and its timers.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::MadAddr;
use crate::wire::Qpn;
use crate::wire::cm::{CmMessage, CommId, ServiceId};

/// States of IBTA's CM state diagram (cm.c's `enum ib_cm_state`), as far as RoCE uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Active: REQ sent, waiting for REP, REJ or MRA.
    ReqSent,
    /// Active: the peer sent MRA for our REQ; still waiting.
    MraRcvd,
    /// Active: REP received; the application has not sent the RTU yet.
    RepRcvd,
    /// Passive: REQ received; the application has not answered.
    ReqRcvd,
    /// Passive: REQ received again before the application answered; MRA sent.
    MraReqSent,
    /// Passive: REP sent, waiting for RTU.
    RepSent,
    /// Both: connected.
    Established,
    /// We sent a DREQ.
    DreqSent,
    /// The peer sent a DREQ; we owe a DREP.
    DreqRcvd,
    /// Disconnected; the comm ID waits before it is free.
    TimeWait,
    /// Active: SIDR_REQ sent.
    SidrReqSent,
    /// Passive: SIDR_REQ received; the application has not answered.
    SidrReqRcvd,
    /// Passive: SIDR_REP sent, kept to answer duplicates of the request.
    SidrAnswered,
}

/// Where a connection is, as the engine's users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// A request is on its way and unanswered.
    Connecting,
    /// A request waits for the application's answer.
    Requested,
    /// Connected.
    Established,
    /// Disconnecting.
    Disconnecting,
    /// In timewait.
    TimeWait,
}

impl State {
    pub(super) fn public(self) -> ConnState {
        match self {
            State::ReqSent | State::MraRcvd | State::RepSent | State::SidrReqSent => {
                ConnState::Connecting
            }
            State::RepRcvd | State::ReqRcvd | State::MraReqSent | State::SidrReqRcvd => {
                ConnState::Requested
            }
            State::Established => ConnState::Established,
            State::DreqSent | State::DreqRcvd => ConnState::Disconnecting,
            State::TimeWait | State::SidrAnswered => ConnState::TimeWait,
        }
    }
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) local_id: CommId,
    pub(super) remote_id: CommId,
    pub(super) state: State,
    pub(super) peer: IpAddr,
    pub(super) local: IpAddr,
    pub(super) service_id: ServiceId,
    pub(super) local_qpn: Qpn,
    pub(super) remote_qpn: Qpn,
    /// TID of the exchange in progress: the REQ's (REP, RTU, MRA, REJ reuse it), then our
    /// DREQ's.
    pub(super) tid: u64,
    /// TID of the peer's DREQ, which our DREP reuses.
    pub(super) dreq_tid: u64,
    /// The CM response timeout and retries the peer asked of us (REQ fields).
    pub(super) peer_response_timeout: u8,
    pub(super) peer_max_retries: u8,
    /// Destroyed by the application: no more events.
    pub(super) orphan: bool,
    /// The MAD we resend until it is answered.
    pub(super) awaiting: Option<CmMessage>,
    pub(super) retransmit_at: Option<Instant>,
    pub(super) retransmit_timeout: Duration,
    pub(super) retries_left: u8,
    /// The answer we send again when the peer repeats itself (RTU, MRA, DREP, SIDR_REP).
    pub(super) last_reply: Option<CmMessage>,
    pub(super) timewait_until: Option<Instant>,
    /// When the connection was asked for (active side): REJ 8 within
    /// `CmConfig::refused_grace` of it is answered by asking again.
    pub(super) started: Option<Instant>,
    /// The next retransmission is a REQ sent again after REJ 8, not a retry.
    pub(super) refused_resend: bool,
    pub(super) sidr_linger_until: Option<Instant>,
}

impl Conn {
    pub(super) fn new(local_id: CommId, state: State, peer: IpAddr, local: IpAddr) -> Conn {
        Conn {
            local_id,
            remote_id: CommId(0),
            state,
            peer,
            local,
            service_id: ServiceId(0),
            local_qpn: Qpn::new_masked(0),
            remote_qpn: Qpn::new_masked(0),
            tid: 0,
            dreq_tid: 0,
            peer_response_timeout: 20,
            peer_max_retries: 15,
            orphan: false,
            awaiting: None,
            retransmit_at: None,
            retransmit_timeout: Duration::ZERO,
            retries_left: 0,
            last_reply: None,
            timewait_until: None,
            started: None,
            refused_resend: false,
            sidr_linger_until: None,
        }
    }

    pub(super) fn addr(&self) -> MadAddr {
        MadAddr {
            peer: self.peer,
            local: self.local,
        }
    }

    /// The earliest of the connection's deadlines.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        [
            self.retransmit_at,
            self.timewait_until,
            self.sidr_linger_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn stop_retransmit(&mut self) {
        self.awaiting = None;
        self.retransmit_at = None;
    }

    /// The peer sent MRA: the next retransmission waits until `at`, without using a retry.
    pub(super) fn extend_retransmit(&mut self, at: Instant) {
        if self.awaiting.is_some() {
            self.retransmit_at = Some(at);
        }
    }
}
