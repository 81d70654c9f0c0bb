//! ICRC for media that hide the IP header (the kernel UDP socket, the simulator).
//!
//! The ICRC covers the IP and UDP headers. Where we never see them, we rebuild them as
//! xrdma's own `xdp` backend emits them (IPv4: IHL 5, DF set, identification 0, which is also
//! what Linux puts on a DF datagram of an unconnected UDP socket with `IP_PMTUDISC_DO`), so a
//! datagram sealed here and one sealed over a real frame carry the same ICRC. The fields the
//! ICRC masks (TOS, TTL, checksums, flow label) do not matter.
//!
//! The one exception is a datagram the kernel cuts from a larger one (UDP GSO): Linux numbers
//! the pieces' IPv4 identifications on from the first's, so the `k`th piece is sealed with
//! identification `k` ([`seal_nth`]).

use std::net::{SocketAddr, SocketAddrV4};

use crate::wire::{self, bth, icrc};

/// The IPv4+UDP headers of a datagram from `s` to `d` with IPv4 identification `ident`,
/// whose UDP payload is `udp_payload_len` bytes.
fn headers_v4(
    s: SocketAddrV4,
    d: SocketAddrV4,
    udp_payload_len: usize,
    ident: u16,
) -> Result<[u8; icrc::V4_HEADERS_LEN], wire::Error> {
    let mut h = icrc::pseudo_headers_v4(*s.ip(), *d.ip(), s.port(), d.port(), udp_payload_len)?;
    h[icrc::V4_IDENT].copy_from_slice(&ident.to_be_bytes());
    Ok(h)
}

/// Rebuilds the IP+UDP headers of a datagram from `src` to `dst` whose UDP payload (transport
/// packet plus ICRC) is `udp_payload_len` bytes, and calls `f` with them.
/// An IPv4 header carries identification `ident`; IPv6 has none.
fn with_headers<R>(
    src: SocketAddr,
    dst: SocketAddr,
    udp_payload_len: usize,
    ident: u16,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, wire::Error> {
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => Ok(f(&headers_v4(s, d, udp_payload_len, ident)?)),
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
    seal_nth(src, dst, buf, transport_len, 0)
}

/// As [`seal`], for a datagram that leaves with IPv4 identification `ident`: the `ident`th
/// piece of a UDP GSO send.
pub(crate) fn seal_nth(
    src: SocketAddr,
    dst: SocketAddr,
    buf: &mut [u8],
    transport_len: usize,
    ident: u16,
) -> Result<usize, wire::Error> {
    let total = transport_len + icrc::ICRC_LEN;
    let crc = with_headers(src, dst, total, ident, |h| {
        icrc::compute(h, &buf[..transport_len])
    })??;
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
    let transport = with_headers(src, dst, udp_payload.len(), 0, |h| {
        icrc::check(h, udp_payload)
    })??;
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

/// Checks a received UDP payload from `src` to `dst` as [`datagram::open`] does, except that
/// an IPv4 datagram may carry any identification (see [`icrc::check_v4_any_ident`]); returns
/// the transport packet and whether the identification was not 0. Trying `guess` first
/// spares the solving (the `n`th datagram of a GSO send carries `n`).
pub(crate) fn open_any_ident(
    src: SocketAddr,
    dst: SocketAddr,
    udp_payload: &[u8],
    guess: u16,
) -> Result<(&[u8], bool), wire::Error> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        return open(src, dst, udp_payload).map(|transport| (transport, false));
    };
    if udp_payload.len() < bth::HEADER_LEN + icrc::ICRC_LEN {
        return Err(wire::Error::Truncated);
    }
    let headers = headers_v4(s, d, udp_payload.len(), guess)?;
    let (transport, ident) = icrc::check_v4_any_ident(&headers, udp_payload)?;
    check_transport(transport)?;
    Ok((transport, ident != 0))
}
