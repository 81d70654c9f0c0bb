//! xrdma's own calls (`include/xrdma/xrdma.h`): version, configuration, counters.

use std::ffi::{CStr, c_char, c_int};

use xrdma_verbs::devices::{self, Backend, Settings};

use crate::rs::guard_int;

/// `struct xrdma_stats` of `xrdma.h`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct XrdmaStats {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_dropped: u64,
    tx_dropped: u64,
    rs_protocol_errors: u64,
    rs_dgram_dropped: u64,
}

/// The library's version, a static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn xrdma_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Sets the interfaces, backend and port in code (see `xrdma.h`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xrdma_configure(
    ifaces: *const c_char,
    backend: *const c_char,
    udp_port: u16,
) -> c_int {
    guard_int(|| {
        // SAFETY: NULL or a NUL-terminated string, per the header's contract.
        let text = |p: *const c_char| match p.is_null() {
            true => Ok(""),
            false => unsafe { CStr::from_ptr(p) }
                .to_str()
                .map_err(|_| libc::EINVAL),
        };
        let ifaces = devices::iface_list(text(ifaces)?);
        let backend = match text(backend)? {
            "" => None,
            name => Some(name.parse::<Backend>().map_err(|_| libc::EINVAL)?),
        };
        let defaults = Settings::default();
        let settings = Settings {
            ifaces,
            backend,
            port: if udp_port == 0 {
                defaults.port
            } else {
                udp_port
            },
        };
        devices::configure(settings).map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))?;
        Ok(0)
    })
}

/// Fills the caller's `struct xrdma_stats` of `size` bytes (a shorter one gets the
/// fields that fit).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xrdma_get_stats(out: *mut XrdmaStats, size: usize) -> c_int {
    guard_int(|| {
        if out.is_null() {
            return Err(libc::EFAULT);
        }
        let mut s = XrdmaStats::default();
        for (_, ctx) in devices::opened() {
            let n = ctx.net_stats();
            s.rx_packets += n.rx_packets;
            s.rx_bytes += n.rx_bytes;
            s.tx_packets += n.tx_packets;
            s.tx_bytes += n.tx_bytes;
            s.rx_dropped += n.rx_dropped();
            s.tx_dropped += n.tx_dropped;
        }
        let rs = xrdma_rsocket::stats();
        s.rs_protocol_errors = rs.protocol_errors;
        s.rs_dgram_dropped = rs.dgram_dropped;
        let n = size.min(size_of::<XrdmaStats>());
        // SAFETY: the caller's `size` writable bytes at `out`; `s` has at least `n`.
        unsafe {
            std::ptr::copy_nonoverlapping((&s as *const XrdmaStats).cast::<u8>(), out.cast(), n)
        };
        Ok(0)
    })
}
