//! What the engine does with each CM message that arrives.

use std::net::IpAddr;
use std::time::Instant;

use super::conn::{Conn, State};
use super::*;

impl CmEngine {
    /// A request for a service nobody listens on waits [`CmConfig::listen_grace`] for a
    /// listener before it is refused: a server that is about to listen (perftest's, right
    /// after its handshake) is not raced by a client that connects as fast.
    fn hold_unheard(&mut self, now: Instant, addr: MadAddr, tid: u64, msg: CmMessage) {
        let key = |m: &CmMessage| match m {
            CmMessage::Req(r) => Some(r.local_comm_id),
            CmMessage::SidrReq(r) => Some(r.request_id),
            _ => None,
        };
        let held = self
            .unheard
            .iter()
            .any(|u| u.addr.peer == addr.peer && key(&u.msg) == key(&msg));
        if held {
            self.stats.duplicates += 1;
            return;
        }
        self.unheard.push(Unheard {
            until: now + self.config.listen_grace,
            addr,
            tid,
            msg,
        });
        // A grace of zero refuses at once.
        self.refuse_unheard(now);
    }

    /// Refuses the held requests whose grace is over: REJ 8, or SIDR_REP "unsupported".
    pub(super) fn refuse_unheard(&mut self, now: Instant) {
        let (due, kept): (Vec<Unheard>, Vec<Unheard>) =
            self.unheard.drain(..).partition(|u| u.until <= now);
        self.unheard = kept;
        for u in due {
            self.stats.no_listener += 1;
            match u.msg {
                CmMessage::Req(req) => {
                    let rej = RejRepr {
                        local_comm_id: CommId(0),
                        remote_comm_id: req.local_comm_id,
                        msg_rejected: MsgKind::Req,
                        reason: reason::INVALID_SERVICE_ID,
                        ..RejRepr::default()
                    };
                    self.queue(u.addr, u.tid, CmMessage::Rej(rej));
                }
                CmMessage::SidrReq(req) => {
                    let rep = SidrRepRepr {
                        request_id: req.request_id,
                        status: sidr_status::UNSUPPORTED,
                        service_id: req.service_id,
                        ..SidrRepRepr::default()
                    };
                    let id = self.new_comm_id();
                    let mut c = Conn::new(id, State::SidrReqRcvd, u.addr.peer, u.addr.local);
                    c.remote_id = req.request_id;
                    c.tid = u.tid;
                    c.orphan = true;
                    self.conns.insert(id, c);
                    self.by_remote.insert((u.addr.peer, req.request_id), id);
                    self.answer_sidr(now, id, rep);
                }
                _ => {}
            }
        }
    }

    /// A listener appeared: the requests held for its service are taken now.
    pub(super) fn take_unheard(&mut self, now: Instant, service_id: ServiceId) {
        let sid = |m: &CmMessage| match m {
            CmMessage::Req(r) => Some(r.service_id),
            CmMessage::SidrReq(r) => Some(r.service_id),
            _ => None,
        };
        let (mine, kept): (Vec<Unheard>, Vec<Unheard>) = self
            .unheard
            .drain(..)
            .partition(|u| sid(&u.msg) == Some(service_id));
        self.unheard = kept;
        for u in mine {
            match u.msg {
                CmMessage::Req(req) => self.on_req(now, u.addr, u.tid, req),
                CmMessage::SidrReq(req) => self.on_sidr_req(now, u.addr, u.tid, req),
                _ => {}
            }
        }
    }

    pub(super) fn on_req(&mut self, now: Instant, addr: MadAddr, tid: u64, req: ReqRepr) {
        if let Some(&id) = self.by_remote.get(&(addr.peer, req.local_comm_id)) {
            self.stats.duplicates += 1;
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            match c.state {
                State::ReqRcvd => {
                    // The application is slow to answer: say so, so that the peer waits.
                    c.state = State::MraReqSent;
                    let mra = CmMessage::Mra(MraRepr {
                        local_comm_id: id,
                        remote_comm_id: c.remote_id,
                        msg_mraed: MsgKind::Req,
                        service_timeout: MRA_SERVICE_TIMEOUT,
                        ..MraRepr::default()
                    });
                    c.last_reply = Some(mra);
                    let tid = c.tid;
                    self.queue(addr, tid, mra);
                }
                State::MraReqSent => {
                    if let Some(mra) = c.last_reply {
                        let tid = c.tid;
                        self.queue(addr, tid, mra);
                    }
                }
                State::TimeWait => {
                    let rej = stale_rej(&req);
                    self.queue(addr, tid, CmMessage::Rej(rej));
                }
                _ => {}
            }
            return;
        }
        if !self.listeners.contains(&req.service_id) {
            self.hold_unheard(now, addr, tid, CmMessage::Req(req));
            return;
        }
        if req.transport != CmTransport::Rc {
            let rej = RejRepr {
                local_comm_id: CommId(0),
                remote_comm_id: req.local_comm_id,
                msg_rejected: MsgKind::Req,
                reason: reason::INVALID_TRANSPORT_TYPE,
                ..RejRepr::default()
            };
            self.queue(addr, tid, CmMessage::Rej(rej));
            return;
        }
        let id = self.new_comm_id();
        let mut c = Conn::new(id, State::ReqRcvd, addr.peer, addr.local);
        c.remote_id = req.local_comm_id;
        c.remote_qpn = req.local_qpn;
        c.service_id = req.service_id;
        c.tid = tid;
        c.peer_response_timeout = req.local_cm_response_timeout;
        c.peer_max_retries = req.max_cm_retries;
        self.conns.insert(id, c);
        self.by_remote.insert((addr.peer, req.local_comm_id), id);
        self.events.push_back(CmEvent::Request {
            conn: id,
            peer: addr.peer,
            local: addr.local,
            req: Box::new(req),
        });
        let _ = now;
    }

    pub(super) fn on_mra(&mut self, now: Instant, mra: MraRepr) {
        let plt = iba_time(self.config.packet_life_time);
        let Some(c) = self.conn_for(mra.remote_comm_id) else {
            return;
        };
        let expected = match (c.state, mra.msg_mraed) {
            (State::ReqSent, MsgKind::Req) => Some(State::MraRcvd),
            (State::MraRcvd, MsgKind::Req) => Some(State::MraRcvd),
            (State::RepSent, MsgKind::Rep) => Some(State::RepSent),
            _ => None,
        };
        match expected {
            Some(state) => {
                c.state = state;
                // The peer is alive and busy: wait its service timeout before asking
                // again, and count no retry.
                c.extend_retransmit(now + iba_time(mra.service_timeout) + plt);
            }
            None => self.stats.wrong_state += 1,
        }
    }

    pub(super) fn on_rej(&mut self, now: Instant, peer: IpAddr, rej: RejRepr) {
        // A REJ of our REQ sent before the peer replied carries local comm ID 0: match on
        // the remote comm ID (ours). A REJ "timeout" from an active side that gave up
        // before our REP reached it names no comm ID of ours: match on the peer's
        // (cm.c `cm_acquire_rejected_id`).
        let id = if rej.remote_comm_id.0 != 0 {
            Some(rej.remote_comm_id)
        } else {
            self.by_remote.get(&(peer, rej.local_comm_id)).copied()
        };
        let Some(c) = id.and_then(|id| self.conns.get(&id)) else {
            self.stats.unknown_conn += 1;
            return;
        };
        let mismatch =
            rej.local_comm_id.0 != 0 && c.remote_id.0 != 0 && c.remote_id != rej.local_comm_id;
        if c.peer != peer || mismatch {
            self.stats.unknown_conn += 1;
            return;
        }
        let in_grace = c
            .started
            .is_some_and(|t| now < t + self.config.refused_grace);
        if rej.reason == reason::INVALID_SERVICE_ID && c.state == State::ReqSent && in_grace {
            // Nobody listens yet: ask again shortly (see CmConfig::refused_grace).
            let id = c.local_id;
            if let Some(c) = self.conns.get_mut(&id) {
                c.refused_resend = true;
                c.retransmit_at = Some(now + REFUSED_RESEND);
            }
            self.stats.refused_resends += 1;
            return;
        }
        match c.state {
            State::ReqSent
            | State::MraRcvd
            | State::RepRcvd
            | State::ReqRcvd
            | State::RepSent
            | State::MraReqSent => {
                let id = c.local_id;
                let orphan = c.orphan;
                self.forget(id);
                if !orphan {
                    self.events.push_back(CmEvent::Rejected {
                        conn: id,
                        rej: Box::new(rej),
                    });
                }
            }
            _ => self.stats.wrong_state += 1,
        }
    }

    pub(super) fn on_rep(&mut self, _now: Instant, peer: IpAddr, rep: RepRepr) {
        let Some(c) = self.conns.get_mut(&rep.remote_comm_id) else {
            self.stats.unknown_conn += 1;
            return;
        };
        if c.peer != peer {
            self.stats.unknown_conn += 1;
            return;
        }
        match c.state {
            State::ReqSent | State::MraRcvd => {
                c.state = State::RepRcvd;
                c.remote_id = rep.local_comm_id;
                c.remote_qpn = rep.local_qpn;
                c.stop_retransmit();
                let (id, orphan) = (c.local_id, c.orphan);
                self.by_remote.insert((peer, rep.local_comm_id), id);
                if !orphan {
                    self.events.push_back(CmEvent::Reply {
                        conn: id,
                        rep: Box::new(rep),
                    });
                }
            }
            State::Established if c.remote_id == rep.local_comm_id => {
                // Our RTU was lost: send it again.
                self.stats.duplicates += 1;
                if let Some(rtu) = c.last_reply {
                    let (addr, tid) = (c.addr(), c.tid);
                    self.queue(addr, tid, rtu);
                }
            }
            State::RepRcvd => self.stats.duplicates += 1,
            _ => self.stats.wrong_state += 1,
        }
    }

    pub(super) fn on_rtu(&mut self, rtu: RtuRepr) {
        let Some(c) = self.conn_for(rtu.remote_comm_id) else {
            return;
        };
        if c.remote_id != rtu.local_comm_id {
            self.stats.unknown_conn += 1;
            return;
        }
        match c.state {
            State::RepSent => {
                c.state = State::Established;
                c.stop_retransmit();
                let (id, orphan) = (c.local_id, c.orphan);
                if !orphan {
                    self.events.push_back(CmEvent::Established { conn: id });
                }
            }
            State::Established | State::DreqRcvd | State::DreqSent | State::TimeWait => {
                self.stats.duplicates += 1
            }
            _ => self.stats.wrong_state += 1,
        }
    }

    pub(super) fn on_dreq(&mut self, now: Instant, addr: MadAddr, tid: u64, dreq: DreqRepr) {
        let drep_to = |dreq: &DreqRepr| {
            CmMessage::Drep(DrepRepr {
                local_comm_id: dreq.remote_comm_id,
                remote_comm_id: dreq.local_comm_id,
                ..DrepRepr::default()
            })
        };
        let Some(c) = self.conns.get_mut(&dreq.remote_comm_id) else {
            // Linux answers a DREQ for a connection it does not know (cm_issue_drep), so
            // that a peer whose DREP was lost after our timewait ends is not left retrying.
            self.stats.unknown_conn += 1;
            self.queue(addr, tid, drep_to(&dreq));
            return;
        };
        if c.peer != addr.peer || c.remote_id != dreq.local_comm_id {
            self.stats.unknown_conn += 1;
            return;
        }
        if c.local_qpn != dreq.remote_qpn {
            self.stats.bad_qpn += 1;
            return;
        }
        match c.state {
            State::Established | State::RepSent => {
                c.stop_retransmit();
                c.state = State::DreqRcvd;
                c.dreq_tid = tid;
                let (id, orphan) = (c.local_id, c.orphan);
                if orphan {
                    // Destroyed while the DREQ was on its way: answer it ourselves.
                    let _ = self.disconnect(now, id);
                } else {
                    self.events.push_back(CmEvent::Disconnected {
                        conn: id,
                        timed_out: false,
                    });
                }
            }
            State::DreqSent => {
                // Both sides disconnect at once: answer theirs, and take it as the answer
                // to ours.
                let drep = drep_to(&dreq);
                let (id, orphan) = (c.local_id, c.orphan);
                self.queue(addr, tid, drep);
                self.enter_timewait(now, id, Some(drep));
                if !orphan {
                    self.events.push_back(CmEvent::Disconnected {
                        conn: id,
                        timed_out: false,
                    });
                }
            }
            State::DreqRcvd => self.stats.duplicates += 1,
            State::TimeWait => {
                self.stats.duplicates += 1;
                self.queue(addr, tid, drep_to(&dreq));
            }
            _ => self.stats.wrong_state += 1,
        }
    }

    pub(super) fn on_drep(&mut self, now: Instant, drep: DrepRepr) {
        let Some(c) = self.conn_for(drep.remote_comm_id) else {
            return;
        };
        if c.remote_id != drep.local_comm_id {
            self.stats.unknown_conn += 1;
            return;
        }
        match c.state {
            State::DreqSent => {
                let (id, orphan) = (c.local_id, c.orphan);
                self.enter_timewait(now, id, None);
                if !orphan {
                    self.events.push_back(CmEvent::Disconnected {
                        conn: id,
                        timed_out: false,
                    });
                }
            }
            State::TimeWait => self.stats.duplicates += 1,
            _ => self.stats.wrong_state += 1,
        }
    }

    pub(super) fn on_sidr_req(&mut self, now: Instant, addr: MadAddr, tid: u64, req: SidrReqRepr) {
        if let Some(&id) = self.by_remote.get(&(addr.peer, req.request_id)) {
            self.stats.duplicates += 1;
            if let Some(c) = self.conns.get(&id) {
                if let (State::SidrAnswered, Some(rep)) = (c.state, c.last_reply) {
                    self.queue(addr, tid, rep);
                }
            }
            return;
        }
        if !self.listeners.contains(&req.service_id) {
            self.hold_unheard(now, addr, tid, CmMessage::SidrReq(req));
            return;
        }
        let id = self.new_comm_id();
        let mut c = Conn::new(id, State::SidrReqRcvd, addr.peer, addr.local);
        c.remote_id = req.request_id;
        c.service_id = req.service_id;
        c.tid = tid;
        self.conns.insert(id, c);
        self.by_remote.insert((addr.peer, req.request_id), id);
        self.events.push_back(CmEvent::SidrRequest {
            conn: id,
            peer: addr.peer,
            local: addr.local,
            req: Box::new(req),
        });
    }

    pub(super) fn on_sidr_rep(&mut self, rep: SidrRepRepr) {
        let Some(c) = self.conn_for(rep.request_id) else {
            return;
        };
        if c.state != State::SidrReqSent {
            self.stats.wrong_state += 1;
            return;
        }
        let (id, orphan) = (c.local_id, c.orphan);
        self.forget(id);
        if !orphan {
            self.events.push_back(CmEvent::SidrReply {
                conn: id,
                rep: Box::new(rep),
            });
        }
    }
}
