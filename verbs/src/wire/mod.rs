//! RoCEv2 packet codecs: views over byte buffers and the `Repr`s they parse
//! into and emit from.
//!
//! Every header has the same three parts, in the style of smoltcp's `wire`:
//!
//! * a view, e.g. [`BthPacket<T: AsRef<[u8]>>`](BthPacket), with
//!   `new_unchecked`, `new_checked` (length and internal consistency),
//!   field getters, and setters when `T: AsMut<[u8]>`; the byte offsets live
//!   in one private `mod field` per header;
//! * a `Repr`, e.g. [`BthRepr`], with `parse(&Packet) -> Result<Repr>`,
//!   `emit(&self, &mut Packet) -> Result<()>`, `header_len()` and, where the
//!   header knows its payload length, `buffer_len()`;
//! * unit tests next to the code.
//!
//! The layers above Ethernet are glued together by [`TransportRepr`] (BTH and
//! the extension headers that follow it, without the ICRC) and by
//! [`frame`] (Ethernet, IP and UDP plus the [`icrc`]).
//!
//! Parsing never panics, whatever the input: `Repr::parse` checks lengths
//! itself even when handed a view made with `new_unchecked`. Getters and
//! setters on a view made with `new_unchecked` may panic on a short buffer,
//! as in smoltcp. `emit` checks its buffer and its values and returns an
//! [`Error`] instead of writing a header that would not parse back.
//!
//! Receive path:
//! ```
//! # use xrdma_verbs::wire::{frame, TransportRepr};
//! # fn handle(frame_bytes: &[u8]) -> xrdma_verbs::wire::Result<()> {
//! let parsed = frame::parse_frame(frame_bytes)?; // Ethernet/IP/UDP, ICRC checked
//! let (transport, payload) = TransportRepr::parse(parsed.transport)?;
//! # let _ = (transport, payload); Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aeth;
pub mod atomic;
pub mod bth;
pub mod cm;
pub mod cma;
pub mod deth;
mod error;
pub mod ethernet;
pub mod frame;
pub mod icrc;
pub mod immdt;
pub mod ipv4;
pub mod ipv6;
pub mod mad;
pub mod numbers;
pub mod opcode;
pub mod psn;
pub mod reth;
pub mod transport;
pub mod udp;

#[cfg(test)]
mod tests;

pub use aeth::{AethPacket, AethRepr, NakCode, Syndrome};
pub use atomic::{AtomicAckEthPacket, AtomicAckEthRepr, AtomicEthPacket, AtomicEthRepr};
pub use bth::{BthPacket, BthRepr};
pub use cm::{CmMessage, CommId, ServiceId};
pub use cma::{CmaHeaderPacket, CmaHeaderRepr};
pub use deth::{DethPacket, DethRepr};
pub use error::{Error, Result};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr};
pub use frame::{FrameRepr, IpRepr, IpVersion, ParsedFrame};
pub use immdt::{IethPacket, IethRepr, ImmDtPacket, ImmDtRepr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use mad::{MadHeaderRepr, MadPacket};
pub use numbers::{Msn, Qkey, Qpn, Rkey};
pub use opcode::{ExtHeaders, Opcode, OpcodeInfo, Operation, Position, TransportClass};
pub use psn::Psn;
pub use reth::{RethPacket, RethRepr};
pub use transport::TransportRepr;
pub use udp::{ROCEV2_PORT, UdpPacket, UdpRepr};

/// Byte ranges of header fields, shared by every `mod field`.
mod field {
    /// A fixed-size field: `start..end` bytes from the start of the header.
    pub(crate) type Field = core::ops::Range<usize>;
    /// Everything from an offset to the end of the buffer.
    pub(crate) type Rest = core::ops::RangeFrom<usize>;
}

/// Reads a big-endian `u16` at `at`; the caller has checked the length.
fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Reads a big-endian `u32` at `at`; the caller has checked the length.
fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Reads a big-endian 24-bit value at `at`; the caller has checked the length.
fn read_u24(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, data[at], data[at + 1], data[at + 2]])
}

/// Reads a big-endian `u64` at `at`; the caller has checked the length.
fn read_u64(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_be_bytes(bytes)
}

/// Writes a big-endian 24-bit value (the low 24 bits of `value`) at `at`.
fn write_u24(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 3].copy_from_slice(&value.to_be_bytes()[1..]);
}
