//! The connection manager, as librdmacm presents it (`rdma_cm`): event channels, CM ids,
//! address and route resolution, listening, connecting and accepting, over the IB CM
//! protocol that Linux speaks on RoCEv2 ([`crate::engine::cm`]).
//!
//! Every context the connection manager uses is a [`Device`] with an agent on QP1 that
//! sends and receives the CM's MADs through the context's backend, like any QP's traffic.
//! Contexts become devices by [`add_device`], or on demand, through the opener set by
//! [`set_device_opener`], when an address is routed through an interface that has none.
//!
//! # Threads and locks
//!
//! Ids, channels and devices are `Send + Sync`. Events are delivered on the channel of the
//! id they are about (a CONNECT_REQUEST on the listener's), by whichever thread makes the
//! device's progress; [`EventChannel::get_event`] blocks until one comes, or fails with
//! `WouldBlock` on a non-blocking channel.
//!
//! # Example
//!
//! A connection between two contexts of a simulated network:
//!
//! ```
//! use std::net::SocketAddr;
//! use xrdma_verbs::cm::*;
//! use xrdma_verbs::net::sim::{self, SimConfig, SimNetwork};
//! use xrdma_verbs::verbs::{Context, ContextConfig};
//!
//! // Datagrams arrive at once: the simulator's virtual time need not move.
//! let net = SimNetwork::new(SimConfig { delay: std::time::Duration::ZERO, ..SimConfig::default() });
//! let open = |n| Context::new(Box::new(net.endpoint(sim::host_addr(n)).unwrap()),
//!                             ContextConfig::seeded(n as u64)).unwrap();
//! let (a, b) = (open(201), open(202));
//! add_device(&a).unwrap();
//! add_device(&b).unwrap();
//!
//! let server_ch = EventChannel::new().unwrap();
//! let listener = CmId::new(&server_ch, PortSpace::Tcp);
//! listener.bind_addr(SocketAddr::new(sim::host_addr(202).ip(), 7471)).unwrap();
//! listener.listen(8).unwrap();
//!
//! let client_ch = EventChannel::new().unwrap();
//! let client = CmId::new(&client_ch, PortSpace::Tcp);
//! // Both devices are in this process: say which one the client uses.
//! let src = SocketAddr::new(sim::host_addr(201).ip(), 0);
//! client.resolve_addr(Some(src), SocketAddr::new(sim::host_addr(202).ip(), 7471)).unwrap();
//! assert_eq!(client_ch.get_event().unwrap().kind, EventKind::AddrResolved);
//! client.resolve_route().unwrap();
//! assert_eq!(client_ch.get_event().unwrap().kind, EventKind::RouteResolved);
//! // No QP: the application completes the connection itself with `establish`.
//! client.connect(&ConnParam { qp_num: 0x99, ..ConnParam::default() }).unwrap();
//!
//! let request = server_ch.get_event().unwrap();
//! assert_eq!(request.kind, EventKind::ConnectRequest);
//! request.id.accept(Some(&ConnParam { qp_num: 0x77, ..ConnParam::default() })).unwrap();
//! assert_eq!(client_ch.get_event().unwrap().kind, EventKind::ConnectResponse);
//! client.establish().unwrap();
//! assert_eq!(server_ch.get_event().unwrap().kind, EventKind::Established);
//! client.destroy();
//! request.id.destroy();
//! listener.destroy();
//! ```

mod addrinfo;
mod agent;
mod device;
mod event;
mod handlers;
mod id;
mod ports;
mod qp_attr;

pub use addrinfo::{AddrInfo, getaddrinfo};
pub use device::{Device, DeviceOpener, add_device, devices, remove_device, set_device_opener};
pub use event::{ConnParam, Event, EventChannel, EventKind, EventParam, UdParam};
pub use id::{CmId, PortSpace, UDP_QKEY};
