//! `xrdma devinfo`: what a device offers, in the spirit of `ibv_devinfo`.

use std::fmt::Write as _;
use std::net::IpAddr;

use xrdma_verbs::net::LinkInfo;
use xrdma_verbs::net::netlink::Netlink;
use xrdma_verbs::verbs::{DeviceAttr, Mtu, PortAttr};
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

/// A GUID as ibv_devinfo prints it: four groups of four hex digits.
fn guid(g: u64) -> String {
    let b = g.to_be_bytes();
    format!(
        "{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

/// A multi-line description of an opened device, with its verbs attributes if given.
pub fn describe(link: &LinkInfo, verbs: Option<(&DeviceAttr, &PortAttr)>) -> String {
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
    if let Some((device, port)) = verbs {
        let _ = writeln!(s, "\tfw_ver:\t\t\t{}", device.fw_ver);
        let _ = writeln!(s, "\tnode_guid:\t\t{}", guid(device.node_guid));
        let _ = writeln!(s, "\tphys_port_cnt:\t\t{}", device.phys_port_cnt);
        for (name, value) in [
            ("max_mr_size", format!("0x{:x}", device.max_mr_size)),
            ("page_size_cap", format!("0x{:x}", device.page_size_cap)),
            ("max_qp", device.max_qp.to_string()),
            ("max_qp_wr", device.max_qp_wr.to_string()),
            ("max_sge", device.max_sge.to_string()),
            ("max_cq", device.max_cq.to_string()),
            ("max_cqe", device.max_cqe.to_string()),
            ("max_mr", device.max_mr.to_string()),
            ("max_pd", device.max_pd.to_string()),
            ("max_qp_rd_atom", device.max_qp_rd_atom.to_string()),
            (
                "max_qp_init_rd_atom",
                device.max_qp_init_rd_atom.to_string(),
            ),
            ("max_srq", device.max_srq.to_string()),
            ("max_srq_wr", device.max_srq_wr.to_string()),
            ("max_srq_sge", device.max_srq_sge.to_string()),
            ("max_ah", device.max_ah.to_string()),
            ("max_pkeys", device.max_pkeys.to_string()),
            ("max_inline_data", device.max_inline_data.to_string()),
        ] {
            let _ = writeln!(s, "\t{:<24}{value}", format!("{name}:"));
        }
        let _ = writeln!(s, "\t\tport:\t1");
        let state = if port.active {
            "PORT_ACTIVE (4)"
        } else {
            "PORT_DOWN (1)"
        };
        let _ = writeln!(s, "\t\t\tstate:\t\t\t{state}");
        let _ = writeln!(
            s,
            "\t\t\tmax_mtu:\t\t{} ({})",
            port.max_mtu.bytes(),
            port.max_mtu as u32
        );
        let _ = writeln!(
            s,
            "\t\t\tactive_mtu:\t\t{} ({})",
            port.active_mtu.bytes(),
            port.active_mtu as u32
        );
        let _ = writeln!(s, "\t\t\tmax_msg_sz:\t\t0x{:x}", port.max_msg_sz);
        let _ = writeln!(s, "\t\t\tgid_tbl_len:\t\t{}", port.gid_tbl_len);
        let _ = writeln!(s, "\t\t\tpkey_tbl_len:\t\t{}", port.pkey_tbl_len);
    }
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
        let text = describe(&link(1500), None);
        assert!(text.contains("::ffff:198.18.0.1"), "{text}");
        assert!(text.contains("2001:2::1, RoCE v2, IPv6"), "{text}");
        assert!(text.contains("hca_id:\txrdma_veth0"));
    }
}
