//! Tests that span several headers: ICRC known answers from an independent
//! implementation (scapy), Wireshark decoding of emitted frames, and
//! property tests that no input makes a parser panic.

mod cm_fuzz;
mod cm_tshark;
mod fuzz;
mod icrc_vectors;
mod pcap;
mod tshark;
mod util;
