//! The QP attributes of a CM id's connection (`rdma_init_qp_attr`), and the transitions
//! librdmacm makes on the application's behalf.

use super::device::Device;
use super::id::{IdState, PortSpace, UDP_QKEY, errno};
use crate::verbs::{
    AccessFlags, AhAttr, AttrMask, Error, Gid, Mtu, QpAttr, QpHandle, QpState, QpType,
};

/// The largest RoCE path MTU the link carries (`iboe_get_mtu`).
pub(super) fn path_mtu(device: &Device) -> Mtu {
    let room = device
        .ctx
        .link()
        .mtu
        .saturating_sub(20 + 8 + 12 + 16 + 4 + 40);
    match room {
        4096.. => Mtu::Mtu4096,
        2048.. => Mtu::Mtu2048,
        1024.. => Mtu::Mtu1024,
        512.. => Mtu::Mtu512,
        _ => Mtu::Mtu256,
    }
}

pub(super) fn qp_attr_for(
    st: &IdState,
    ps: PortSpace,
    qp_type: QpType,
    state: QpState,
) -> Result<(QpAttr, AttrMask), Error> {
    let mut attr = QpAttr::new(state);
    let mut mask = AttrMask::STATE;
    match (qp_type, state) {
        (QpType::Ud, QpState::Init) => {
            attr.qkey = if ps == PortSpace::Udp { UDP_QKEY } else { 0 };
            attr.port_num = 1;
            mask |= AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY;
        }
        (QpType::Ud, QpState::Rtr) => {}
        (QpType::Ud, QpState::Rts) => mask |= AttrMask::SQ_PSN,
        (_, QpState::Init) => {
            attr.port_num = 1;
            attr.qp_access_flags = if st.comm.is_some() {
                access_for(st.responder_resources)
            } else {
                AccessFlags::empty()
            };
            mask |= AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::ACCESS_FLAGS;
        }
        (_, QpState::Rtr) => {
            let (Some(device), Some(src), Some(dst)) = (&st.device, st.src, st.dst) else {
                return Err(errno(libc::EINVAL));
            };
            if st.comm.is_none() {
                return Err(errno(libc::EINVAL));
            }
            let sgid_index = device
                .ctx
                .link()
                .addrs
                .iter()
                .position(|a| *a == src.ip())
                .unwrap_or(0) as u8;
            attr.ah_attr = Some(AhAttr {
                sgid_index,
                hop_limit: 64,
                traffic_class: st.tos,
                ..AhAttr::new(Gid::from_ip(dst.ip()))
            });
            attr.path_mtu = st.path_mtu;
            attr.dest_qp_num = st.peer_qpn.value();
            attr.rq_psn = st.our_psn.value();
            attr.max_dest_rd_atomic = st.responder_resources;
            attr.min_rnr_timer = 0;
            mask |= AttrMask::AV
                | AttrMask::PATH_MTU
                | AttrMask::DEST_QPN
                | AttrMask::RQ_PSN
                | AttrMask::MAX_DEST_RD_ATOMIC
                | AttrMask::MIN_RNR_TIMER;
        }
        (_, QpState::Rts) => {
            if st.comm.is_none() {
                return Err(errno(libc::EINVAL));
            }
            attr.sq_psn = st.peer_psn.value();
            attr.timeout = st.ack_timeout;
            attr.retry_cnt = st.retry_count;
            attr.rnr_retry = st.rnr_retry_count;
            attr.max_rd_atomic = st.initiator_depth;
            mask |= AttrMask::SQ_PSN
                | AttrMask::TIMEOUT
                | AttrMask::RETRY_CNT
                | AttrMask::RNR_RETRY
                | AttrMask::MAX_QP_RD_ATOMIC;
        }
        _ => return Err(errno(libc::EINVAL)),
    }
    Ok((attr, mask))
}

/// What the peer may do to our memory once connected (the kernel CM's INIT attributes).
fn access_for(responder_resources: u8) -> AccessFlags {
    if responder_resources > 0 {
        AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_ATOMIC
    } else {
        AccessFlags::REMOTE_WRITE
    }
}

/// INIT (again, with the connection's access) → RTR → RTS, as librdmacm does before it
/// sends the REP or the RTU.
pub(super) fn bring_up(qp: &QpHandle, st: &IdState) -> Result<(), Error> {
    let (ps, qp_type) = (PortSpace::Tcp, QpType::Rc);
    for state in [QpState::Init, QpState::Rtr, QpState::Rts] {
        let (attr, mask) = qp_attr_for(st, ps, qp_type, state)?;
        qp.modify(&attr, mask)?;
    }
    Ok(())
}

pub(super) trait MinIb {
    fn min_ib(self, ib: u8) -> Mtu;
}

impl MinIb for Mtu {
    /// The smaller of this MTU and one in IB encoding (an unknown code leaves this one).
    fn min_ib(self, ib: u8) -> Mtu {
        let theirs = match ib {
            1 => Mtu::Mtu256,
            2 => Mtu::Mtu512,
            3 => Mtu::Mtu1024,
            4 => Mtu::Mtu2048,
            5 => Mtu::Mtu4096,
            _ => return self,
        };
        if (theirs as u8) < (self as u8) {
            theirs
        } else {
            self
        }
    }
}
