//! The libibverbs calls xrdma has no way to honour: importing objects from another
//! process's command fd, dma-buf regions, multicast, ECE, the `ibv_qp_ex` posting interface
//! and legacy provider registration. Each fails as libibverbs does for a device without the
//! feature (its `dummy_ops`: EOPNOTSUPP, or NULL with errno EOPNOTSUPP), and says so once
//! per process on stderr, naming the call, so that a program that gives up afterwards
//! leaves a trace of why. Nothing here dereferences a pointer it is given.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

use super::objects::XQp;
use crate::{guard, set_errno, sys, wrapper};

/// Prints `xrdma: <call>: <why>` on stderr the first time it runs for `said`.
fn say_once(said: &AtomicBool, call: &str, why: &str) {
    if !said.swap(true, Ordering::Relaxed) {
        eprintln!("xrdma: {call}: {why}");
    }
}

/// Fails a call that returns an errno value: says why once, returns EOPNOTSUPP.
macro_rules! fail_errno {
    ($call:literal, $why:literal) => {{
        static SAID: AtomicBool = AtomicBool::new(false);
        say_once(&SAID, $call, $why);
        libc::EOPNOTSUPP
    }};
}

/// Fails a constructor: says why once, sets errno EOPNOTSUPP, returns NULL.
macro_rules! fail_null {
    ($call:literal, $why:literal) => {{
        static SAID: AtomicBool = AtomicBool::new(false);
        say_once(&SAID, $call, $why);
        set_errno(libc::EOPNOTSUPP);
        std::ptr::null_mut()
    }};
}

/// A call that has nothing to undo: says so once.
macro_rules! nothing {
    ($call:literal, $why:literal) => {{
        static SAID: AtomicBool = AtomicBool::new(false);
        say_once(&SAID, $call, $why);
    }};
}

/// `ibv_attach_mcast`: EOPNOTSUPP; xrdma's UD QPs join no multicast group.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_attach_mcast(
    _qp: *mut sys::ibv_qp,
    _gid: *const sys::ibv_gid,
    _lid: u16,
) -> c_int {
    guard(libc::EIO, || {
        fail_errno!(
            "ibv_attach_mcast",
            "multicast is not supported (EOPNOTSUPP)"
        )
    })
}

/// `ibv_detach_mcast`: EOPNOTSUPP, as no QP is ever attached.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_detach_mcast(
    _qp: *mut sys::ibv_qp,
    _gid: *const sys::ibv_gid,
    _lid: u16,
) -> c_int {
    guard(libc::EIO, || {
        fail_errno!(
            "ibv_detach_mcast",
            "multicast is not supported (EOPNOTSUPP)"
        )
    })
}

/// `ibv_import_device`: NULL, errno EOPNOTSUPP; an xrdma context has no kernel command fd
/// to share between processes.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_import_device(_cmd_fd: c_int) -> *mut sys::ibv_context {
    guard(std::ptr::null_mut(), || {
        fail_null!(
            "ibv_import_device",
            "xrdma contexts have no kernel command fd to import (EOPNOTSUPP)"
        )
    })
}

/// `ibv_import_pd`: NULL, errno EOPNOTSUPP (see `ibv_import_device`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_import_pd(
    _context: *mut sys::ibv_context,
    _pd_handle: u32,
) -> *mut sys::ibv_pd {
    guard(std::ptr::null_mut(), || {
        fail_null!(
            "ibv_import_pd",
            "xrdma objects cannot be imported from another process (EOPNOTSUPP)"
        )
    })
}

/// `ibv_import_mr`: NULL, errno EOPNOTSUPP (see `ibv_import_device`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_import_mr(_pd: *mut sys::ibv_pd, _mr_handle: u32) -> *mut sys::ibv_mr {
    guard(std::ptr::null_mut(), || {
        fail_null!(
            "ibv_import_mr",
            "xrdma objects cannot be imported from another process (EOPNOTSUPP)"
        )
    })
}

/// `ibv_import_dm`: NULL, errno EOPNOTSUPP; xrdma has no device memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_import_dm(
    _context: *mut sys::ibv_context,
    _dm_handle: u32,
) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        fail_null!(
            "ibv_import_dm",
            "xrdma has no device memory to import (EOPNOTSUPP)"
        )
    })
}

/// `ibv_unimport_pd`: nothing to do, as no PD is ever imported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_unimport_pd(_pd: *mut sys::ibv_pd) {
    guard((), || {
        nothing!(
            "ibv_unimport_pd",
            "nothing to unimport: xrdma imports no objects"
        )
    })
}

/// `ibv_unimport_mr`: nothing to do, as no MR is ever imported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_unimport_mr(_mr: *mut sys::ibv_mr) {
    guard((), || {
        nothing!(
            "ibv_unimport_mr",
            "nothing to unimport: xrdma imports no objects"
        )
    })
}

/// `ibv_unimport_dm`: nothing to do, as no device memory is ever imported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_unimport_dm(_dm: *mut c_void) {
    guard((), || {
        nothing!(
            "ibv_unimport_dm",
            "nothing to unimport: xrdma imports no objects"
        )
    })
}

/// `ibv_reg_dmabuf_mr`: NULL, errno EOPNOTSUPP; a dma-buf is device memory xrdma cannot
/// reach by address.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_reg_dmabuf_mr(
    _pd: *mut sys::ibv_pd,
    _offset: u64,
    _length: usize,
    _iova: u64,
    _fd: c_int,
    _access: c_int,
) -> *mut sys::ibv_mr {
    guard(std::ptr::null_mut(), || {
        fail_null!(
            "ibv_reg_dmabuf_mr",
            "dma-buf memory regions are not supported (EOPNOTSUPP)"
        )
    })
}

/// `ibv_query_ece`: EOPNOTSUPP, as for any device without Enhanced Connection
/// Establishment options (perftest and librdmacm carry on without them).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_ece(_qp: *mut sys::ibv_qp, _ece: *mut sys::ibv_ece) -> c_int {
    guard(libc::EIO, || {
        fail_errno!(
            "ibv_query_ece",
            "no Enhanced Connection Establishment options (EOPNOTSUPP)"
        )
    })
}

/// `ibv_set_ece`: EOPNOTSUPP (errno too, as libibverbs sets it), as `ibv_query_ece`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_set_ece(_qp: *mut sys::ibv_qp, _ece: *mut sys::ibv_ece) -> c_int {
    guard(libc::EIO, || {
        set_errno(libc::EOPNOTSUPP);
        fail_errno!(
            "ibv_set_ece",
            "no Enhanced Connection Establishment options (EOPNOTSUPP)"
        )
    })
}

/// `ibv_qp_to_qp_ex`: NULL, errno EOPNOTSUPP; xrdma QPs have no `ibv_qp_ex` posting
/// interface (`ibv_wr_*`), only `ibv_post_send`. libibverbs' own would read past the
/// `ibv_qp` into memory it does not own.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_qp_to_qp_ex(qp: *mut sys::ibv_qp) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        // SAFETY: a QP pointer comes from ibv_create_qp (NULL is refused).
        if unsafe { wrapper::<XQp, _>(qp) }.is_err() {
            set_errno(libc::EINVAL);
            return std::ptr::null_mut();
        }
        fail_null!(
            "ibv_qp_to_qp_ex",
            "xrdma QPs have no ibv_qp_ex interface (ibv_wr_*); use ibv_post_send (EOPNOTSUPP)"
        )
    })
}

/// `ibv_query_qp_data_in_order`: 0, no guarantee, as for a device without the query. The
/// bytes of a message land through the CPU's copies, which may store a buffer's last bytes
/// before its first (a program that waits for the last byte must not take the rest as
/// written).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_query_qp_data_in_order(
    _qp: *mut sys::ibv_qp,
    _op: sys::ibv_wr_opcode,
    _flags: u32,
) -> c_int {
    0
}

/// `ibv_register_driver`: the registration of a legacy (pre-v15) provider library; xrdma is
/// its own device, and ignores it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_register_driver(_name: *const c_char, _init: *mut c_void) {
    guard((), || {
        nothing!(
            "ibv_register_driver",
            "legacy provider libraries are ignored under xrdma"
        )
    })
}
