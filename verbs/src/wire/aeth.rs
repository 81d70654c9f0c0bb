//! ACK Extended Transport Header: the syndrome (ACK, RNR NAK or NAK) and
//! the responder's message sequence number.
//!
//! Syndrome byte: bit 7 reserved (0), bits 6..5 type, bits 4..0 value.
//! Types: 00 ACK (value = credit count; rxe sends 0x1f, "no credit
//! information"), 01 RNR NAK (value = timer code), 10 reserved, 11 NAK
//! (value = NAK code).

use super::{Error, Msn, Result, read_u24, write_u24};

/// Byte offsets of the AETH fields.
mod field {
    use crate::wire::field::Field;
    pub(super) const SYNDROME: usize = 0;
    pub(super) const MSN: Field = 1..4;
}

/// Length of the AETH.
pub const HEADER_LEN: usize = field::MSN.end;

const TYPE_MASK: u8 = 0xe0;
const VALUE_MASK: u8 = 0x1f;
const TYPE_ACK: u8 = 0x00;
const TYPE_RNR_NAK: u8 = 0x20;
const TYPE_NAK: u8 = 0x60;

/// The NAK codes of IBTA vol. 1 table 46.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NakCode {
    /// PSN sequence error: a packet arrived ahead of the expected PSN.
    PsnSequenceError = 0,
    /// Invalid request.
    InvalidRequest = 1,
    /// Remote access error (bad rkey, bounds or permissions).
    RemoteAccessError = 2,
    /// Remote operational error.
    RemoteOperationalError = 3,
    /// Invalid RD request.
    InvalidRdRequest = 4,
}

impl NakCode {
    /// The code for `value`, or `None` for the reserved codes 5..=31.
    pub const fn from_value(value: u8) -> Option<NakCode> {
        match value {
            0 => Some(NakCode::PsnSequenceError),
            1 => Some(NakCode::InvalidRequest),
            2 => Some(NakCode::RemoteAccessError),
            3 => Some(NakCode::RemoteOperationalError),
            4 => Some(NakCode::InvalidRdRequest),
            _ => None,
        }
    }
}

/// The decoded AETH syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syndrome {
    /// Positive acknowledgement with an end-to-end credit count (5 bits;
    /// 31 means no credit information).
    Ack {
        /// Credit count code, 0..=31.
        credit: u8,
    },
    /// Receiver not ready: retry after the encoded time (5 bits).
    RnrNak {
        /// RNR timer code, 0..=31.
        timer: u8,
    },
    /// Negative acknowledgement.
    Nak(NakCode),
}

impl Syndrome {
    /// Decodes a syndrome byte.
    ///
    /// # Errors
    /// [`Error::Malformed`] for the reserved bit 7, the reserved type 0x40
    /// or a reserved NAK code.
    pub const fn from_byte(byte: u8) -> Result<Syndrome> {
        let value = byte & VALUE_MASK;
        match byte & TYPE_MASK {
            TYPE_ACK => Ok(Syndrome::Ack { credit: value }),
            TYPE_RNR_NAK => Ok(Syndrome::RnrNak { timer: value }),
            TYPE_NAK => match NakCode::from_value(value) {
                Some(code) => Ok(Syndrome::Nak(code)),
                None => Err(Error::Malformed),
            },
            _ => Err(Error::Malformed),
        }
    }

    /// Encodes the syndrome byte.
    ///
    /// # Errors
    /// [`Error::Malformed`] if a credit or timer code exceeds 31.
    pub const fn to_byte(self) -> Result<u8> {
        let (kind, value) = match self {
            Syndrome::Ack { credit } => (TYPE_ACK, credit),
            Syndrome::RnrNak { timer } => (TYPE_RNR_NAK, timer),
            Syndrome::Nak(code) => (TYPE_NAK, code as u8),
        };
        if value > VALUE_MASK {
            Err(Error::Malformed)
        } else {
            Ok(kind | value)
        }
    }
}

/// A read/write view of an AETH.
#[derive(Debug, Clone)]
pub struct AethPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AethPacket<T> {
    /// Wraps a buffer without checking it; getters may then panic.
    pub const fn new_unchecked(buffer: T) -> AethPacket<T> {
        AethPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<AethPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole AETH.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it is shorter than [`HEADER_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The raw syndrome byte.
    pub fn syndrome(&self) -> u8 {
        self.buffer.as_ref()[field::SYNDROME]
    }

    /// The message sequence number.
    pub fn msn(&self) -> Msn {
        Msn::new_masked(read_u24(self.buffer.as_ref(), field::MSN.start))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AethPacket<T> {
    /// Sets the raw syndrome byte.
    pub fn set_syndrome(&mut self, syndrome: u8) {
        self.buffer.as_mut()[field::SYNDROME] = syndrome;
    }

    /// Sets the message sequence number.
    pub fn set_msn(&mut self, msn: Msn) {
        write_u24(self.buffer.as_mut(), field::MSN.start, msn.value());
    }
}

/// The fields of an AETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AethRepr {
    /// ACK, RNR NAK or NAK.
    pub syndrome: Syndrome,
    /// The responder's message sequence number.
    pub msn: Msn,
}

impl AethRepr {
    /// Parses the AETH at the start of `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer; the errors of
    /// [`Syndrome::from_byte`].
    pub fn parse<T: AsRef<[u8]>>(packet: &AethPacket<T>) -> Result<AethRepr> {
        packet.check_len()?;
        Ok(AethRepr {
            syndrome: Syndrome::from_byte(packet.syndrome())?,
            msn: packet.msn(),
        })
    }

    /// Length of the AETH (4).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the AETH into `packet`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short buffer; the errors of
    /// [`Syndrome::to_byte`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut AethPacket<T>) -> Result<()> {
        packet.check_len()?;
        packet.set_syndrome(self.syndrome.to_byte()?);
        packet.set_msn(self.msn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<AethRepr> {
        AethRepr::parse(&AethPacket::new_unchecked(bytes))
    }

    #[test]
    fn parses_rxe_ack() {
        // rxe's plain ACK: syndrome 0x1f, MSN 7.
        let repr = parse(&[0x1f, 0x00, 0x00, 0x07]).unwrap();
        assert_eq!(repr.syndrome, Syndrome::Ack { credit: 31 });
        assert_eq!(repr.msn, Msn::new(7).unwrap());
    }

    #[test]
    fn syndrome_bytes_match_rxe() {
        let cases = [
            (0x1f, Syndrome::Ack { credit: 0x1f }),
            (0x00, Syndrome::Ack { credit: 0 }),
            (0x2e, Syndrome::RnrNak { timer: 0x0e }),
            (0x60, Syndrome::Nak(NakCode::PsnSequenceError)),
            (0x61, Syndrome::Nak(NakCode::InvalidRequest)),
            (0x62, Syndrome::Nak(NakCode::RemoteAccessError)),
            (0x63, Syndrome::Nak(NakCode::RemoteOperationalError)),
            (0x64, Syndrome::Nak(NakCode::InvalidRdRequest)),
        ];
        for (byte, syndrome) in cases {
            assert_eq!(Syndrome::from_byte(byte), Ok(syndrome), "byte {byte:#04x}");
            assert_eq!(syndrome.to_byte(), Ok(byte));
        }
    }

    #[test]
    fn reserved_syndromes_are_malformed() {
        for byte in [0x40, 0x5f, 0x65, 0x7f, 0x80, 0x9f, 0xe0] {
            assert_eq!(
                Syndrome::from_byte(byte),
                Err(Error::Malformed),
                "byte {byte:#04x}"
            );
            assert_eq!(parse(&[byte, 0, 0, 1]), Err(Error::Malformed));
        }
    }

    #[test]
    fn emit_round_trips_and_rejects_wide_codes() {
        let repr = AethRepr {
            syndrome: Syndrome::RnrNak { timer: 3 },
            msn: Msn::new(0xabcdef).unwrap(),
        };
        let mut buf = [0u8; 4];
        repr.emit(&mut AethPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(buf, [0x23, 0xab, 0xcd, 0xef]);
        assert_eq!(parse(&buf), Ok(repr));

        let wide = AethRepr {
            syndrome: Syndrome::Ack { credit: 32 },
            ..repr
        };
        assert_eq!(
            wide.emit(&mut AethPacket::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
        let wide = AethRepr {
            syndrome: Syndrome::RnrNak { timer: 0xff },
            ..repr
        };
        assert_eq!(
            wide.emit(&mut AethPacket::new_unchecked(&mut buf[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(
            AethPacket::new_checked(&[0u8; 3][..]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(parse(&[0x1f]), Err(Error::Truncated));
        let repr = AethRepr {
            syndrome: Syndrome::Ack { credit: 0 },
            msn: Msn::default(),
        };
        let mut short = [0u8; 3];
        assert_eq!(
            repr.emit(&mut AethPacket::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }
}
