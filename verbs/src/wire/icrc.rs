//! The RoCEv2 invariant CRC (ICRC), as Linux rxe computes it
//! (`rxe_icrc.c`).
//!
//! The ICRC is a standard reflected CRC-32 (polynomial 0xEDB88320, the
//! Ethernet FCS algorithm) over:
//!
//! 1. eight 0xFF bytes standing in for the InfiniBand LRH (rxe seeds the
//!    register with 0xdebb20e3 instead, which is the same thing);
//! 2. the IP header (IPv4 20 bytes, or IPv6 40 bytes) with the variant fields
//!    set to all ones: IPv4 TOS, TTL and header checksum; IPv6 traffic
//!    class, flow label and hop limit;
//! 3. the UDP header with its checksum set to all ones;
//! 4. the transport packet (BTH through pad) with BTH byte 4 (FECN, BECN,
//!    resv6a) set to all ones.
//!
//! [`compute`] returns the finished CRC-32 value (register complemented, as
//! `zlib.crc32` returns it); the wire carries it least-significant byte
//! first (`value.to_le_bytes()`), like the Ethernet FCS.
//!
//! The IPv4 identification and flags are covered, so a receiver that does
//! not see the IP header (the kernel-UDP backend) can only rebuild it if
//! the sender used xrdma's convention: identification 0 and DF set (see
//! [`pseudo_headers_v4`]).

use core::net::{Ipv4Addr, Ipv6Addr};

use super::bth::FECN_BECN_OFFSET;
use super::ipv4::{self, Ipv4Packet, Ipv4Repr};
use super::ipv6::{self, Ipv6Packet, Ipv6Repr};
use super::udp::{self, UdpPacket, UdpRepr};
use super::{Error, Result};

/// Length of the ICRC trailer.
pub const ICRC_LEN: usize = 4;

/// IPv4 plus UDP header length.
pub const V4_HEADERS_LEN: usize = ipv4::HEADER_LEN + udp::HEADER_LEN;

/// IPv6 plus UDP header length.
pub const V6_HEADERS_LEN: usize = ipv6::HEADER_LEN + udp::HEADER_LEN;

/// The CRC state after eight 0xFF bytes, in crc32fast's "previous result"
/// form: the complement of rxe's raw seed 0xdebb20e3.
const SEED_AFTER_LRH: u32 = !0xdebb_20e3;

/// Computes the ICRC of a datagram.
///
/// `ip_and_udp_headers` is a 20-byte IPv4 header (no options) or a 40-byte
/// IPv6 header, followed by the 8-byte UDP header. `transport` is BTH
/// through pad, without the ICRC. Neither slice is modified.
///
/// # Errors
/// [`Error::Malformed`] if `ip_and_udp_headers` is neither 28 nor 48 bytes
/// long or its version nibble disagrees with its length.
pub fn compute(ip_and_udp_headers: &[u8], transport: &[u8]) -> Result<u32> {
    let version = ip_and_udp_headers.first().map(|b| b >> 4);
    if let (Ok(v4), Some(4)) = (
        <&[u8; V4_HEADERS_LEN]>::try_from(ip_and_udp_headers),
        version,
    ) {
        Ok(compute_v4(v4, transport))
    } else if let (Ok(v6), Some(6)) = (
        <&[u8; V6_HEADERS_LEN]>::try_from(ip_and_udp_headers),
        version,
    ) {
        Ok(compute_v6(v6, transport))
    } else {
        Err(Error::Malformed)
    }
}

/// Computes the ICRC of an IPv4 datagram; see [`compute`].
pub fn compute_v4(ip_and_udp_headers: &[u8; V4_HEADERS_LEN], transport: &[u8]) -> u32 {
    let mut masked = *ip_and_udp_headers;
    masked[1] = 0xff; // TOS
    masked[8] = 0xff; // TTL
    masked[10..12].fill(0xff); // header checksum
    masked[ipv4::HEADER_LEN + 6..].fill(0xff); // UDP checksum
    hash(&masked, transport)
}

/// Computes the ICRC of an IPv6 datagram; see [`compute`].
pub fn compute_v6(ip_and_udp_headers: &[u8; V6_HEADERS_LEN], transport: &[u8]) -> u32 {
    let mut masked = *ip_and_udp_headers;
    masked[0] |= 0x0f; // traffic class, high nibble
    masked[1..4].fill(0xff); // traffic class low nibble, flow label
    masked[7] = 0xff; // hop limit
    masked[ipv6::HEADER_LEN + 6..].fill(0xff); // UDP checksum
    hash(&masked, transport)
}

/// Hashes the pseudo-LRH, the already masked headers and the transport with
/// its FECN/BECN byte masked.
fn hash(masked_headers: &[u8], transport: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(SEED_AFTER_LRH);
    hasher.update(masked_headers);
    match transport.split_at_checked(FECN_BECN_OFFSET) {
        Some((before, [_, after @ ..])) => {
            hasher.update(before);
            hasher.update(&[0xff]);
            hasher.update(after);
        }
        _ => hasher.update(transport),
    }
    hasher.finalize()
}

/// Verifies the ICRC at the end of `transport_with_icrc` and returns the
/// transport packet without it.
///
/// # Errors
/// [`Error::Truncated`] if there are fewer than 4 bytes; the errors of
/// [`compute`]; [`Error::BadChecksum`] on a mismatch.
pub fn check<'a>(ip_and_udp_headers: &[u8], transport_with_icrc: &'a [u8]) -> Result<&'a [u8]> {
    let split = transport_with_icrc
        .len()
        .checked_sub(ICRC_LEN)
        .ok_or(Error::Truncated)?;
    let (transport, trailer) = transport_with_icrc.split_at(split);
    let expected = compute(ip_and_udp_headers, transport)?;
    if trailer == expected.to_le_bytes() {
        Ok(transport)
    } else {
        Err(Error::BadChecksum)
    }
}

/// Builds the IPv4 and UDP headers of a RoCEv2 datagram whose IP header is
/// not visible (kernel UDP sockets), for [`compute_v4`]: IHL 5, ident 0,
/// DF set, protocol UDP, lengths from `transport_len_with_icrc` (BTH through
/// ICRC). The masked fields hold arbitrary values.
///
/// # Errors
/// [`Error::Malformed`] if the length does not fit an IPv4 datagram.
pub fn pseudo_headers_v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    transport_len_with_icrc: usize,
) -> Result<[u8; V4_HEADERS_LEN]> {
    let udp = UdpRepr {
        src_port,
        dst_port,
        payload_len: transport_len_with_icrc,
    };
    let ip = Ipv4Repr {
        src,
        dst,
        protocol: ipv4::PROTOCOL_UDP,
        payload_len: udp.buffer_len(),
        ttl: 0,
        tos: 0,
        ident: 0,
        dont_frag: true,
    };
    let mut headers = [0; V4_HEADERS_LEN];
    let (ip_bytes, udp_bytes) = headers.split_at_mut(ipv4::HEADER_LEN);
    ip.emit(&mut Ipv4Packet::new_unchecked(ip_bytes))?;
    udp.emit(&mut UdpPacket::new_unchecked(udp_bytes))?;
    Ok(headers)
}

/// Builds the IPv6 and UDP headers of a RoCEv2 datagram whose IP header is
/// not visible, for [`compute_v6`]; see [`pseudo_headers_v4`].
///
/// # Errors
/// [`Error::Malformed`] if the length does not fit a UDP datagram.
pub fn pseudo_headers_v6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
    transport_len_with_icrc: usize,
) -> Result<[u8; V6_HEADERS_LEN]> {
    let udp = UdpRepr {
        src_port,
        dst_port,
        payload_len: transport_len_with_icrc,
    };
    let ip = Ipv6Repr {
        src,
        dst,
        next_header: ipv4::PROTOCOL_UDP,
        payload_len: udp.buffer_len(),
        hop_limit: 0,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut headers = [0; V6_HEADERS_LEN];
    let (ip_bytes, udp_bytes) = headers.split_at_mut(ipv6::HEADER_LEN);
    ip.emit(&mut Ipv6Packet::new_unchecked(ip_bytes))?;
    udp.emit(&mut UdpPacket::new_unchecked(udp_bytes))?;
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_equals_eight_ff_bytes() {
        let mut explicit = crc32fast::Hasher::new();
        explicit.update(&[0xff; 8]);
        explicit.update(b"rest");
        let mut seeded = crc32fast::Hasher::new_with_initial(SEED_AFTER_LRH);
        seeded.update(b"rest");
        assert_eq!(explicit.finalize(), seeded.finalize());
    }

    #[test]
    fn compute_rejects_odd_header_slices() {
        let v4 = pseudo_headers_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 2, 16).unwrap();
        assert!(compute(&v4, &[0; 12]).is_ok());
        assert_eq!(compute(&v4[..27], &[0; 12]), Err(Error::Malformed));
        assert_eq!(compute(&[], &[0; 12]), Err(Error::Malformed));
        let mut wrong_version = v4;
        wrong_version[0] = 0x65;
        assert_eq!(compute(&wrong_version, &[0; 12]), Err(Error::Malformed));
        let v6 = pseudo_headers_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 1, 2, 16).unwrap();
        assert!(compute(&v6, &[0; 12]).is_ok());
    }

    #[test]
    fn masked_fields_do_not_change_the_crc() {
        let headers =
            pseudo_headers_v4([198, 18, 0, 1].into(), [198, 18, 0, 2].into(), 5, 4791, 20).unwrap();
        let transport = [0x11u8; 16];
        let base = compute_v4(&headers, &transport);
        for at in [1, 8, 10, 11, 26, 27] {
            let mut changed = headers;
            changed[at] ^= 0x5a;
            assert_eq!(compute_v4(&changed, &transport), base, "header byte {at}");
        }
        let mut changed = transport;
        changed[4] ^= 0xc0;
        assert_eq!(compute_v4(&headers, &changed), base, "FECN/BECN");
        for at in [0, 4, 5, 9, 12, 19, 20, 24] {
            let mut changed = headers;
            changed[at] ^= 0x01;
            assert_ne!(compute_v4(&changed, &transport), base, "header byte {at}");
        }
        let mut changed = transport;
        changed[5] ^= 0x01;
        assert_ne!(compute_v4(&headers, &changed), base, "QPN");
    }

    #[test]
    fn v6_masks_class_flow_and_hop_limit_only() {
        let headers =
            pseudo_headers_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, 5, 4791, 20).unwrap();
        let transport = [0x22u8; 16];
        let base = compute_v6(&headers, &transport);
        let mut changed = headers;
        changed[0] = 0x6f;
        changed[1..4].copy_from_slice(&[0x12, 0x34, 0x56]);
        changed[7] = 9;
        changed[46] = 0xab;
        assert_eq!(compute_v6(&changed, &transport), base);
        let mut changed = headers;
        changed[6] = 6; // next header
        assert_ne!(compute_v6(&changed, &transport), base);
    }

    #[test]
    fn check_strips_or_rejects() {
        let headers =
            pseudo_headers_v4([198, 18, 0, 1].into(), [198, 18, 0, 2].into(), 5, 4791, 16).unwrap();
        let mut packet = vec![0x33u8; 12];
        let icrc = compute(&headers, &packet).unwrap();
        packet.extend_from_slice(&icrc.to_le_bytes());
        assert_eq!(check(&headers, &packet), Ok(&packet[..12]));
        packet[15] ^= 0x80;
        assert_eq!(check(&headers, &packet), Err(Error::BadChecksum));
        assert_eq!(check(&headers, &packet[..3]), Err(Error::Truncated));
    }

    #[test]
    fn short_transport_is_hashed_without_panicking() {
        let headers = pseudo_headers_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 2, 0).unwrap();
        for len in 0..6 {
            let _ = compute_v4(&headers, &[0u8; 6][..len]);
        }
    }

    #[test]
    fn pseudo_headers_follow_the_xrdma_convention() {
        let v4 = pseudo_headers_v4(
            [192, 0, 2, 1].into(),
            [192, 0, 2, 2].into(),
            0xc001,
            4791,
            36,
        )
        .unwrap();
        assert_eq!(v4[0], 0x45);
        assert_eq!(&v4[2..4], &64u16.to_be_bytes()); // 20 + 8 + 36
        assert_eq!(&v4[4..8], &[0x00, 0x00, 0x40, 0x00]); // ident 0, DF
        assert_eq!(v4[9], 17);
        assert_eq!(&v4[24..26], &44u16.to_be_bytes());
        assert_eq!(
            pseudo_headers_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 2, 65_508),
            Err(Error::Malformed)
        );
        let v6 = pseudo_headers_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 1, 2, 36).unwrap();
        assert_eq!(v6[0] >> 4, 6);
        assert_eq!(&v6[4..6], &44u16.to_be_bytes());
        assert_eq!(v6[6], 17);
        assert_eq!(
            pseudo_headers_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 1, 2, 65_528),
            Err(Error::Malformed)
        );
    }
}
