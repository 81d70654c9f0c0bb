//! The accounting of an rsocket stream, without I/O: the send queue and send ring, the
//! credits (messages the peer can take), the target SGEs (where in the peer's receive ring
//! the next data goes), the receive ring and the messages queued in it, and the control
//! slots. The stream sockets drive it with the completions of their QP.
//!
//! # How it is driven
//!
//! 1. [`StreamProto::new`], then [`conn_data`](StreamProto::conn_data) for the private data
//!    of the REQ or REP, and [`accept_conn_data`](StreamProto::accept_conn_data) with the
//!    peer's.
//! 2. Sending: while [`can_send`](StreamProto::can_send), take a chunk with
//!    [`next_write`](StreamProto::next_write) and post it as one RDMA WRITE WITH IMMEDIATE.
//! 3. Credits: whenever [`credit_update`](StreamProto::credit_update) returns one, post it.
//! 4. Completions: receives go to [`on_recv`](StreamProto::on_recv) (with a way to take a new
//!    SGE out of the target table), sends to [`on_send_done`](StreamProto::on_send_done).
//! 5. Reading: [`read`](StreamProto::read) says which bytes of the receive ring to copy out.
//!
//! Everything a peer says is checked: a message beyond the credits given, data beyond the
//! ring space granted, an SGE offered over one not yet used up or a reserved operation is a
//! [`ProtoError`], after which the connection must end.

use std::collections::VecDeque;
use std::fmt;

use super::msg::{
    ConnData, Ctrl, IOMAP_ENTRY_LEN as ENTRY_LEN, IomapEntry, Msg, Op, RS_SGE_LEN, RsSge, SgeOrder,
    scale_to_value, value_to_scale,
};

/// The send ring must have this much free before a chunk is sent (`RS_SNDLOWAT`).
pub const SNDLOWAT: u32 = 2048;
/// The first chunk of a send (`RS_OLAP_START_SIZE`); chunks double from there.
pub const OLAP_START: u32 = 2048;
/// The largest chunk (`RS_MAX_TRANSFER`).
pub const MAX_TRANSFER: u32 = 65536;
/// Send queue entries kept for control messages (`RS_QP_CTRL_SIZE`).
pub const CTRL_SLOTS: u32 = 4;
/// Entries of the target table (`RS_SGL_SIZE`).
pub const SGL_SIZE: usize = 2;
/// Bytes of an iomap entry (`struct rs_iomap`).
pub const IOMAP_ENTRY_LEN: u32 = ENTRY_LEN as u32;

/// The sizes of a connection's queues and rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Send queue entries, control slots included.
    pub sq_size: u16,
    /// Receive queue entries: messages the peer may have outstanding.
    pub rq_size: u16,
    /// Bytes of the receive ring (even).
    pub rbuf_size: u32,
    /// Bytes of the send ring.
    pub sbuf_size: u32,
    /// Entries of our iomap table, where the peer announces the buffers it maps
    /// (`RDMA_IOMAPSIZE`; 0 for none).
    pub iomap_size: u16,
}

/// What a peer did that the protocol does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// More messages than the credits given.
    TooManyMessages,
    /// Data beyond the ring space granted.
    Overdrawn {
        /// Bytes granted so far.
        granted: u64,
        /// Bytes the peer has sent, this message included.
        sent: u64,
    },
    /// A new SGE over one still in use.
    SgeInUse,
    /// An SGE that points at nothing (zero length, or longer than a ring can be).
    BadSge,
    /// The peer's target table has no entries.
    NoTargetTable,
    /// An operation rsocket reserves, or one never sent on the wire.
    ReservedOp(u8),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::TooManyMessages => write!(f, "the peer sent more messages than credited"),
            ProtoError::Overdrawn { granted, sent } => write!(
                f,
                "the peer wrote {sent} bytes into a ring that granted {granted}"
            ),
            ProtoError::SgeInUse => write!(f, "the peer offered an SGE over one in use"),
            ProtoError::BadSge => write!(f, "the peer offered an empty or oversized SGE"),
            ProtoError::NoTargetTable => write!(f, "the peer's target table has no entries"),
            ProtoError::ReservedOp(op) => write!(f, "the peer sent reserved operation {op}"),
        }
    }
}

/// What a received message means for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Data was queued, or credits came: look again at what can be read or sent.
    Progress,
    /// The peer sends no more (half-close): after the queued data, end of file.
    Shutdown,
    /// The peer neither sends nor receives any more.
    Disconnect,
    /// Nothing changed (a keepalive, an iomap update).
    Nothing,
}

/// One chunk of data to write into the peer's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataWrite {
    /// Bytes.
    pub len: u32,
    /// Where they go in the peer's memory.
    pub remote_addr: u64,
    /// The remote key of the peer's ring.
    pub rkey: u32,
    /// The immediate data that tells the peer.
    pub imm: Msg,
}

/// Where a chunk sits in the send ring: `first` bytes at `offset`, then `second` bytes at
/// the ring's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSpan {
    /// Offset of the chunk's first byte.
    pub offset: u32,
    /// Bytes up to the ring's end.
    pub first: u32,
    /// Bytes wrapped to the ring's start.
    pub second: u32,
}

/// A credit update to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditUpdate {
    /// The message (`SGL` with the new credit limit).
    pub imm: Msg,
    /// A new SGE for the peer's target table, if half the ring is free: its bytes, in the
    /// peer's order, and where they go (address and key of the peer's table entry).
    pub sge: Option<([u8; RS_SGE_LEN], u64, u32)>,
}

/// The state of one stream's protocol. See the [module documentation](self).
#[derive(Debug)]
pub struct StreamProto {
    sizes: Sizes,

    // Send side.
    sqe_avail: u32,
    sbuf_bytes_avail: u32,
    /// Offset in the send ring where the next copied chunk goes.
    sbuf_head: u32,
    sseq_no: u16,
    sseq_comp: u16,
    target: [RsSge; SGL_SIZE],
    target_sge: usize,
    /// The table entry the peer writes its next SGE into.
    next_offer: usize,
    ctrl_seqno: u32,
    ctrl_max_seqno: u32,

    // The peer's target table, and its iomap table (entries, not bytes, in `length`).
    remote_iomap: RsSge,
    remote_sgl: RsSge,
    remote_sge: u32,
    remote_order: SgeOrder,

    // Receive side.
    rseq_no: u16,
    rseq_comp: u16,
    rbuf_bytes_avail: u32,
    rbuf_free_offset: u32,
    rbuf_offset: u32,
    /// Lengths of the messages queued in the ring, oldest first (the first may be partly
    /// read).
    rmsg: VecDeque<u32>,
    /// Bytes queued in the ring.
    rbuf_queued: u64,
    granted: u64,
    received: u64,
}

impl StreamProto {
    /// A connection with these sizes, before the peer's connection data.
    pub fn new(sizes: Sizes) -> StreamProto {
        let half = sizes.rbuf_size / 2;
        StreamProto {
            sizes,
            sqe_avail: u32::from(sizes.sq_size).saturating_sub(CTRL_SLOTS),
            sbuf_bytes_avail: sizes.sbuf_size,
            sbuf_head: 0,
            sseq_no: 0,
            sseq_comp: 0,
            target: [RsSge::default(); SGL_SIZE],
            target_sge: 0,
            next_offer: 1,
            ctrl_seqno: 0,
            ctrl_max_seqno: CTRL_SLOTS,
            remote_iomap: RsSge::default(),
            remote_sgl: RsSge::default(),
            remote_sge: 1,
            remote_order: SgeOrder::HOST,
            rseq_no: 0,
            rseq_comp: sizes.rq_size / 2,
            rbuf_bytes_avail: half,
            rbuf_free_offset: half,
            rbuf_offset: 0,
            rmsg: VecDeque::with_capacity(usize::from(sizes.rq_size) + 1),
            rbuf_queued: 0,
            granted: u64::from(half),
            received: 0,
        }
    }

    /// The sizes.
    pub fn sizes(&self) -> Sizes {
        self.sizes
    }

    /// Our connection data: the target table at `table` (with its key), the first half of
    /// the receive ring at `rbuf` (with its key).
    pub fn conn_data(&self, table: (u64, u32), rbuf: (u64, u32)) -> ConnData {
        ConnData {
            flags: super::msg::CONN_FLAG_IOMAP
                | if SgeOrder::HOST == SgeOrder::Big {
                    super::msg::CONN_FLAG_NET
                } else {
                    0
                },
            credits: self.sizes.rq_size,
            target_iomap_size: value_to_scale(u32::from(self.sizes.iomap_size), 8),
            target_sgl: RsSge {
                addr: table.0,
                key: table.1,
                length: SGL_SIZE as u32,
            },
            data_buf: RsSge {
                addr: rbuf.0,
                key: rbuf.1,
                length: self.sizes.rbuf_size / 2,
            },
        }
    }

    /// Takes in the peer's connection data.
    pub fn accept_conn_data(&mut self, peer: &ConnData) -> Result<(), ProtoError> {
        if peer.target_sgl.length == 0 {
            return Err(ProtoError::NoTargetTable);
        }
        if peer.data_buf.length == 0 || peer.data_buf.length > 1 << 30 {
            return Err(ProtoError::BadSge);
        }
        self.remote_sgl = peer.target_sgl;
        self.remote_sge = 1 % peer.target_sgl.length;
        if peer.flags & super::msg::CONN_FLAG_IOMAP != 0 {
            // The iomap table follows the target table's SGEs.
            self.remote_iomap = RsSge {
                addr: peer
                    .target_sgl
                    .addr
                    .wrapping_add(RS_SGE_LEN as u64 * u64::from(peer.target_sgl.length)),
                key: peer.target_sgl.key,
                length: scale_to_value(peer.target_iomap_size, 8),
            };
        }
        self.remote_order = peer.sge_order();
        self.target[0] = peer.data_buf;
        self.sseq_comp = peer.credits;
        Ok(())
    }

    /// True if a data chunk can go now: a send queue entry, room in the send ring, a credit
    /// and a target SGE (`rs_can_send`).
    pub fn can_send(&self) -> bool {
        self.sqe_avail > 0
            && self.sbuf_bytes_avail >= SNDLOWAT
            && self.sseq_no != self.sseq_comp
            && self.target[self.target_sge].length != 0
    }

    /// The next chunk of a send with `left` bytes to go; `olen` is the send's chunk size so
    /// far (start it at [`OLAP_START`]). Call only when [`can_send`](Self::can_send).
    pub fn next_write(&mut self, left: usize, olen: &mut u32) -> DataWrite {
        let mut len = if (*olen as usize) < left {
            let l = *olen;
            if *olen < MAX_TRANSFER {
                *olen <<= 1;
            }
            l
        } else {
            left as u32
        };
        let target = &mut self.target[self.target_sge];
        len = len.min(self.sbuf_bytes_avail).min(target.length);
        self.sseq_no = self.sseq_no.wrapping_add(1);
        self.sqe_avail -= 1;
        self.sbuf_bytes_avail -= len;
        let write = DataWrite {
            len,
            remote_addr: target.addr,
            rkey: target.key,
            imm: Msg::new(Op::Data, len),
        };
        target.addr = target.addr.wrapping_add(u64::from(len));
        target.length -= len;
        if target.length == 0 {
            self.target_sge = (self.target_sge + 1) % SGL_SIZE;
        }
        write
    }

    /// Entries of the peer's iomap table: how many buffers we may map for it to write into.
    pub fn remote_iomap_len(&self) -> u32 {
        self.remote_iomap.length
    }

    /// Announces our mapping `entry` in slot `index` of the peer's iomap table
    /// (`rs_write_iomap`): returns the entry's bytes in the peer's order, where they go
    /// (address and key) and the message. It takes a credit, a send queue entry and ring
    /// space, as data does. Call only when [`can_send`](Self::can_send) and `index` is
    /// below [`remote_iomap_len`](Self::remote_iomap_len).
    pub fn iomap_write(
        &mut self,
        index: u32,
        entry: IomapEntry,
    ) -> ([u8; ENTRY_LEN], u64, u32, Msg) {
        self.sseq_no = self.sseq_no.wrapping_add(1);
        self.sqe_avail -= 1;
        self.sbuf_bytes_avail -= IOMAP_ENTRY_LEN;
        let addr = self
            .remote_iomap
            .addr
            .wrapping_add(u64::from(index) * u64::from(IOMAP_ENTRY_LEN));
        (
            entry.to_bytes(self.remote_order),
            addr,
            self.remote_iomap.key,
            Msg::new(Op::IomapSgl, index),
        )
    }

    /// The next chunk of a direct write (`riowrite`) with `left` bytes to go, at most
    /// `room` (what the mapping holds from there): its length and its message (`WRITE`,
    /// never on the wire: the `wr_id` of a plain RDMA WRITE). It takes a send queue entry and
    /// ring space. Call only when [`can_send`](Self::can_send), as rsocket does.
    pub fn next_direct_write(&mut self, left: usize, room: u64, olen: &mut u32) -> (u32, Msg) {
        let mut len = if (*olen as usize) < left {
            let l = *olen;
            if *olen < MAX_TRANSFER {
                *olen <<= 1;
            }
            l
        } else {
            left as u32
        };
        len = len
            .min(self.sbuf_bytes_avail)
            .min(room.min(u64::from(u32::MAX)) as u32);
        self.sqe_avail -= 1;
        self.sbuf_bytes_avail -= len;
        (len, Msg::new(Op::Write, len))
    }

    /// Places a chunk of `len` bytes (not sent inline) in the send ring.
    pub fn place_in_ring(&mut self, len: u32) -> RingSpan {
        let left = self.sizes.sbuf_size - self.sbuf_head;
        let span = if len <= left {
            RingSpan {
                offset: self.sbuf_head,
                first: len,
                second: 0,
            }
        } else {
            RingSpan {
                offset: self.sbuf_head,
                first: left,
                second: len - left,
            }
        };
        self.sbuf_head = (self.sbuf_head + len) % self.sizes.sbuf_size;
        span
    }

    /// True if a control message can go (`rs_ctrl_avail`).
    pub fn ctrl_avail(&self) -> bool {
        self.ctrl_seqno != self.ctrl_max_seqno
    }

    /// Takes a control slot for `ctrl` and returns its message. Call only when
    /// [`ctrl_avail`](Self::ctrl_avail).
    pub fn ctrl(&mut self, ctrl: Ctrl) -> Msg {
        self.ctrl_seqno = self.ctrl_seqno.wrapping_add(1);
        Msg::new(Op::Ctrl, ctrl as u32)
    }

    /// A credit update, if one is due and a control slot is free (`rs_give_credits`,
    /// `rs_send_credits`). `rbuf` is the receive ring's address and key.
    pub fn credit_update(&mut self, rbuf: (u64, u32)) -> Option<CreditUpdate> {
        let half = self.sizes.rbuf_size / 2;
        let due = self.rbuf_bytes_avail >= half
            || (self.rseq_no.wrapping_sub(self.rseq_comp) as i16) >= 0;
        if !due || !self.ctrl_avail() {
            return None;
        }
        self.ctrl_seqno = self.ctrl_seqno.wrapping_add(1);
        self.rseq_comp = self.rseq_no.wrapping_add(self.sizes.rq_size / 2);
        let imm = Msg::new(
            Op::Sgl,
            u32::from(self.rseq_no.wrapping_add(self.sizes.rq_size)),
        );
        let sge = (self.rbuf_bytes_avail >= half).then(|| {
            let sge = RsSge {
                addr: rbuf.0 + u64::from(self.rbuf_free_offset),
                key: rbuf.1,
                length: half,
            };
            let entry = self.remote_sgl.addr + u64::from(self.remote_sge) * RS_SGE_LEN as u64;
            self.rbuf_bytes_avail -= half;
            self.rbuf_free_offset += half;
            if self.rbuf_free_offset >= self.sizes.rbuf_size {
                self.rbuf_free_offset = 0;
            }
            self.remote_sge = (self.remote_sge + 1) % self.remote_sgl.length;
            self.granted += u64::from(half);
            (sge.to_bytes(self.remote_order), entry, self.remote_sgl.key)
        });
        Some(CreditUpdate { imm, sge })
    }

    /// A message arrived. `take_offer(i)` takes the SGE the peer wrote into entry `i` of our
    /// target table, if it wrote one since the last take (and clears the entry).
    pub fn on_recv(
        &mut self,
        msg: Msg,
        take_offer: &mut dyn FnMut(usize) -> Option<RsSge>,
    ) -> Result<Received, ProtoError> {
        match msg.op() {
            Op::Data => {
                if self.rmsg.len() >= usize::from(self.sizes.rq_size) {
                    return Err(ProtoError::TooManyMessages);
                }
                let sent = self.received + u64::from(msg.data());
                if sent > self.granted {
                    return Err(ProtoError::Overdrawn {
                        granted: self.granted,
                        sent,
                    });
                }
                self.received = sent;
                self.rbuf_queued += u64::from(msg.data());
                self.rmsg.push_back(msg.data());
                Ok(Received::Progress)
            }
            Op::Sgl => {
                self.sseq_comp = msg.data() as u16;
                let i = self.next_offer;
                if let Some(sge) = take_offer(i) {
                    if self.target[i].length != 0 {
                        return Err(ProtoError::SgeInUse);
                    }
                    if sge.length > 1 << 30 {
                        return Err(ProtoError::BadSge);
                    }
                    self.target[i] = sge;
                    self.next_offer = (i + 1) % SGL_SIZE;
                }
                Ok(Received::Progress)
            }
            // The peer announced a mapping in our iomap table. rsocket does not count the
            // message as consumed (the credit is lost); we do, so the peer gets it back.
            Op::IomapSgl => {
                self.rseq_no = self.rseq_no.wrapping_add(1);
                Ok(Received::Nothing)
            }
            Op::Ctrl => Ok(match msg.data() {
                d if d == Ctrl::Disconnect as u32 => Received::Disconnect,
                d if d == Ctrl::Shutdown as u32 => Received::Shutdown,
                _ => Received::Nothing,
            }),
            Op::Write => Err(ProtoError::ReservedOp(2)),
            Op::Reserved(op) => Err(ProtoError::ReservedOp(op)),
        }
    }

    /// A send completed; `wr` is the message it carried (its `wr_id`).
    pub fn on_send_done(&mut self, wr: Msg) {
        match wr.op() {
            Op::Sgl | Op::Ctrl => self.ctrl_max_seqno = self.ctrl_max_seqno.wrapping_add(1),
            Op::IomapSgl => {
                self.sqe_avail += 1;
                self.sbuf_bytes_avail += IOMAP_ENTRY_LEN;
            }
            Op::Data | Op::Write | Op::Reserved(_) => {
                self.sqe_avail += 1;
                self.sbuf_bytes_avail += wr.data();
            }
        }
    }

    /// True when every send posted has completed (`rs_conn_all_sends_done`).
    pub fn all_sends_done(&self) -> bool {
        self.ctrl_max_seqno.wrapping_sub(self.ctrl_seqno) + self.sqe_avail
            == u32::from(self.sizes.sq_size)
    }

    /// Bytes queued to read.
    pub fn queued(&self) -> u64 {
        self.rbuf_queued
    }

    /// Reads up to `len` bytes: calls `copy(ring_offset, out_offset, n)` for each piece to
    /// copy out of the receive ring, in order, and returns the bytes read. With `peek` the
    /// bytes stay queued.
    pub fn read(
        &mut self,
        len: usize,
        peek: bool,
        copy: &mut dyn FnMut(u32, usize, usize),
    ) -> usize {
        let size = self.sizes.rbuf_size;
        let mut offset = self.rbuf_offset;
        let mut done = 0usize;
        let mut i = 0usize;
        while done < len {
            let Some(&avail) = self.rmsg.get(i) else {
                break;
            };
            let take = (len - done).min(avail as usize) as u32;
            // A message never spans the ring's end (targets are halves), but the copy
            // handles it anyway.
            let first = take.min(size - offset);
            copy(offset, done, first as usize);
            if take > first {
                copy(0, done + first as usize, (take - first) as usize);
            }
            offset = (offset + take) % size;
            done += take as usize;
            if peek {
                i += 1;
                continue;
            }
            self.rbuf_bytes_avail += take;
            self.rbuf_queued -= u64::from(take);
            if take == avail {
                self.rmsg.pop_front();
                self.rseq_no = self.rseq_no.wrapping_add(1);
            } else if let Some(front) = self.rmsg.front_mut() {
                *front -= take;
            }
        }
        if !peek {
            self.rbuf_offset = offset;
        }
        done
    }
}

#[cfg(test)]
mod tests;
