//! Helpers shared by the cross-module tests.

use crate::wire::TransportRepr;
use crate::wire::frame::{self, FrameRepr, IpRepr, ParsedFrame};

/// Decodes a hex string; panics on bad input (test data only).
pub(super) fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The outer headers of a parsed frame, as a repr to emit again.
pub(super) fn outer_repr(parsed: &ParsedFrame<'_>) -> FrameRepr {
    FrameRepr {
        eth: parsed.eth,
        ip: parsed.ip,
        udp: parsed.udp,
    }
}

/// What `emit_frame_headers` turns `ip` into: IPv4 with ident 0 and DF.
pub(super) fn normalized(ip: IpRepr) -> IpRepr {
    match ip {
        IpRepr::V4(v4) => IpRepr::V4(crate::wire::Ipv4Repr {
            ident: 0,
            dont_frag: true,
            ..v4
        }),
        v6 => v6,
    }
}

/// Emits `outer` around the raw transport bytes (BTH..pad) and seals it.
#[track_caller]
pub(super) fn emit_frame(outer: &FrameRepr, transport: &[u8]) -> Vec<u8> {
    assert_eq!(
        outer.transport_len(),
        Some(transport.len()),
        "UDP length vs transport"
    );
    let mut bytes = vec![0; outer.frame_len()];
    let offset = frame::emit_frame_headers(outer, &mut bytes).expect("emit headers");
    bytes[offset..offset + transport.len()].copy_from_slice(transport);
    frame::seal_frame(&mut bytes, outer.ip.version()).expect("seal");
    bytes
}

/// Emits a transport packet into a fresh buffer.
#[track_caller]
pub(super) fn emit_transport(repr: &TransportRepr, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0; repr.buffer_len(payload.len())];
    let len = repr.emit(payload, &mut bytes).expect("emit transport");
    assert_eq!(len, bytes.len());
    bytes
}

/// Parses `bytes` as a frame and a transport packet, then builds the same
/// frame again with xrdma's emitters.
#[track_caller]
pub(super) fn reemit(bytes: &[u8]) -> Vec<u8> {
    let parsed = frame::parse_frame(bytes).expect("parse frame");
    let (transport, payload) = TransportRepr::parse(parsed.transport).expect("parse transport");
    emit_frame(&outer_repr(&parsed), &emit_transport(&transport, payload))
}
