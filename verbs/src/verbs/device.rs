//! What a device and its one port offer: the attributes `ibv_query_device`,
//! `ibv_query_port` and `ibv_query_gid` report, derived from the link a backend opened.

use std::net::{IpAddr, Ipv6Addr};

use crate::net::LinkInfo;
use crate::wire::icrc::ICRC_LEN;

/// Headers that may precede the payload of a RoCEv2 packet in the worst case: IPv4, UDP,
/// BTH, AtomicETH (the longest extension header), and the ICRC after it.
const WORST_CASE_HEADERS: u32 = 20 + 8 + 12 + 28 + ICRC_LEN as u32;

/// An InfiniBand path MTU (`enum ibv_mtu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Mtu {
    /// 256 bytes.
    Mtu256 = 1,
    /// 512 bytes.
    Mtu512 = 2,
    /// 1024 bytes.
    Mtu1024 = 3,
    /// 2048 bytes.
    Mtu2048 = 4,
    /// 4096 bytes.
    Mtu4096 = 5,
}

impl Mtu {
    /// All path MTUs, smallest first.
    pub const ALL: [Mtu; 5] = [
        Mtu::Mtu256,
        Mtu::Mtu512,
        Mtu::Mtu1024,
        Mtu::Mtu2048,
        Mtu::Mtu4096,
    ];

    /// Payload bytes per packet.
    pub fn bytes(self) -> usize {
        128 << self as u32
    }

    /// The `enum ibv_mtu` value.
    pub fn from_raw(v: u32) -> Option<Mtu> {
        Mtu::ALL.into_iter().find(|m| *m as u32 == v)
    }

    /// The largest path MTU whose packets fit an IP MTU of `ip_mtu` bytes.
    pub fn largest_for(ip_mtu: u32) -> Option<Mtu> {
        Mtu::ALL
            .into_iter()
            .rev()
            .find(|m| m.bytes() as u32 + WORST_CASE_HEADERS <= ip_mtu)
    }
}

/// A RoCEv2 GID: an IPv6 address, IPv4 addresses mapped into it (`::ffff:a.b.c.d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    /// The GID of an interface address.
    pub fn from_ip(ip: IpAddr) -> Gid {
        match ip {
            IpAddr::V4(v4) => Gid(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => Gid(v6.octets()),
        }
    }

    /// The IP address this GID stands for (IPv4 for mapped GIDs).
    pub fn ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// True for the all-zero GID (an unset address vector).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

/// What RDMA atomics are atomic against (`enum ibv_atomic_cap`, with its values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AtomicCap {
    /// `IBV_ATOMIC_NONE`: no atomics.
    None = 0,
    /// `IBV_ATOMIC_HCA`: against other atomics through this device only.
    Hca = 1,
    /// `IBV_ATOMIC_GLOB`: also against the CPU's atomics on the same memory.
    Glob = 2,
}

/// Device attributes (`struct ibv_device_attr`), the limits xrdma enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAttr {
    /// Firmware version string.
    pub fw_ver: String,
    /// Node GUID, from the interface MAC (EUI-64).
    pub node_guid: u64,
    /// Largest memory region.
    pub max_mr_size: u64,
    /// Page sizes supported for memory regions.
    pub page_size_cap: u64,
    /// Queue pairs.
    pub max_qp: u32,
    /// Work requests per queue.
    pub max_qp_wr: u32,
    /// Scatter/gather entries per work request.
    pub max_sge: u32,
    /// Completion queues.
    pub max_cq: u32,
    /// Entries per completion queue.
    pub max_cqe: u32,
    /// Memory regions.
    pub max_mr: u32,
    /// Protection domains.
    pub max_pd: u32,
    /// Outstanding RDMA READ/atomic operations a QP may be the target of.
    pub max_qp_rd_atom: u32,
    /// Outstanding RDMA READ/atomic operations a QP may start.
    pub max_qp_init_rd_atom: u32,
    /// What the atomics are atomic against.
    pub atomic_cap: AtomicCap,
    /// Shared receive queues.
    pub max_srq: u32,
    /// Work requests per shared receive queue.
    pub max_srq_wr: u32,
    /// Scatter/gather entries per shared receive queue work request.
    pub max_srq_sge: u32,
    /// Address handles.
    pub max_ah: u32,
    /// Partition keys.
    pub max_pkeys: u16,
    /// Bytes that may be sent inline.
    pub max_inline_data: u32,
    /// Physical ports.
    pub phys_port_cnt: u8,
}

/// Port attributes (`struct ibv_port_attr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAttr {
    /// ACTIVE when the interface is up and running, else DOWN.
    pub active: bool,
    /// Largest path MTU the port supports.
    pub max_mtu: Mtu,
    /// Path MTU of the link as it is now.
    pub active_mtu: Mtu,
    /// Entries of the GID table.
    pub gid_tbl_len: u32,
    /// Largest message (bytes).
    pub max_msg_sz: u32,
    /// Entries of the P_Key table.
    pub pkey_tbl_len: u16,
}

/// Limits common to every xrdma device (the backend decides only MTU, GIDs and GUID).
pub(crate) fn device_attr(link: &LinkInfo) -> DeviceAttr {
    let mac = link.mac.map(|m| m.0).unwrap_or([0; 6]);
    // EUI-64 from the MAC, universal/local bit flipped, as RoCE devices derive it.
    let guid = [
        mac[0] ^ 2,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ];
    DeviceAttr {
        fw_ver: format!("xrdma {}", env!("CARGO_PKG_VERSION")),
        node_guid: u64::from_be_bytes(guid),
        max_mr_size: 1 << 40,
        page_size_cap: 0xffff_f000,
        max_qp: 1 << 16,
        max_qp_wr: 1 << 14,
        max_sge: 32,
        max_cq: 1 << 14,
        max_cqe: (1 << 22) - 1,
        max_mr: 1 << 20,
        max_pd: 1 << 16,
        max_qp_rd_atom: 128,
        max_qp_init_rd_atom: 128,
        // The responder performs atomics with the CPU's own atomic instructions on the
        // target's memory.
        atomic_cap: AtomicCap::Glob,
        max_srq: 1 << 12,
        max_srq_wr: 1 << 14,
        max_srq_sge: 27,
        max_ah: 1 << 16,
        max_pkeys: 1,
        max_inline_data: 400,
        phys_port_cnt: 1,
    }
}

/// The port of a link.
pub(crate) fn port_attr(link: &LinkInfo) -> PortAttr {
    let active_mtu = Mtu::largest_for(link.mtu).unwrap_or(Mtu::Mtu256);
    PortAttr {
        active: true,
        max_mtu: Mtu::Mtu4096.min(Mtu::largest_for(link.mtu).unwrap_or(Mtu::Mtu256)),
        active_mtu,
        gid_tbl_len: link.addrs.len().max(1) as u32,
        max_msg_sz: 1 << 31,
        pkey_tbl_len: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_mtu_follows_the_ip_mtu_like_rxe() {
        assert_eq!(Mtu::largest_for(1500), Some(Mtu::Mtu1024));
        assert_eq!(Mtu::largest_for(9000), Some(Mtu::Mtu4096));
        assert_eq!(Mtu::largest_for(4000), Some(Mtu::Mtu2048));
        assert_eq!(Mtu::largest_for(300), None);
        assert_eq!(Mtu::Mtu4096.bytes(), 4096);
        assert_eq!(Mtu::from_raw(3), Some(Mtu::Mtu1024));
        assert_eq!(Mtu::from_raw(6), None);
    }

    #[test]
    fn gids_map_ipv4_and_round_trip() {
        let g = Gid::from_ip("198.18.0.1".parse().unwrap());
        assert_eq!(&g.0[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(g.ip(), "198.18.0.1".parse::<IpAddr>().unwrap());
        let g6 = Gid::from_ip("2001:2::1".parse().unwrap());
        assert_eq!(g6.ip(), "2001:2::1".parse::<IpAddr>().unwrap());
        assert!(Gid([0; 16]).is_zero());
    }
}
