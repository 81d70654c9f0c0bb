//! `rdma_getaddrinfo` for Rust: the addresses a name and service stand for, each with the
//! port space and QP type an id for it takes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use super::PortSpace;
use crate::verbs::QpType;

/// One answer of [`getaddrinfo`] (`struct rdma_addrinfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrInfo {
    /// The address to bind and listen on (`RAI_PASSIVE`).
    pub src: Option<SocketAddr>,
    /// The address to connect to.
    pub dst: Option<SocketAddr>,
    /// The port space of an id for it.
    pub port_space: PortSpace,
    /// The QP type of an id for it.
    pub qp_type: QpType,
}

/// Resolves `node` (a name or an address; none for a passive wildcard) and `service` (a
/// port number) as `rdma_getaddrinfo` does, through the system's resolver: for `passive`,
/// addresses to listen on, else addresses to connect to.
///
/// # Errors
/// `InvalidInput` for a service that is not a port number, or an active lookup without a
/// node; the resolver's error otherwise.
pub fn getaddrinfo(
    node: Option<&str>,
    service: &str,
    passive: bool,
    port_space: PortSpace,
) -> io::Result<Vec<AddrInfo>> {
    let port: u16 = service.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the service must be a port number",
        )
    })?;
    let addrs: Vec<SocketAddr> = match node {
        Some(node) => (node, port).to_socket_addrs()?.collect(),
        None if passive => vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)],
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connecting needs a node to connect to",
            ));
        }
    };
    let mut out: Vec<AddrInfo> = Vec::new();
    for a in addrs {
        let info = AddrInfo {
            src: passive.then_some(a),
            dst: (!passive).then_some(a),
            port_space,
            qp_type: port_space.qp_type(),
        };
        if !out.contains(&info) {
            out.push(info);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_passive_lookups() {
        let a = getaddrinfo(Some("198.18.0.1"), "7471", false, PortSpace::Tcp).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].dst, Some("198.18.0.1:7471".parse().unwrap()));
        assert_eq!((a[0].src, a[0].qp_type), (None, QpType::Rc));
        let p = getaddrinfo(None, "7174", true, PortSpace::Udp).unwrap();
        assert_eq!(p[0].src, Some("0.0.0.0:7174".parse().unwrap()));
        assert_eq!(p[0].qp_type, QpType::Ud);
        let v6 = getaddrinfo(Some("::1"), "1", false, PortSpace::Tcp).unwrap();
        assert!(v6[0].dst.unwrap().is_ipv6());
    }

    #[test]
    fn bad_services_and_missing_nodes_are_refused() {
        let e = getaddrinfo(Some("198.18.0.1"), "http", false, PortSpace::Tcp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = getaddrinfo(None, "1", false, PortSpace::Tcp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
