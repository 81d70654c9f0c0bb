//! `xrdma devinfo`: what a device offers, in the spirit of `ibv_devinfo`.

use std::fmt::Write as _;
use std::net::IpAddr;

use xrdma_verbs::net::LinkInfo;
use xrdma_verbs::net::netlink::Netlink;
use xrdma_verbs::verbs::Mtu;
use xrdma_verbs::wire::MacAddr;

/// The largest InfiniBand path MTU (256..4096) whose packets fit the link's IP MTU, as
/// `(bytes, enum value)`; `None` if not even 256 fits.
pub fn active_mtu(link: &LinkInfo) -> Option<(u32, u8)> {
    Mtu::largest_for(link.mtu).map(|m| (m.bytes() as u32, m as u8))
}

/// The RoCEv2 GID of an address: IPv4 addresses are IPv4-mapped into IPv6.
pub fn gid(ip: &IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => *v6,
    }
}

/// A multi-line description of an opened device.
pub fn describe(link: &LinkInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "hca_id:\txrdma_{}", link.iface);
    let _ = writeln!(s, "\ttransport:\t\tInfiniBand (0)");
    let _ = writeln!(s, "\tlink_layer:\t\tEthernet");
    let _ = writeln!(s, "\tbackend:\t\t{}", link.backend);
    let _ = writeln!(s, "\tio_mode:\t\t{}", link.mode);
    let _ = writeln!(
        s,
        "\tinterface:\t\t{} (ifindex {})",
        link.iface, link.ifindex
    );
    if let Some(mac) = link.mac {
        let _ = writeln!(s, "\tmac:\t\t\t{mac}");
    }
    let _ = writeln!(s, "\tip_mtu:\t\t\t{}", link.mtu);
    match active_mtu(link) {
        Some((bytes, e)) => {
            let _ = writeln!(s, "\tactive_mtu:\t\t{bytes} ({e})");
        }
        None => {
            let _ = writeln!(s, "\tactive_mtu:\t\tnone (IP MTU below 256 + headers)");
        }
    }
    let _ = writeln!(s, "\tqueues:\t\t\t{}", link.queues);
    let _ = writeln!(s, "\tudp_port:\t\t{}", link.port);
    for (i, ip) in link.addrs.iter().enumerate() {
        let version = if ip.is_ipv4() {
            "RoCE v2, IPv4"
        } else {
            "RoCE v2, IPv6"
        };
        let _ = writeln!(s, "\tGID[{i:>3}]:\t\t{}, {version} ({ip})", gid(ip));
    }
    s
}

/// One line per interface of this network namespace, for `xrdma devinfo` without
/// `--iface`: what could be opened, without opening (and attaching to) anything.
pub fn list_interfaces() -> std::io::Result<String> {
    let mut nl = Netlink::open()?;
    let mut s = String::new();
    for link in nl.links()? {
        let addrs: Vec<String> = nl
            .addresses(link.index)?
            .iter()
            .map(|(ip, len)| format!("{ip}/{len}"))
            .collect();
        let _ = writeln!(
            s,
            "xrdma_{:<12} ifindex {:<3} mtu {:<5} mac {} queues {} {} {}",
            link.name,
            link.index,
            link.mtu,
            MacAddr(link.mac),
            link.num_rx_queues,
            if link.up { "up" } else { "down" },
            if addrs.is_empty() {
                "(no address)".to_string()
            } else {
                addrs.join(" ")
            },
        );
    }
    s.push_str("open one with: xrdma devinfo --iface NAME [--backend xdp|udp]\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xrdma_verbs::net::{BackendKind, IoMode};

    fn link(mtu: u32) -> LinkInfo {
        LinkInfo {
            backend: BackendKind::Udp,
            mode: IoMode::Kernel,
            iface: "veth0".into(),
            ifindex: 3,
            mac: None,
            mtu,
            addrs: vec!["198.18.0.1".parse().unwrap(), "2001:2::1".parse().unwrap()],
            port: 4791,
            queues: 1,
        }
    }

    #[test]
    fn active_mtu_matches_what_rxe_reports_for_common_link_mtus() {
        assert_eq!(active_mtu(&link(1500)), Some((1024, 3)));
        assert_eq!(active_mtu(&link(9000)), Some((4096, 5)));
        assert_eq!(active_mtu(&link(4200)), Some((4096, 5)));
        assert_eq!(active_mtu(&link(4000)), Some((2048, 4)));
        assert_eq!(active_mtu(&link(300)), None);
    }

    #[test]
    fn gids_are_ipv4_mapped() {
        let text = describe(&link(1500));
        assert!(text.contains("::ffff:198.18.0.1"), "{text}");
        assert!(text.contains("2001:2::1, RoCE v2, IPv6"), "{text}");
        assert!(text.contains("hca_id:\txrdma_veth0"));
    }
}
