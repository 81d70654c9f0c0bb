//! Addressing beyond the GID table's raw entries: the extended GID queries, P_Key indexes,
//! the device index, address handles from a received UD completion's GRH, and the peer's
//! Ethernet address behind a GID.

use std::ffi::c_int;
use std::mem::size_of;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use xrdma_verbs::net::netlink::Netlink;
use xrdma_verbs::verbs::Gid;
use xrdma_verbs::wire::ipv4::Ipv4Packet;

use super::device::{Device, XContext, context, gid};
use super::objects::{XPd, create_ah};
use crate::sys;
use crate::{c_ptr, guard, guard_errno, set_errno, wrapper};

/// `ibv_get_device_index`: the device's place in the list `ibv_get_device_list` returns
/// (the kernel's ibdev index for real devices); -1 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_get_device_index(device: *mut sys::ibv_device) -> c_int {
    guard(-1, || {
        // SAFETY: a device pointer from our list points at a Device.
        match unsafe { wrapper::<Device, _>(device) } {
            Ok(d) => d.index as c_int,
            Err(_) => -1,
        }
    })
}

/// The GID table entry `index` of port `port_num`: the interface's address, RoCE v2.
fn gid_entry(c: &XContext, port_num: u32, index: u32) -> Result<sys::ibv_gid_entry, i32> {
    let port = u8::try_from(port_num).map_err(|_| libc::EINVAL)?;
    let g = gid(c.as_c(), port, index as usize)?;
    // An all-zero GID is an empty slot, as the kernel's sysfs shows it: no entry.
    if g.is_zero() {
        return Err(libc::ENODATA);
    }
    let mut entry = sys::ibv_gid_entry {
        gid_index: index,
        port_num,
        gid_type: sys::IBV_GID_TYPE_ROCE_V2,
        ndev_ifindex: c.inner.link().ifindex,
        ..Default::default()
    };
    // SAFETY: ibv_gid is a 16-byte union; writing its `raw` view is always valid.
    unsafe { *(&mut entry.gid as *mut sys::ibv_gid).cast::<[u8; 16]>() = g.0 };
    Ok(entry)
}

/// Copies `entry` into the caller's entry of `entry_size` bytes (an older, shorter struct
/// gets its first `entry_size` bytes).
///
/// # Safety
///
/// `out` must be writable for `entry_size` bytes.
unsafe fn write_entry(out: *mut u8, entry: &sys::ibv_gid_entry, entry_size: usize) {
    let n = entry_size.min(size_of::<sys::ibv_gid_entry>());
    // SAFETY: `entry` is `n` readable bytes; `out` has room for them (this function's
    // contract).
    unsafe { std::ptr::copy_nonoverlapping((entry as *const sys::ibv_gid_entry).cast(), out, n) };
}

/// The smallest `entry_size` an application may pass: up to `gid_type`, the fields every
/// version of `struct ibv_gid_entry` has.
const MIN_ENTRY_SIZE: usize = std::mem::offset_of!(sys::ibv_gid_entry, ndev_ifindex);

/// `_ibv_query_gid_ex` (what the inline `ibv_query_gid_ex` calls): one GID entry, with its
/// type (always RoCE v2) and interface. 0 or the errno: ENODATA for an empty slot, EINVAL
/// for a bad port, index or flags.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ibv_query_gid_ex(
    ctx: *mut sys::ibv_context,
    port_num: u32,
    gid_index: u32,
    entry: *mut sys::ibv_gid_entry,
    flags: u32,
    entry_size: usize,
) -> c_int {
    guard_errno(|| {
        // SAFETY: the context comes from ibv_open_device.
        let c = unsafe { context(ctx) }?;
        if entry.is_null() || flags != 0 || entry_size < MIN_ENTRY_SIZE {
            return Err(libc::EINVAL);
        }
        let e = gid_entry(c, port_num, gid_index)?;
        // SAFETY: the caller passes `entry_size` writable bytes at `entry`.
        unsafe { write_entry(entry.cast(), &e, entry_size) };
        Ok(0)
    })
}

/// `_ibv_query_gid_table` (what the inline `ibv_query_gid_table` calls): the valid GID
/// entries of every port, up to `max_entries`; their count, or a negative errno (EINVAL
/// for bad arguments or too small an array).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _ibv_query_gid_table(
    ctx: *mut sys::ibv_context,
    entries: *mut sys::ibv_gid_entry,
    max_entries: usize,
    flags: u32,
    entry_size: usize,
) -> isize {
    guard(-(libc::EIO as isize), || {
        let r = (|| {
            // SAFETY: the context comes from ibv_open_device.
            let c = unsafe { context(ctx) }?;
            if (entries.is_null() && max_entries > 0) || flags != 0 || entry_size < MIN_ENTRY_SIZE {
                return Err(libc::EINVAL);
            }
            let port = c.inner.query_port(1).map_err(|e| e.errno())?;
            let mut n = 0;
            for index in 0..port.gid_tbl_len {
                let Ok(e) = gid_entry(c, 1, index) else {
                    continue;
                };
                if n == max_entries {
                    return Err(libc::EINVAL);
                }
                // SAFETY: `entries` holds `max_entries` entries of `entry_size` bytes.
                unsafe { write_entry(entries.cast::<u8>().add(n * entry_size), &e, entry_size) };
                n += 1;
            }
            Ok(n as isize)
        })();
        r.unwrap_or_else(|e| -(e as isize))
    })
}

/// `ibv_get_pkey_index`: the index of P_Key `pkey` (network order) in port `port_num`'s
/// table, whose one entry is the default 0xffff at index 0; -1 with errno otherwise
/// (ENOENT, as libibverbs' search ends past the table; EINVAL for a bad port).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_get_pkey_index(
    ctx: *mut sys::ibv_context,
    port_num: u8,
    pkey: u16,
) -> c_int {
    guard(-1, || {
        // SAFETY: the context comes from ibv_open_device.
        let r = unsafe { context(ctx) }.and_then(|c| {
            c.inner.query_port(port_num).map_err(|e| e.errno())?;
            // The full-membership default P_Key; a limited member (0x7fff) does not match.
            if u16::from_be(pkey) == 0xffff {
                Ok(0)
            } else {
                Err(libc::ENOENT)
            }
        });
        r.unwrap_or_else(|e| {
            set_errno(e);
            -1
        })
    })
}

/// The GRH of a received UD message, as RoCE v2 puts it: an IPv6 header, or 20 bytes of
/// padding and an IPv4 header. Returns (source, destination, hop limit, traffic class,
/// flow label).
fn parse_grh(grh: &[u8; 40]) -> Result<(IpAddr, IpAddr, u8, u8, u32), i32> {
    // The header describes the whole datagram, which the GRH does not hold: a view of
    // the 20 header bytes, read only once they say they are a 20-byte IPv4 header.
    let v4 = Some(Ipv4Packet::new_unchecked(&grh[20..]))
        .filter(|p| p.version() == 4 && p.header_len() == 20 && p.verify_checksum());
    // As libibverbs decides: an IPv6 version nibble with a valid IPv4 header in the second
    // half is IPv4 (the first 20 bytes are then padding, which may hold anything).
    if grh[0] >> 4 != 6 || v4.is_some() {
        let p = v4.ok_or(libc::EPROTONOSUPPORT)?;
        return Ok((
            IpAddr::V4(p.src_addr()),
            IpAddr::V4(p.dst_addr()),
            p.ttl(),
            p.tos(),
            0,
        ));
    }
    // IPv6: next header UDP is RoCE v2; anything else (0x1b, RoCE v1) xrdma does not speak.
    if grh[6] != libc::IPPROTO_UDP as u8 {
        return Err(libc::EPROTONOSUPPORT);
    }
    let vtf = u32::from_be_bytes([grh[0], grh[1], grh[2], grh[3]]);
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&grh[at..at + 16]);
        Ipv6Addr::from(a)
    };
    Ok((
        IpAddr::V6(addr(8)),
        IpAddr::V6(addr(24)),
        grh[7],
        (vtf >> 20) as u8,
        vtf & 0xf_ffff,
    ))
}

/// The address vector back to the sender of a received UD completion (what
/// `ibv_init_ah_from_wc` fills).
///
/// # Safety
///
/// With `IBV_WC_GRH` in `wc.wc_flags`, `grh` must point at the 40 readable bytes of the
/// receive buffer's GRH.
unsafe fn ah_attr_from_wc(
    c: &XContext,
    port_num: u8,
    wc: &sys::ibv_wc,
    grh: *const sys::ibv_grh,
) -> Result<sys::ibv_ah_attr, i32> {
    c.inner.query_port(port_num).map_err(|e| e.errno())?;
    let mut attr = sys::ibv_ah_attr {
        dlid: wc.slid,
        sl: wc.sl,
        src_path_bits: wc.dlid_path_bits,
        port_num,
        ..Default::default()
    };
    if wc.wc_flags & sys::IBV_WC_GRH == 0 {
        // No GRH, no global route: as libibverbs; on RoCE, creating the AH then fails.
        return Ok(attr);
    }
    if grh.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: per this function's contract; ibv_grh is 40 bytes of plain data.
    let bytes = unsafe { &*grh.cast::<[u8; 40]>() };
    let (src, dst, hop_limit, traffic_class, flow_label) = parse_grh(bytes)?;
    // The sender's GID is our destination; our GID it was sent to names the source index.
    let ours = Gid::from_ip(dst);
    let port = c.inner.query_port(port_num).map_err(|e| e.errno())?;
    let sgid_index = (0..port.gid_tbl_len as usize)
        .find(|&i| c.inner.gid(i).is_ok_and(|g| g == ours))
        .ok_or(libc::ENOENT)?;
    attr.is_global = 1;
    attr.grh.sgid_index = sgid_index as u8;
    attr.grh.hop_limit = hop_limit;
    attr.grh.traffic_class = traffic_class;
    attr.grh.flow_label = flow_label;
    // SAFETY: ibv_gid is a 16-byte union; writing its `raw` view is always valid.
    unsafe { *(&mut attr.grh.dgid as *mut sys::ibv_gid).cast::<[u8; 16]>() = Gid::from_ip(src).0 };
    Ok(attr)
}

/// `ibv_init_ah_from_wc`: the address vector that answers the sender of a received UD
/// message, from its completion and GRH. 0, or -1 with errno (EPROTONOSUPPORT for a GRH that is not RoCE v2, ENOENT if it was not sent to one of our
/// GIDs).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_init_ah_from_wc(
    ctx: *mut sys::ibv_context,
    port_num: u8,
    wc: *mut sys::ibv_wc,
    grh: *mut sys::ibv_grh,
    ah_attr: *mut sys::ibv_ah_attr,
) -> c_int {
    guard(-1, || {
        let r = (|| {
            // SAFETY: the context comes from ibv_open_device.
            let c = unsafe { context(ctx) }?;
            if wc.is_null() || ah_attr.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: the caller passes a completion it polled and, with IBV_WC_GRH, the
            // GRH at the start of that receive's buffer.
            let attr = unsafe { ah_attr_from_wc(c, port_num, &*wc, grh) }?;
            // SAFETY: checked non-NULL; the caller passes a writable ibv_ah_attr.
            unsafe { ah_attr.write(attr) };
            Ok(())
        })();
        r.map_or_else(
            |e| {
                set_errno(e);
                -1
            },
            |()| 0,
        )
    })
}

/// `ibv_create_ah_from_wc`: an AH that answers the sender of a received UD message; NULL
/// with errno as `ibv_init_ah_from_wc` and `ibv_create_ah` fail.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_create_ah_from_wc(
    pd: *mut sys::ibv_pd,
    wc: *mut sys::ibv_wc,
    grh: *mut sys::ibv_grh,
    port_num: u8,
) -> *mut sys::ibv_ah {
    guard(std::ptr::null_mut(), || {
        let r = (|| {
            // SAFETY: the PD comes from ibv_alloc_pd.
            let p = unsafe { wrapper::<XPd, _>(pd) }?;
            if wc.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: the PD's context comes from ibv_open_device and outlives it.
            let c = unsafe { context(p.context_c()) }?;
            // SAFETY: as for ibv_init_ah_from_wc.
            let attr = unsafe { ah_attr_from_wc(c, port_num, &*wc, grh) }?;
            create_ah(p, &attr)
        })();
        c_ptr(r)
    })
}

/// How long `ibv_resolve_eth_l2_from_gid` waits for address resolution, as libibverbs.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// `ibv_resolve_eth_l2_from_gid`: the Ethernet address of the next hop towards
/// `attr->grh.dgid` (the peer, or its gateway), from the kernel's route and neighbour
/// tables, resolving it if needed; `*vid` (if not NULL) is 0xffff, no VLAN. 0, or a
/// negative errno as libibverbs (-EINVAL, -EHOSTUNREACH).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_resolve_eth_l2_from_gid(
    ctx: *mut sys::ibv_context,
    attr: *mut sys::ibv_ah_attr,
    eth_mac: *mut u8,
    vid: *mut u16,
) -> c_int {
    guard(-libc::EIO, || {
        let r = (|| {
            // SAFETY: the context comes from ibv_open_device.
            let c = unsafe { context(ctx) }?;
            if attr.is_null() || eth_mac.is_null() {
                return Err(libc::EINVAL);
            }
            // SAFETY: checked non-NULL; the caller passes a readable ibv_ah_attr.
            let a = unsafe { &*attr };
            gid(c.as_c(), a.port_num, a.grh.sgid_index as usize)?;
            // SAFETY: ibv_gid is a 16-byte union; its `raw` view is always valid.
            let dgid = Gid(unsafe { *(&a.grh.dgid as *const sys::ibv_gid).cast::<[u8; 16]>() });
            let mut nl = Netlink::open().map_err(|_| libc::EHOSTUNREACH)?;
            let (_, mac) = nl
                .resolve_next_hop(dgid.ip(), RESOLVE_TIMEOUT)
                .map_err(|_| libc::EHOSTUNREACH)?;
            // SAFETY: the caller passes 6 writable bytes at `eth_mac`, and a writable
            // `*vid` if not NULL.
            unsafe {
                std::ptr::copy_nonoverlapping(mac.as_ptr(), eth_mac, 6);
                if !vid.is_null() {
                    vid.write(0xffff);
                }
            }
            Ok(())
        })();
        r.map_or_else(|e| -e, |()| 0)
    })
}
