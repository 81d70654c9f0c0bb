//! Completion queues as objects: the ring of [`completion`](super::completion), its
//! channel, and inline progress when polled.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Error;
use super::async_event::Pending;
use super::channel::{CompletionChannel, EventCounts};
use super::completion::{CompletionQueue, Notify, WorkCompletion};
use super::context::Context;

pub(crate) struct CqShared {
    pub(crate) id: u64,
    ring: Mutex<CompletionQueue>,
    channel: Option<Arc<CompletionChannel>>,
    pub(crate) events: Arc<EventCounts>,
    ctx: Context,
}

/// A completion queue (`ibv_create_cq`). Cloning gives another handle to the same CQ.
#[derive(Clone)]
pub struct Cq {
    pub(crate) shared: Arc<CqShared>,
}

impl Cq {
    pub(crate) fn new(
        ctx: Context,
        id: u64,
        cqe: u32,
        channel: Option<Arc<CompletionChannel>>,
    ) -> Result<Cq, Error> {
        if cqe > ctx.query_device().max_cqe {
            return Err(Error::invalid("cqe exceeds the device's max_cqe"));
        }
        let ring = CompletionQueue::new(cqe).map_err(|e| match e.errno() {
            libc::ENOMEM => Error::Full("completion ring"),
            _ => Error::invalid("cqe must be at least 1"),
        })?;
        let events = match &channel {
            Some(ch) => ch
                .attach(id)
                .map_err(|_| Error::invalid("CQ already attached to the channel"))?,
            None => Arc::new(EventCounts::new()),
        };
        Ok(Cq {
            shared: Arc::new(CqShared {
                id,
                ring: Mutex::new(ring),
                channel,
                events,
                ctx,
            }),
        })
    }

    /// Entries the CQ holds.
    pub fn capacity(&self) -> usize {
        self.shared.ring.lock().capacity()
    }

    /// Moves up to `out.len()` completions into `out`, oldest first, after making progress
    /// on the calling thread (`ibv_poll_cq`).
    pub fn poll(&self, out: &mut [WorkCompletion]) -> usize {
        let ctx = &self.shared.ctx.shared;
        ctx.progress_from_poll();
        let n = self.shared.ring.lock().poll(out);
        ctx.app_poll_found(n > 0);
        n
    }

    /// Arms the CQ: the next completion (with `solicited_only`, the next solicited or
    /// failed one) signals the completion channel once (`ibv_req_notify_cq`).
    pub fn req_notify(&self, solicited_only: bool) -> Result<(), Error> {
        if self.shared.channel.is_none() {
            return Err(Error::invalid("the CQ has no completion channel"));
        }
        self.shared.ring.lock().req_notify(solicited_only);
        Ok(())
    }

    /// Acknowledges `n` events taken with `Context::get_cq_event` (`ibv_ack_cq_events`).
    pub fn ack_events(&self, n: u32) -> Result<(), Error> {
        self.shared
            .events
            .ack_events(n)
            .map_err(|_| Error::invalid("more events acknowledged than delivered"))
    }

    /// True once a completion was lost because the CQ was full; the CQ is then unusable,
    /// as `IBV_EVENT_CQ_ERR` says.
    pub fn is_overrun(&self) -> bool {
        self.shared.ring.lock().is_overrun()
    }

    /// True while QPs still report to this CQ, or other handles to it exist:
    /// `ibv_destroy_cq` refuses with EBUSY then.
    pub fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// True if both handles name the same CQ (as `Context::get_cq_event` returns a new
    /// handle to the CQ that fired).
    pub fn ptr_eq(&self, other: &Cq) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn context(&self) -> &Context {
        &self.shared.ctx
    }
}

impl CqShared {
    /// Adds a completion and signals the channel if the CQ was armed for it. A full CQ
    /// loses the completion and is marked overrun (reported by [`Cq::is_overrun`]).
    pub(crate) fn push(&self, wc: WorkCompletion, solicited: bool) {
        match self.ring.lock().push(wc, solicited) {
            Ok(Notify::Fire) => {
                if let Some(ch) = &self.channel {
                    // A failed signal means the eventfd is broken; nothing more to do here.
                    let _ = ch.signal(self.id);
                }
            }
            Ok(Notify::None) => {}
            Err(overrun) if overrun.raise_async_event => {
                self.ctx.shared.async_events.raise(Pending::CqErr(self.id));
            }
            Err(_) => {}
        }
    }
}

impl Drop for CqShared {
    fn drop(&mut self) {
        if let Some(ch) = &self.channel {
            let _ = ch.detach(self.id);
        }
        self.ctx.shared.cqs.write().remove(&self.id);
    }
}
