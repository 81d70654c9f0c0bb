//! xrdma-verbs: RoCEv2 verbs in user space, over AF_XDP, kernel UDP or a simulated network.
//!
//! Layers, dependencies pointing down only:
//!
//! | module | owns | I/O |
//! |---|---|---|
//! | [`wire`] | RoCEv2 codecs: Ethernet, IPv4/IPv6, UDP, BTH and extension headers, ICRC | none |
//! | [`engine`] | transport logic without I/O (UD so far) | none |
//! | [`net`] | one [`net::FrameIo`] trait and its `xdp`, `udp` and `sim` backends | yes |
//! | [`verbs`] | context, PD, MR, CQ, channel, AH, QP; progress (inline and a helper thread) | through `net` |
//! | [`rng`] | the seeded generator behind every random choice | none |
//!
//! The verbs API is in [`verbs`], with a UD example there.
//!
//! # Example
//!
//! Two endpoints on a simulated network exchange one transport packet:
//!
//! ```
//! use xrdma_verbs::net::{sim::{self, SimConfig, SimNetwork}, FrameIo, TxMeta, send_copy};
//!
//! let net = SimNetwork::new(SimConfig::default());
//! let mut a = net.endpoint(sim::host_addr(1)).unwrap();
//! let mut b = net.endpoint(sim::host_addr(2)).unwrap();
//! // A BTH-only packet: UD SEND_ONLY needs a DETH too, but the net layer only checks the BTH.
//! let mut bth = [0u8; 12];
//! bth[0] = 0x64;
//! send_copy(&mut a, &TxMeta::to(sim::host_addr(2), 0xc000), &bth).unwrap();
//! net.advance(std::time::Duration::from_millis(1));
//! let mut got = Vec::new();
//! b.recv(8, &mut |_, packet| got.extend_from_slice(packet)).unwrap();
//! assert_eq!(got, bth);
//! ```
//!
//! # Threads
//!
//! A backend is `Send` and driven through `&mut self` by one thread at a time. A
//! [`net::sim::SimNetwork`] handle may be cloned and used from any thread.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cm;
pub mod devices;
pub mod engine;
pub mod net;
pub mod rng;
pub mod verbs;
pub mod wire;
