//! The QP1 agent of one device: the CM engine, the MADs it owes, and which CM id each of
//! its connections and services belongs to.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use super::handlers::on_engine_event;
use super::id::IdInner;
use crate::engine::cm::{CmEngine, CmEvent, MadAddr};
use crate::engine::ud::UdHeader;
use crate::net::{FrameIo, RxMeta, TxMeta};
use crate::verbs::context::ContextShared;
use crate::verbs::{Context, QP1_QKEY, Qp1Agent};
use crate::wire::cm::{CommId, ServiceId};
use crate::wire::mad::MAD_LEN;
use crate::wire::{Psn, Qkey, Qpn};

/// One MAD waiting for the backend.
type Mad = ([u8; MAD_LEN], MadAddr);

pub(crate) struct Agent {
    /// Itself, for the event handlers, which hand the agent on.
    me: Weak<Agent>,
    ctx: Weak<ContextShared>,
    /// The RoCEv2 UDP port of the device: where peers' QP1 listens.
    port: u16,
    pub(crate) engine: Mutex<CmEngine>,
    /// MADs produced while the backend was held by someone else's progress: sent by the
    /// next [`Qp1Agent::poll`], at the end of the same pass.
    outbox: Mutex<Vec<Mad>>,
    /// The CM id behind each connection.
    pub(crate) conns: Mutex<HashMap<CommId, Weak<IdInner>>>,
    /// The listening CM id behind each service.
    pub(crate) listeners: Mutex<HashMap<ServiceId, Weak<IdInner>>>,
    psn: AtomicU32,
    /// The device's protection domain for ids that bring none (librdmacm's per-device PD).
    default_pd: Mutex<Option<crate::verbs::Pd>>,
}

impl Agent {
    pub(crate) fn new(ctx: &Context, engine: CmEngine) -> Arc<Agent> {
        Arc::new_cyclic(|me| Agent {
            me: me.clone(),
            ctx: Arc::downgrade(&ctx.shared),
            port: ctx.link().port,
            engine: Mutex::new(engine),
            outbox: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            psn: AtomicU32::new(0),
            default_pd: Mutex::new(None),
        })
    }

    /// The device's context, while it lives.
    pub(crate) fn context(&self) -> Option<Context> {
        self.ctx.upgrade().map(|shared| Context { shared })
    }

    /// Runs an application request on the engine, then handles what it produced and sends
    /// its MADs at once. Must not be called from inside the agent's own event handling
    /// (which holds the backend); that uses [`with_engine`](Self::with_engine).
    pub(crate) fn call<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut CmEngine, Instant) -> R,
    ) -> Option<R> {
        let ctx = self.context()?;
        Some(ctx.with_backend(|io, now| {
            let r = self.with_engine(now, |engine| f(engine, now));
            self.send_outbox(io);
            r
        }))
    }

    /// Runs `f` on the engine, queues the MADs it produced and handles its events.
    pub(crate) fn with_engine<R>(
        self: &Arc<Self>,
        now: Instant,
        f: impl FnOnce(&mut CmEngine) -> R,
    ) -> R {
        let (r, events) = {
            let mut engine = self.engine.lock();
            let r = f(&mut engine);
            let mut outbox = self.outbox.lock();
            let mut mad = [0u8; MAD_LEN];
            while let Some(addr) = engine.poll_transmit(&mut mad) {
                outbox.push((mad, addr));
            }
            drop(outbox);
            let mut events = Vec::new();
            while let Some(ev) = engine.poll_event() {
                events.push(ev);
            }
            (r, events)
        };
        for ev in events {
            self.handle_event(now, ev);
        }
        r
    }

    fn handle_event(self: &Arc<Self>, now: Instant, ev: CmEvent) {
        on_engine_event(self, now, ev);
    }

    /// Sends the queued MADs: UD SENDs from QP1 to the peer's QP1.
    fn send_outbox(&self, io: &mut dyn FrameIo) {
        let mads = std::mem::take(&mut *self.outbox.lock());
        for (mad, addr) in mads {
            let header = UdHeader {
                dest_qp: Qpn::GSI,
                qkey: Qkey::new(QP1_QKEY),
                src_qp: Qpn::GSI,
                psn: Psn::new_masked(self.psn.fetch_add(1, Ordering::Relaxed)),
                imm: None,
                solicited: false,
            };
            let meta = TxMeta::to(SocketAddr::new(addr.peer, self.port), 0xc001);
            // A MAD the medium refuses is lost as on a wire; the engine retransmits it.
            let _ = io.send(&meta, &mut |buf| match header.emit(MAD_LEN, buf) {
                Ok(at) if buf.len() >= at + MAD_LEN => {
                    buf[at..at + MAD_LEN].copy_from_slice(&mad);
                    header.packet_len(MAD_LEN)
                }
                _ => 0,
            });
        }
    }

    /// The device's default protection domain, allocated on first use.
    pub(crate) fn default_pd(&self) -> Option<crate::verbs::Pd> {
        let mut pd = self.default_pd.lock();
        if pd.is_none() {
            *pd = self.context()?.alloc_pd().ok();
        }
        pd.clone()
    }

    /// The id a connection belongs to, if it is alive.
    pub(crate) fn id_of(&self, conn: CommId) -> Option<Arc<IdInner>> {
        self.conns.lock().get(&conn).and_then(Weak::upgrade)
    }
}

impl Qp1Agent for Agent {
    fn receive(&self, now: Instant, meta: &RxMeta, _src_qp: Qpn, payload: &[u8]) {
        let Some(me) = self.me.upgrade() else { return };
        let peer: IpAddr = meta.src.ip();
        me.with_engine(now, |engine| {
            engine.handle_mad(now, peer, meta.dst, payload)
        });
    }

    fn poll(&self, now: Instant, io: &mut dyn FrameIo) {
        let due = self
            .engine
            .lock()
            .poll_timeout()
            .is_some_and(|at| at <= now);
        if due {
            if let Some(me) = self.me.upgrade() {
                me.with_engine(now, |engine| engine.handle_timeout(now));
            }
        }
        self.send_outbox(io);
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.engine.lock().poll_timeout()
    }
}
