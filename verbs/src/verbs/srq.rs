//! Shared receive queues (`ibv_create_srq`): one pool of posted receives that several QPs
//! draw from, with a limit that, once armed, raises `IBV_EVENT_SRQ_LIMIT_REACHED` when the
//! pool runs low.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Error;
use super::async_event::Pending;
use super::pd::Pd;
use super::recv_queue::{RecvQueue, RecvSlot};
use super::wr::RecvWr;

/// Sizes of an SRQ (`struct ibv_srq_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrqAttr {
    /// Outstanding receive work requests.
    pub max_wr: u32,
    /// Scatter/gather entries per work request.
    pub max_sge: u32,
    /// Armed limit: when fewer work requests than this remain, an event is raised and the
    /// limit disarms (0: disarmed).
    pub srq_limit: u32,
}

/// Which attributes `Srq::modify` changes (`enum ibv_srq_attr_mask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrqAttrMask(pub u32);

impl SrqAttrMask {
    /// Resize (`IBV_SRQ_MAX_WR`): not supported.
    pub const MAX_WR: SrqAttrMask = SrqAttrMask(1);
    /// Arm the limit (`IBV_SRQ_LIMIT`).
    pub const LIMIT: SrqAttrMask = SrqAttrMask(2);
}

struct SrqMut {
    rq: RecvQueue,
    limit: u32,
}

pub(crate) struct SrqShared {
    pub(crate) id: u64,
    pub(crate) pd: Pd,
    max_wr: u32,
    max_sge: u32,
    st: Mutex<SrqMut>,
}

/// A shared receive queue. Cloning gives another handle to the same SRQ.
#[derive(Clone)]
pub struct Srq {
    pub(crate) shared: Arc<SrqShared>,
}

impl Srq {
    pub(crate) fn new(pd: &Pd, attr: &SrqAttr) -> Result<Srq, Error> {
        let ctx = &pd.context().shared;
        let dev = &ctx.device;
        if attr.max_wr == 0
            || attr.max_wr > dev.max_srq_wr
            || attr.max_sge == 0
            || attr.max_sge > dev.max_srq_sge
        {
            return Err(Error::invalid("SRQ sizes outside the device's limits"));
        }
        let id = ctx.new_handle();
        let shared = Arc::new(SrqShared {
            id,
            pd: pd.clone(),
            max_wr: attr.max_wr,
            max_sge: attr.max_sge,
            // The limit given at creation is ignored, as ibv_create_srq documents.
            st: Mutex::new(SrqMut {
                rq: RecvQueue::new(attr.max_wr as usize, attr.max_sge as usize),
                limit: 0,
            }),
        });
        ctx.srqs.write().insert(id, Arc::downgrade(&shared));
        Ok(Srq { shared })
    }

    /// True while QPs still draw from this SRQ, or other handles to it exist:
    /// `ibv_destroy_srq` refuses with EBUSY then.
    pub fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// True if both handles name the same SRQ (as `Context::get_async_event` returns a new
    /// handle to the SRQ an event is about).
    pub fn ptr_eq(&self, other: &Srq) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Sizes and the armed limit (`ibv_query_srq`).
    pub fn query(&self) -> SrqAttr {
        let s = &self.shared;
        SrqAttr {
            max_wr: s.max_wr,
            max_sge: s.max_sge,
            srq_limit: s.st.lock().limit,
        }
    }

    /// Arms the limit (`ibv_modify_srq` with `IBV_SRQ_LIMIT`). Resizing is not supported.
    pub fn modify(&self, attr: &SrqAttr, mask: SrqAttrMask) -> Result<(), Error> {
        if mask.0 & SrqAttrMask::MAX_WR.0 != 0 {
            return Err(Error::Unsupported("resizing an SRQ"));
        }
        if mask.0 & !SrqAttrMask::LIMIT.0 != 0 {
            return Err(Error::invalid("unknown SRQ attribute bits"));
        }
        if mask.0 & SrqAttrMask::LIMIT.0 != 0 {
            if attr.srq_limit > self.shared.max_wr {
                return Err(Error::invalid("srq_limit above max_wr"));
            }
            self.shared.st.lock().limit = attr.srq_limit;
        }
        Ok(())
    }

    /// Posts a receive work request (`ibv_post_srq_recv`).
    ///
    /// # Safety
    ///
    /// As `QueuePair::post_recv`: the memory must stay valid until the completion is polled.
    pub unsafe fn post_recv(&self, wr: &RecvWr<'_>) -> Result<(), Error> {
        if wr.sg_list.len() > self.shared.max_sge as usize {
            return Err(Error::invalid("more SGEs than the SRQ's max_sge"));
        }
        if self.shared.st.lock().rq.push(wr) {
            Ok(())
        } else {
            Err(Error::Full("shared receive queue"))
        }
    }
}

impl SrqShared {
    /// Takes the oldest posted receive and hands it to `fill`; returns its id and `fill`'s
    /// status, or `None` if nothing is posted. Raises the limit event if this take crossed
    /// the armed limit.
    pub(crate) fn take<S>(&self, fill: impl FnOnce(&Pd, &RecvSlot) -> S) -> Option<(u64, S)> {
        let ctx = &self.pd.context().shared;
        let (taken, fire) = {
            let mut st = self.st.lock();
            let slot = st.rq.front()?;
            let taken = (slot.wr_id, fill(&self.pd, slot));
            st.rq.pop();
            let fire = st.limit > 0 && st.rq.len() < st.limit as usize;
            if fire {
                st.limit = 0;
            }
            (taken, fire)
        };
        if fire {
            ctx.async_events.raise(Pending::SrqLimit(self.id));
        }
        Some(taken)
    }
}

impl Drop for SrqShared {
    fn drop(&mut self) {
        self.pd.context().shared.srqs.write().remove(&self.id);
    }
}
