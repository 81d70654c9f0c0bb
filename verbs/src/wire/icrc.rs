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
//! [`pseudo_headers_v4`]), or by solving for the identification, which
//! [`check_v4_any_ident`] does for senders that number their datagrams.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::bth::FECN_BECN_OFFSET;
use super::ipv4;
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

/// Where the identification lies in the headers [`compute_v4`] hashes.
pub(crate) const V4_IDENT: core::ops::Range<usize> = 4..6;

/// Verifies the ICRC of an IPv4 datagram whose identification field was not
/// seen, and returns the transport packet (without the ICRC) together with
/// the identification that makes the ICRC match.
///
/// A kernel UDP socket hides the IPv4 header, but the ICRC covers its
/// identification, which peers such as Linux rxe set to a counter even on
/// DF datagrams. `ip_and_udp_headers` is the header as the receiver rebuilds
/// it (see [`pseudo_headers_v4`]: identification 0, DF set); if the ICRC
/// matches as it is, this costs one CRC, the same as [`check`], and returns
/// that header's identification. Otherwise the identification is solved for:
/// the CRC is affine in the 16 identification bits, so the difference
/// between the received and the computed ICRC is the CRC (zero start, no
/// final inversion) of the two identification bytes' difference followed by
/// the bytes after them, all zero. Shifting that difference back over those
/// zero bytes (multiplying by `x^-8n` modulo the CRC polynomial, as
/// zlib's `crc32_combine` shifts forward) leaves the identification bytes'
/// difference, which must fit in 16 bits; then that identification, and only
/// it, matches. This costs a few hundred operations, whatever the length.
///
/// Accepting any identification weakens the check a little: a corrupted
/// packet passes if some identification makes its ICRC match, which happens
/// for one corruption pattern in 2^16 rather than one in 2^32.
///
/// # Errors
/// [`Error::Truncated`] if there are fewer than 4 bytes; [`Error::BadChecksum`]
/// if no identification makes the ICRC match.
pub fn check_v4_any_ident<'a>(
    ip_and_udp_headers: &[u8; V4_HEADERS_LEN],
    transport_with_icrc: &'a [u8],
) -> Result<(&'a [u8], u16)> {
    let split = transport_with_icrc
        .len()
        .checked_sub(ICRC_LEN)
        .ok_or(Error::Truncated)?;
    let (transport, trailer) = transport_with_icrc.split_at(split);
    let mut received = [0; ICRC_LEN];
    received.copy_from_slice(trailer);
    let delta = u32::from_le_bytes(received) ^ compute_v4(ip_and_udp_headers, transport);
    let ident = u16::from_be_bytes([
        ip_and_udp_headers[V4_IDENT.start],
        ip_and_udp_headers[V4_IDENT.start + 1],
    ]);
    if delta == 0 {
        return Ok((transport, ident));
    }
    // The identification's two bytes and every byte after them: the rest of
    // the headers and the transport packet.
    let shifted = V4_HEADERS_LEN - V4_IDENT.start + transport.len();
    let before = multiply_mod_p(delta, x_pow_minus_8n(shifted));
    // Feeding bytes b0, b1 to a zero register gives the same register as
    // feeding two zero bytes to the register b0 | b1 << 8; so the
    // identification bytes' difference is `before`, if that fits in 16 bits.
    if before >> 16 != 0 {
        return Err(Error::BadChecksum);
    }
    let ident_diff = u16::from_be_bytes([before as u8, (before >> 8) as u8]);
    Ok((transport, ident ^ ident_diff))
}

/// The reflected CRC-32 polynomial (bit 31 is the coefficient of x^0).
const POLY: u32 = 0xedb8_8320;

/// `a * b` modulo the CRC-32 polynomial, both in the reflected form the CRC
/// register uses (x^0 is bit 31), as zlib's `multmodp`.
const fn multiply_mod_p(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = 0;
    while bit < 32 {
        if a & (1 << (31 - bit)) != 0 {
            product ^= b;
        }
        // b *= x
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        bit += 1;
    }
    product
}

/// x^-1 modulo the CRC-32 polynomial: x * x^-1 = 1. The polynomial's x^0
/// term is 1, so x^-1 is the polynomial without it, divided by x: undoing
/// one `b *= x` step of [`multiply_mod_p`] on x^0 (bit 31).
const X_INVERSE: u32 = ((1 << 31) ^ POLY) << 1 | 1;

/// `X_MINUS_8_POW2[k]` = x^-(8 * 2^k): shifts back over 2^k zero bytes.
const X_MINUS_8_POW2: [u32; usize::BITS as usize] = {
    let mut table = [0; usize::BITS as usize];
    let mut p = X_INVERSE;
    let mut i = 0;
    while i < 3 {
        p = multiply_mod_p(p, p);
        i += 1;
    }
    let mut k = 0;
    while k < table.len() {
        table[k] = p;
        p = multiply_mod_p(p, p);
        k += 1;
    }
    table
};

/// x^-(8 n): multiplying a CRC register difference by it undoes feeding
/// `n` zero bytes.
fn x_pow_minus_8n(n: usize) -> u32 {
    let mut p = 1 << 31; // x^0
    let mut k = 0;
    let mut rest = n;
    while rest != 0 {
        if rest & 1 != 0 {
            p = multiply_mod_p(p, X_MINUS_8_POW2[k]);
        }
        rest >>= 1;
        k += 1;
    }
    p
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
    // Written out rather than emitted: this runs for every datagram of the `udp` backend,
    // and the fields an emitter would compute (the checksums) are masked.
    let udp_len =
        u16::try_from(transport_len_with_icrc + udp::HEADER_LEN).map_err(|_| Error::Malformed)?;
    let total_len = udp_len
        .checked_add(ipv4::HEADER_LEN as u16)
        .ok_or(Error::Malformed)?;
    let mut h = [0; V4_HEADERS_LEN];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h[6] = 0x40; // DF
    h[9] = ipv4::PROTOCOL_UDP;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h[20..22].copy_from_slice(&src_port.to_be_bytes());
    h[22..24].copy_from_slice(&dst_port.to_be_bytes());
    h[24..26].copy_from_slice(&udp_len.to_be_bytes());
    Ok(h)
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

    /// A sealed IPv4 datagram from 198.18.0.2 to 198.18.0.1 with identification `ident`:
    /// the headers as sent and the transport packet with its ICRC.
    fn v4_datagram_with_ident(ident: u16, transport: &[u8]) -> ([u8; V4_HEADERS_LEN], Vec<u8>) {
        let mut headers = pseudo_headers_v4(
            [198, 18, 0, 2].into(),
            [198, 18, 0, 1].into(),
            0xc0de,
            4791,
            transport.len() + ICRC_LEN,
        )
        .unwrap();
        headers[V4_IDENT].copy_from_slice(&ident.to_be_bytes());
        // What a sender puts in the masked fields does not matter; rxe's are these.
        headers[1] = 0x02; // ECT(0)
        headers[8] = 64; // TTL
        let mut packet = transport.to_vec();
        packet.extend_from_slice(&compute_v4(&headers, transport).to_le_bytes());
        (headers, packet)
    }

    /// What the receiver rebuilds for the datagram of [`v4_datagram_with_ident`].
    fn receiver_headers(packet: &[u8]) -> [u8; V4_HEADERS_LEN] {
        pseudo_headers_v4(
            [198, 18, 0, 2].into(),
            [198, 18, 0, 1].into(),
            0xc0de,
            4791,
            packet.len(),
        )
        .unwrap()
    }

    fn some_transport(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 0x64) as u8).collect()
    }

    #[test]
    fn x_inverse_undoes_a_multiplication_by_x() {
        let x = 1 << 30;
        assert_eq!(multiply_mod_p(x, X_INVERSE), 1 << 31);
        assert_eq!(
            multiply_mod_p(X_MINUS_8_POW2[0], x_pow_minus_8n(1)),
            x_pow_minus_8n(2)
        );
        assert_eq!(x_pow_minus_8n(0), 1 << 31);
    }

    #[test]
    fn shifting_back_undoes_zero_bytes() {
        // Two messages that differ in their first bytes only: their CRCs differ by the
        // difference fed through the zero bytes that follow it.
        for zeros in [0usize, 1, 5, 22, 1000, 4096] {
            let mut a = vec![0u8; 4 + zeros];
            let mut b = a.clone();
            a[..4].copy_from_slice(&[1, 2, 3, 4]);
            b[..4].copy_from_slice(&[9, 8, 7, 6]);
            let difference = crc32fast::hash(&a) ^ crc32fast::hash(&b);
            let at_start = crc32fast::hash(&a[..4]) ^ crc32fast::hash(&b[..4]);
            assert_eq!(
                multiply_mod_p(difference, x_pow_minus_8n(zeros)),
                at_start,
                "{zeros} zero bytes"
            );
        }
    }

    #[test]
    fn any_ident_check_accepts_ident_0_as_the_plain_check() {
        let transport = some_transport(40);
        let (headers, packet) = v4_datagram_with_ident(0, &transport);
        assert_eq!(check(&headers, &packet), Ok(&packet[..40]));
        assert_eq!(
            check_v4_any_ident(&receiver_headers(&packet), &packet),
            Ok((&packet[..40], 0))
        );
    }

    #[test]
    fn any_ident_check_finds_the_senders_ident() {
        let transport = some_transport(1024 + 12);
        let (headers, packet) = v4_datagram_with_ident(0x1234, &transport);
        let rebuilt = receiver_headers(&packet);
        assert_eq!(check(&rebuilt, &packet), Err(Error::BadChecksum));
        assert_eq!(check(&headers, &packet), Ok(&transport[..]));
        assert_eq!(
            check_v4_any_ident(&rebuilt, &packet),
            Ok((&transport[..], 0x1234))
        );
        // Solving starts from whatever identification the rebuilt header holds.
        let mut other = rebuilt;
        other[V4_IDENT].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(
            check_v4_any_ident(&other, &packet),
            Ok((&transport[..], 0x1234))
        );
        assert_eq!(
            check_v4_any_ident(&rebuilt, &packet[..3]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn any_ident_check_still_needs_the_rest_of_the_header_right() {
        let transport = some_transport(64);
        let (_, packet) = v4_datagram_with_ident(0x0001, &transport);
        let rebuilt = receiver_headers(&packet);
        for (at, flip) in [
            (6, 0x40),
            (9, 0x01),
            (12, 0x01),
            (19, 0x80),
            (20, 0x01),
            (23, 0x01),
        ] {
            let mut wrong = rebuilt;
            wrong[at] ^= flip;
            assert_eq!(
                check_v4_any_ident(&wrong, &packet),
                Err(Error::BadChecksum),
                "header byte {at}"
            );
        }
    }

    #[test]
    fn any_ident_check_catches_every_single_bit_error_in_a_jumbo_frame() {
        // Whether a corruption can pass for an identification depends only on its bits and
        // its distance from the identification, not on the packet or the identification:
        // this covers every single-bit error in every frame up to 9000 bytes.
        let transport = some_transport(9000 - V4_HEADERS_LEN - ICRC_LEN);
        let (_, packet) = v4_datagram_with_ident(0xbeef, &transport);
        let rebuilt = receiver_headers(&packet);
        let mut corrupted = packet.clone();
        for at in 0..packet.len() {
            if at == FECN_BECN_OFFSET {
                continue; // masked
            }
            for bit in 0..8 {
                corrupted[at] ^= 1 << bit;
                assert_eq!(
                    check_v4_any_ident(&rebuilt, &corrupted),
                    Err(Error::BadChecksum),
                    "byte {at} bit {bit}"
                );
                corrupted[at] ^= 1 << bit;
            }
        }
    }

    #[test]
    fn any_ident_check_catches_every_corrupted_byte_of_a_short_packet() {
        // Some byte values at some distances do pass for a wrong identification (one pattern
        // in 2^16; the first lies 93 bytes into the transport packet), so this covers the
        // first 90 bytes with all 255 corruptions each.
        let transport = some_transport(90 - ICRC_LEN);
        for ident in [0, 1, 0x1234, 0xffff] {
            let (_, packet) = v4_datagram_with_ident(ident, &transport);
            let rebuilt = receiver_headers(&packet);
            let mut corrupted = packet.clone();
            for at in (0..packet.len()).filter(|&at| at != FECN_BECN_OFFSET) {
                for flip in 1..=255u8 {
                    corrupted[at] ^= flip;
                    assert_eq!(
                        check_v4_any_ident(&rebuilt, &corrupted),
                        Err(Error::BadChecksum),
                        "ident {ident:#x}: byte {at} ^ {flip:#x}"
                    );
                    corrupted[at] ^= flip;
                }
            }
        }
    }

    #[test]
    fn any_ident_check_lets_one_corruption_in_2_16_pass() {
        // The limit the documentation states, at its first instance: 15 of the 255 values
        // XORed into transport byte 93 pass for another identification.
        let transport = some_transport(200);
        let (_, packet) = v4_datagram_with_ident(0x1234, &transport);
        let rebuilt = receiver_headers(&packet);
        let passing: Vec<u8> = (1..=255u8)
            .filter(|&flip| {
                let mut corrupted = packet.clone();
                corrupted[93] ^= flip;
                check_v4_any_ident(&rebuilt, &corrupted).is_ok()
            })
            .collect();
        assert_eq!(passing.len(), 15, "{passing:x?}");
        assert!(passing.contains(&0x0f), "{passing:x?}");
        let mut corrupted = packet.clone();
        corrupted[92] ^= 0x0f;
        assert_eq!(
            check_v4_any_ident(&rebuilt, &corrupted),
            Err(Error::BadChecksum)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_ident_check_finds_every_ident(
            ident: u16,
            transport in proptest::collection::vec(proptest::num::u8::ANY, 12..1100),
            corrupt_bit in proptest::num::usize::ANY,
        ) {
            let (_, packet) = v4_datagram_with_ident(ident, &transport);
            let rebuilt = receiver_headers(&packet);
            proptest::prop_assert_eq!(
                check_v4_any_ident(&rebuilt, &packet),
                Ok((&transport[..], ident))
            );
            // Any single-bit error outside the masked byte fails, whatever the ident.
            let mut corrupted = packet.clone();
            let mut bit = corrupt_bit % (corrupted.len() * 8);
            if bit / 8 == FECN_BECN_OFFSET {
                bit += 8;
            }
            corrupted[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert_eq!(
                check_v4_any_ident(&rebuilt, &corrupted),
                Err(Error::BadChecksum)
            );
        }
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
