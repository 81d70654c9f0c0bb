//! A whole RoCEv2 transport packet: BTH, the extension headers its opcode
//! requires, payload and pad. The 4-byte ICRC that follows on the wire is
//! not part of it: [`icrc::check`](super::icrc::check) strips it on receive
//! and [`frame::seal_frame`](super::frame::seal_frame) appends it on send.

use super::aeth::{AethPacket, AethRepr};
use super::atomic::{AtomicAckEthPacket, AtomicAckEthRepr, AtomicEthPacket, AtomicEthRepr};
use super::bth::{self, BthPacket, BthRepr};
use super::deth::{DethPacket, DethRepr};
use super::immdt::{IethPacket, IethRepr, ImmDtPacket, ImmDtRepr};
use super::opcode::{ExtHeaders, OpcodeInfo};
use super::reth::{RethPacket, RethRepr};
use super::{Error, Result, Rkey};

/// Pad bytes needed after `payload_len` bytes to reach a 4-byte multiple.
pub const fn pad_len(payload_len: usize) -> usize {
    (4 - payload_len % 4) % 4
}

/// The headers of a transport packet. Exactly the extension headers the
/// opcode requires are `Some` (see [`OpcodeInfo::headers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransportRepr {
    /// Base transport header. On emit, `pad_count` is recomputed from the
    /// payload length.
    pub bth: BthRepr,
    /// RDMA ETH (WRITE first/only, READ request).
    pub reth: Option<RethRepr>,
    /// ACK ETH (acknowledgements and READ responses first/last/only).
    pub aeth: Option<AethRepr>,
    /// Datagram ETH (UD).
    pub deth: Option<DethRepr>,
    /// Immediate data, the four wire bytes read big-endian.
    pub imm: Option<u32>,
    /// Invalidate ETH: the rkey to invalidate.
    pub ieth: Option<Rkey>,
    /// Atomic ETH (CompareSwap, FetchAdd).
    pub atomic: Option<AtomicEthRepr>,
    /// Atomic ACK ETH (atomic acknowledge).
    pub atomic_ack: Option<AtomicAckEthRepr>,
}

/// Splits `len` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(len).ok_or(Error::Truncated)?;
    *rest = tail;
    Ok(head)
}

/// Splits `len` bytes off the front of `rest`, writable.
fn take_mut<'a>(rest: &mut &'a mut [u8], len: usize) -> Result<&'a mut [u8]> {
    let (head, tail) = core::mem::take(rest)
        .split_at_mut_checked(len)
        .ok_or(Error::Truncated)?;
    *rest = tail;
    Ok(head)
}

impl TransportRepr {
    /// A repr with `bth` and no extension header.
    pub const fn new(bth: BthRepr) -> TransportRepr {
        TransportRepr {
            bth,
            reth: None,
            aeth: None,
            deth: None,
            imm: None,
            ieth: None,
            atomic: None,
            atomic_ack: None,
        }
    }

    /// Parses a transport packet (BTH through pad, ICRC already removed)
    /// and returns it with its payload, pad stripped.
    ///
    /// # Errors
    /// * [`Error::Truncated`] if the BTH or a required extension header does
    ///   not fit;
    /// * [`Error::Unsupported`] for an unsupported opcode or transport
    ///   version;
    /// * [`Error::Malformed`] if the length is not a multiple of 4, the pad
    ///   count exceeds what follows the headers, an opcode without payload
    ///   is followed by bytes, or an AETH syndrome is reserved.
    pub fn parse(bytes: &[u8]) -> Result<(TransportRepr, &[u8])> {
        let mut rest = bytes;
        let bth = BthRepr::parse(&BthPacket::new_checked(take(&mut rest, bth::HEADER_LEN)?)?)?;
        let info = bth.opcode.info().ok_or(Error::Unsupported)?;
        let headers = info.headers;
        let mut repr = TransportRepr::new(bth);
        if headers.contains(ExtHeaders::DETH) {
            let bytes = take(&mut rest, super::deth::HEADER_LEN)?;
            repr.deth = Some(DethRepr::parse(&DethPacket::new_unchecked(bytes))?);
        }
        if headers.contains(ExtHeaders::RETH) {
            let bytes = take(&mut rest, super::reth::HEADER_LEN)?;
            repr.reth = Some(RethRepr::parse(&RethPacket::new_unchecked(bytes))?);
        }
        if headers.contains(ExtHeaders::ATOMIC_ETH) {
            let bytes = take(&mut rest, super::atomic::ATOMIC_ETH_LEN)?;
            repr.atomic = Some(AtomicEthRepr::parse(&AtomicEthPacket::new_unchecked(
                bytes,
            ))?);
        }
        if headers.contains(ExtHeaders::AETH) {
            let bytes = take(&mut rest, super::aeth::HEADER_LEN)?;
            repr.aeth = Some(AethRepr::parse(&AethPacket::new_unchecked(bytes))?);
        }
        if headers.contains(ExtHeaders::ATOMIC_ACK_ETH) {
            let bytes = take(&mut rest, super::atomic::ATOMIC_ACK_ETH_LEN)?;
            let packet = AtomicAckEthPacket::new_unchecked(bytes);
            repr.atomic_ack = Some(AtomicAckEthRepr::parse(&packet)?);
        }
        if headers.contains(ExtHeaders::IMM_DT) {
            let bytes = take(&mut rest, super::immdt::HEADER_LEN)?;
            repr.imm = Some(ImmDtRepr::parse(&ImmDtPacket::new_unchecked(bytes))?.data);
        }
        if headers.contains(ExtHeaders::IETH) {
            let bytes = take(&mut rest, super::immdt::HEADER_LEN)?;
            repr.ieth = Some(IethRepr::parse(&IethPacket::new_unchecked(bytes))?.rkey);
        }
        if !bytes.len().is_multiple_of(4) {
            return Err(Error::Malformed);
        }
        if !info.has_payload && !rest.is_empty() {
            return Err(Error::Malformed);
        }
        let payload_len = rest
            .len()
            .checked_sub(usize::from(bth.pad_count))
            .ok_or(Error::Malformed)?;
        Ok((repr, &rest[..payload_len]))
    }

    /// The extension headers that are `Some`.
    pub fn present_headers(&self) -> ExtHeaders {
        let flags = [
            (self.deth.is_some(), ExtHeaders::DETH),
            (self.reth.is_some(), ExtHeaders::RETH),
            (self.atomic.is_some(), ExtHeaders::ATOMIC_ETH),
            (self.aeth.is_some(), ExtHeaders::AETH),
            (self.atomic_ack.is_some(), ExtHeaders::ATOMIC_ACK_ETH),
            (self.imm.is_some(), ExtHeaders::IMM_DT),
            (self.ieth.is_some(), ExtHeaders::IETH),
        ];
        flags
            .into_iter()
            .filter(|&(present, _)| present)
            .fold(ExtHeaders::NONE, |set, (_, header)| set.with(header))
    }

    /// Length of the BTH plus the extension headers that are `Some`.
    pub fn headers_len(&self) -> usize {
        bth::HEADER_LEN + self.present_headers().len()
    }

    /// Length of the whole transport packet for `payload_len` bytes of
    /// payload: headers, payload and pad (no ICRC).
    /// Saturates instead of overflowing, so an absurd length fails the
    /// buffer check rather than panicking.
    pub fn buffer_len(&self, payload_len: usize) -> usize {
        self.headers_len()
            .saturating_add(payload_len)
            .saturating_add(pad_len(payload_len))
    }

    /// Checks that the repr can be emitted with `payload_len` bytes.
    fn validate(&self, payload_len: usize) -> Result<OpcodeInfo> {
        let info = self.bth.opcode.info().ok_or(Error::Unsupported)?;
        if self.present_headers() != info.headers || (!info.has_payload && payload_len != 0) {
            return Err(Error::Malformed);
        }
        Ok(info)
    }

    /// Writes headers, payload and zero pad into `buf`; returns the number of
    /// bytes written ([`buffer_len`](Self::buffer_len)). The BTH pad count
    /// is set from the payload length.
    ///
    /// # Errors
    /// The errors of [`emit_headers`](Self::emit_headers).
    pub fn emit(&self, payload: &[u8], buf: &mut [u8]) -> Result<usize> {
        let offset = self.emit_headers(payload.len(), buf)?;
        buf[offset..offset + payload.len()].copy_from_slice(payload);
        Ok(self.buffer_len(payload.len()))
    }

    /// Writes the headers and the zero pad for a payload of `payload_len`
    /// bytes, leaving the payload bytes untouched, and returns the payload
    /// offset. The caller then writes the payload in place into
    /// `buf[offset..offset + payload_len]`; the packet is
    /// [`buffer_len`](Self::buffer_len) bytes long.
    ///
    /// # Errors
    /// * [`Error::Unsupported`] for an unsupported opcode;
    /// * [`Error::Malformed`] if the `Some` extension headers are not exactly
    ///   those the opcode requires, a payload is given to an opcode that
    ///   carries none, or an AETH code is out of range;
    /// * [`Error::Truncated`] if `buf` is shorter than
    ///   [`buffer_len`](Self::buffer_len).
    pub fn emit_headers(&self, payload_len: usize, buf: &mut [u8]) -> Result<usize> {
        self.validate(payload_len)?;
        let total = self.buffer_len(payload_len);
        if buf.len() < total {
            return Err(Error::Truncated);
        }
        let pad = pad_len(payload_len);
        let mut rest = &mut buf[..total];
        let bth = BthRepr {
            pad_count: pad as u8,
            ..self.bth
        };
        bth.emit(&mut BthPacket::new_unchecked(take_mut(
            &mut rest,
            bth::HEADER_LEN,
        )?))?;
        if let Some(deth) = &self.deth {
            let bytes = take_mut(&mut rest, super::deth::HEADER_LEN)?;
            deth.emit(&mut DethPacket::new_unchecked(bytes))?;
        }
        if let Some(reth) = &self.reth {
            let bytes = take_mut(&mut rest, super::reth::HEADER_LEN)?;
            reth.emit(&mut RethPacket::new_unchecked(bytes))?;
        }
        if let Some(atomic) = &self.atomic {
            let bytes = take_mut(&mut rest, super::atomic::ATOMIC_ETH_LEN)?;
            atomic.emit(&mut AtomicEthPacket::new_unchecked(bytes))?;
        }
        if let Some(aeth) = &self.aeth {
            let bytes = take_mut(&mut rest, super::aeth::HEADER_LEN)?;
            aeth.emit(&mut AethPacket::new_unchecked(bytes))?;
        }
        if let Some(atomic_ack) = &self.atomic_ack {
            let bytes = take_mut(&mut rest, super::atomic::ATOMIC_ACK_ETH_LEN)?;
            atomic_ack.emit(&mut AtomicAckEthPacket::new_unchecked(bytes))?;
        }
        if let Some(data) = self.imm {
            let bytes = take_mut(&mut rest, super::immdt::HEADER_LEN)?;
            ImmDtRepr { data }.emit(&mut ImmDtPacket::new_unchecked(bytes))?;
        }
        if let Some(rkey) = self.ieth {
            let bytes = take_mut(&mut rest, super::immdt::HEADER_LEN)?;
            IethRepr { rkey }.emit(&mut IethPacket::new_unchecked(bytes))?;
        }
        let offset = total - rest.len();
        rest[payload_len..].fill(0);
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Msn, NakCode, Opcode, Psn, Qkey, Qpn, Syndrome};
    use super::*;

    fn bth(opcode: Opcode) -> BthRepr {
        BthRepr {
            ack_req: true,
            ..BthRepr::new(opcode, Qpn::new(0x11).unwrap(), Psn::new(0x123456).unwrap())
        }
    }

    fn reth() -> RethRepr {
        RethRepr {
            va: 0x1000,
            rkey: Rkey::new(0xabcd),
            dma_len: 5,
        }
    }

    /// Emits `repr` with `payload` and parses it back.
    #[track_caller]
    fn round_trip(repr: TransportRepr, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xaa; repr.buffer_len(payload.len()) + 7];
        let len = repr.emit(payload, &mut buf).unwrap();
        assert_eq!(len, repr.buffer_len(payload.len()));
        assert_eq!(len % 4, 0);
        buf.truncate(len);
        let (parsed, parsed_payload) = TransportRepr::parse(&buf).unwrap();
        let expected_pad = pad_len(payload.len()) as u8;
        assert_eq!(
            parsed,
            TransportRepr {
                bth: BthRepr {
                    pad_count: expected_pad,
                    ..repr.bth
                },
                ..repr
            }
        );
        assert_eq!(parsed_payload, payload);
        buf
    }

    #[test]
    fn send_only_known_bytes() {
        // BTH (SEND_ONLY, pad 3) + "abcde" + 3 zero pad bytes.
        let bytes = [
            0x04, 0x30, 0xff, 0xff, 0x00, 0x00, 0x00, 0x11, 0x80, 0x12, 0x34, 0x56, b'a', b'b',
            b'c', b'd', b'e', 0, 0, 0,
        ];
        let (repr, payload) = TransportRepr::parse(&bytes).unwrap();
        assert_eq!(
            repr,
            TransportRepr::new(BthRepr {
                pad_count: 3,
                ..bth(Opcode::RC_SEND_ONLY)
            })
        );
        assert_eq!(payload, b"abcde");
        assert_eq!(round_trip(repr, payload), bytes);
    }

    #[test]
    fn write_only_with_immediate_known_bytes() {
        let mut repr = TransportRepr::new(bth(Opcode::RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE));
        repr.reth = Some(reth());
        repr.imm = Some(0x0102_0304);
        let buf = round_trip(repr, b"hello");
        assert_eq!(repr.headers_len(), 12 + 16 + 4);
        assert_eq!(&buf[12..20], &0x1000u64.to_be_bytes());
        assert_eq!(&buf[28..32], &[1, 2, 3, 4]);
        assert_eq!(&buf[32..37], b"hello");
        assert_eq!(&buf[37..], &[0, 0, 0]);
    }

    #[test]
    fn every_header_kind_round_trips() {
        let mut ud = TransportRepr::new(bth(Opcode::UD_SEND_ONLY_WITH_IMMEDIATE));
        ud.deth = Some(DethRepr {
            qkey: Qkey::new(0x8001_0000),
            src_qp: Qpn::new(7).unwrap(),
        });
        ud.imm = Some(9);
        round_trip(ud, &[1, 2, 3, 4, 5, 6, 7, 8]);

        let mut ack = TransportRepr::new(bth(Opcode::RC_ATOMIC_ACKNOWLEDGE));
        ack.aeth = Some(AethRepr {
            syndrome: Syndrome::Ack { credit: 31 },
            msn: Msn::new(3).unwrap(),
        });
        ack.atomic_ack = Some(AtomicAckEthRepr { orig: u64::MAX });
        round_trip(ack, &[]);

        let mut cas = TransportRepr::new(bth(Opcode::RC_COMPARE_SWAP));
        cas.atomic = Some(AtomicEthRepr {
            va: 8,
            rkey: Rkey::new(1),
            swap_add: 2,
            compare: 3,
        });
        round_trip(cas, &[]);

        let mut inv = TransportRepr::new(bth(Opcode::RC_SEND_ONLY_WITH_INVALIDATE));
        inv.ieth = Some(Rkey::new(0xfeed));
        round_trip(inv, b"x");

        let mut nak = TransportRepr::new(bth(Opcode::RC_ACKNOWLEDGE));
        nak.aeth = Some(AethRepr {
            syndrome: Syndrome::Nak(NakCode::RemoteAccessError),
            msn: Msn::new(1).unwrap(),
        });
        round_trip(nak, &[]);

        round_trip(
            TransportRepr::new(bth(Opcode::RC_RDMA_READ_RESPONSE_MIDDLE)),
            &[0; 1024],
        );
    }

    #[test]
    fn emit_headers_leaves_payload_to_the_caller() {
        let repr = TransportRepr::new(bth(Opcode::RC_SEND_FIRST));
        let mut buf = [0xeeu8; 24];
        let offset = repr.emit_headers(6, &mut buf).unwrap();
        assert_eq!(offset, 12);
        assert_eq!(buf[1] & 0x30, 0x20, "pad count 2");
        assert_eq!(&buf[12..18], &[0xee; 6], "payload untouched");
        assert_eq!(&buf[18..20], &[0, 0], "pad zeroed");
        assert_eq!(&buf[20..], &[0xee; 4], "beyond the packet untouched");
        buf[12..18].copy_from_slice(b"zerocp");
        let (_, payload) = TransportRepr::parse(&buf[..20]).unwrap();
        assert_eq!(payload, b"zerocp");
    }

    #[test]
    fn missing_extension_header_is_truncated() {
        // READ request needs a 16-byte RETH; give it 8 bytes.
        let mut bytes = [0u8; 20];
        bytes[0] = 0x0c;
        assert_eq!(TransportRepr::parse(&bytes), Err(Error::Truncated));
        // ACK with no AETH at all.
        let mut bytes = [0u8; 12];
        bytes[0] = 0x11;
        assert_eq!(TransportRepr::parse(&bytes), Err(Error::Truncated));
        assert_eq!(TransportRepr::parse(&bytes[..11]), Err(Error::Truncated));
    }

    #[test]
    fn unknown_opcode_is_unsupported() {
        let mut bytes = [0u8; 16];
        bytes[0] = 0x15;
        assert_eq!(TransportRepr::parse(&bytes), Err(Error::Unsupported));
        bytes[0] = 0x24; // UC SEND_ONLY
        assert_eq!(TransportRepr::parse(&bytes), Err(Error::Unsupported));
    }

    #[test]
    fn bad_pad_count_is_malformed() {
        let mut buf = [0u8; 12];
        let repr = TransportRepr::new(bth(Opcode::RC_SEND_ONLY));
        repr.emit(&[], &mut buf).unwrap();
        buf[1] |= 0x10; // pad 1 but no payload
        assert_eq!(TransportRepr::parse(&buf), Err(Error::Malformed));
    }

    #[test]
    fn unaligned_length_is_malformed() {
        let mut buf = [0u8; 16];
        TransportRepr::new(bth(Opcode::RC_SEND_ONLY))
            .emit(b"abcd", &mut buf)
            .unwrap();
        assert_eq!(TransportRepr::parse(&buf[..15]), Err(Error::Malformed));
    }

    #[test]
    fn payload_on_opcode_without_payload_is_malformed() {
        let mut ack = TransportRepr::new(bth(Opcode::RC_ACKNOWLEDGE));
        ack.aeth = Some(AethRepr {
            syndrome: Syndrome::Ack { credit: 0 },
            msn: Msn::default(),
        });
        let mut buf = [0u8; 20];
        assert_eq!(ack.emit(b"oops", &mut buf), Err(Error::Malformed));
        let len = ack.emit(&[], &mut buf).unwrap();
        assert_eq!(len, 16);
        assert_eq!(TransportRepr::parse(&buf[..20]), Err(Error::Malformed));
    }

    #[test]
    fn emit_rejects_wrong_headers_and_short_buffers() {
        let mut buf = [0u8; 64];
        let missing_reth = TransportRepr::new(bth(Opcode::RC_RDMA_WRITE_ONLY));
        assert_eq!(missing_reth.emit(b"a", &mut buf), Err(Error::Malformed));
        let mut extra = TransportRepr::new(bth(Opcode::RC_SEND_ONLY));
        extra.reth = Some(reth());
        assert_eq!(extra.emit(b"a", &mut buf), Err(Error::Malformed));
        let unsupported = TransportRepr::new(bth(Opcode::new(0x81)));
        assert_eq!(unsupported.emit(&[], &mut buf), Err(Error::Unsupported));
        let ok = TransportRepr::new(bth(Opcode::RC_SEND_ONLY));
        assert_eq!(ok.emit(b"abcde", &mut buf[..19]), Err(Error::Truncated));
        assert_eq!(ok.emit(b"abcde", &mut buf[..20]), Ok(20));
    }

    #[test]
    fn pad_len_rounds_up_to_four() {
        let pads: Vec<usize> = (0..8).map(pad_len).collect();
        assert_eq!(pads, [0, 3, 2, 1, 0, 3, 2, 1]);
    }
}
