//! BTH opcodes and the table that says what each one carries.
//!
//! xrdma supports the RC opcodes of IBTA vol. 1 §9.2 that Linux rxe
//! implements (except FLUSH and ATOMIC_WRITE) and the two UD sends. Every
//! other opcode, including UC, RD, XRC and CNP, is [`Error::Unsupported`]
//! when parsed.
//!
//! [`Error::Unsupported`]: super::Error::Unsupported

use core::fmt;

/// The transport service of an opcode: its top three bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportClass {
    /// Reliable Connection, 0x00.
    Rc,
    /// Unreliable Connection, 0x20.
    Uc,
    /// Reliable Datagram, 0x40.
    Rd,
    /// Unreliable Datagram, 0x60.
    Ud,
    /// Congestion notification packet, 0x80.
    Cnp,
    /// Extended Reliable Connection, 0xa0.
    Xrc,
}

impl TransportClass {
    /// The opcode bits of this class (the top three bits).
    pub const fn base(self) -> u8 {
        match self {
            TransportClass::Rc => 0x00,
            TransportClass::Uc => 0x20,
            TransportClass::Rd => 0x40,
            TransportClass::Ud => 0x60,
            TransportClass::Cnp => 0x80,
            TransportClass::Xrc => 0xa0,
        }
    }
}

/// What a packet asks the responder to do, or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// SEND (with or without immediate or invalidate).
    Send,
    /// RDMA WRITE (with or without immediate).
    RdmaWrite,
    /// RDMA READ request.
    RdmaReadRequest,
    /// RDMA READ response.
    RdmaReadResponse,
    /// ACKNOWLEDGE (ACK, NAK or RNR NAK, per the AETH).
    Acknowledge,
    /// ATOMIC ACKNOWLEDGE.
    AtomicAcknowledge,
    /// ATOMIC COMPARE & SWAP.
    CompareSwap,
    /// ATOMIC FETCH & ADD.
    FetchAdd,
}

/// Where a packet sits within its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// First packet of a multi-packet message.
    First,
    /// Neither first nor last.
    Middle,
    /// Last packet of a multi-packet message.
    Last,
    /// The whole message in one packet (always so for requests without
    /// payload, acknowledgements and atomics).
    Only,
}

impl Position {
    /// Whether the packet starts a message (first or only).
    pub const fn starts_message(self) -> bool {
        matches!(self, Position::First | Position::Only)
    }

    /// Whether the packet ends a message (last or only).
    pub const fn ends_message(self) -> bool {
        matches!(self, Position::Last | Position::Only)
    }
}

/// A set of extension headers following the BTH. On the wire they appear
/// in the order DETH, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, IETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExtHeaders(u8);

impl ExtHeaders {
    /// No extension header.
    pub const NONE: ExtHeaders = ExtHeaders(0);
    /// Datagram ETH, 8 bytes.
    pub const DETH: ExtHeaders = ExtHeaders(1 << 0);
    /// RDMA ETH, 16 bytes.
    pub const RETH: ExtHeaders = ExtHeaders(1 << 1);
    /// Atomic ETH, 28 bytes.
    pub const ATOMIC_ETH: ExtHeaders = ExtHeaders(1 << 2);
    /// ACK ETH, 4 bytes.
    pub const AETH: ExtHeaders = ExtHeaders(1 << 3);
    /// Atomic ACK ETH, 8 bytes.
    pub const ATOMIC_ACK_ETH: ExtHeaders = ExtHeaders(1 << 4);
    /// Immediate data, 4 bytes.
    pub const IMM_DT: ExtHeaders = ExtHeaders(1 << 5);
    /// Invalidate ETH, 4 bytes.
    pub const IETH: ExtHeaders = ExtHeaders(1 << 6);

    /// Each header with its length, in wire order.
    const SIZES: [(ExtHeaders, usize); 7] = [
        (Self::DETH, 8),
        (Self::RETH, 16),
        (Self::ATOMIC_ETH, 28),
        (Self::AETH, 4),
        (Self::ATOMIC_ACK_ETH, 8),
        (Self::IMM_DT, 4),
        (Self::IETH, 4),
    ];

    /// Both sets together.
    pub const fn with(self, other: ExtHeaders) -> ExtHeaders {
        ExtHeaders(self.0 | other.0)
    }

    /// Whether every header of `other` is in `self`.
    pub const fn contains(self, other: ExtHeaders) -> bool {
        self.0 & other.0 == other.0
    }

    /// Total length of the headers in the set.
    pub const fn len(self) -> usize {
        let mut total = 0;
        let mut i = 0;
        while i < Self::SIZES.len() {
            if self.contains(Self::SIZES[i].0) {
                total += Self::SIZES[i].1;
            }
            i += 1;
        }
        total
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What the opcode table says about one opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpcodeInfo {
    /// The IBTA name, e.g. `"RC_SEND_ONLY"`.
    pub name: &'static str,
    /// The operation.
    pub operation: Operation,
    /// Position within the message.
    pub position: Position,
    /// Extension headers that must follow the BTH.
    pub headers: ExtHeaders,
    /// Whether the packet may carry payload after its headers. When false,
    /// nothing (not even pad) may follow the headers.
    pub has_payload: bool,
}

/// One row of the opcode table.
const fn row(
    name: &'static str,
    operation: Operation,
    position: Position,
    headers: ExtHeaders,
    has_payload: bool,
) -> OpcodeInfo {
    OpcodeInfo {
        name,
        operation,
        position,
        headers,
        has_payload,
    }
}

/// A BTH opcode. Any byte can be wrapped; [`Opcode::info`] says whether
/// xrdma supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode(u8);

impl Opcode {
    /// RC SEND First.
    pub const RC_SEND_FIRST: Opcode = Opcode(0x00);
    /// RC SEND Middle.
    pub const RC_SEND_MIDDLE: Opcode = Opcode(0x01);
    /// RC SEND Last.
    pub const RC_SEND_LAST: Opcode = Opcode(0x02);
    /// RC SEND Last with Immediate.
    pub const RC_SEND_LAST_WITH_IMMEDIATE: Opcode = Opcode(0x03);
    /// RC SEND Only.
    pub const RC_SEND_ONLY: Opcode = Opcode(0x04);
    /// RC SEND Only with Immediate.
    pub const RC_SEND_ONLY_WITH_IMMEDIATE: Opcode = Opcode(0x05);
    /// RC RDMA WRITE First.
    pub const RC_RDMA_WRITE_FIRST: Opcode = Opcode(0x06);
    /// RC RDMA WRITE Middle.
    pub const RC_RDMA_WRITE_MIDDLE: Opcode = Opcode(0x07);
    /// RC RDMA WRITE Last.
    pub const RC_RDMA_WRITE_LAST: Opcode = Opcode(0x08);
    /// RC RDMA WRITE Last with Immediate.
    pub const RC_RDMA_WRITE_LAST_WITH_IMMEDIATE: Opcode = Opcode(0x09);
    /// RC RDMA WRITE Only.
    pub const RC_RDMA_WRITE_ONLY: Opcode = Opcode(0x0a);
    /// RC RDMA WRITE Only with Immediate.
    pub const RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE: Opcode = Opcode(0x0b);
    /// RC RDMA READ Request.
    pub const RC_RDMA_READ_REQUEST: Opcode = Opcode(0x0c);
    /// RC RDMA READ Response First.
    pub const RC_RDMA_READ_RESPONSE_FIRST: Opcode = Opcode(0x0d);
    /// RC RDMA READ Response Middle.
    pub const RC_RDMA_READ_RESPONSE_MIDDLE: Opcode = Opcode(0x0e);
    /// RC RDMA READ Response Last.
    pub const RC_RDMA_READ_RESPONSE_LAST: Opcode = Opcode(0x0f);
    /// RC RDMA READ Response Only.
    pub const RC_RDMA_READ_RESPONSE_ONLY: Opcode = Opcode(0x10);
    /// RC Acknowledge.
    pub const RC_ACKNOWLEDGE: Opcode = Opcode(0x11);
    /// RC ATOMIC Acknowledge.
    pub const RC_ATOMIC_ACKNOWLEDGE: Opcode = Opcode(0x12);
    /// RC CmpSwap.
    pub const RC_COMPARE_SWAP: Opcode = Opcode(0x13);
    /// RC FetchAdd.
    pub const RC_FETCH_ADD: Opcode = Opcode(0x14);
    /// RC SEND Last with Invalidate.
    pub const RC_SEND_LAST_WITH_INVALIDATE: Opcode = Opcode(0x16);
    /// RC SEND Only with Invalidate.
    pub const RC_SEND_ONLY_WITH_INVALIDATE: Opcode = Opcode(0x17);
    /// UD SEND Only.
    pub const UD_SEND_ONLY: Opcode = Opcode(0x64);
    /// UD SEND Only with Immediate.
    pub const UD_SEND_ONLY_WITH_IMMEDIATE: Opcode = Opcode(0x65);

    /// Wraps any opcode byte.
    pub const fn new(value: u8) -> Opcode {
        Opcode(value)
    }

    /// The opcode byte.
    pub const fn value(self) -> u8 {
        self.0
    }

    /// The transport class from the top three bits; `None` for 0xc0..=0xff
    /// (reserved and manufacturer-specific).
    pub const fn class(self) -> Option<TransportClass> {
        match self.0 >> 5 {
            0 => Some(TransportClass::Rc),
            1 => Some(TransportClass::Uc),
            2 => Some(TransportClass::Rd),
            3 => Some(TransportClass::Ud),
            4 => Some(TransportClass::Cnp),
            5 => Some(TransportClass::Xrc),
            _ => None,
        }
    }

    /// Whether xrdma supports this opcode.
    pub const fn is_valid(self) -> bool {
        self.info().is_some()
    }

    /// The table entry for this opcode, or `None` if xrdma does not support
    /// it.
    pub const fn info(self) -> Option<OpcodeInfo> {
        use ExtHeaders as H;
        use Operation::*;
        use Position::*;
        const PAYLOAD: bool = true;
        const NO_PAYLOAD: bool = false;
        // One row per opcode: name, operation, position, extension headers
        // after the BTH, and whether payload may follow.
        #[rustfmt::skip]
        let info = match self.0 {
            0x00 => row("RC_SEND_FIRST", Send, First, H::NONE, PAYLOAD),
            0x01 => row("RC_SEND_MIDDLE", Send, Middle, H::NONE, PAYLOAD),
            0x02 => row("RC_SEND_LAST", Send, Last, H::NONE, PAYLOAD),
            0x03 => row("RC_SEND_LAST_WITH_IMMEDIATE", Send, Last, H::IMM_DT, PAYLOAD),
            0x04 => row("RC_SEND_ONLY", Send, Only, H::NONE, PAYLOAD),
            0x05 => row("RC_SEND_ONLY_WITH_IMMEDIATE", Send, Only, H::IMM_DT, PAYLOAD),
            0x06 => row("RC_RDMA_WRITE_FIRST", RdmaWrite, First, H::RETH, PAYLOAD),
            0x07 => row("RC_RDMA_WRITE_MIDDLE", RdmaWrite, Middle, H::NONE, PAYLOAD),
            0x08 => row("RC_RDMA_WRITE_LAST", RdmaWrite, Last, H::NONE, PAYLOAD),
            0x09 => row("RC_RDMA_WRITE_LAST_WITH_IMMEDIATE", RdmaWrite, Last, H::IMM_DT, PAYLOAD),
            0x0a => row("RC_RDMA_WRITE_ONLY", RdmaWrite, Only, H::RETH, PAYLOAD),
            0x0b => row("RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE", RdmaWrite, Only, H::RETH.with(H::IMM_DT), PAYLOAD),
            0x0c => row("RC_RDMA_READ_REQUEST", RdmaReadRequest, Only, H::RETH, NO_PAYLOAD),
            0x0d => row("RC_RDMA_READ_RESPONSE_FIRST", RdmaReadResponse, First, H::AETH, PAYLOAD),
            0x0e => row("RC_RDMA_READ_RESPONSE_MIDDLE", RdmaReadResponse, Middle, H::NONE, PAYLOAD),
            0x0f => row("RC_RDMA_READ_RESPONSE_LAST", RdmaReadResponse, Last, H::AETH, PAYLOAD),
            0x10 => row("RC_RDMA_READ_RESPONSE_ONLY", RdmaReadResponse, Only, H::AETH, PAYLOAD),
            0x11 => row("RC_ACKNOWLEDGE", Acknowledge, Only, H::AETH, NO_PAYLOAD),
            0x12 => row("RC_ATOMIC_ACKNOWLEDGE", AtomicAcknowledge, Only, H::AETH.with(H::ATOMIC_ACK_ETH), NO_PAYLOAD),
            0x13 => row("RC_COMPARE_SWAP", CompareSwap, Only, H::ATOMIC_ETH, NO_PAYLOAD),
            0x14 => row("RC_FETCH_ADD", FetchAdd, Only, H::ATOMIC_ETH, NO_PAYLOAD),
            // 0x15 is reserved.
            0x16 => row("RC_SEND_LAST_WITH_INVALIDATE", Send, Last, H::IETH, PAYLOAD),
            0x17 => row("RC_SEND_ONLY_WITH_INVALIDATE", Send, Only, H::IETH, PAYLOAD),
            0x64 => row("UD_SEND_ONLY", Send, Only, H::DETH, PAYLOAD),
            0x65 => row("UD_SEND_ONLY_WITH_IMMEDIATE", Send, Only, H::DETH.with(H::IMM_DT), PAYLOAD),
            _ => return None,
        };
        Some(info)
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.info() {
            Some(info) => f.write_str(info.name),
            None => write!(f, "UNSUPPORTED({:#04x})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_come_from_the_top_three_bits() {
        let cases = [
            (0x04, Some(TransportClass::Rc)),
            (0x24, Some(TransportClass::Uc)),
            (0x4c, Some(TransportClass::Rd)),
            (0x64, Some(TransportClass::Ud)),
            (0x81, Some(TransportClass::Cnp)),
            (0xa4, Some(TransportClass::Xrc)),
            (0xc0, None),
            (0xff, None),
        ];
        for (byte, class) in cases {
            assert_eq!(Opcode::new(byte).class(), class, "opcode {byte:#04x}");
            if let Some(class) = class {
                assert_eq!(class.base(), byte & 0xe0);
            }
        }
    }

    #[test]
    fn exactly_the_supported_opcodes_are_valid() {
        let valid: Vec<u8> = (0..=255u8).filter(|&b| Opcode::new(b).is_valid()).collect();
        let mut expected: Vec<u8> = (0x00..=0x14).collect();
        expected.extend([0x16, 0x17, 0x64, 0x65]);
        assert_eq!(valid, expected);
    }

    #[test]
    fn table_rows_match_ibta() {
        let write_imm = Opcode::RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE.info().unwrap();
        assert_eq!(write_imm.headers, ExtHeaders::RETH.with(ExtHeaders::IMM_DT));
        assert_eq!(write_imm.headers.len(), 20);
        assert_eq!(write_imm.position, Position::Only);

        let read_req = Opcode::RC_RDMA_READ_REQUEST.info().unwrap();
        assert!(!read_req.has_payload);
        assert_eq!(read_req.headers.len(), 16);

        let middle = Opcode::RC_RDMA_READ_RESPONSE_MIDDLE.info().unwrap();
        assert!(middle.headers.is_empty() && middle.has_payload);
        assert!(!middle.position.starts_message() && !middle.position.ends_message());

        let atomic_ack = Opcode::RC_ATOMIC_ACKNOWLEDGE.info().unwrap();
        assert_eq!(atomic_ack.headers.len(), 12);
        assert_eq!(Opcode::RC_FETCH_ADD.info().unwrap().headers.len(), 28);

        let ud_imm = Opcode::UD_SEND_ONLY_WITH_IMMEDIATE.info().unwrap();
        assert!(ud_imm.headers.contains(ExtHeaders::DETH));
        assert!(ud_imm.headers.contains(ExtHeaders::IMM_DT));
        assert_eq!(ud_imm.headers.len(), 12);

        let inv = Opcode::RC_SEND_LAST_WITH_INVALIDATE.info().unwrap();
        assert_eq!(
            (inv.headers, inv.position),
            (ExtHeaders::IETH, Position::Last)
        );
    }

    #[test]
    fn position_helpers() {
        assert!(Position::First.starts_message() && !Position::First.ends_message());
        assert!(Position::Last.ends_message() && !Position::Last.starts_message());
        assert!(Position::Only.starts_message() && Position::Only.ends_message());
    }

    #[test]
    fn display_uses_the_table_name() {
        assert_eq!(Opcode::RC_SEND_ONLY.to_string(), "RC_SEND_ONLY");
        assert_eq!(Opcode::new(0x15).to_string(), "UNSUPPORTED(0x15)");
    }
}
