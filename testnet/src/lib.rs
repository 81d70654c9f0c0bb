//! Real network hosts for xrdma's tests: Linux network namespaces joined by
//! veth pairs, directly ([`Topology::pair`]) or through a Linux bridge that can
//! drop packets at random ([`Topology::switched`]).
//!
//! Everything needs root (to create namespaces) and the `ip` (iproute2) and
//! `ping` (iputils-ping) programs, plus `nft` (nftables) for lossy switches.
//! Without root, building fails with [`Error::NotRoot`], whose message says so.
//!
//! Addresses are IPv4 in 198.18.0.0/15 and, optionally, IPv6 in 2001:2::/48
//! (the benchmarking ranges). Nothing is ever configured in the caller's own
//! namespace: each veth pair is created with its ends directly in the target
//! namespaces.
//!
//! Code runs "on" a host through [`Netns::run`] (a thread that has entered the
//! namespace, for in-process sockets) or [`Netns::command`] (`ip netns exec`,
//! for external tools). Dropping a [`Topology`] deletes its namespaces, also
//! when a test panics; namespaces left by a killed test run are deleted the
//! next time a topology is built.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//! use xrdma_testnet::{Loss, Topology};
//!
//! let net = Topology::pair()?;
//! let (a, b) = (net.a(), net.b());
//! net.wait_reachable(a, b.ipv4(), Duration::from_secs(5))?;
//!
//! // A socket made inside `run` belongs to that host's namespace.
//! let listener = b.ns().run(|| TcpListener::bind((b.ipv4(), 0)))?;
//! let port = listener.local_addr()?.port();
//! std::thread::scope(|s| {
//!     s.spawn(|| {
//!         let (mut conn, _) = listener.accept().unwrap();
//!         conn.write_all(b"pong").unwrap();
//!     });
//!     let mut conn = a.ns().run(|| TcpStream::connect((b.ipv4(), port))).unwrap();
//!     let mut reply = [0; 4];
//!     conn.read_exact(&mut reply).unwrap();
//!     assert_eq!(&reply, b"pong");
//! });
//!
//! // External tools run inside with `command` or `sh`.
//! let routes = a.ns().sh("ip route")?;
//! assert!(routes.contains(a.iface()));
//!
//! // Three hosts behind a switch dropping 10% of RoCE v2 (UDP 4791) packets.
//! let lossy = Topology::switched(3, Loss::udp_port(0.1, 4791))?;
//! assert_eq!(lossy.hosts().len(), 3);
//! assert_eq!(lossy.drop_counter()?, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod alloc;
mod child;
mod cmd;
mod error;
mod netns;
pub mod rxe;
mod topology;

pub use child::{Server, text, wait_or_kill};
pub use error::Error;
pub use netns::Netns;
pub use rxe::{RxeConfig, RxePeer};
pub use topology::{Host, Loss, Topology, TopologyBuilder};

/// `program` if it is on the PATH, or a failure saying to install Debian's `packages`.
pub fn installed<'a>(program: &'a str, packages: &str) -> &'a str {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} not found: install it (apt-get install {packages}; scripts/setup.sh does)"
    );
    program
}

/// `relative` (say `examples/rc_pingpong` or `libxrdma.so`) in the target directory the
/// running test binary was built in (`target/<profile>/`); fails saying how to build it if
/// it is missing.
pub fn built(relative: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lies in target/<profile>/deps");
    let path = dir.join(relative);
    assert!(
        path.exists(),
        "{} missing: cargo test builds the examples; scripts/test.sh builds the workspace first",
        path.display()
    );
    path
}
