//! Address handles (`ibv_create_ah`): where a UD send goes.

use std::net::SocketAddr;

use super::device::Gid;
use super::{Error, Pd};

/// Address attributes (`struct ibv_ah_attr` with its GRH), as RoCE uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AhAttr {
    /// Destination GID: the peer's IP address (IPv4 mapped into IPv6).
    pub dgid: Gid,
    /// Index of our GID to send from.
    pub sgid_index: u8,
    /// IP hop limit / TTL.
    pub hop_limit: u8,
    /// IP traffic class / TOS.
    pub traffic_class: u8,
    /// Port number (always 1).
    pub port_num: u8,
}

impl AhAttr {
    /// Attributes for reaching `dgid` from GID index 0 on port 1, with hop limit 64 and
    /// traffic class 0, as rdma-core's pingpong examples set them; change fields with
    /// struct update syntax (`AhAttr { sgid_index: 1, ..AhAttr::new(gid) }`).
    pub fn new(dgid: Gid) -> AhAttr {
        AhAttr {
            dgid,
            sgid_index: 0,
            hop_limit: 64,
            traffic_class: 0,
            port_num: 1,
        }
    }
}

/// An address handle.
#[derive(Debug, Clone)]
pub struct AddressHandle {
    pub(crate) dest: SocketAddr,
    pub(crate) attr: AhAttr,
    _pd: Pd,
}

impl AddressHandle {
    pub(crate) fn new(pd: &Pd, attr: &AhAttr) -> Result<Self, Error> {
        if attr.port_num != 1 {
            return Err(Error::invalid("port_num must be 1"));
        }
        if attr.dgid.is_zero() {
            return Err(Error::invalid(
                "RoCE address handles need a destination GID",
            ));
        }
        let ctx = pd.context();
        if usize::from(attr.sgid_index) >= ctx.link().addrs.len() {
            return Err(Error::invalid("sgid_index is past the GID table"));
        }
        let dest = SocketAddr::new(attr.dgid.ip(), ctx.link().port);
        Ok(AddressHandle {
            dest,
            attr: *attr,
            _pd: pd.clone(),
        })
    }

    /// The attributes the handle was created with.
    pub fn attr(&self) -> &AhAttr {
        &self.attr
    }
}
