//! CM ids: `rdma_create_id` to `rdma_destroy_id`, addresses and routes, listening,
//! connecting, accepting, rejecting, disconnecting, options and QP attributes.

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use xrdma_verbs::cm::{CmId, ConnParam, PortSpace};
use xrdma_verbs::verbs::{Gid, QpState, QpType};

use super::channel::{XEventChannel, channel, next_event};
use super::device::{self, cm_devices};
use super::{errno_of, guard_ret, sockaddr};
use crate::ibv::objects::qp_attr_to_c;
use crate::{boxed, free, sys};

/// A CM id. `id` first, so an `rdma_cm_id *` converts back.
#[repr(C)]
pub(crate) struct XId {
    pub(crate) id: sys::rdma_cm_id,
    pub(crate) inner: CmId,
    /// Created without a channel: its calls wait for their event and leave it in
    /// `id->event` (librdmacm's synchronous ids).
    pub(crate) sync: bool,
    /// The path record `id->route.path_rec` points at.
    path_rec: sys::ibv_sa_path_rec,
    /// What `rdma_create_ep` asked of a passive id's QPs, for `rdma_get_request`.
    pub(crate) ep_qp: Mutex<Option<(usize, sys::ibv_qp_init_attr)>>,
    /// The CQs and channels `rdma_create_qp` made for the id, which `rdma_destroy_qp` frees.
    pub(crate) made_cqs: Mutex<bool>,
}

/// The id wrapper behind a C pointer (EINVAL for NULL).
///
/// # Safety
///
/// `id` must be NULL or come from `rdma_create_id` (or an event) and be live.
pub(crate) unsafe fn xid<'a>(id: *mut sys::rdma_cm_id) -> Result<&'a mut XId, i32> {
    if id.is_null() || !id.cast::<XId>().is_aligned() {
        return Err(libc::EINVAL);
    }
    // SAFETY: per this function's contract, `id` starts a live XId. librdmacm's ids are
    // shared between the application and the library the same way.
    Ok(unsafe { &mut *id.cast::<XId>() })
}

impl XId {
    fn new(inner: CmId, ch: *mut XEventChannel, sync: bool, context: *mut c_void) -> *mut XId {
        // SAFETY: all-zero is a valid rdma_cm_id (NULL pointers, no addresses).
        let mut id: sys::rdma_cm_id = unsafe { std::mem::zeroed() };
        id.context = context;
        // SAFETY: `ch` comes from XEventChannel::new and lives as long as the id uses it.
        id.channel = unsafe { &*ch }.as_c();
        id.ps = inner.port_space() as u32;
        id.qp_type = inner.qp_type().as_raw();
        id.port_num = 1;
        // SAFETY: all-zero is a valid path record.
        let path_rec = unsafe { std::mem::zeroed() };
        let x = boxed(XId {
            id,
            inner,
            sync,
            path_rec,
            ep_qp: Mutex::new(None),
            made_cqs: Mutex::new(false),
        });
        // SAFETY: just made; nothing else holds it.
        unsafe { (*x).inner.set_user(x as usize) };
        x
    }

    /// The wrapper of a new id brought by a CONNECT_REQUEST on `listen`: the listener's
    /// context pointer, and its channel (a private one if the listener is synchronous).
    pub(crate) fn for_request(inner: CmId, listen: *mut XId) -> *mut XId {
        // SAFETY: the listener's wrapper lives while its events are delivered (its
        // events are dropped once it is destroyed).
        let l = unsafe { &*listen };
        let (ch, sync) = if l.sync {
            match XEventChannel::new() {
                Ok(ch) => {
                    // SAFETY: just made.
                    inner.migrate(&unsafe { &*ch }.inner);
                    (ch, true)
                }
                Err(_) => (l.id.channel.cast(), false),
            }
        } else {
            (l.id.channel.cast(), false)
        };
        XId::new(inner, ch, sync, l.id.context)
    }

    /// Copies the id's device, addresses and route into the C struct, as librdmacm keeps
    /// them current.
    pub(crate) fn refresh(x: *mut XId) {
        if x.is_null() {
            return;
        }
        // SAFETY: `x` is a live wrapper (from an event or an export's argument).
        let x = unsafe { &mut *x };
        if let Some(dev) = x.inner.device().as_ref().and_then(device::of) {
            if x.id.verbs.is_null() {
                x.id.verbs = dev.verbs();
            }
            if x.id.pd.is_null() {
                x.id.pd = dev.pd();
            }
        }
        // `qp->state` follows the QP as `ibv_modify_qp` keeps it, through the transitions
        // the connection manager made (librdmacm makes them with ibv_modify_qp). A QP the
        // application destroyed already has a dead handle and is left alone.
        if let (Some(h), false) = (x.inner.qp(), x.id.qp.is_null()) {
            if let Ok(state) = h.state() {
                // SAFETY: the handle is alive, so the QP wrapper `id->qp` points at (which
                // owns the QP) is too; the field is written through the raw pointer.
                unsafe { std::ptr::addr_of_mut!((*x.id.qp).state).write(state.as_raw()) };
            }
        }
        let (src, dst) = (x.inner.local_addr(), x.inner.peer_addr());
        let addr = &mut x.id.route.addr;
        let base = (addr as *mut sys::rdma_addr).cast::<libc::sockaddr_storage>();
        // SAFETY: `struct rdma_addr` starts with two sockaddr_storage-sized unions, the
        // source address then the destination.
        unsafe {
            sockaddr::write(src, &mut *base);
            sockaddr::write(dst, &mut *base.add(1));
        }
        let gid = |a: Option<std::net::SocketAddr>| a.map_or([0; 16], |a| Gid::from_ip(a.ip()).0);
        let (sgid, dgid) = (gid(src), gid(dst));
        // SAFETY: the `addr` union's `ibaddr` member is plain data; writing it is valid.
        unsafe {
            let ib = addr.addr.ibaddr.as_mut();
            *(&mut ib.sgid as *mut sys::ibv_gid).cast::<[u8; 16]>() = sgid;
            *(&mut ib.dgid as *mut sys::ibv_gid).cast::<[u8; 16]>() = dgid;
            ib.pkey = 0xffffu16.to_be();
        }
        if dst.is_some() {
            let p = &mut x.path_rec;
            // SAFETY: ibv_gid is a 16-byte union; its `raw` view is always valid.
            unsafe {
                *(&mut p.sgid as *mut sys::ibv_gid).cast::<[u8; 16]>() = sgid;
                *(&mut p.dgid as *mut sys::ibv_gid).cast::<[u8; 16]>() = dgid;
            }
            p.pkey = 0xffffu16.to_be();
            p.hop_limit = 64;
            p.reversible = 1;
            p.numb_path = 1;
            p.mtu_selector = 2;
            p.mtu = x.inner.path_mtu() as u8;
            p.rate_selector = 2;
            p.packet_life_time_selector = 2;
            p.packet_life_time = 16;
            x.id.route.path_rec = &mut x.path_rec;
            x.id.route.num_paths = 1;
        }
    }

    /// A synchronous id's wait for the event its call brings (librdmacm's
    /// `ucma_complete`): the previous `id->event` is acknowledged, the new one stored; an
    /// error event becomes the call's errno (ECONNREFUSED for REJECTED).
    pub(crate) fn complete(&mut self) -> Result<(), i32> {
        if !self.sync {
            return Ok(());
        }
        self.ack_event();
        // SAFETY: a sync id's channel is its own, live until the id is destroyed.
        let ch = unsafe { channel(self.id.channel) }?;
        let ev = next_event(ch)?;
        self.id.event = ev;
        // SAFETY: just made by next_event.
        let ev = unsafe { &*ev };
        match ev.status {
            0 => Ok(()),
            _ if ev.event == sys::RDMA_CM_EVENT_REJECTED => Err(libc::ECONNREFUSED),
            s if s < 0 => Err(-s),
            s => Err(s),
        }
    }

    /// Frees `id->event`, if any.
    pub(crate) fn ack_event(&mut self) {
        if !self.id.event.is_null() {
            // SAFETY: `id->event` comes from next_event and nobody else frees it.
            let _ = unsafe { super::channel::rdma_ack_cm_event(self.id.event) };
            self.id.event = std::ptr::null_mut();
        }
    }
}

/// Creates an id; a NULL channel makes it synchronous, with a channel of its own.
pub(crate) fn create_id(
    ch: *mut sys::rdma_event_channel,
    context: *mut c_void,
    ps: u32,
    qp_type: Option<QpType>,
) -> Result<*mut XId, i32> {
    cm_devices()?;
    let ps = PortSpace::from_raw(ps).ok_or(libc::EINVAL)?;
    let (ch, sync) = if ch.is_null() {
        (XEventChannel::new()?, true)
    } else {
        // SAFETY: a non-NULL channel comes from rdma_create_event_channel.
        let _ = unsafe { channel(ch) }?;
        (ch.cast::<XEventChannel>(), false)
    };
    // SAFETY: `ch` is a live channel wrapper (checked or just made).
    let rust_ch = &unsafe { &*ch }.inner;
    let inner = match qp_type {
        Some(t) => CmId::with_type(rust_ch, ps, t),
        None => CmId::new(rust_ch, ps),
    };
    Ok(XId::new(inner, ch, sync, context))
}

/// `rdma_create_id`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_create_id(
    channel: *mut sys::rdma_event_channel,
    id: *mut *mut sys::rdma_cm_id,
    context: *mut c_void,
    ps: sys::rdma_port_space,
) -> c_int {
    guard_ret(|| {
        if id.is_null() {
            return Err(libc::EINVAL);
        }
        let x = create_id(channel, context, ps, None)?;
        // SAFETY: `id` is writable, checked non-NULL.
        unsafe { id.write(x.cast()) };
        Ok(())
    })
}

/// Destroys an id and, for a synchronous one, its event and channel.
pub(crate) fn destroy_id(id: *mut sys::rdma_cm_id) -> Result<(), i32> {
    // SAFETY: the id comes from rdma_create_id and is not used after this call.
    let x = unsafe { xid(id) }?;
    x.inner.destroy();
    x.ack_event();
    if x.sync {
        let ch = x.id.channel;
        // SAFETY: a sync id's channel is its own and goes with it.
        let _ = unsafe { free::<XEventChannel, _>(ch) };
    }
    // SAFETY: as above.
    unsafe { free::<XId, _>(id) }
}

/// `rdma_destroy_id`: the QP is not destroyed (librdmacm's rule).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_destroy_id(id: *mut sys::rdma_cm_id) -> c_int {
    guard_ret(|| destroy_id(id))
}

/// `rdma_bind_addr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_bind_addr(
    id: *mut sys::rdma_cm_id,
    addr: *mut libc::sockaddr,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        // SAFETY: a socket address of its family's size, per the contract.
        let addr = unsafe { sockaddr::read(addr) }?;
        x.inner.bind_addr(addr).map_err(errno_of)?;
        XId::refresh(x);
        Ok(())
    })
}

/// Resolves the address: binds to the device that routes to `dst`.
pub(crate) fn resolve_addr(
    x: &mut XId,
    src: *const libc::sockaddr,
    dst: *const libc::sockaddr,
) -> Result<(), i32> {
    let src = if src.is_null() {
        None
    } else {
        // SAFETY: a socket address of its family's size, per the contract.
        Some(unsafe { sockaddr::read(src) }?)
    };
    // SAFETY: as above.
    let dst = unsafe { sockaddr::read(dst) }?;
    x.inner.resolve_addr(src, dst).map_err(errno_of)?;
    XId::refresh(x);
    x.complete()
}

/// `rdma_resolve_addr` (the timeout is moot: the routing table answers at once).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_resolve_addr(
    id: *mut sys::rdma_cm_id,
    src: *mut libc::sockaddr,
    dst: *mut libc::sockaddr,
    _timeout_ms: c_int,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        resolve_addr(x, src, dst)
    })
}

/// Resolves the route.
pub(crate) fn resolve_route(x: &mut XId) -> Result<(), i32> {
    x.inner.resolve_route().map_err(errno_of)?;
    XId::refresh(x);
    x.complete()
}

/// `rdma_resolve_route`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_resolve_route(id: *mut sys::rdma_cm_id, _timeout_ms: c_int) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        resolve_route(unsafe { xid(id) }?)
    })
}

/// `rdma_listen`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_listen(id: *mut sys::rdma_cm_id, backlog: c_int) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        x.inner.listen(backlog).map_err(errno_of)
    })
}

/// `struct rdma_conn_param` as the connection manager takes it; NULL gives librdmacm's
/// defaults (the device's RDMA READ limits, 7 retries).
///
/// # Safety
///
/// A non-NULL `p` must be readable, and its private data `private_data_len` bytes.
unsafe fn conn_param(p: *const sys::rdma_conn_param, qp_num: u32) -> ConnParam {
    if p.is_null() {
        return ConnParam {
            responder_resources: 0xff,
            initiator_depth: 0xff,
            retry_count: 7,
            rnr_retry_count: 7,
            qp_num,
            ..ConnParam::default()
        };
    }
    // SAFETY: per this function's contract.
    let p = unsafe { &*p };
    let private_data = if p.private_data.is_null() || p.private_data_len == 0 {
        Vec::new()
    } else {
        // SAFETY: per this function's contract.
        unsafe {
            std::slice::from_raw_parts(p.private_data.cast::<u8>(), usize::from(p.private_data_len))
        }
        .to_vec()
    };
    ConnParam {
        private_data,
        responder_resources: p.responder_resources,
        initiator_depth: p.initiator_depth,
        flow_control: p.flow_control,
        retry_count: p.retry_count,
        rnr_retry_count: p.rnr_retry_count,
        srq: p.srq,
        qp_num: if qp_num != 0 { qp_num } else { p.qp_num },
    }
}

/// The QPN of the id's QP, 0 if it has none.
fn qp_num(x: &XId) -> u32 {
    x.inner
        .qp()
        .and_then(|q| q.qpn().ok())
        .map_or(0, |q| q.value())
}

/// `rdma_connect`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_connect(
    id: *mut sys::rdma_cm_id,
    param: *mut sys::rdma_conn_param,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        // SAFETY: per the export's contract.
        let p = unsafe { conn_param(param, qp_num(x)) };
        x.inner.connect(&p).map_err(errno_of)?;
        x.complete()
    })
}

/// `rdma_accept`: a synchronous RC id waits for ESTABLISHED.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_accept(
    id: *mut sys::rdma_cm_id,
    param: *mut sys::rdma_conn_param,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        let p = if param.is_null() {
            None
        } else {
            // SAFETY: per the export's contract.
            Some(unsafe { conn_param(param, qp_num(x)) })
        };
        x.inner.accept(p.as_ref()).map_err(errno_of)?;
        XId::refresh(x);
        if x.inner.qp_type() == QpType::Ud {
            return Ok(());
        }
        x.complete()
    })
}

/// `rdma_reject`: REJ with reason 28 and the private data.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_reject(
    id: *mut sys::rdma_cm_id,
    private_data: *const c_void,
    private_data_len: u8,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        let data: &[u8] = if private_data.is_null() {
            &[]
        } else {
            // SAFETY: the caller's private data is `private_data_len` bytes.
            unsafe {
                std::slice::from_raw_parts(private_data.cast(), usize::from(private_data_len))
            }
        };
        x.inner.reject(data).map_err(errno_of)
    })
}

/// `rdma_reject_ece`: as `rdma_reject` (xrdma negotiates no ECE).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_reject_ece(
    id: *mut sys::rdma_cm_id,
    private_data: *const c_void,
    private_data_len: u8,
) -> c_int {
    // SAFETY: the same contract as rdma_reject's.
    unsafe { rdma_reject(id, private_data, private_data_len) }
}

/// `rdma_disconnect`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_disconnect(id: *mut sys::rdma_cm_id) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        x.inner.disconnect().map_err(errno_of)?;
        XId::refresh(x);
        x.complete()
    })
}

/// `rdma_establish`: completes a connection whose id had no QP.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_establish(id: *mut sys::rdma_cm_id) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        x.inner.establish().map_err(errno_of)
    })
}

/// `rdma_notify`: `IBV_EVENT_COMM_EST` establishes a passive connection whose RTU is
/// late; other events are EINVAL, as in the kernel's CM.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_notify(
    id: *mut sys::rdma_cm_id,
    event: sys::ibv_event_type,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        if event != sys::IBV_EVENT_COMM_EST {
            return Err(libc::EINVAL);
        }
        x.inner.notify_established().map_err(errno_of)
    })
}

/// `rdma_migrate_id`: moves the id's events to `channel` (NULL: a channel of its own,
/// making it synchronous).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_migrate_id(
    id: *mut sys::rdma_cm_id,
    ch: *mut sys::rdma_event_channel,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        let (new, sync) = if ch.is_null() {
            (XEventChannel::new()?, true)
        } else {
            // SAFETY: a non-NULL channel comes from rdma_create_event_channel.
            let _ = unsafe { channel(ch) }?;
            (ch.cast::<XEventChannel>(), false)
        };
        // SAFETY: `new` is a live channel wrapper (checked or just made).
        x.inner.migrate(&unsafe { &*new }.inner);
        let old = std::mem::replace(&mut x.id.channel, new.cast());
        if x.sync {
            // SAFETY: a sync id's old channel was its own.
            let _ = unsafe { free::<XEventChannel, _>(old) };
        }
        x.sync = sync;
        Ok(())
    })
}

/// `rdma_set_option`: TOS, REUSEADDR, AFONLY and ACK_TIMEOUT of `RDMA_OPTION_ID`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_set_option(
    id: *mut sys::rdma_cm_id,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: usize,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        if optval.is_null() {
            return Err(libc::EINVAL);
        }
        let byte = || -> Result<u8, i32> {
            if optlen != 1 {
                return Err(libc::EINVAL);
            }
            // SAFETY: one readable byte, checked.
            Ok(unsafe { *optval.cast::<u8>() })
        };
        let int = || -> Result<c_int, i32> {
            if optlen != size_of::<c_int>() {
                return Err(libc::EINVAL);
            }
            // SAFETY: a readable int, checked (read unaligned: C may pass any address).
            Ok(unsafe { optval.cast::<c_int>().read_unaligned() })
        };
        match (level, optname) {
            (RDMA_OPTION_ID, RDMA_OPTION_ID_TOS) => x.inner.set_tos(byte()?),
            (RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR) => x.inner.set_reuse_addr(int()? != 0),
            (RDMA_OPTION_ID, RDMA_OPTION_ID_AFONLY) => {
                // Ids bind to IPv4 or IPv6 addresses, never both: AFONLY holds already.
                int()?;
            }
            (RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT) => {
                x.inner.set_ack_timeout(byte()?).map_err(errno_of)?
            }
            (RDMA_OPTION_IB, RDMA_OPTION_IB_PATH) => {
                // RoCE routes come from the IP routing table, not path records.
                return Err(libc::EINVAL);
            }
            _ => return Err(libc::ENOSYS),
        }
        Ok(())
    })
}

const RDMA_OPTION_ID: c_int = 0;
const RDMA_OPTION_IB: c_int = 1;
const RDMA_OPTION_ID_TOS: c_int = 0;
const RDMA_OPTION_ID_REUSEADDR: c_int = 1;
const RDMA_OPTION_ID_AFONLY: c_int = 2;
const RDMA_OPTION_ID_ACK_TIMEOUT: c_int = 3;
const RDMA_OPTION_IB_PATH: c_int = 1;

/// `rdma_init_qp_attr`: the attributes and mask that move the id's QP to
/// `qp_attr->qp_state`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_init_qp_attr(
    id: *mut sys::rdma_cm_id,
    qp_attr: *mut sys::ibv_qp_attr,
    qp_attr_mask: *mut c_int,
) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        let x = unsafe { xid(id) }?;
        if qp_attr.is_null() || qp_attr_mask.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: readable and writable, checked non-NULL.
        let out = unsafe { &mut *qp_attr };
        let state = QpState::from_raw(out.qp_state).ok_or(libc::EINVAL)?;
        let (attr, mask) = x.inner.init_qp_attr(state).map_err(errno_of)?;
        let cap = out.cap;
        *out = sys::ibv_qp_attr {
            cap,
            ..qp_attr_to_c(&attr)
        };
        // SAFETY: writable, checked non-NULL.
        unsafe { qp_attr_mask.write(mask.bits() as c_int) };
        Ok(())
    })
}

/// The id's port, in network byte order (0 without an address).
fn port_of(addr: Option<std::net::SocketAddr>) -> u16 {
    addr.map_or(0, |a| a.port().to_be())
}

/// `rdma_get_src_port`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_get_src_port(id: *mut sys::rdma_cm_id) -> u16 {
    crate::guard(0, || {
        // SAFETY: per the export's contract.
        unsafe { xid(id) }.map_or(0, |x| port_of(x.inner.local_addr()))
    })
}

/// `rdma_get_dst_port`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_get_dst_port(id: *mut sys::rdma_cm_id) -> u16 {
    crate::guard(0, || {
        // SAFETY: per the export's contract.
        unsafe { xid(id) }.map_or(0, |x| port_of(x.inner.peer_addr()))
    })
}

/// Says on stderr that an rdma_cm call is not implemented, and fails with ENOSYS.
fn unsupported(what: &str) -> c_int {
    eprintln!("xrdma: {what} is not implemented (multicast over RoCE)");
    crate::set_errno(libc::ENOSYS);
    -1
}

/// `rdma_join_multicast`: not implemented (ENOSYS).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_join_multicast(
    _id: *mut sys::rdma_cm_id,
    _addr: *mut libc::sockaddr,
    _context: *mut c_void,
) -> c_int {
    crate::guard(-1, || unsupported("rdma_join_multicast"))
}

/// `rdma_join_multicast_ex`: not implemented (ENOSYS).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_join_multicast_ex(
    _id: *mut sys::rdma_cm_id,
    _attr: *mut c_void,
    _context: *mut c_void,
) -> c_int {
    crate::guard(-1, || unsupported("rdma_join_multicast_ex"))
}

/// `rdma_leave_multicast`: not implemented (ENOSYS).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_leave_multicast(
    _id: *mut sys::rdma_cm_id,
    _addr: *mut libc::sockaddr,
) -> c_int {
    crate::guard(-1, || unsupported("rdma_leave_multicast"))
}

/// `struct ibv_ece` (vendor ID, options, comp_mask).
#[repr(C)]
pub struct IbvEce {
    vendor_id: u32,
    options: u32,
    comp_mask: u32,
}

/// `rdma_get_remote_ece`: the peer offered no ECE (all zero), as on a device without it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_get_remote_ece(id: *mut sys::rdma_cm_id, ece: *mut IbvEce) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        unsafe { xid(id) }?;
        if ece.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: writable, checked non-NULL.
        unsafe {
            ece.write(IbvEce {
                vendor_id: 0,
                options: 0,
                comp_mask: 0,
            })
        };
        Ok(())
    })
}

/// `rdma_set_local_ece`: xrdma's devices have no ECE options (EOPNOTSUPP).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_set_local_ece(id: *mut sys::rdma_cm_id, ece: *mut IbvEce) -> c_int {
    guard_ret(|| {
        // SAFETY: per the export's contract.
        unsafe { xid(id) }?;
        if ece.is_null() {
            return Err(libc::EINVAL);
        }
        eprintln!("xrdma: rdma_set_local_ece: xrdma devices have no ECE options");
        Err(libc::EOPNOTSUPP)
    })
}
