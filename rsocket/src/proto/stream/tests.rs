//! Two [`StreamProto`]s joined by a model of their RC connection: writes land in the
//! peer's ring and target table in order, completions come back in order, and a seeded
//! scheduler interleaves sending, crediting, delivering, completing and reading. Every
//! byte must arrive intact, nothing may stall, and a misbehaving peer must be caught.

use std::collections::VecDeque;

use super::*;
use crate::proto::msg::CONN_DATA_LEN;

const RBUF_BASE: u64 = 0x1000_0000;
const TABLE_BASE: u64 = 0x2000_0000;
const RKEY: u32 = 0x77;
const TKEY: u32 = 0x99;
const INLINE: u32 = 64;

/// What one side put on the wire, delivered to the other in order.
#[derive(Debug)]
enum Wire {
    /// Data: copied out of the sender's ring (or inline) when it is delivered, as a NIC
    /// reads it when it transmits.
    Data {
        write: DataWrite,
        source: Source,
    },
    Credit(CreditUpdate),
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Inline([u8; INLINE as usize], u32),
    Ring(RingSpan),
}

struct Side {
    proto: StreamProto,
    rbuf: Vec<u8>,
    sbuf: Vec<u8>,
    table: [Option<RsSge>; SGL_SIZE],
    /// Bytes this side still has to send, and how far it got.
    to_send: Vec<u8>,
    sent: usize,
    olen: u32,
    got: Vec<u8>,
    /// Sends delivered, whose completions are due, in order.
    completions: VecDeque<Msg>,
}

impl Side {
    fn new(sizes: Sizes, to_send: Vec<u8>) -> Side {
        Side {
            proto: StreamProto::new(sizes),
            rbuf: vec![0; sizes.rbuf_size as usize],
            sbuf: vec![0; sizes.sbuf_size as usize],
            table: [None; SGL_SIZE],
            to_send,
            sent: 0,
            olen: OLAP_START,
            got: Vec::new(),
            completions: VecDeque::new(),
        }
    }

    fn conn_data(&self) -> ConnData {
        self.proto.conn_data((TABLE_BASE, TKEY), (RBUF_BASE, RKEY))
    }

    /// Sends one chunk if it can.
    fn send(&mut self, wire: &mut VecDeque<Wire>) -> bool {
        if self.sent == self.to_send.len() || !self.proto.can_send() {
            return false;
        }
        let left = self.to_send.len() - self.sent;
        let write = self.proto.next_write(left, &mut self.olen);
        let data = &self.to_send[self.sent..self.sent + write.len as usize];
        let source = if write.len <= INLINE {
            let mut b = [0u8; INLINE as usize];
            b[..data.len()].copy_from_slice(data);
            Source::Inline(b, write.len)
        } else {
            let span = self.proto.place_in_ring(write.len);
            let (a, b) = data.split_at(span.first as usize);
            let off = span.offset as usize;
            self.sbuf[off..off + a.len()].copy_from_slice(a);
            self.sbuf[..b.len()].copy_from_slice(b);
            Source::Ring(span)
        };
        self.sent += write.len as usize;
        if self.sent == self.to_send.len() {
            self.olen = OLAP_START;
        }
        wire.push_back(Wire::Data { write, source });
        true
    }

    fn credit(&mut self, wire: &mut VecDeque<Wire>) -> bool {
        match self.proto.credit_update((RBUF_BASE, RKEY)) {
            Some(c) => {
                wire.push_back(Wire::Credit(c));
                true
            }
            None => false,
        }
    }

    fn read(&mut self, max: usize) -> usize {
        let mut out = vec![0u8; max];
        let rbuf = &self.rbuf;
        let n = self.proto.read(max, false, &mut |ring, at, n| {
            out[at..at + n].copy_from_slice(&rbuf[ring as usize..ring as usize + n]);
        });
        self.got.extend_from_slice(&out[..n]);
        n
    }
}

/// Delivers the oldest item `from` sent to `to`: its bytes land in `to`'s memory and its
/// message is received; its completion becomes due at `from`.
fn deliver(from: &mut Side, to: &mut Side, wire: &mut VecDeque<Wire>) -> Result<bool, ProtoError> {
    let Some(item) = wire.pop_front() else {
        return Ok(false);
    };
    let msg = match item {
        Wire::Data { write, source } => {
            let bytes: Vec<u8> = match source {
                Source::Inline(b, n) => b[..n as usize].to_vec(),
                Source::Ring(span) => {
                    let off = span.offset as usize;
                    let mut v = from.sbuf[off..off + span.first as usize].to_vec();
                    v.extend_from_slice(&from.sbuf[..span.second as usize]);
                    v
                }
            };
            assert_eq!(write.rkey, RKEY);
            let at = (write.remote_addr - RBUF_BASE) as usize;
            assert!(at + bytes.len() <= to.rbuf.len(), "write outside the ring");
            to.rbuf[at..at + bytes.len()].copy_from_slice(&bytes);
            from.completions.push_back(write.imm);
            write.imm
        }
        Wire::Credit(c) => {
            if let Some((bytes, entry, key)) = c.sge {
                assert_eq!(key, TKEY);
                let i = ((entry - TABLE_BASE) / RS_SGE_LEN as u64) as usize;
                to.table[i] = Some(RsSge::from_host_bytes(&bytes));
            }
            from.completions.push_back(c.imm);
            c.imm
        }
    };
    let table = &mut to.table;
    to.proto.on_recv(msg, &mut |i| table[i].take())?;
    Ok(true)
}

fn complete(side: &mut Side) -> bool {
    match side.completions.pop_front() {
        Some(m) => {
            side.proto.on_send_done(m);
            true
        }
        None => false,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn connected(sizes: Sizes, a_sends: usize, b_sends: usize) -> (Side, Side) {
    let mut a = Side::new(sizes, pattern(a_sends, 1));
    let mut b = Side::new(sizes, pattern(b_sends, 2));
    let (ca, cb) = (a.conn_data(), b.conn_data());
    let wire_a = ConnData::parse(&ca.to_bytes()).unwrap();
    let wire_b = ConnData::parse(&cb.to_bytes()).unwrap();
    assert_eq!(ca.to_bytes().len(), CONN_DATA_LEN);
    a.proto.accept_conn_data(&wire_b).unwrap();
    b.proto.accept_conn_data(&wire_a).unwrap();
    (a, b)
}

/// Runs both directions at once under a seeded schedule until every byte has arrived.
fn exchange(seed: u64, sizes: Sizes, a_sends: usize, b_sends: usize) {
    let mut rng = Rng(seed.max(1));
    let (mut a, mut b) = connected(sizes, a_sends, b_sends);
    let (mut ab, mut ba) = (VecDeque::new(), VecDeque::new());
    let mut idle = 0;
    for _ in 0..5_000_000 {
        if a.got.len() == b_sends && b.got.len() == a_sends {
            assert_eq!(a.got, b.to_send, "seed {seed}: b to a");
            assert_eq!(b.got, a.to_send, "seed {seed}: a to b");
            for side in [&a, &b] {
                assert_eq!(side.proto.queued(), 0);
            }
            return;
        }
        let acted = match rng.below(9) {
            0 => a.send(&mut ab),
            1 => b.send(&mut ba),
            2 => a.credit(&mut ab),
            3 => b.credit(&mut ba),
            4 => deliver(&mut a, &mut b, &mut ab).unwrap(),
            5 => deliver(&mut b, &mut a, &mut ba).unwrap(),
            6 => complete(&mut a) | complete(&mut b),
            7 => a.read(1 + rng.below(100_000) as usize) > 0,
            _ => b.read(1 + rng.below(3000) as usize) > 0,
        };
        idle = if acted { 0 } else { idle + 1 };
        assert!(
            idle < 10_000,
            "seed {seed}: stalled: a {:?} b {:?}",
            a.proto,
            b.proto
        );
    }
    panic!("seed {seed}: not done in the step budget");
}

const DEFAULT: Sizes = Sizes {
    sq_size: 384,
    rq_size: 384,
    rbuf_size: 1 << 17,
    sbuf_size: 1 << 17,
    iomap_size: 0,
};

#[test]
fn every_byte_arrives_in_order_whatever_the_schedule() {
    for seed in 1..=20 {
        exchange(seed, DEFAULT, 3 << 20, 200_000 + seed as usize * 7);
    }
}

#[test]
fn tiny_queues_and_rings_do_not_stall() {
    let tiny = Sizes {
        sq_size: 16,
        rq_size: 16,
        rbuf_size: 8192,
        sbuf_size: 4096,
        iomap_size: 0,
    };
    for seed in 1..=20 {
        exchange(seed, tiny, 300_000, 1 + seed as usize);
    }
}

#[test]
fn peeking_leaves_the_bytes_queued() {
    let (mut a, mut b) = connected(DEFAULT, 100, 0);
    let mut ab = VecDeque::new();
    assert!(a.send(&mut ab));
    assert!(deliver(&mut a, &mut b, &mut ab).unwrap());
    let mut out = [0u8; 10];
    let rbuf = b.rbuf.clone();
    let n = b.proto.read(10, true, &mut |ring, at, n| {
        out[at..at + n].copy_from_slice(&rbuf[ring as usize..ring as usize + n])
    });
    assert_eq!((n, &out[..]), (10, &a.to_send[..10]));
    assert_eq!(b.proto.queued(), 100);
    assert_eq!(b.read(1000), 100);
    assert_eq!(b.got, a.to_send);
}

#[test]
fn data_beyond_the_grant_is_caught() {
    let (_, mut b) = connected(DEFAULT, 0, 0);
    let half = DEFAULT.rbuf_size / 2;
    let mut none = |_| None;
    assert_eq!(
        b.proto.on_recv(Msg::new(Op::Data, half), &mut none),
        Ok(Received::Progress)
    );
    assert_eq!(
        b.proto.on_recv(Msg::new(Op::Data, 1), &mut none),
        Err(ProtoError::Overdrawn {
            granted: u64::from(half),
            sent: u64::from(half) + 1
        })
    );
}

#[test]
fn messages_beyond_the_credits_are_caught() {
    let (_, mut b) = connected(DEFAULT, 0, 0);
    let mut none = |_| None;
    for _ in 0..DEFAULT.rq_size {
        b.proto.on_recv(Msg::new(Op::Data, 0), &mut none).unwrap();
    }
    assert_eq!(
        b.proto.on_recv(Msg::new(Op::Data, 0), &mut none),
        Err(ProtoError::TooManyMessages)
    );
}

#[test]
fn an_sge_over_one_in_use_is_caught() {
    let (mut a, mut b) = connected(DEFAULT, 0, 0);
    let fresh = RsSge {
        addr: RBUF_BASE,
        key: RKEY,
        length: 4096,
    };
    let mut offer = |_| Some(fresh);
    // Entry 1 is empty: the first offer fills it; the next lands on entry 0, still in use.
    assert_eq!(
        a.proto.on_recv(Msg::new(Op::Sgl, 10), &mut offer),
        Ok(Received::Progress)
    );
    assert_eq!(
        a.proto.on_recv(Msg::new(Op::Sgl, 10), &mut offer),
        Err(ProtoError::SgeInUse)
    );
    let mut none = |_| None;
    assert_eq!(
        b.proto.on_recv(Msg(0x2000_0000), &mut none),
        Err(ProtoError::ReservedOp(1))
    );
    assert_eq!(
        b.proto
            .on_recv(Msg::new(Op::Ctrl, Ctrl::Shutdown as u32), &mut none),
        Ok(Received::Shutdown)
    );
}

#[test]
fn sends_done_counts_control_slots_too() {
    let (mut a, _) = connected(DEFAULT, 0, 0);
    assert!(a.proto.all_sends_done());
    let c = a.proto.credit_update((RBUF_BASE, RKEY)).unwrap();
    assert!(
        c.sge.is_some(),
        "the second half of the ring is granted at once"
    );
    assert!(!a.proto.all_sends_done());
    a.proto.on_send_done(c.imm);
    assert!(a.proto.all_sends_done());
}

#[test]
fn iomap_tables_are_found_and_announcements_cost_a_message() {
    let with_table = Sizes {
        iomap_size: 4,
        ..DEFAULT
    };
    let b = StreamProto::new(with_table);
    let cd = b.conn_data((TABLE_BASE, TKEY), (RBUF_BASE, RKEY));
    assert_eq!(scale_to_value(cd.target_iomap_size, 8), 4);
    let mut a = StreamProto::new(DEFAULT);
    a.accept_conn_data(&ConnData::parse(&cd.to_bytes()).unwrap())
        .unwrap();
    assert_eq!(a.remote_iomap_len(), 4);
    let entry = IomapEntry {
        offset: 100,
        sge: RsSge {
            addr: 0x5000,
            key: 9,
            length: 50,
        },
    };
    let (bytes, addr, key, imm) = a.iomap_write(3, entry);
    // Slot 3 of the table that follows the peer's two SGEs.
    assert_eq!(addr, TABLE_BASE + 2 * 16 + 3 * 24);
    assert_eq!((key, imm.op(), imm.data()), (TKEY, Op::IomapSgl, 3));
    assert_eq!(IomapEntry::from_host_bytes(&bytes), entry);
    assert_eq!(entry.place(120, 30), Some(0x5000 + 20));
    assert_eq!(entry.place(120, 31), None, "past the mapping's end");
    assert_eq!(entry.place(99, 1), None, "before its start");
    assert!(!a.all_sends_done());
    a.on_send_done(imm);
    assert!(a.all_sends_done());
    // A direct write takes a queue entry and ring space, no credit, and gives them back.
    let mut olen = OLAP_START;
    let (len, msg) = a.next_direct_write(10_000, 3000, &mut olen);
    assert_eq!((len, msg.op()), (OLAP_START, Op::Write));
    a.on_send_done(msg);
    assert!(a.all_sends_done());
}
