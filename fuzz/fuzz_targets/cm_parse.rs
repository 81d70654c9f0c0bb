//! Feeds arbitrary bytes to the CM parsers: as a whole MAD into
//! `CmMessage::parse`, as the body behind a valid CM header (the first byte
//! picks the attribute, so the body parsers run on every input), and as
//! REQ private data into `CmaHeaderRepr::parse`. Whatever parses must
//! re-emit to bytes that parse to the same value.
//!
//! Run from the repository root:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run cm_parse -- -max_total_time=30`
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrdma_verbs::wire::cm::CmMessage;
use xrdma_verbs::wire::cma::{CMA_HEADER_LEN, CmaHeaderRepr};
use xrdma_verbs::wire::mad::{MAD_BODY_LEN, MAD_HEADER_LEN, MAD_LEN, MadHeaderRepr, MadPacket};

/// Parses `mad`; if it parses, checks that it re-emits to the same message.
fn check_mad(mad: &[u8]) {
    if let Ok((header, message)) = CmMessage::parse(mad) {
        let mut out = [0u8; MAD_LEN];
        message
            .emit(header.tid, &mut out)
            .expect("a parsed message emits");
        let (_, reparsed) = CmMessage::parse(&out).expect("an emitted message parses");
        assert_eq!(reparsed, message);
    }
}

fuzz_target!(|data: &[u8]| {
    check_mad(data);

    if let Some((&selector, body)) = data.split_first() {
        // Attributes 0x0f..=0x1a: one below REQ, the nine handled, LAP, APR.
        let attr_id = 0x0f + u16::from(selector % 12);
        let mut mad = [0u8; MAD_LEN];
        let len = body.len().min(MAD_BODY_LEN);
        mad[MAD_HEADER_LEN..MAD_HEADER_LEN + len].copy_from_slice(&body[..len]);
        MadHeaderRepr::cm(attr_id, 1)
            .emit(&mut MadPacket::new_unchecked(&mut mad[..]))
            .expect("a MAD-sized buffer");
        check_mad(&mad);
    }

    if let Ok(repr) = CmaHeaderRepr::parse(data) {
        let mut out = [0u8; CMA_HEADER_LEN];
        repr.emit(&mut out).expect("a parsed header emits");
        assert_eq!(CmaHeaderRepr::parse(&out), Ok(repr));
    }
});
