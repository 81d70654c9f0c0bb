//! A minimal classic-libpcap writer, so Wireshark can read emitted frames.

use std::io::{self, Write};

/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;

/// Writes `frames` as a classic pcap file (microsecond timestamps, native
/// little-endian, linktype 1), one second apart.
pub(super) fn write_pcap(out: &mut impl Write, frames: &[Vec<u8>]) -> io::Result<()> {
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?; // magic
    out.write_all(&2u16.to_le_bytes())?; // version major
    out.write_all(&4u16.to_le_bytes())?; // version minor
    out.write_all(&0i32.to_le_bytes())?; // thiszone
    out.write_all(&0u32.to_le_bytes())?; // sigfigs
    out.write_all(&65_535u32.to_le_bytes())?; // snaplen
    out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
    for (second, frame) in frames.iter().enumerate() {
        let len = u32::try_from(frame.len()).expect("frame fits pcap");
        let second = u32::try_from(second).expect("few frames");
        out.write_all(&second.to_le_bytes())?; // ts_sec
        out.write_all(&0u32.to_le_bytes())?; // ts_usec
        out.write_all(&len.to_le_bytes())?; // incl_len
        out.write_all(&len.to_le_bytes())?; // orig_len
        out.write_all(frame)?;
    }
    Ok(())
}

#[test]
fn pcap_layout() {
    let mut out = Vec::new();
    write_pcap(&mut out, &[vec![0xaa; 3]]).unwrap();
    assert_eq!(out.len(), 24 + 16 + 3);
    assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    assert_eq!(&out[20..24], &[1, 0, 0, 0]);
    assert_eq!(&out[32..40], &[3, 0, 0, 0, 3, 0, 0, 0]);
    assert_eq!(&out[40..], &[0xaa; 3]);
}
