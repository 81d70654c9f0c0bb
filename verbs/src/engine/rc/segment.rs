//! Cutting an RC message into packets at the path MTU: which opcode each packet carries
//! (FIRST / MIDDLE / LAST / ONLY, with immediate data on the last), and which bytes.

use crate::wire::Opcode;

/// The kinds of RC messages: those that span packets (SEND, WRITE, READ responses) and
/// those that are one request packet (READ, the atomics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// SEND.
    Send,
    /// SEND with immediate data (on the last packet).
    SendWithImm,
    /// RDMA WRITE (RETH on the first packet).
    Write,
    /// RDMA WRITE with immediate data (on the last packet).
    WriteWithImm,
    /// The responses to an RDMA READ.
    ReadResponse,
    /// RDMA READ: one request packet; its responses take a PSN each.
    Read,
    /// Atomic compare and swap of 8 bytes.
    CompareSwap,
    /// Atomic fetch and add of 8 bytes.
    FetchAdd,
}

impl MessageKind {
    /// True for RDMA READ and the atomics: requests the responder answers with data, which
    /// count against `max_rd_atomic` and which a fence waits for.
    pub fn is_read_or_atomic(self) -> bool {
        matches!(
            self,
            MessageKind::Read | MessageKind::CompareSwap | MessageKind::FetchAdd
        )
    }

    /// Opcodes for (first, middle, last, only) of the kinds whose packets carry the
    /// message's bytes.
    fn opcodes(self) -> Option<[Opcode; 4]> {
        Some(match self {
            MessageKind::Send => [
                Opcode::RC_SEND_FIRST,
                Opcode::RC_SEND_MIDDLE,
                Opcode::RC_SEND_LAST,
                Opcode::RC_SEND_ONLY,
            ],
            MessageKind::SendWithImm => [
                Opcode::RC_SEND_FIRST,
                Opcode::RC_SEND_MIDDLE,
                Opcode::RC_SEND_LAST_WITH_IMMEDIATE,
                Opcode::RC_SEND_ONLY_WITH_IMMEDIATE,
            ],
            MessageKind::Write => [
                Opcode::RC_RDMA_WRITE_FIRST,
                Opcode::RC_RDMA_WRITE_MIDDLE,
                Opcode::RC_RDMA_WRITE_LAST,
                Opcode::RC_RDMA_WRITE_ONLY,
            ],
            MessageKind::WriteWithImm => [
                Opcode::RC_RDMA_WRITE_FIRST,
                Opcode::RC_RDMA_WRITE_MIDDLE,
                Opcode::RC_RDMA_WRITE_LAST_WITH_IMMEDIATE,
                Opcode::RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE,
            ],
            MessageKind::ReadResponse => [
                Opcode::RC_RDMA_READ_RESPONSE_FIRST,
                Opcode::RC_RDMA_READ_RESPONSE_MIDDLE,
                Opcode::RC_RDMA_READ_RESPONSE_LAST,
                Opcode::RC_RDMA_READ_RESPONSE_ONLY,
            ],
            MessageKind::Read | MessageKind::CompareSwap | MessageKind::FetchAdd => return None,
        })
    }
}

/// One packet of a message: its opcode and the message bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Opcode of the packet.
    pub opcode: Opcode,
    /// Offset of its payload in the message.
    pub offset: usize,
    /// Payload bytes (exactly the MTU for all but the last packet, as the responder
    /// requires of FIRST and MIDDLE packets).
    pub len: usize,
}

impl Segment {
    /// True for the message's last packet (LAST or ONLY), which asks for an ACK.
    pub fn is_last(&self) -> bool {
        self.opcode
            .info()
            .is_some_and(|i| i.position.ends_message())
    }
}

/// Packets a message of `len` bytes takes at path MTU `mtu` (at least one: an empty
/// message is one ONLY packet).
pub fn packet_count(len: usize, mtu: usize) -> usize {
    len.div_ceil(mtu.max(1)).max(1)
}

/// Packet `index` of a `len`-byte message of `kind` at path MTU `mtu`; `None` past the
/// last one, and for READ and atomic requests (one packet without payload each).
pub fn segment(kind: MessageKind, len: usize, mtu: usize, index: usize) -> Option<Segment> {
    let mtu = mtu.max(1);
    let count = packet_count(len, mtu);
    if index >= count {
        return None;
    }
    let [first, middle, last, only] = kind.opcodes()?;
    let opcode = match (index, count) {
        (_, 1) => only,
        (0, _) => first,
        (i, n) if i + 1 == n => last,
        _ => middle,
    };
    let offset = index * mtu;
    Some(Segment {
        opcode,
        offset,
        len: (len - offset).min(mtu),
    })
}

/// Every packet of a message, in order.
pub fn segments(kind: MessageKind, len: usize, mtu: usize) -> impl Iterator<Item = Segment> {
    (0..packet_count(len, mtu)).map_while(move |i| segment(kind, len, mtu, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_empty_messages_are_one_only_packet() {
        for len in [0, 1, 1024] {
            let s: Vec<Segment> = segments(MessageKind::SendWithImm, len, 1024).collect();
            assert_eq!(
                s,
                vec![Segment {
                    opcode: Opcode::RC_SEND_ONLY_WITH_IMMEDIATE,
                    offset: 0,
                    len
                }]
            );
            assert!(s[0].is_last());
        }
    }

    #[test]
    fn long_messages_are_first_middles_last_with_full_mtu_packets() {
        let s: Vec<Segment> = segments(MessageKind::Write, 4096 * 3 + 5, 4096).collect();
        let ops: Vec<Opcode> = s.iter().map(|x| x.opcode).collect();
        assert_eq!(
            ops,
            vec![
                Opcode::RC_RDMA_WRITE_FIRST,
                Opcode::RC_RDMA_WRITE_MIDDLE,
                Opcode::RC_RDMA_WRITE_MIDDLE,
                Opcode::RC_RDMA_WRITE_LAST
            ]
        );
        assert!(s[..3].iter().all(|x| x.len == 4096 && !x.is_last()));
        assert_eq!((s[3].offset, s[3].len), (3 * 4096, 5));
        assert!(s[3].is_last());
        let two: Vec<Opcode> = segments(MessageKind::ReadResponse, 2048, 1024)
            .map(|x| x.opcode)
            .collect();
        assert_eq!(
            two,
            vec![
                Opcode::RC_RDMA_READ_RESPONSE_FIRST,
                Opcode::RC_RDMA_READ_RESPONSE_LAST
            ]
        );
    }

    #[test]
    fn segments_cover_every_byte_once_for_any_length() {
        for kind in [
            MessageKind::Send,
            MessageKind::SendWithImm,
            MessageKind::Write,
            MessageKind::WriteWithImm,
            MessageKind::ReadResponse,
        ] {
            for mtu in [256, 1024, 4096] {
                for len in [0, 1, mtu - 1, mtu, mtu + 1, 3 * mtu, 3 * mtu + 7, 1 << 20] {
                    let s: Vec<Segment> = segments(kind, len, mtu).collect();
                    assert_eq!(s.len(), packet_count(len, mtu));
                    assert_eq!(s.iter().map(|x| x.len).sum::<usize>(), len);
                    assert!(s.windows(2).all(|w| w[0].offset + w[0].len == w[1].offset));
                    assert_eq!(s.iter().filter(|x| x.is_last()).count(), 1);
                    assert!(s.last().unwrap().is_last());
                    // Opcodes carry immediate data only on the last packet, as the IBTA says.
                    let imm = |o: Opcode| {
                        o.info()
                            .unwrap()
                            .headers
                            .contains(crate::wire::ExtHeaders::IMM_DT)
                    };
                    assert!(s[..s.len() - 1].iter().all(|x| !imm(x.opcode)));
                    assert_eq!(
                        imm(s.last().unwrap().opcode),
                        matches!(kind, MessageKind::SendWithImm | MessageKind::WriteWithImm)
                    );
                }
            }
        }
        assert_eq!(segment(MessageKind::Send, 10, 4, 3), None);
        assert_eq!(segment(MessageKind::Read, 10, 4, 0), None);
    }
}
