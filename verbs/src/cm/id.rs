//! CM ids (`struct rdma_cm_id`): binding, address and route resolution, listening,
//! connecting, accepting, rejecting, disconnecting, and the id's QP, with librdmacm's
//! semantics over the IB CM of [`crate::engine::cm`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::agent::Agent;
use super::device::{self, Device};
use super::event::{ConnParam, EventChannel, EventKind, EventParam};
use super::ports::ports;
use super::qp_attr::{bring_up, path_mtu, qp_attr_for};
use crate::engine::cm::{AcceptParams, CmError, ConnectParams};
use crate::verbs::{
    AccessFlags, AttrMask, Error, Mtu, Pd, QpAttr, QpHandle, QpInitAttr, QpState, QpType, QueuePair,
};
use crate::wire::cm::{CommId, ServiceId};
use crate::wire::cma::{CMA_HEADER_LEN, CmaHeaderRepr};
use crate::wire::{Psn, Qkey, Qpn};

/// Port spaces (`enum rdma_port_space`): the high half of a service ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum PortSpace {
    /// IPoIB.
    Ipoib = 0x0002,
    /// Reliable connections addressed like TCP.
    Tcp = 0x0106,
    /// Datagrams addressed like UDP.
    Udp = 0x0111,
    /// IB native (any QP type).
    Ib = 0x013f,
}

impl PortSpace {
    /// The port space of librdmacm's number.
    pub fn from_raw(raw: u32) -> Option<PortSpace> {
        Some(match raw {
            0x0002 => PortSpace::Ipoib,
            0x0106 => PortSpace::Tcp,
            0x0111 => PortSpace::Udp,
            0x013f => PortSpace::Ib,
            _ => return None,
        })
    }

    /// The QP type ids of this port space use.
    pub fn qp_type(self) -> QpType {
        match self {
            PortSpace::Udp | PortSpace::Ipoib => QpType::Ud,
            PortSpace::Tcp | PortSpace::Ib => QpType::Rc,
        }
    }
}

/// The Q_Key of UD QPs in the UDP port space (`RDMA_UDP_QKEY`).
pub const UDP_QKEY: u32 = 0x0123_4567;

/// Local ACK timeout of connections the CM sets up (4.096 µs × 2^14 ≈ 67 ms).
pub(super) const ACK_TIMEOUT: u8 = 14;

/// Where an id is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    Bound,
    AddrResolved,
    RouteResolved,
    Listening,
    Connecting,
    /// Passive: CONNECT_REQUEST delivered, not yet accepted.
    Requested,
    /// Active: REP received, no QP: waiting for `establish`.
    Responded,
    Connected,
    Disconnected,
}

pub(crate) struct IdInner {
    pub(super) ps: PortSpace,
    pub(super) qp_type: QpType,
    pub(super) channel: Mutex<EventChannel>,
    pub(super) st: Mutex<IdState>,
    pub(super) destroyed: AtomicBool,
    user: AtomicUsize,
}

pub(super) struct IdState {
    pub(super) phase: Phase,
    pub(super) src: Option<SocketAddr>,
    pub(super) dst: Option<SocketAddr>,
    pub(super) device: Option<Device>,
    pub(super) comm: Option<CommId>,
    /// The services this id listens on, and on which devices.
    pub(super) listening: Vec<(Device, ServiceId)>,
    pub(super) qp: Option<QpHandle>,
    pub(super) reuse_addr: bool,
    pub(super) tos: u8,
    pub(super) ack_timeout: u8,
    /// The first PSN we receive (our REQ's or REP's Starting PSN).
    pub(super) our_psn: Psn,
    /// The first PSN we send (the peer's Starting PSN).
    pub(super) peer_psn: Psn,
    pub(super) peer_qpn: Qpn,
    pub(super) responder_resources: u8,
    pub(super) initiator_depth: u8,
    pub(super) retry_count: u8,
    pub(super) rnr_retry_count: u8,
    pub(super) path_mtu: Mtu,
}

/// A CM id (`struct rdma_cm_id`). Cloning gives another handle to the same id; it is
/// destroyed by [`CmId::destroy`], not by dropping handles.
#[derive(Clone)]
pub struct CmId {
    pub(crate) inner: Arc<IdInner>,
}

impl std::fmt::Debug for CmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.st.lock();
        f.debug_struct("CmId")
            .field("ps", &self.inner.ps)
            .field("phase", &st.phase)
            .field("src", &st.src)
            .field("dst", &st.dst)
            .finish()
    }
}

/// An errno-carrying CM error: what librdmacm sets errno to.
pub(super) fn errno(e: i32) -> Error {
    Error::Cm(e)
}

impl CmId {
    /// A new id reporting to `channel` (`rdma_create_id`).
    pub fn new(channel: &EventChannel, ps: PortSpace) -> CmId {
        CmId::with_type(channel, ps, ps.qp_type())
    }

    /// A new id of an explicit QP type (`rdma_create_id2`).
    pub fn with_type(channel: &EventChannel, ps: PortSpace, qp_type: QpType) -> CmId {
        CmId {
            inner: Arc::new(IdInner {
                ps,
                qp_type,
                channel: Mutex::new(channel.clone()),
                st: Mutex::new(IdState {
                    phase: Phase::Idle,
                    src: None,
                    dst: None,
                    device: None,
                    comm: None,
                    listening: Vec::new(),
                    qp: None,
                    reuse_addr: false,
                    tos: 0,
                    ack_timeout: ACK_TIMEOUT,
                    our_psn: Psn::ZERO,
                    peer_psn: Psn::ZERO,
                    peer_qpn: Qpn::new_masked(0),
                    responder_resources: 0,
                    initiator_depth: 0,
                    retry_count: 7,
                    rnr_retry_count: 7,
                    path_mtu: Mtu::Mtu1024,
                }),
                destroyed: AtomicBool::new(false),
                user: AtomicUsize::new(0),
            }),
        }
    }

    /// True if both handles name one id.
    pub fn same(&self, other: &CmId) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// True once [`destroy`](Self::destroy) ran.
    pub fn is_destroyed(&self) -> bool {
        self.inner.destroyed.load(Ordering::Acquire)
    }

    /// A word the owner keeps with the id (the C ABI: its `struct rdma_cm_id *`).
    pub fn user(&self) -> usize {
        self.inner.user.load(Ordering::Acquire)
    }

    /// Sets [`user`](Self::user).
    pub fn set_user(&self, value: usize) {
        self.inner.user.store(value, Ordering::Release);
    }

    /// The port space.
    pub fn port_space(&self) -> PortSpace {
        self.inner.ps
    }

    /// The QP type.
    pub fn qp_type(&self) -> QpType {
        self.inner.qp_type
    }

    /// The channel events go to.
    pub fn channel(&self) -> EventChannel {
        self.inner.channel.lock().clone()
    }

    /// Moves the id (and its future events) to another channel (`rdma_migrate_id`).
    pub fn migrate(&self, channel: &EventChannel) {
        *self.inner.channel.lock() = channel.clone();
    }

    /// The device the id is bound to, once it is.
    pub fn device(&self) -> Option<Device> {
        self.inner.st.lock().device.clone()
    }

    /// Our address (`rdma_get_local_addr`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.st.lock().src
    }

    /// The peer's address (`rdma_get_peer_addr`).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.st.lock().dst
    }

    /// The path MTU of the id's connection (the device's, lowered to the peer's).
    pub fn path_mtu(&self) -> Mtu {
        self.inner.st.lock().path_mtu
    }

    /// The id's QP, once it has one.
    pub fn qp(&self) -> Option<QpHandle> {
        self.inner.st.lock().qp.clone()
    }

    /// `RDMA_OPTION_ID_REUSEADDR`.
    pub fn set_reuse_addr(&self, reuse: bool) {
        self.inner.st.lock().reuse_addr = reuse;
    }

    /// `RDMA_OPTION_ID_ACK_TIMEOUT`: the local ACK timeout of the connection's QP
    /// (4.096 µs × 2^t; 31 at most).
    pub fn set_ack_timeout(&self, timeout: u8) -> Result<(), Error> {
        if timeout > 31 {
            return Err(errno(libc::EINVAL));
        }
        self.inner.st.lock().ack_timeout = timeout;
        Ok(())
    }

    /// Data arrived on the QP before the RTU (`rdma_notify` with `IBV_EVENT_COMM_EST`):
    /// the passive side's connection is established.
    pub fn notify_established(&self) -> Result<(), Error> {
        let (device, comm) = {
            let st = self.inner.st.lock();
            (st.device.clone(), st.comm)
        };
        let (Some(device), Some(comm)) = (device, comm) else {
            return Err(errno(libc::EINVAL));
        };
        device
            .agent
            .call(|engine, _| engine.notify_established(comm))
            .ok_or(errno(libc::ENODEV))?
            .map_err(cm_errno)
    }

    /// `RDMA_OPTION_ID_TOS`.
    pub fn set_tos(&self, tos: u8) {
        self.inner.st.lock().tos = tos;
    }

    /// Binds to a local address (`rdma_bind_addr`); port 0 picks a free one. A specific
    /// address binds the id to the device that has it (EADDRNOTAVAIL if none).
    pub fn bind_addr(&self, addr: SocketAddr) -> Result<(), Error> {
        let mut st = self.inner.st.lock();
        if st.phase != Phase::Idle {
            return Err(errno(libc::EINVAL));
        }
        let device = if addr.ip().is_unspecified() {
            None
        } else {
            Some(device::device_with_addr(addr.ip()).ok_or(errno(libc::EADDRNOTAVAIL))?)
        };
        let port = ports().bind(self.inner.ps, addr, st.reuse_addr, &self.inner)?;
        st.src = Some(SocketAddr::new(addr.ip(), port));
        st.device = device;
        st.phase = Phase::Bound;
        Ok(())
    }

    /// Resolves `dst` to a device and source address (`rdma_resolve_addr`), binding the id
    /// if it is not yet; ADDR_RESOLVED (or ADDR_ERROR) follows on the channel.
    pub fn resolve_addr(&self, src: Option<SocketAddr>, dst: SocketAddr) -> Result<(), Error> {
        let phase = self.inner.st.lock().phase;
        if phase == Phase::Idle {
            if let Some(src) = src {
                self.bind_addr(src)?;
            }
        }
        let mut st = self.inner.st.lock();
        if !matches!(st.phase, Phase::Idle | Phase::Bound) {
            return Err(errno(libc::EINVAL));
        }
        let resolved = match st.device.clone() {
            Some(d) => st.src.map(|s| (d, s.ip())).ok_or(errno(libc::EINVAL)),
            None => device::device_for_dst(dst.ip()),
        };
        let (device, src_ip) = match resolved {
            Ok(r) => r,
            Err(_) => {
                drop(st);
                self.push(EventKind::AddrError, -libc::EHOSTUNREACH, EventParam::None);
                return Ok(());
            }
        };
        let port = match st.src {
            Some(s) => s.port(),
            None => ports().bind(
                self.inner.ps,
                SocketAddr::new(src_ip, 0),
                false,
                &self.inner,
            )?,
        };
        st.src = Some(SocketAddr::new(src_ip, port));
        st.dst = Some(dst);
        st.path_mtu = path_mtu(&device);
        st.device = Some(device);
        st.phase = Phase::AddrResolved;
        drop(st);
        self.push(EventKind::AddrResolved, 0, EventParam::None);
        Ok(())
    }

    /// Resolves the route (`rdma_resolve_route`): on RoCE the address is the route;
    /// ROUTE_RESOLVED follows.
    pub fn resolve_route(&self) -> Result<(), Error> {
        let mut st = self.inner.st.lock();
        if st.phase != Phase::AddrResolved {
            return Err(errno(libc::EINVAL));
        }
        st.phase = Phase::RouteResolved;
        drop(st);
        self.push(EventKind::RouteResolved, 0, EventParam::None);
        Ok(())
    }

    /// Listens for connection requests (`rdma_listen`) on the bound address: on its
    /// device, or on every device for a wildcard address.
    pub fn listen(&self, _backlog: i32) -> Result<(), Error> {
        // The id's lock is not held across agent calls: the agent's event handling takes
        // it with the backend held (lock order: backend, id).
        let (sid, devices) = {
            let st = self.inner.st.lock();
            if st.phase == Phase::Listening {
                return Ok(());
            }
            if st.phase != Phase::Bound {
                return Err(errno(libc::EINVAL));
            }
            let port = st.src.map_or(0, |s| s.port());
            let sid = ServiceId::from_port(self.inner.ps as u16, port);
            let devices = match &st.device {
                Some(d) => vec![d.clone()],
                None => device::devices(),
            };
            (sid, devices)
        };
        let mut listening = Vec::new();
        for d in devices {
            // The id is filed as the service's listener before the engine listens: requests
            // held for the service (see CmConfig::listen_grace) become events at once.
            let taken = {
                let mut listeners = d.agent.listeners.lock();
                let taken = listeners.get(&sid).is_some_and(|l| l.strong_count() > 0);
                if !taken {
                    listeners.insert(sid, Arc::downgrade(&self.inner));
                }
                taken
            };
            let ok = if taken {
                Some(Err(CmError::AddrInUse))
            } else {
                d.agent.call(|engine, now| engine.listen(now, sid))
            };
            match ok {
                Some(Ok(())) => listening.push((d, sid)),
                failed => {
                    if !taken {
                        d.agent.listeners.lock().remove(&sid);
                    }
                    for (d, sid) in listening {
                        unlisten(&d, sid);
                    }
                    return Err(errno(if failed.is_none() {
                        libc::ENODEV
                    } else {
                        libc::EADDRINUSE
                    }));
                }
            }
        }
        let mut st = self.inner.st.lock();
        st.listening = listening;
        st.phase = Phase::Listening;
        Ok(())
    }

    /// Uses `qp` as the id's QP (the QP of `rdma_create_qp`): an RC QP moves to INIT, a UD
    /// QP to RTS with the port space's Q_Key, as librdmacm does.
    pub fn attach_qp(&self, qp: &QueuePair) -> Result<(), Error> {
        let mut st = self.inner.st.lock();
        if st.qp.is_some() {
            return Err(errno(libc::EINVAL));
        }
        match qp.qp_type() {
            QpType::Ud => {
                let qkey = if self.inner.ps == PortSpace::Udp {
                    UDP_QKEY
                } else {
                    0
                };
                let init = QpAttr {
                    qkey,
                    port_num: 1,
                    ..QpAttr::new(QpState::Init)
                };
                qp.modify(
                    &init,
                    AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
                )?;
                qp.modify(&QpAttr::new(QpState::Rtr), AttrMask::STATE)?;
                qp.modify(
                    &QpAttr::new(QpState::Rts),
                    AttrMask::STATE | AttrMask::SQ_PSN,
                )?;
            }
            _ => {
                let init = QpAttr {
                    port_num: 1,
                    qp_access_flags: AccessFlags::empty(),
                    ..QpAttr::new(QpState::Init)
                };
                qp.modify(
                    &init,
                    AttrMask::STATE
                        | AttrMask::PKEY_INDEX
                        | AttrMask::PORT
                        | AttrMask::ACCESS_FLAGS,
                )?;
            }
        }
        st.qp = Some(qp.handle());
        Ok(())
    }

    /// Creates a QP for the id on its device's protection domain and attaches it
    /// (`rdma_create_qp` with a NULL PD): RC ends in INIT, UD in RTS. The caller owns the QP
    /// (dropping it destroys it) and keeps it while the id uses it.
    pub fn create_qp(&self, attr: &QpInitAttr<'_>) -> Result<QueuePair, Error> {
        if attr.qp_type != self.inner.qp_type {
            return Err(errno(libc::EINVAL));
        }
        let pd = self.default_pd().ok_or(errno(libc::EINVAL))?;
        let qp = pd.create_qp(attr)?;
        self.attach_qp(&qp)?;
        Ok(qp)
    }

    /// Forgets the id's QP (`rdma_destroy_qp`; the caller destroys the QP).
    pub fn detach_qp(&self) -> Option<QpHandle> {
        self.inner.st.lock().qp.take()
    }

    /// The device's protection domain for ids that bring none.
    pub fn default_pd(&self) -> Option<Pd> {
        let d = self.device()?;
        d.agent.default_pd()
    }

    /// Connects (`rdma_connect`): an RC id sends a REQ, a UD id a SIDR_REQ. The answer
    /// comes as an event: ESTABLISHED (or CONNECT_RESPONSE for an id without QP),
    /// REJECTED or UNREACHABLE.
    pub fn connect(&self, param: &ConnParam) -> Result<(), Error> {
        let mut st = self.inner.st.lock();
        if st.phase != Phase::RouteResolved {
            return Err(errno(libc::EINVAL));
        }
        let (Some(device), Some(src), Some(dst)) = (st.device.clone(), st.src, st.dst) else {
            return Err(errno(libc::EINVAL));
        };
        let mut private = [0u8; 36 + 180];
        CmaHeaderRepr {
            src_port: src.port(),
            src: src.ip(),
            dst: dst.ip(),
        }
        .emit(&mut private)
        .map_err(|_| errno(libc::EINVAL))?;
        let service_id = ServiceId::from_port(self.inner.ps as u16, dst.port());
        let agent = device.agent.clone();
        let result = if self.inner.qp_type == QpType::Ud {
            if param.private_data.len() > 180 {
                return Err(errno(libc::EINVAL));
            }
            private[CMA_HEADER_LEN..CMA_HEADER_LEN + param.private_data.len()]
                .copy_from_slice(&param.private_data);
            let len = CMA_HEADER_LEN + param.private_data.len();
            st.phase = Phase::Connecting;
            drop(st);
            agent.call(|engine, now| {
                let r = engine.resolve_sidr(now, dst.ip(), src.ip(), service_id, &private[..len]);
                self.register(&agent, r)
            })
        } else {
            if param.private_data.len() > 56 {
                return Err(errno(libc::EINVAL));
            }
            private[CMA_HEADER_LEN..CMA_HEADER_LEN + param.private_data.len()]
                .copy_from_slice(&param.private_data);
            let qpn = match &st.qp {
                Some(qp) => qp.qpn()?,
                None => Qpn::new(param.qp_num).ok_or(errno(libc::EINVAL))?,
            };
            let max = max_rd_atomic(&device);
            st.responder_resources = clamp_rd(param.responder_resources, max)?;
            st.initiator_depth = clamp_rd(param.initiator_depth, max)?;
            st.retry_count = param.retry_count.min(7);
            st.rnr_retry_count = param.rnr_retry_count.min(7);
            st.our_psn = Psn::new_masked(device.ctx.shared.next_random());
            let p = ConnectParams {
                peer: dst.ip(),
                local: src.ip(),
                service_id,
                qpn,
                starting_psn: st.our_psn,
                responder_resources: st.responder_resources,
                initiator_depth: st.initiator_depth,
                retry_count: st.retry_count,
                rnr_retry_count: st.rnr_retry_count,
                path_mtu: st.path_mtu as u8,
                srq: st.qp.as_ref().is_some_and(|q| q.has_srq()) || param.srq != 0,
                hop_limit: 64,
                traffic_class: st.tos,
                local_ack_timeout: st.ack_timeout,
                private_data: &private[..CMA_HEADER_LEN + param.private_data.len()],
            };
            st.phase = Phase::Connecting;
            drop(st);
            agent.call(|engine, now| {
                let r = engine.connect(now, &p);
                self.register(&agent, r)
            })
        };
        match result
            .ok_or(errno(libc::ENODEV))
            .and_then(|r| r.map_err(cm_errno))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inner.st.lock().phase = Phase::RouteResolved;
                Err(e)
            }
        }
    }

    /// Files a new connection of the engine under this id, before the engine can see an
    /// answer to it (the caller holds the engine).
    fn register(&self, agent: &Arc<Agent>, r: Result<CommId, CmError>) -> Result<(), CmError> {
        let comm = r?;
        agent.conns.lock().insert(comm, Arc::downgrade(&self.inner));
        self.inner.st.lock().comm = Some(comm);
        Ok(())
    }

    /// Accepts a connection request (`rdma_accept`): an RC id with a QP brings it to RTS
    /// and sends the REP (ESTABLISHED follows with the RTU); a UD id answers the SIDR_REQ
    /// with its QP and Q_Key.
    pub fn accept(&self, param: Option<&ConnParam>) -> Result<(), Error> {
        let mut st = self.inner.st.lock();
        if st.phase != Phase::Requested {
            return Err(errno(libc::EINVAL));
        }
        let (Some(device), Some(comm)) = (st.device.clone(), st.comm) else {
            return Err(errno(libc::EINVAL));
        };
        let default = ConnParam::default();
        let param_given = param.is_some();
        let param = param.unwrap_or(&default);
        let private = &param.private_data[..];
        let qpn = match &st.qp {
            Some(qp) => qp.qpn()?,
            None => Qpn::new(param.qp_num).ok_or(errno(libc::EINVAL))?,
        };
        if self.inner.qp_type == QpType::Ud {
            if private.len() > 136 {
                return Err(errno(libc::EINVAL));
            }
            let qkey = match &st.qp {
                Some(qp) => qp.qkey()?,
                None => UDP_QKEY,
            };
            let p = accept_params(qpn, Psn::ZERO, 0, 0, 0, Qkey::new(qkey), private);
            st.phase = Phase::Connected;
            drop(st);
            return self.finish(
                device
                    .agent
                    .call(|engine, now| engine.accept(now, comm, &p)),
            );
        }
        if private.len() > 196 {
            return Err(errno(libc::EINVAL));
        }
        if param_given {
            // The request's values were stored from the peer's view; the application may
            // lower them.
            let max = max_rd_atomic(&device);
            st.responder_resources = clamp_rd(param.responder_resources, max)?;
            st.initiator_depth = clamp_rd(param.initiator_depth, max)?;
            st.rnr_retry_count = param.rnr_retry_count.min(7);
        }
        // Our first receive PSN was chosen with the request, so that an application that
        // brings its QP up itself (rdma_init_qp_attr) before accepting agrees with the REP.
        if let Some(qp) = st.qp.clone() {
            bring_up(&qp, &st)?;
        }
        let p = accept_params(
            qpn,
            st.our_psn,
            st.responder_resources,
            st.initiator_depth,
            st.rnr_retry_count,
            Qkey::new(0),
            private,
        );
        st.phase = Phase::Connecting;
        drop(st);
        self.finish(
            device
                .agent
                .call(|engine, now| engine.accept(now, comm, &p)),
        )
    }

    /// The result of an agent call made after the id's phase moved on: a refusal leaves the
    /// id disconnected.
    fn finish(&self, r: Option<Result<(), CmError>>) -> Result<(), Error> {
        match r
            .ok_or(errno(libc::ENODEV))
            .and_then(|r| r.map_err(cm_errno))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inner.st.lock().phase = Phase::Disconnected;
                Err(e)
            }
        }
    }

    /// Rejects a connection request (`rdma_reject`): REJ with reason 28 (consumer defined)
    /// and up to 148 bytes of private data, or a SIDR_REP with status REJECT.
    pub fn reject(&self, private: &[u8]) -> Result<(), Error> {
        let mut st = self.inner.st.lock();
        if !matches!(st.phase, Phase::Requested | Phase::Responded) {
            return Err(errno(libc::EINVAL));
        }
        let (Some(device), Some(comm)) = (st.device.clone(), st.comm) else {
            return Err(errno(libc::EINVAL));
        };
        st.phase = Phase::Disconnected;
        drop(st);
        self.finish(
            device
                .agent
                .call(|engine, now| engine.reject(now, comm, private)),
        )
    }

    /// Completes an active connection whose id had no QP (`rdma_establish`, after
    /// CONNECT_RESPONSE): sends the RTU.
    pub fn establish(&self) -> Result<(), Error> {
        let mut st = self.inner.st.lock();
        if st.phase != Phase::Responded {
            return Err(errno(libc::EINVAL));
        }
        let (Some(device), Some(comm)) = (st.device.clone(), st.comm) else {
            return Err(errno(libc::EINVAL));
        };
        st.phase = Phase::Connected;
        drop(st);
        self.finish(device.agent.call(|engine, now| engine.establish(now, comm)))
    }

    /// Disconnects (`rdma_disconnect`): the QP moves to ERR (its work flushes), and a DREQ
    /// goes out, or the DREP owed for the peer's. DISCONNECTED follows for an id that sent
    /// the DREQ.
    pub fn disconnect(&self) -> Result<(), Error> {
        let mut st = self.inner.st.lock();
        let (Some(device), Some(comm)) = (st.device.clone(), st.comm) else {
            return Err(errno(libc::EINVAL));
        };
        if self.inner.qp_type == QpType::Ud {
            return Err(errno(libc::EINVAL));
        }
        if let Some(qp) = &st.qp {
            let _ = qp.modify(&QpAttr::new(QpState::Err), AttrMask::STATE);
        }
        st.phase = Phase::Disconnected;
        drop(st);
        self.finish(
            device
                .agent
                .call(|engine, now| engine.disconnect(now, comm)),
        )
    }

    /// Destroys the id (`rdma_destroy_id`): stops listening, releases the port, and lets
    /// the CM send what it still owes (REJ, DREQ or DREP). Queued events about it are
    /// dropped. The QP is not destroyed.
    pub fn destroy(&self) {
        if self.inner.destroyed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (listening, device, comm) = {
            let mut st = self.inner.st.lock();
            (
                std::mem::take(&mut st.listening),
                st.device.clone(),
                st.comm.take(),
            )
        };
        for (d, sid) in listening {
            unlisten(&d, sid);
        }
        if let (Some(device), Some(comm)) = (device, comm) {
            device.agent.conns.lock().remove(&comm);
            device.agent.call(|engine, now| engine.destroy(now, comm));
        }
        ports().release(&self.inner);
    }

    /// The attributes that move the id's QP to `state` (`rdma_init_qp_attr`), with their
    /// mask.
    pub fn init_qp_attr(&self, state: QpState) -> Result<(QpAttr, AttrMask), Error> {
        let st = self.inner.st.lock();
        qp_attr_for(&st, self.inner.ps, self.inner.qp_type, state)
    }

    fn push(&self, kind: EventKind, status: i32, param: EventParam) {
        super::handlers::push_event(&self.inner, None, kind, status, param);
    }
}

fn accept_params(
    qpn: Qpn,
    starting_psn: Psn,
    responder_resources: u8,
    initiator_depth: u8,
    rnr_retry_count: u8,
    qkey: Qkey,
    private_data: &[u8],
) -> AcceptParams<'_> {
    AcceptParams {
        qpn,
        starting_psn,
        responder_resources,
        initiator_depth,
        rnr_retry_count,
        srq: false,
        target_ack_delay: 15,
        qkey,
        private_data,
    }
}

/// librdmacm's errno for a refused CM request.
fn cm_errno(e: CmError) -> Error {
    errno(match e {
        CmError::UnknownConn | CmError::WrongState | CmError::Invalid => libc::EINVAL,
        CmError::AddrInUse => libc::EADDRINUSE,
    })
}

/// 0xFF asks for the device's maximum; more than it is EINVAL (librdmacm).
fn clamp_rd(asked: u8, max: u8) -> Result<u8, Error> {
    match asked {
        0xff => Ok(max),
        n if n <= max => Ok(n),
        _ => Err(errno(libc::EINVAL)),
    }
}

fn max_rd_atomic(device: &Device) -> u8 {
    device.ctx.query_device().max_qp_rd_atom.min(255) as u8
}

fn unlisten(device: &Device, sid: ServiceId) {
    device.agent.listeners.lock().remove(&sid);
    device.agent.call(|engine, _| engine.unlisten(sid));
}
