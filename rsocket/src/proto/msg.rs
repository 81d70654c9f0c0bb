//! The words rsockets exchange: the 32-bit immediate of every RDMA WRITE WITH IMMEDIATE
//! (an operation in the top 3 bits, its argument in the low 29), the 16-byte `rs_sge` a
//! receiver writes into its peer's target table, and the 40-byte `rs_conn_data` of the
//! connection's private data.

use std::fmt;

/// The operation of an rsocket message (`RS_OP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Data written into the receive ring; the argument is its length.
    Data,
    /// Credits (and maybe a new target SGE); the argument is the new credit limit.
    Sgl,
    /// An iomap entry was written; the argument is its index.
    IomapSgl,
    /// A control message ([`Ctrl`]).
    Ctrl,
    /// A direct write to an iomap: never on the wire, only in our own send `wr_id`s.
    Write,
    /// One of the values rsocket reserves (1, 3, 5).
    Reserved(u8),
}

impl Op {
    fn code(self) -> u32 {
        match self {
            Op::Data => 0,
            Op::Write => 2,
            Op::Sgl => 4,
            Op::IomapSgl => 6,
            Op::Ctrl => 7,
            Op::Reserved(c) => u32::from(c & 7),
        }
    }

    fn from_code(code: u32) -> Op {
        match code & 7 {
            0 => Op::Data,
            2 => Op::Write,
            4 => Op::Sgl,
            6 => Op::IomapSgl,
            7 => Op::Ctrl,
            c => Op::Reserved(c as u8),
        }
    }
}

/// Largest argument of a message: 29 bits.
pub const MSG_DATA_MAX: u32 = (1 << 29) - 1;

/// One rsocket message: the immediate data of a write, in host order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Msg(pub u32);

impl Msg {
    /// The message `op` with argument `data` (truncated to 29 bits, as `rs_msg_set` does).
    pub fn new(op: Op, data: u32) -> Msg {
        Msg(op.code() << 29 | (data & MSG_DATA_MAX))
    }

    /// Its operation.
    pub fn op(self) -> Op {
        Op::from_code(self.0 >> 29)
    }

    /// Its argument.
    pub fn data(self) -> u32 {
        self.0 & MSG_DATA_MAX
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({})", self.op(), self.data())
    }
}

/// Control messages (`RS_CTRL_*`), the argument of [`Op::Ctrl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctrl {
    /// The sender will neither send nor receive again.
    Disconnect = 0,
    /// Nothing: proof of life.
    Keepalive = 1,
    /// The sender will send no more data (half-close).
    Shutdown = 2,
}

/// `struct rs_sge`: a remote buffer, as written into a peer's target table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RsSge {
    /// Address, in the owner's address space.
    pub addr: u64,
    /// Remote key of the region it lies in.
    pub key: u32,
    /// Bytes (or, for the `target_sgl` of [`ConnData`], entries).
    pub length: u32,
}

/// Bytes of an [`RsSge`].
pub const RS_SGE_LEN: usize = 16;

/// The byte order of an [`RsSge`] written into another host's memory: rsocket writes it in
/// the reader's order, learnt from the `NET` flag of its [`ConnData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SgeOrder {
    /// Little-endian (the reader is little-endian).
    Little,
    /// Big-endian.
    Big,
}

impl SgeOrder {
    /// This host's order.
    pub const HOST: SgeOrder = if cfg!(target_endian = "big") {
        SgeOrder::Big
    } else {
        SgeOrder::Little
    };
}

impl RsSge {
    /// The 16 bytes of the SGE in `order`: addr, key, length.
    pub fn to_bytes(self, order: SgeOrder) -> [u8; RS_SGE_LEN] {
        let mut b = [0u8; RS_SGE_LEN];
        match order {
            SgeOrder::Little => {
                b[..8].copy_from_slice(&self.addr.to_le_bytes());
                b[8..12].copy_from_slice(&self.key.to_le_bytes());
                b[12..].copy_from_slice(&self.length.to_le_bytes());
            }
            SgeOrder::Big => {
                b[..8].copy_from_slice(&self.addr.to_be_bytes());
                b[8..12].copy_from_slice(&self.key.to_be_bytes());
                b[12..].copy_from_slice(&self.length.to_be_bytes());
            }
        }
        b
    }

    /// An SGE from 16 bytes written in this host's order.
    pub fn from_host_bytes(b: &[u8; RS_SGE_LEN]) -> RsSge {
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        RsSge {
            addr: u64_at(0),
            key: u32_at(8),
            length: u32_at(12),
        }
    }

    fn emit_be(self, b: &mut [u8]) {
        b[..8].copy_from_slice(&self.addr.to_be_bytes());
        b[8..12].copy_from_slice(&self.key.to_be_bytes());
        b[12..16].copy_from_slice(&self.length.to_be_bytes());
    }

    fn parse_be(b: &[u8]) -> RsSge {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        let mut k = [0u8; 4];
        k.copy_from_slice(&b[8..12]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&b[12..16]);
        RsSge {
            addr: u64::from_be_bytes(a),
            key: u32::from_be_bytes(k),
            length: u32::from_be_bytes(l),
        }
    }
}

/// `struct rs_iomap`: a buffer a peer mapped with `riomap`, as it writes it into our iomap
/// table (in our byte order): writes to `offset..offset + sge.length` land at `sge.addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IomapEntry {
    /// The offset the mapping answers to.
    pub offset: u64,
    /// Where it is, its key and its length.
    pub sge: RsSge,
}

/// Bytes of an [`IomapEntry`].
pub const IOMAP_ENTRY_LEN: usize = 24;

impl IomapEntry {
    /// The 24 bytes of the entry in `order`: offset, then the SGE.
    pub fn to_bytes(self, order: SgeOrder) -> [u8; IOMAP_ENTRY_LEN] {
        let mut b = [0u8; IOMAP_ENTRY_LEN];
        b[..8].copy_from_slice(&match order {
            SgeOrder::Little => self.offset.to_le_bytes(),
            SgeOrder::Big => self.offset.to_be_bytes(),
        });
        b[8..].copy_from_slice(&self.sge.to_bytes(order));
        b
    }

    /// An entry from 24 bytes written in this host's order.
    pub fn from_host_bytes(b: &[u8; IOMAP_ENTRY_LEN]) -> IomapEntry {
        let mut o = [0u8; 8];
        o.copy_from_slice(&b[..8]);
        let mut sge = [0u8; RS_SGE_LEN];
        sge.copy_from_slice(&b[8..]);
        IomapEntry {
            offset: u64::from_ne_bytes(o),
            sge: RsSge::from_host_bytes(&sge),
        }
    }

    /// Where a write at `offset` of `len` bytes lands, if this entry covers all of it.
    pub fn place(&self, offset: u64, len: u64) -> Option<u64> {
        let end = self.offset.checked_add(u64::from(self.sge.length))?;
        (offset >= self.offset && offset.checked_add(len)? <= end)
            .then(|| self.sge.addr.wrapping_add(offset - self.offset))
    }
}

/// `RS_CONN_FLAG_NET`: the sender is big-endian.
pub const CONN_FLAG_NET: u8 = 1 << 0;
/// `RS_CONN_FLAG_IOMAP`: the sender's target table has iomap entries after its SGEs.
pub const CONN_FLAG_IOMAP: u8 = 1 << 1;

/// Bytes of [`ConnData`] on the wire.
pub const CONN_DATA_LEN: usize = 40;

/// The only version of the protocol.
pub const CONN_DATA_VERSION: u8 = 1;

/// `struct rs_conn_data`, the private data of the connection's REQ and REP (big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnData {
    /// `RS_CONN_FLAG_*`.
    pub flags: u8,
    /// Messages the sender can take at once: its receive queue's size.
    pub credits: u16,
    /// Entries of the sender's iomap table, 8-bit scaled (see [`scale_to_value`]).
    pub target_iomap_size: u8,
    /// The sender's target table: where its peer writes new SGEs (`length`: 2 entries).
    pub target_sgl: RsSge,
    /// The first half of the sender's receive ring: where its peer writes data first.
    pub data_buf: RsSge,
}

/// Why the private data of a connection is not an rsocket's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnDataError {
    /// Fewer than 40 bytes.
    Short(usize),
    /// Another protocol version.
    Version(u8),
}

impl fmt::Display for ConnDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnDataError::Short(n) => write!(f, "{n} bytes of private data, rsocket needs 40"),
            ConnDataError::Version(v) => write!(f, "rsocket protocol version {v}, not 1"),
        }
    }
}

impl ConnData {
    /// Parses the first 40 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<ConnData, ConnDataError> {
        if b.len() < CONN_DATA_LEN {
            return Err(ConnDataError::Short(b.len()));
        }
        if b[0] != CONN_DATA_VERSION {
            return Err(ConnDataError::Version(b[0]));
        }
        Ok(ConnData {
            flags: b[1],
            credits: u16::from_be_bytes([b[2], b[3]]),
            target_iomap_size: b[7],
            target_sgl: RsSge::parse_be(&b[8..24]),
            data_buf: RsSge::parse_be(&b[24..40]),
        })
    }

    /// The 40 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; CONN_DATA_LEN] {
        let mut b = [0u8; CONN_DATA_LEN];
        b[0] = CONN_DATA_VERSION;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.credits.to_be_bytes());
        b[7] = self.target_iomap_size;
        self.target_sgl.emit_be(&mut b[8..24]);
        self.data_buf.emit_be(&mut b[24..40]);
        b
    }

    /// The order in which to write SGEs into the sender's memory.
    pub fn sge_order(&self) -> SgeOrder {
        if self.flags & CONN_FLAG_NET != 0 {
            SgeOrder::Big
        } else {
            SgeOrder::Little
        }
    }
}

/// rsocket's scaled sizes (`rs_value_to_scale`): values up to `1 << (bits - 1)` as they
/// are, larger ones as `value >> bits` with the top bit set.
pub fn value_to_scale(value: u32, bits: u32) -> u8 {
    let top = 1u32 << (bits - 1);
    if value <= top {
        value as u8
    } else {
        (top | (value >> bits)) as u8
    }
}

/// The inverse of [`value_to_scale`] (`rs_scale_to_value`).
pub fn scale_to_value(value: u8, bits: u32) -> u32 {
    let top = 1u32 << (bits - 1);
    let value = u32::from(value);
    if value <= top {
        value
    } else {
        (value & !top) << bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_op_and_29_bits() {
        let m = Msg::new(Op::Sgl, 0x1234);
        assert_eq!(m.0, 0x8000_1234);
        assert_eq!((m.op(), m.data()), (Op::Sgl, 0x1234));
        assert_eq!(Msg::new(Op::Ctrl, Ctrl::Shutdown as u32).0, 0xe000_0002);
        assert_eq!(Msg::new(Op::Data, u32::MAX).data(), MSG_DATA_MAX);
        assert_eq!(Msg(0x2000_0000).op(), Op::Reserved(1));
    }

    #[test]
    fn conn_data_round_trips_big_endian() {
        let cd = ConnData {
            flags: CONN_FLAG_IOMAP,
            credits: 384,
            target_iomap_size: 0,
            target_sgl: RsSge {
                addr: 0x1122_3344_5566_7788,
                key: 0xaabb_ccdd,
                length: 2,
            },
            data_buf: RsSge {
                addr: 0x10_0000,
                key: 7,
                length: 65536,
            },
        };
        let b = cd.to_bytes();
        assert_eq!(&b[..4], &[1, CONN_FLAG_IOMAP, 0x01, 0x80]);
        assert_eq!(&b[8..16], &0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!(ConnData::parse(&b), Ok(cd));
        assert_eq!(ConnData::parse(&b[..39]), Err(ConnDataError::Short(39)));
        let mut v2 = b;
        v2[0] = 2;
        assert_eq!(ConnData::parse(&v2), Err(ConnDataError::Version(2)));
    }

    #[test]
    fn sges_are_written_in_the_readers_order() {
        let s = RsSge {
            addr: 1,
            key: 2,
            length: 3,
        };
        assert_eq!(s.to_bytes(SgeOrder::Big)[7], 1);
        assert_eq!(s.to_bytes(SgeOrder::Little)[0], 1);
        assert_eq!(RsSge::from_host_bytes(&s.to_bytes(SgeOrder::HOST)), s);
    }

    #[test]
    fn scaled_sizes_match_rsocket() {
        assert_eq!(value_to_scale(0, 8), 0);
        assert_eq!(value_to_scale(128, 8), 128);
        assert_eq!(value_to_scale(1024, 8), 0x84);
        assert_eq!(scale_to_value(0x84, 8), 1024);
        assert_eq!(scale_to_value(100, 8), 100);
    }
}
