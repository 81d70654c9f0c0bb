//! Devices and contexts: the device list from the environment, `ibv_open_device`, and the
//! device, port and GID queries.

use std::ffi::{CStr, c_char, c_int, c_uint};
use std::mem::offset_of;
use std::sync::{Condvar, Mutex, OnceLock};

use xrdma_verbs::devices;
use xrdma_verbs::verbs::{Context, Gid};

use crate::sys;
use crate::{free, guard, guard_errno, into_ptr, set_errno, status, wrapper};

/// A device: one interface. `dev` first, so an `ibv_device *` converts back.
#[repr(C)]
pub(crate) struct Device {
    dev: sys::ibv_device,
    /// Its place in the list (`ibv_get_device_index`).
    pub(crate) index: usize,
    pub(crate) iface: String,
    /// The interface's backend, once opened: every context of the device (each
    /// `ibv_open_device`, librdmacm's own, and the rsockets') shares it, as they share a
    /// NIC; a second AF_XDP program or UDP socket on the interface could not be opened.
    opened: Mutex<Option<Context>>,
}

/// A device context. `ctx` first, so an `ibv_context *` converts back.
#[repr(C)]
pub(crate) struct XContext {
    ctx: sys::ibv_context,
    pub(crate) inner: Context,
    /// The context's CQ and SRQ wrappers, to name the object of an asynchronous event;
    /// also guards their counts of unacknowledged events.
    pub(crate) registry: Mutex<Registry>,
    /// Signalled by `ibv_ack_async_event`: destroying a CQ or SRQ waits for its events to
    /// be acknowledged, as in libibverbs.
    pub(crate) acked: Condvar,
}

impl XContext {
    /// The `ibv_context *` the application holds for this context.
    pub(crate) fn as_c(&self) -> *mut sys::ibv_context {
        (&self.ctx as *const sys::ibv_context).cast_mut()
    }
}

/// Wrapper addresses (`XCq`, `XSrq`) of a context's live CQs and SRQs.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) cqs: Vec<usize>,
    pub(crate) srqs: Vec<usize>,
}

/// The devices, or why there are none: (errno, message), read once.
static DEVICES: OnceLock<Result<Vec<&'static Device>, (i32, String)>> = OnceLock::new();

/// `IBV_LINK_LAYER_ETHERNET`, of an anonymous enum in verbs.h.
const IBV_LINK_LAYER_ETHERNET: u8 = 2;

/// `RoCE v2` in the private `enum ibv_gid_type_sysfs` of rdma-core's `driver.h`.
const IBV_GID_TYPE_SYSFS_ROCE_V2: u32 = 1;

fn copy_str(dst: &mut [c_char], s: &str) {
    let room = dst.len() - 1;
    for (d, b) in dst.iter_mut().zip(s.bytes().take(room)) {
        *d = b as c_char;
    }
}

fn read_config() -> Result<Vec<&'static Device>, (i32, String)> {
    // XRDMA_IFACE, XRDMA_BACKEND and XRDMA_UDP_PORT, as the process's devices read them.
    let settings = devices::settings().map_err(|e| (libc::EINVAL, format!("xrdma: {e}")))?;
    let ifaces: Vec<&str> = settings.ifaces.iter().map(String::as_str).collect();
    if ifaces.is_empty() {
        return Err((
            libc::ENOSYS,
            "xrdma: set XRDMA_IFACE to the network interface(s) to use (e.g. XRDMA_IFACE=eth0; \
             comma-separated for several), and optionally XRDMA_BACKEND=xdp|udp"
                .into(),
        ));
    }
    Ok(ifaces
        .into_iter()
        .enumerate()
        .map(|(i, iface)| {
            let mut dev = sys::ibv_device {
                node_type: sys::IBV_NODE_CA,
                transport_type: sys::IBV_TRANSPORT_IB,
                ..Default::default()
            };
            let name = format!("xrdma_{iface}");
            copy_str(&mut dev.name, &name);
            copy_str(&mut dev.dev_name, &format!("uverbs{i}"));
            copy_str(
                &mut dev.dev_path,
                &format!("/sys/class/infiniband_verbs/uverbs{i}"),
            );
            copy_str(
                &mut dev.ibdev_path,
                &format!("/sys/class/infiniband/{name}"),
            );
            &*Box::leak(Box::new(Device {
                dev,
                index: i,
                iface: iface.to_string(),
                opened: Mutex::new(None),
            }))
        })
        .collect())
}

/// `ibv_get_device_list`: one device per interface of `XRDMA_IFACE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_get_device_list(num_devices: *mut c_int) -> *mut *mut sys::ibv_device {
    guard(std::ptr::null_mut(), || {
        let devices = match devices() {
            Ok(d) => d,
            Err((errno, message)) => {
                eprintln!("{message}");
                set_errno(errno);
                return std::ptr::null_mut();
            }
        };
        // SAFETY: calloc has no preconditions; the result is checked for NULL.
        let list: *mut *mut sys::ibv_device =
            unsafe { libc::calloc(devices.len() + 1, size_of::<*mut sys::ibv_device>()) }.cast();
        if list.is_null() {
            set_errno(libc::ENOMEM);
            return list;
        }
        for (i, d) in devices.iter().enumerate() {
            // SAFETY: `list` has room for `devices.len() + 1` pointers; the last stays NULL.
            // The devices live forever and C only reads them.
            unsafe {
                list.add(i)
                    .write((&d.dev as *const sys::ibv_device).cast_mut())
            };
        }
        if !num_devices.is_null() {
            // SAFETY: the caller passes NULL or a writable int.
            unsafe { num_devices.write(devices.len() as c_int) };
        }
        list
    })
}

/// `ibv_free_device_list`: frees the list (the devices live as long as the process).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_free_device_list(list: *mut *mut sys::ibv_device) {
    guard((), || {
        // SAFETY: `list` comes from our ibv_get_device_list (calloc) or is NULL.
        unsafe { libc::free(list.cast()) }
    })
}

/// `ibv_get_device_name`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_get_device_name(device: *mut sys::ibv_device) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: a device pointer from our list points at a Device.
        match unsafe { wrapper::<Device, _>(device) } {
            Ok(d) => d.dev.name.as_ptr(),
            Err(e) => {
                set_errno(e);
                std::ptr::null()
            }
        }
    })
}

/// `ibv_get_device_guid`: the EUI-64 of the interface's MAC, in network byte order (0
/// when the interface has none).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_get_device_guid(device: *mut sys::ibv_device) -> u64 {
    guard(0, || {
        // SAFETY: a device pointer from our list points at a Device.
        let Ok(d) = (unsafe { wrapper::<Device, _>(device) }) else {
            set_errno(libc::EINVAL);
            return 0;
        };
        let path = format!("/sys/class/net/{}/address", d.iface);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mac: Vec<u8> = text
            .trim()
            .split(':')
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        let [a, b, c, d, e, f] = mac[..] else {
            return 0;
        };
        u64::from_ne_bytes([a ^ 2, b, c, 0xff, 0xfe, d, e, f])
    })
}

/// The devices of `XRDMA_IFACE`, or why there are none (errno, message).
pub(crate) fn devices() -> Result<&'static [&'static Device], (i32, &'static str)> {
    match DEVICES.get_or_init(read_config) {
        Ok(d) => Ok(d),
        Err((errno, message)) => Err((*errno, message)),
    }
}

/// The device's backend and verbs context: the process's context of its interface
/// ([`xrdma_verbs::devices`]), opened on first use and shared after, with the rsockets too.
fn shared_context(d: &'static Device) -> Result<Context, i32> {
    let mut cached = d.opened.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = cached.as_ref() {
        return Ok(ctx.clone());
    }
    let inner = devices::open(&d.iface).map_err(|e| {
        eprintln!("xrdma: cannot open {}: {e}", d.iface);
        e.errno()
    })?;
    *cached = Some(inner.clone());
    Ok(inner)
}

/// A new context of device `d` (what `ibv_open_device` makes).
pub(crate) fn open(d: &'static Device) -> Result<XContext, i32> {
    let inner = shared_context(d)?;
    let ops = sys::ibv_context_ops {
        post_send: Some(super::data_path::post_send),
        post_recv: Some(super::data_path::post_recv),
        poll_cq: Some(super::data_path::poll_cq),
        req_notify_cq: Some(super::data_path::req_notify_cq),
        post_srq_recv: Some(super::data_path::post_srq_recv),
        ..Default::default()
    };
    // SAFETY: ibv_context is plain C data; all-zero is a valid value (NULL pointers, no
    // ops, and a zeroed mutex, which is PTHREAD_MUTEX_INITIALIZER on glibc).
    let mut ctx: sys::ibv_context = unsafe { std::mem::zeroed() };
    ctx.device = (&d.dev as *const sys::ibv_device).cast_mut();
    ctx.ops = ops;
    ctx.cmd_fd = -1;
    ctx.async_fd = inner.async_fd();
    ctx.num_comp_vectors = 1;
    // NULL, not UINTPTR_MAX: the legacy layout, with no enclosing verbs_context.
    ctx.abi_compat = std::ptr::null_mut();
    Ok(XContext {
        ctx,
        inner,
        registry: Mutex::new(Registry::default()),
        acked: Condvar::new(),
    })
}

/// `ibv_open_device`: opens the interface's backend.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_open_device(device: *mut sys::ibv_device) -> *mut sys::ibv_context {
    guard(std::ptr::null_mut(), || {
        // SAFETY: a device pointer from our list points at a Device, which lives forever.
        let d = unsafe { wrapper::<Device, _>(device) };
        into_ptr(d.and_then(open))
    })
}

/// `ibv_close_device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_close_device(context: *mut sys::ibv_context) -> c_int {
    guard(libc::EIO, || {
        // SAFETY: the context comes from ibv_open_device and is not used after this call.
        status(unsafe { free::<XContext, _>(context) })
    })
}

/// `ibv_query_device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_device(
    context: *mut sys::ibv_context,
    attr: *mut sys::ibv_device_attr,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the context comes from ibv_open_device.
        let c = unsafe { wrapper::<XContext, _>(context) }?;
        if attr.is_null() {
            return Err(libc::EINVAL);
        }
        let a = c.inner.query_device();
        let mut out = sys::ibv_device_attr {
            node_guid: a.node_guid.to_be(),
            sys_image_guid: a.node_guid.to_be(),
            max_mr_size: a.max_mr_size,
            page_size_cap: a.page_size_cap,
            vendor_id: 0,
            vendor_part_id: 0,
            hw_ver: 0,
            max_qp: a.max_qp as c_int,
            max_qp_wr: a.max_qp_wr as c_int,
            max_sge: a.max_sge as c_int,
            max_sge_rd: a.max_sge as c_int,
            max_cq: a.max_cq as c_int,
            max_cqe: a.max_cqe as c_int,
            max_mr: a.max_mr as c_int,
            max_pd: a.max_pd as c_int,
            max_qp_rd_atom: a.max_qp_rd_atom as c_int,
            max_res_rd_atom: (a.max_qp_rd_atom * a.max_qp) as c_int,
            max_qp_init_rd_atom: a.max_qp_init_rd_atom as c_int,
            atomic_cap: a.atomic_cap as u32,
            max_srq: a.max_srq as c_int,
            max_srq_wr: a.max_srq_wr as c_int,
            max_srq_sge: a.max_srq_sge as c_int,
            max_ah: a.max_ah as c_int,
            max_pkeys: a.max_pkeys,
            phys_port_cnt: a.phys_port_cnt,
            ..Default::default()
        };
        copy_str(&mut out.fw_ver, &a.fw_ver);
        // SAFETY: the caller passes a writable ibv_device_attr.
        unsafe { attr.write(out) };
        Ok(0)
    })
}

/// `ibv_query_port`, the exported compat one the inline `ibv_query_port` calls for legacy
/// contexts: it writes only the fields before `port_cap_flags2` (the old, 48-byte struct).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_port(
    context: *mut sys::ibv_context,
    port_num: u8,
    port_attr: *mut sys::_compat_ibv_port_attr,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the context comes from ibv_open_device.
        let c = unsafe { wrapper::<XContext, _>(context) }?;
        if port_attr.is_null() {
            return Err(libc::EINVAL);
        }
        let p = c.inner.query_port(port_num).map_err(|e| e.errno())?;
        let full = sys::ibv_port_attr {
            state: if p.active {
                sys::IBV_PORT_ACTIVE
            } else {
                sys::IBV_PORT_DOWN
            },
            max_mtu: p.max_mtu as u32,
            active_mtu: p.active_mtu as u32,
            gid_tbl_len: p.gid_tbl_len as c_int,
            max_msg_sz: p.max_msg_sz,
            pkey_tbl_len: p.pkey_tbl_len,
            max_vl_num: 1,
            // 1X at 25 Gbps (EDR): what rxe reports; there is no real lane here.
            active_width: 1,
            active_speed: 32,
            phys_state: if p.active { 5 } else { 3 },
            link_layer: IBV_LINK_LAYER_ETHERNET,
            ..Default::default()
        };
        // SAFETY: the caller passes room for the compat struct, whose fields are the first
        // `offset_of!(ibv_port_attr, port_cap_flags2)` bytes of ibv_port_attr.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&full as *const sys::ibv_port_attr).cast::<u8>(),
                port_attr.cast::<u8>(),
                offset_of!(sys::ibv_port_attr, port_cap_flags2),
            )
        };
        Ok(0)
    })
}

/// GID `index` of port `port_num`, or the errno.
pub(crate) fn gid(context: *mut sys::ibv_context, port_num: u8, index: usize) -> Result<Gid, i32> {
    // SAFETY: the context comes from ibv_open_device.
    let c = unsafe { wrapper::<XContext, _>(context) }?;
    let port = c.inner.query_port(port_num).map_err(|e| e.errno())?;
    match c.inner.gid(index) {
        Ok(g) => Ok(g),
        // An interface without addresses still has one (zero) entry in its table.
        Err(_) if index < port.gid_tbl_len as usize => Ok(Gid([0; 16])),
        Err(e) => Err(e.errno()),
    }
}

/// `ibv_query_gid`: the interface's addresses, IPv4 mapped. 0, or -1 with errno.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_gid(
    context: *mut sys::ibv_context,
    port_num: u8,
    index: c_int,
    out: *mut sys::ibv_gid,
) -> c_int {
    guard(-1, || {
        if out.is_null() || index < 0 {
            set_errno(libc::EINVAL);
            return -1;
        }
        match gid(context, port_num, index as usize) {
            Ok(g) => {
                // SAFETY: the caller passes a writable 16-byte ibv_gid.
                unsafe { out.cast::<[u8; 16]>().write(g.0) };
                0
            }
            Err(e) => {
                set_errno(e);
                -1
            }
        }
    })
}

/// `ibv_query_gid_type` (rdma-core's private one, used by ibv_devinfo): every GID is RoCE v2.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_gid_type(
    context: *mut sys::ibv_context,
    port_num: u8,
    index: c_uint,
    gid_type: *mut u32,
) -> c_int {
    guard(-1, || {
        if gid_type.is_null() {
            set_errno(libc::EINVAL);
            return -1;
        }
        match gid(context, port_num, index as usize) {
            Ok(_) => {
                // SAFETY: the caller passes a writable enum (int-sized).
                unsafe { gid_type.write(IBV_GID_TYPE_SYSFS_ROCE_V2) };
                0
            }
            Err(e) => {
                set_errno(e);
                -1
            }
        }
    })
}

/// `ibv_read_sysfs_file`: xrdma devices have no sysfs directory; reads under one of our
/// device paths fail with ENOENT, others read the file as libibverbs does.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_read_sysfs_file(
    dir: *const c_char,
    file: *const c_char,
    buf: *mut c_char,
    size: usize,
) -> c_int {
    guard(-1, || {
        if dir.is_null() || file.is_null() || buf.is_null() || size == 0 {
            set_errno(libc::EINVAL);
            return -1;
        }
        // SAFETY: the caller passes NUL-terminated strings.
        let (dir, file) = unsafe { (CStr::from_ptr(dir), CStr::from_ptr(file)) };
        let dir = dir.to_string_lossy();
        if dir.contains("/xrdma_") || dir.contains("/uverbs") {
            set_errno(libc::ENOENT);
            return -1;
        }
        let path = format!("{dir}/{}", file.to_string_lossy());
        let Ok(mut text) = std::fs::read(path) else {
            set_errno(libc::ENOENT);
            return -1;
        };
        text.truncate(size - 1);
        if text.last() == Some(&b'\n') {
            text.pop();
        }
        // SAFETY: `buf` has `size` bytes; we write at most `size - 1` plus the NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            buf.add(text.len()).write(0);
        }
        text.len() as c_int
    })
}

/// The context an object's `context` pointer names.
///
/// # Safety
///
/// `context` must be NULL or come from ibv_open_device and be live.
pub(crate) unsafe fn context<'a>(context: *mut sys::ibv_context) -> Result<&'a XContext, i32> {
    // SAFETY: per this function's contract.
    unsafe { wrapper::<XContext, _>(context) }
}
