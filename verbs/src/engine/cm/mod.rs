//! The IB Connection Manager protocol as Linux speaks it on RoCEv2, without I/O.
//!
//! A [`CmEngine`] is one CM agent: the connections (and SIDR requests) of one port, the
//! service IDs it listens on, and the MADs it owes. It knows nothing of sockets or clocks:
//! MADs come in through [`CmEngine::handle_mad`], time through `now` arguments.
//!
//! # Call order
//!
//! The owner drives an engine with four groups of calls, in any interleaving:
//! 1. **Requests from the application**: [`listen`](CmEngine::listen),
//!    [`connect`](CmEngine::connect), [`resolve_sidr`](CmEngine::resolve_sidr),
//!    [`accept`](CmEngine::accept), [`reject`](CmEngine::reject),
//!    [`establish`](CmEngine::establish), [`disconnect`](CmEngine::disconnect),
//!    [`destroy`](CmEngine::destroy).
//! 2. **Input**: [`handle_mad`](CmEngine::handle_mad) for every MAD that reaches QP1, and
//!    [`handle_timeout`](CmEngine::handle_timeout) once [`poll_timeout`](CmEngine::poll_timeout)'s
//!    deadline has passed.
//! 3. **Output**: [`poll_transmit`](CmEngine::poll_transmit) until `None` after each of the
//!    above, sending each MAD as a UD SEND to the peer's QP1.
//! 4. **Events**: [`poll_event`](CmEngine::poll_event) until `None`.
//!
//! # What it follows
//!
//! Linux's `drivers/infiniband/core/cm.c` (reference/cm-facts.md section 1): TIDs, matching
//! on comm IDs, retransmission on the CM response timeout up to Max CM Retries, duplicates
//! answered again (RTU for a duplicate REP, DREP for a duplicate DREQ, MRA for a duplicate
//! REQ while the application has not answered) and never acted on twice, REJ 8 for a
//! service nobody listens on, timewait after disconnection, and SIDR for UD.
//!
//! Connections are named by their local comm ID, which is random and unique among the
//! engine's live connections.

#![forbid(unsafe_code)]

mod conn;
mod input;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::wire::cm::{
    CmMessage, CmPath, CmTransport, CommId, DrepRepr, DreqRepr, MraRepr, MsgKind, RejRepr, RepRepr,
    ReqRepr, RtuRepr, ServiceId, SidrRepRepr, SidrReqRepr,
};
use crate::wire::{Psn, Qkey, Qpn};
use conn::{Conn, State};

pub use conn::ConnState;

/// REJ reasons and SIDR_REP statuses, as the wire layer defines them.
pub use crate::wire::cm::{rej_reason as reason, sidr_status};

/// Time values of the CM (`cm_convert_to_ms`: 4.096 µs × 2^t, in whole milliseconds as
/// Linux computes them).
pub fn iba_time(t: u8) -> Duration {
    Duration::from_millis(1 << t.saturating_sub(8).min(31))
}

/// The protocol constants of an agent.
#[derive(Debug, Clone)]
pub struct CmConfig {
    /// The CA GUID sent in REQ and REP, and the ARI of a timeout REJ.
    pub ca_guid: u64,
    /// Seed of the generator behind comm IDs and TIDs.
    pub seed: u64,
    /// CM response timeout we advertise (both fields of a REQ): 20 in Linux.
    pub cm_response_timeout: u8,
    /// Max CM Retries we advertise and use: 15 in Linux.
    pub max_cm_retries: u8,
    /// Packet life time of the path: 16 in current Linux on RoCE (18 in older kernels).
    pub packet_life_time: u8,
    /// Timeout of one SIDR_REQ (Linux: 4096 ms).
    pub sidr_timeout: Duration,
    /// How long a request for a service nobody listens on waits for a listener before it
    /// is refused (Linux refuses at once; see `hold_unheard`).
    pub listen_grace: Duration,
    /// For how long after a REQ a refusal for want of a listener (REJ 8) is answered by
    /// sending the REQ again, every [`REFUSED_RESEND`], instead of ending the connection:
    /// a server that tells its client to connect and then listens (perftest's, after its
    /// handshake) is not raced. Linux's CM refuses such a REQ at once.
    pub refused_grace: Duration,
}

/// How soon a REQ refused within [`CmConfig::refused_grace`] is sent again.
pub const REFUSED_RESEND: Duration = Duration::from_millis(50);

impl Default for CmConfig {
    fn default() -> Self {
        CmConfig {
            ca_guid: 0,
            seed: 0,
            cm_response_timeout: 20,
            max_cm_retries: 15,
            packet_life_time: 16,
            sidr_timeout: Duration::from_millis(4096),
            listen_grace: Duration::from_millis(100),
            refused_grace: Duration::from_secs(1),
        }
    }
}

/// What a connection request carries besides addressing (the `ib_cm_req_param` of Linux).
#[derive(Debug, Clone, Copy)]
pub struct ConnectParams<'a> {
    /// The peer's address: its GID, and where the MADs go.
    pub peer: IpAddr,
    /// Our address the connection uses (our GID in the path).
    pub local: IpAddr,
    /// The service: port space and port.
    pub service_id: ServiceId,
    /// Our QP.
    pub qpn: Qpn,
    /// The first PSN we expect to receive (the peer's send PSN).
    pub starting_psn: Psn,
    /// RDMA READ / atomic requests we accept at once.
    pub responder_resources: u8,
    /// RDMA READ / atomic requests we issue at once.
    pub initiator_depth: u8,
    /// Transport retries (3 bits).
    pub retry_count: u8,
    /// RNR retries (3 bits).
    pub rnr_retry_count: u8,
    /// Path MTU, IB encoding (3 = 1024, 4 = 2048, 5 = 4096).
    pub path_mtu: u8,
    /// Our QP takes its receives from an SRQ.
    pub srq: bool,
    /// Hop limit of the path.
    pub hop_limit: u8,
    /// Traffic class of the path.
    pub traffic_class: u8,
    /// Local ACK timeout of the path (5 bits).
    pub local_ack_timeout: u8,
    /// Private data, up to 92 bytes (the rdma_cm header first).
    pub private_data: &'a [u8],
}

/// What an accepting side answers with (REP or SIDR_REP).
#[derive(Debug, Clone, Copy)]
pub struct AcceptParams<'a> {
    /// Our QP.
    pub qpn: Qpn,
    /// The first PSN we expect to receive (RC).
    pub starting_psn: Psn,
    /// RDMA READ / atomic requests we accept at once.
    pub responder_resources: u8,
    /// RDMA READ / atomic requests we issue at once.
    pub initiator_depth: u8,
    /// RNR retries the peer should use (3 bits).
    pub rnr_retry_count: u8,
    /// Our QP takes its receives from an SRQ.
    pub srq: bool,
    /// Target ACK delay (5 bits).
    pub target_ack_delay: u8,
    /// The Q_Key of our UD QP (SIDR).
    pub qkey: Qkey,
    /// Private data: up to 196 bytes for a REP, 136 for a SIDR_REP.
    pub private_data: &'a [u8],
}

/// Something the application learns from the CM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmEvent {
    /// A REQ for a service we listen on (passive side): answer with
    /// [`accept`](CmEngine::accept) or [`reject`](CmEngine::reject).
    Request {
        /// The new connection.
        conn: CommId,
        /// Who asked.
        peer: IpAddr,
        /// Our address it was sent to.
        local: IpAddr,
        /// The request.
        req: Box<ReqRepr>,
    },
    /// A SIDR_REQ for a service we listen on: accept or reject it.
    SidrRequest {
        /// The request, named by a comm ID of ours.
        conn: CommId,
        /// Who asked.
        peer: IpAddr,
        /// Our address it was sent to.
        local: IpAddr,
        /// The request.
        req: Box<SidrReqRepr>,
    },
    /// The peer accepted our REQ (active side): [`establish`](CmEngine::establish) sends
    /// the RTU once our QP is ready, or [`reject`](CmEngine::reject) refuses the REP.
    Reply {
        /// The connection.
        conn: CommId,
        /// The reply.
        rep: Box<RepRepr>,
    },
    /// The answer to our SIDR_REQ (whatever its status); the request is over.
    SidrReply {
        /// The request.
        conn: CommId,
        /// The reply.
        rep: Box<SidrRepRepr>,
    },
    /// The connection is established (passive side: the RTU arrived).
    Established {
        /// The connection.
        conn: CommId,
    },
    /// The peer rejected our REQ or REP; the connection is over.
    Rejected {
        /// The connection.
        conn: CommId,
        /// The rejection.
        rej: Box<RejRepr>,
    },
    /// The peer did not answer within Max CM Retries; the connection is over.
    Unreachable {
        /// The connection.
        conn: CommId,
    },
    /// The connection is disconnected: the peer sent a DREQ (answer with
    /// [`disconnect`](CmEngine::disconnect)), or ours was answered or timed out.
    Disconnected {
        /// The connection.
        conn: CommId,
        /// Our DREQ got no answer.
        timed_out: bool,
    },
    /// Timewait is over; the connection's comm ID is free.
    TimewaitExit {
        /// The connection.
        conn: CommId,
    },
}

/// Why an application request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmError {
    /// No such connection.
    UnknownConn,
    /// Not allowed in the connection's state (e.g. accepting twice).
    WrongState,
    /// Private data longer than the message carries, or a field out of range.
    Invalid,
    /// The service ID already has a listener.
    AddrInUse,
}

/// MADs the engine dropped or answered without acting, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CmStats {
    /// Shorter than a MAD, or fields a CM message may not hold.
    pub malformed: u64,
    /// Not a CM MAD we speak (class, version, method, attribute).
    pub unsupported: u64,
    /// About a connection we do not have.
    pub unknown_conn: u64,
    /// A duplicate, answered again or dropped.
    pub duplicates: u64,
    /// Not expected in the connection's state.
    pub wrong_state: u64,
    /// A DREQ naming a QP that is not the connection's.
    pub bad_qpn: u64,
    /// REQs or SIDR_REQs for a service nobody listens on.
    pub no_listener: u64,
    /// REQs sent again after a REJ 8 within the refused grace.
    pub refused_resends: u64,
    /// MADs sent again on timeout.
    pub retransmits: u64,
}

/// Addressing of one MAD from [`CmEngine::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadAddr {
    /// The peer (its QP1).
    pub peer: IpAddr,
    /// Our address to send from.
    pub local: IpAddr,
}

/// A request held for a listener (see [`CmConfig::listen_grace`]).
#[derive(Debug, Clone, Copy)]
struct Unheard {
    until: Instant,
    addr: MadAddr,
    tid: u64,
    msg: CmMessage,
}

/// One MAD to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outgoing {
    addr: MadAddr,
    tid: u64,
    msg: CmMessage,
}

/// One CM agent: every connection of a port. See the module docs for the call order.
#[derive(Debug)]
pub struct CmEngine {
    config: CmConfig,
    rng: Rng,
    hi_tid: u32,
    conns: HashMap<CommId, Conn>,
    /// Connections by the peer's (address, comm ID): REQ and SIDR_REQ duplicates.
    by_remote: HashMap<(IpAddr, CommId), CommId>,
    listeners: HashSet<ServiceId>,
    /// Requests for services nobody listens on yet, until their grace is over.
    unheard: Vec<Unheard>,
    tx: VecDeque<Outgoing>,
    events: VecDeque<CmEvent>,
    stats: CmStats,
}

impl CmEngine {
    /// An agent with no connections.
    pub fn new(config: CmConfig) -> Self {
        let mut rng = Rng::seed_from_u64(config.seed);
        let hi_tid = rng.next_u32();
        CmEngine {
            config,
            rng,
            hi_tid,
            conns: HashMap::new(),
            by_remote: HashMap::new(),
            listeners: HashSet::new(),
            unheard: Vec::new(),
            tx: VecDeque::new(),
            events: VecDeque::new(),
            stats: CmStats::default(),
        }
    }

    /// Drops and non-actions so far.
    pub fn stats(&self) -> CmStats {
        self.stats
    }

    /// How many connections (of any state, timewait included) the engine holds.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// The state of a connection, if the engine holds it.
    pub fn conn_state(&self, conn: CommId) -> Option<ConnState> {
        self.conns.get(&conn).map(|c| c.state.public())
    }

    /// Starts answering REQs and SIDR_REQs for `service_id`, those held for it included.
    pub fn listen(&mut self, now: Instant, service_id: ServiceId) -> Result<(), CmError> {
        if !self.listeners.insert(service_id) {
            return Err(CmError::AddrInUse);
        }
        self.take_unheard(now, service_id);
        Ok(())
    }

    /// Stops listening on `service_id` (connections it brought stay).
    pub fn unlisten(&mut self, service_id: ServiceId) {
        self.listeners.remove(&service_id);
    }

    /// Sends a REQ (active side); the answer comes as [`CmEvent::Reply`],
    /// [`CmEvent::Rejected`] or [`CmEvent::Unreachable`].
    pub fn connect(&mut self, now: Instant, p: &ConnectParams) -> Result<CommId, CmError> {
        let mut private_data = [0; crate::wire::cm::REQ_PRIVATE_LEN];
        copy_private(&mut private_data, p.private_data)?;
        if p.retry_count > 7 || p.rnr_retry_count > 7 || p.local_ack_timeout > 31 {
            return Err(CmError::Invalid);
        }
        let id = self.new_comm_id();
        let cfg = &self.config;
        let req = ReqRepr {
            local_comm_id: id,
            service_id: p.service_id,
            local_ca_guid: cfg.ca_guid,
            local_qkey: Qkey::new(0),
            local_qpn: p.qpn,
            responder_resources: p.responder_resources,
            initiator_depth: p.initiator_depth,
            remote_cm_response_timeout: cfg.cm_response_timeout,
            transport: CmTransport::Rc,
            e2e_flow_control: false,
            starting_psn: p.starting_psn,
            local_cm_response_timeout: cfg.cm_response_timeout,
            retry_count: p.retry_count,
            pkey: 0xffff,
            path_mtu: p.path_mtu,
            rnr_retry_count: p.rnr_retry_count,
            max_cm_retries: cfg.max_cm_retries,
            srq: p.srq,
            primary_path: CmPath {
                local_lid: 0xffff,
                remote_lid: 0xffff,
                local_gid: gid_of(p.local),
                remote_gid: gid_of(p.peer),
                traffic_class: p.traffic_class,
                hop_limit: p.hop_limit,
                local_ack_timeout: p.local_ack_timeout,
                ..CmPath::default()
            },
            private_data,
            ..ReqRepr::default()
        };
        let timeout = iba_time(cfg.packet_life_time) * 2 + iba_time(req.remote_cm_response_timeout);
        let mut conn = Conn::new(id, State::ReqSent, p.peer, p.local);
        conn.started = Some(now);
        conn.service_id = p.service_id;
        conn.local_qpn = p.qpn;
        conn.tid = self.tid(id);
        self.conns.insert(id, conn);
        let msg = CmMessage::Req(req);
        self.send_expecting(now, id, msg, timeout, self.config.max_cm_retries);
        Ok(id)
    }

    /// Sends a SIDR_REQ (active side of a UD service); the answer comes as
    /// [`CmEvent::SidrReply`] or [`CmEvent::Unreachable`].
    pub fn resolve_sidr(
        &mut self,
        now: Instant,
        peer: IpAddr,
        local: IpAddr,
        service_id: ServiceId,
        private: &[u8],
    ) -> Result<CommId, CmError> {
        let mut private_data = [0; crate::wire::cm::SIDR_REQ_PRIVATE_LEN];
        copy_private(&mut private_data, private)?;
        let id = self.new_comm_id();
        let mut conn = Conn::new(id, State::SidrReqSent, peer, local);
        conn.service_id = service_id;
        conn.tid = self.tid(id);
        self.conns.insert(id, conn);
        let msg = CmMessage::SidrReq(SidrReqRepr {
            request_id: id,
            pkey: 0xffff,
            service_id,
            private_data,
        });
        let timeout = self.config.sidr_timeout;
        self.send_expecting(now, id, msg, timeout, self.config.max_cm_retries);
        Ok(id)
    }

    /// Accepts a [`CmEvent::Request`] (sends the REP; [`CmEvent::Established`] follows
    /// with the RTU) or a [`CmEvent::SidrRequest`] (sends the SIDR_REP; the request is
    /// then over).
    pub fn accept(&mut self, now: Instant, conn: CommId, p: &AcceptParams) -> Result<(), CmError> {
        let c = self.conns.get(&conn).ok_or(CmError::UnknownConn)?;
        match c.state {
            State::ReqRcvd | State::MraReqSent => {
                let mut private_data = [0; crate::wire::cm::REP_PRIVATE_LEN];
                copy_private(&mut private_data, p.private_data)?;
                if p.rnr_retry_count > 7 || p.target_ack_delay > 31 {
                    return Err(CmError::Invalid);
                }
                let rep = RepRepr {
                    local_comm_id: conn,
                    remote_comm_id: c.remote_id,
                    local_qkey: Qkey::new(0),
                    local_qpn: p.qpn,
                    starting_psn: p.starting_psn,
                    responder_resources: p.responder_resources,
                    initiator_depth: p.initiator_depth,
                    target_ack_delay: p.target_ack_delay,
                    rnr_retry_count: p.rnr_retry_count,
                    srq: p.srq,
                    local_ca_guid: self.config.ca_guid,
                    private_data,
                    ..RepRepr::default()
                };
                let (timeout, retries) = (iba_time(c.peer_response_timeout), c.peer_max_retries);
                let c = self.conns.get_mut(&conn).ok_or(CmError::UnknownConn)?;
                c.local_qpn = p.qpn;
                c.state = State::RepSent;
                self.send_expecting(now, conn, CmMessage::Rep(rep), timeout, retries);
                Ok(())
            }
            State::SidrReqRcvd => {
                let mut private_data = [0; crate::wire::cm::SIDR_REP_PRIVATE_LEN];
                copy_private(&mut private_data, p.private_data)?;
                let rep = SidrRepRepr {
                    request_id: c.remote_id,
                    status: sidr_status::SUCCESS,
                    qpn: p.qpn,
                    service_id: c.service_id,
                    qkey: p.qkey,
                    private_data,
                    ..SidrRepRepr::default()
                };
                self.answer_sidr(now, conn, rep);
                Ok(())
            }
            _ => Err(CmError::WrongState),
        }
    }

    /// Rejects a request (REJ 28 with `private` data, or SIDR_REP status 2), or, on the
    /// active side, a REP the application will not take.
    pub fn reject(&mut self, now: Instant, conn: CommId, private: &[u8]) -> Result<(), CmError> {
        let mut private_data = [0; crate::wire::cm::REJ_PRIVATE_LEN];
        copy_private(&mut private_data, private)?;
        let c = self.conns.get(&conn).ok_or(CmError::UnknownConn)?;
        match c.state {
            State::ReqRcvd | State::MraReqSent | State::RepRcvd => {
                self.consumer_reject(conn, private_data);
                Ok(())
            }
            State::SidrReqRcvd => {
                let mut sidr_private = [0; crate::wire::cm::SIDR_REP_PRIVATE_LEN];
                copy_private(&mut sidr_private, private)?;
                let rep = SidrRepRepr {
                    request_id: c.remote_id,
                    status: sidr_status::REJECT,
                    service_id: c.service_id,
                    private_data: sidr_private,
                    ..SidrRepRepr::default()
                };
                self.answer_sidr(now, conn, rep);
                Ok(())
            }
            _ => Err(CmError::WrongState),
        }
    }

    /// Active side, after [`CmEvent::Reply`] and once the QP is ready to send: sends the
    /// RTU; the connection is established.
    pub fn establish(&mut self, _now: Instant, conn: CommId) -> Result<(), CmError> {
        let c = self.conns.get_mut(&conn).ok_or(CmError::UnknownConn)?;
        if c.state != State::RepRcvd {
            return Err(CmError::WrongState);
        }
        c.state = State::Established;
        let rtu = CmMessage::Rtu(RtuRepr {
            local_comm_id: conn,
            remote_comm_id: c.remote_id,
            ..RtuRepr::default()
        });
        c.last_reply = Some(rtu);
        let (addr, tid) = (c.addr(), c.tid);
        self.queue(addr, tid, rtu);
        Ok(())
    }

    /// Passive side: data arrived on the QP before the RTU (the RTU was lost), which
    /// establishes the connection as well (`IB_EVENT_COMM_EST`).
    pub fn notify_established(&mut self, conn: CommId) -> Result<(), CmError> {
        let c = self.conns.get_mut(&conn).ok_or(CmError::UnknownConn)?;
        if c.state != State::RepSent {
            return Ok(());
        }
        c.state = State::Established;
        c.stop_retransmit();
        let orphan = c.orphan;
        if !orphan {
            self.events.push_back(CmEvent::Established { conn });
        }
        Ok(())
    }

    /// Disconnects: sends a DREQ, or the DREP owed for the peer's DREQ. Disconnecting a
    /// connection that is already on its way down succeeds and does nothing.
    pub fn disconnect(&mut self, now: Instant, conn: CommId) -> Result<(), CmError> {
        let c = self.conns.get(&conn).ok_or(CmError::UnknownConn)?;
        match c.state {
            State::Established | State::RepSent => {
                let dreq = CmMessage::Dreq(DreqRepr {
                    local_comm_id: conn,
                    remote_comm_id: c.remote_id,
                    remote_qpn: c.remote_qpn,
                    ..DreqRepr::default()
                });
                let (timeout, retries) = (iba_time(c.peer_response_timeout), c.peer_max_retries);
                let tid = self.tid(conn);
                let c = self.conns.get_mut(&conn).ok_or(CmError::UnknownConn)?;
                c.state = State::DreqSent;
                c.tid = tid;
                self.send_expecting(now, conn, dreq, timeout, retries);
                Ok(())
            }
            State::DreqRcvd => {
                let drep = CmMessage::Drep(DrepRepr {
                    local_comm_id: conn,
                    remote_comm_id: c.remote_id,
                    ..DrepRepr::default()
                });
                let (addr, tid) = (c.addr(), c.dreq_tid);
                self.queue(addr, tid, drep);
                self.enter_timewait(now, conn, Some(drep));
                Ok(())
            }
            State::DreqSent | State::TimeWait => Ok(()),
            _ => Err(CmError::WrongState),
        }
    }

    /// The application is done with a connection: what the protocol still owes is sent
    /// (REJ for a pending request, DREQ or DREP for a live connection), timewait runs its
    /// course, and no further event names `conn`.
    pub fn destroy(&mut self, now: Instant, conn: CommId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.orphan = true;
        match c.state {
            State::ReqSent | State::MraRcvd => {
                // Linux: REJ "timeout" with our CA GUID as ARI.
                let mut ari = [0; crate::wire::cm::REJ_ARI_LEN];
                ari[..8].copy_from_slice(&self.config.ca_guid.to_be_bytes());
                let rej = RejRepr {
                    local_comm_id: conn,
                    remote_comm_id: c.remote_id,
                    msg_rejected: MsgKind::Req,
                    ari_len: 8,
                    reason: reason::TIMEOUT,
                    ari,
                    ..RejRepr::default()
                };
                let (addr, tid) = (c.addr(), c.tid);
                self.queue(addr, tid, CmMessage::Rej(rej));
                self.forget(conn);
            }
            State::ReqRcvd | State::MraReqSent | State::RepRcvd | State::RepSent => {
                self.consumer_reject(conn, [0; crate::wire::cm::REJ_PRIVATE_LEN]);
            }
            State::Established | State::DreqRcvd => {
                // Ignoring the result: both states accept a disconnect.
                let _ = self.disconnect(now, conn);
            }
            State::SidrReqRcvd => {
                let _ = self.reject(now, conn, &[]);
            }
            State::SidrReqSent => self.forget(conn),
            State::DreqSent | State::TimeWait | State::SidrAnswered => {}
        }
    }

    /// Takes one MAD that arrived at QP1 from `peer`, sent to our address `local`.
    /// Anything that is not a CM message we act on is dropped and counted in
    /// [`stats`](Self::stats).
    pub fn handle_mad(&mut self, now: Instant, peer: IpAddr, local: IpAddr, mad: &[u8]) {
        let (header, msg) = match CmMessage::parse(mad) {
            Ok(parsed) => parsed,
            Err(crate::wire::Error::Unsupported) => {
                self.stats.unsupported += 1;
                return;
            }
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let addr = MadAddr { peer, local };
        let tid = header.tid;
        match msg {
            CmMessage::Req(req) => self.on_req(now, addr, tid, req),
            CmMessage::Mra(mra) => self.on_mra(now, mra),
            CmMessage::Rej(rej) => self.on_rej(now, peer, rej),
            CmMessage::Rep(rep) => self.on_rep(now, peer, rep),
            CmMessage::Rtu(rtu) => self.on_rtu(rtu),
            CmMessage::Dreq(dreq) => self.on_dreq(now, addr, tid, dreq),
            CmMessage::Drep(drep) => self.on_drep(now, drep),
            CmMessage::SidrReq(req) => self.on_sidr_req(now, addr, tid, req),
            CmMessage::SidrRep(rep) => self.on_sidr_rep(rep),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = self.unheard.iter().map(|u| u.until).min();
        let conns = self.conns.values().filter_map(Conn::next_timeout).min();
        held.into_iter().chain(conns).min()
    }

    /// Retransmits what went unanswered, gives up after Max CM Retries, ends timewaits.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.refuse_unheard(now);
        let due: Vec<CommId> = self
            .conns
            .values()
            .filter(|c| c.next_timeout().is_some_and(|at| at <= now))
            .map(|c| c.local_id)
            .collect();
        for id in due {
            self.conn_timeout(now, id);
        }
    }

    /// The next MAD to send: writes it (256 bytes) into the start of `buf` and says where
    /// it goes. `buf` must hold [`MAD_LEN`](crate::wire::mad::MAD_LEN) bytes.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<MadAddr> {
        loop {
            let out = self.tx.pop_front()?;
            // Every message the engine queues was built from checked values, so emit
            // cannot fail; a buffer too short is the caller's bug, reported by skipping.
            if out.msg.emit(out.tid, buf).is_ok() {
                return Some(out.addr);
            }
        }
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<CmEvent> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------- helpers -----------

    /// The connection a message addressed to our comm ID `id` is about, counting a miss.
    fn conn_for(&mut self, id: CommId) -> Option<&mut Conn> {
        match self.conns.get_mut(&id) {
            Some(c) => Some(c),
            None => {
                self.stats.unknown_conn += 1;
                None
            }
        }
    }

    /// Queues `msg` and keeps it for retransmission until an answer stops the timer.
    fn send_expecting(
        &mut self,
        now: Instant,
        id: CommId,
        msg: CmMessage,
        timeout: Duration,
        retries: u8,
    ) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.awaiting = Some(msg);
        c.retransmit_timeout = timeout;
        c.retransmit_at = Some(now + timeout);
        c.retries_left = retries;
        let (addr, tid) = (c.addr(), c.tid);
        self.queue(addr, tid, msg);
    }

    fn queue(&mut self, addr: MadAddr, tid: u64, msg: CmMessage) {
        self.tx.push_back(Outgoing { addr, tid, msg });
    }

    /// Sends REJ 28 (consumer defined) for a connection not yet established, and forgets
    /// it.
    fn consumer_reject(
        &mut self,
        conn: CommId,
        private_data: [u8; crate::wire::cm::REJ_PRIVATE_LEN],
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let msg_rejected = if c.state == State::RepRcvd {
            MsgKind::Rep
        } else {
            MsgKind::Req
        };
        let rej = RejRepr {
            local_comm_id: conn,
            remote_comm_id: c.remote_id,
            msg_rejected,
            reason: reason::CONSUMER_DEFINED,
            private_data,
            ..RejRepr::default()
        };
        let (addr, tid) = (c.addr(), c.tid);
        self.queue(addr, tid, CmMessage::Rej(rej));
        self.forget(conn);
    }

    /// Sends a SIDR_REP and keeps it a while to answer duplicates of the request.
    fn answer_sidr(&mut self, now: Instant, id: CommId, rep: SidrRepRepr) {
        let linger = self.config.sidr_timeout * u32::from(self.config.max_cm_retries.max(1));
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let msg = CmMessage::SidrRep(rep);
        c.state = State::SidrAnswered;
        c.orphan = true;
        c.last_reply = Some(msg);
        c.sidr_linger_until = Some(now + linger);
        let (addr, tid) = (c.addr(), c.tid);
        self.queue(addr, tid, msg);
    }

    fn enter_timewait(&mut self, now: Instant, id: CommId, reply: Option<CmMessage>) {
        let wait = iba_time(self.config.packet_life_time.saturating_add(1));
        if let Some(c) = self.conns.get_mut(&id) {
            c.stop_retransmit();
            c.state = State::TimeWait;
            c.timewait_until = Some(now + wait);
            if reply.is_some() {
                c.last_reply = reply;
            }
        }
    }

    /// Removes a connection and its indexes.
    fn forget(&mut self, id: CommId) {
        if let Some(c) = self.conns.remove(&id) {
            if self.by_remote.get(&(c.peer, c.remote_id)) == Some(&id) {
                self.by_remote.remove(&(c.peer, c.remote_id));
            }
        }
    }

    fn new_comm_id(&mut self) -> CommId {
        loop {
            let id = CommId(self.rng.next_u32());
            if id.0 != 0 && !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    fn tid(&self, id: CommId) -> u64 {
        (u64::from(self.hi_tid) << 32) | u64::from(id.0)
    }
}

/// Service timeout of the MRA we send for a slow application (`CMA_CM_MRA_SETTING`: 24,
/// about 67 s).
const MRA_SERVICE_TIMEOUT: u8 = 24;

/// A GID as the CM path carries it: IPv4 addresses mapped into IPv6.
fn gid_of(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// REJ 10 for a REQ whose (peer, comm ID) is still in timewait.
fn stale_rej(req: &ReqRepr) -> RejRepr {
    RejRepr {
        local_comm_id: CommId(0),
        remote_comm_id: req.local_comm_id,
        msg_rejected: MsgKind::Req,
        reason: reason::STALE_CONN,
        ..RejRepr::default()
    }
}

fn copy_private(dst: &mut [u8], src: &[u8]) -> Result<(), CmError> {
    dst.get_mut(..src.len())
        .ok_or(CmError::Invalid)?
        .copy_from_slice(src);
    Ok(())
}
