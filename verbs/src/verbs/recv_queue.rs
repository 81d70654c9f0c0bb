//! Receive queues, of a QP or shared (SRQ): a ring of preallocated work-request slots,
//! each with room for the queue's largest scatter/gather list, so posting allocates nothing.

use super::wr::{RecvWr, Sge};

/// A posted receive: preallocated, reused.
pub(crate) struct RecvSlot {
    pub(crate) wr_id: u64,
    pub(crate) len: usize,
    pub(crate) sges: Box<[Sge]>,
}

/// The receive queue: a ring of preallocated slots, so posting allocates nothing.
pub(crate) struct RecvQueue {
    slots: Box<[RecvSlot]>,
    head: usize,
    len: usize,
}

impl RecvQueue {
    /// A queue of `depth` slots of `max_sge` entries each, all allocated now.
    pub(crate) fn new(depth: usize, max_sge: usize) -> Self {
        let empty = Sge {
            addr: 0,
            length: 0,
            lkey: super::Lkey(0),
        };
        let slots = (0..depth)
            .map(|_| RecvSlot {
                wr_id: 0,
                len: 0,
                sges: vec![empty; max_sge].into(),
            })
            .collect();
        RecvQueue {
            slots,
            head: 0,
            len: 0,
        }
    }

    /// Copies `wr` into a free slot; false when the queue is full.
    pub(crate) fn push(&mut self, wr: &RecvWr<'_>) -> bool {
        if self.len == self.slots.len() {
            return false;
        }
        let i = (self.head + self.len) % self.slots.len();
        let slot = &mut self.slots[i];
        slot.wr_id = wr.wr_id;
        slot.len = wr.sg_list.len();
        slot.sges[..wr.sg_list.len()].copy_from_slice(wr.sg_list);
        self.len += 1;
        true
    }

    /// The oldest waiting work request.
    pub(crate) fn front(&self) -> Option<&RecvSlot> {
        (self.len > 0).then(|| &self.slots[self.head])
    }

    /// Removes the oldest waiting work request; there must be one.
    pub(crate) fn pop(&mut self) {
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
    }

    /// Work requests waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets every waiting work request; returns their ids, oldest first, to `each`.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(u64)) {
        while let Some(slot) = self.front() {
            let id = slot.wr_id;
            self.pop();
            each(id);
        }
    }
}
