//! ICRC for media that hide the IP header (the kernel UDP socket, the simulator).
//!
//! The ICRC covers the IP and UDP headers. Where we never see them, we rebuild them as
//! xrdma's own `xdp` backend emits them (IPv4: IHL 5, DF set, identification 0, which is also
//! what Linux puts on an unconnected UDP socket's DF datagrams), so a datagram sealed here and
//! one sealed over a real frame carry the same ICRC. The fields the ICRC masks (TOS, TTL,
//! checksums, flow label) do not matter.

use std::net::SocketAddr;

use crate::wire::{self, bth, icrc};

/// Rebuilds the IP+UDP headers of a datagram from `src` to `dst` whose UDP payload (transport
/// packet plus ICRC) is `udp_payload_len` bytes, and calls `f` with them.
fn with_headers<R>(
    src: SocketAddr,
    dst: SocketAddr,
    udp_payload_len: usize,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, wire::Error> {
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            let h = icrc::pseudo_headers_v4(*s.ip(), *d.ip(), s.port(), d.port(), udp_payload_len)?;
            Ok(f(&h))
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            let h = icrc::pseudo_headers_v6(*s.ip(), *d.ip(), s.port(), d.port(), udp_payload_len)?;
            Ok(f(&h))
        }
        _ => Err(wire::Error::Malformed),
    }
}

/// Writes the ICRC after the `transport_len` bytes of transport packet at the start of `buf`
/// and returns the UDP payload length. `buf` must have room for the ICRC.
pub(crate) fn seal(
    src: SocketAddr,
    dst: SocketAddr,
    buf: &mut [u8],
    transport_len: usize,
) -> Result<usize, wire::Error> {
    let total = transport_len + icrc::ICRC_LEN;
    let crc = with_headers(src, dst, total, |h| icrc::compute(h, &buf[..transport_len]))??;
    buf[transport_len..total].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

/// Checks a received UDP payload from `src` to `dst` and returns its transport packet.
pub(crate) fn open(
    src: SocketAddr,
    dst: SocketAddr,
    udp_payload: &[u8],
) -> Result<&[u8], wire::Error> {
    if udp_payload.len() < bth::HEADER_LEN + icrc::ICRC_LEN {
        return Err(wire::Error::Truncated);
    }
    let transport = with_headers(src, dst, udp_payload.len(), |h| icrc::check(h, udp_payload))??;
    check_transport(transport)?;
    Ok(transport)
}

/// The checks every backend makes before handing a transport packet up: long enough for a
/// BTH, and a BTH transport version we speak.
pub(crate) fn check_transport(transport: &[u8]) -> Result<(), wire::Error> {
    let bth = bth::BthPacket::new_checked(transport)?;
    if bth.tver() != 0 {
        return Err(wire::Error::Unsupported);
    }
    Ok(())
}
