//! Retransmission, giving up, and the end of timewait.

use std::time::Instant;

use super::conn::State;
use super::*;

impl CmEngine {
    pub(super) fn conn_timeout(&mut self, now: Instant, id: CommId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.timewait_until.is_some_and(|at| at <= now) {
            let orphan = c.orphan;
            self.forget(id);
            if !orphan {
                self.events.push_back(CmEvent::TimewaitExit { conn: id });
            }
            return;
        }
        if c.sidr_linger_until.is_some_and(|at| at <= now) {
            self.forget(id);
            return;
        }
        let Some(at) = c.retransmit_at else {
            return;
        };
        if at > now {
            return;
        }
        if c.refused_resend {
            // A REQ refused for want of a listener, asked again within the grace: no retry
            // is used.
            c.refused_resend = false;
            c.retransmit_at = Some(now + c.retransmit_timeout);
            if let Some(msg) = c.awaiting {
                let (addr, tid) = (c.addr(), c.tid);
                self.queue(addr, tid, msg);
            }
            return;
        }
        if c.retries_left > 0 {
            c.retries_left -= 1;
            c.retransmit_at = Some(now + c.retransmit_timeout);
            if let Some(msg) = c.awaiting {
                let (addr, tid) = (c.addr(), c.tid);
                self.stats.retransmits += 1;
                self.queue(addr, tid, msg);
            }
            return;
        }
        // Out of retries.
        c.stop_retransmit();
        let (state, orphan) = (c.state, c.orphan);
        match state {
            State::DreqSent => {
                self.enter_timewait(now, id, None);
                if !orphan {
                    self.events.push_back(CmEvent::Disconnected {
                        conn: id,
                        timed_out: true,
                    });
                }
            }
            State::RepSent => {
                // Linux tells the peer too: REJ "timeout".
                let c = &self.conns[&id];
                let rej = RejRepr {
                    local_comm_id: id,
                    remote_comm_id: c.remote_id,
                    msg_rejected: MsgKind::Rep,
                    reason: reason::TIMEOUT,
                    ..RejRepr::default()
                };
                let (addr, tid) = (c.addr(), c.tid);
                self.queue(addr, tid, CmMessage::Rej(rej));
                self.forget(id);
                if !orphan {
                    self.events.push_back(CmEvent::Unreachable { conn: id });
                }
            }
            _ => {
                self.forget(id);
                if !orphan {
                    self.events.push_back(CmEvent::Unreachable { conn: id });
                }
            }
        }
    }
}
