//! xrdma: RDMA without RDMA hardware.
//!
//! RoCEv2 queue pairs emulated in user space over AF_XDP (or a kernel UDP socket, or a
//! simulated network). This facade crate re-exports the layers and holds the `xrdma` tool's
//! library side ([`perf`], [`devinfo`]).
//!
//! # Example
//!
//! Open a kernel-UDP endpoint on loopback and look at what it offers:
//!
//! ```
//! use xrdma::verbs::net::{self, udp::UdpConfig, BackendConfig};
//!
//! let mut config = UdpConfig::new("lo");
//! config.addr = Some("127.0.0.1".parse().unwrap());
//! config.port = 0; // any free port, so the example never collides with a running endpoint
//! let io = net::open(&BackendConfig::Udp(config)).unwrap();
//! assert_eq!(io.link().backend, net::BackendKind::Udp);
//! let ctx = xrdma::verbs::verbs::Context::new(io, Default::default()).unwrap();
//! let port = ctx.query_port(1).unwrap();
//! println!("{}", xrdma::devinfo::describe(ctx.link(), Some((ctx.query_device(), port))));
//! ```

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod devinfo;
pub mod perf;

/// rsockets: nearly-TCP streams over RC queue pairs, with rsocket's wire protocol.
pub use xrdma_rsocket as rsocket;
pub use xrdma_verbs as verbs;
/// The connection manager (`rdma_cm`): event channels, CM ids, listen, connect, accept.
pub use xrdma_verbs::cm;
