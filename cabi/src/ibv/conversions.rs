//! The pure helpers libibverbs exports: static rate conversions, the copies between the
//! kernel ABI's structs and libibverbs' (librdmacm uses them), and the sysfs path. None
//! touches a device; they answer as libibverbs' own.

use std::ffi::{CString, c_char, c_int};
use std::sync::OnceLock;

use crate::{guard, sys};

/// Each `enum ibv_rate` with its multiple of 2.5 Gb/s (where it has one) and its Mb/s.
const RATES: [(sys::ibv_rate, Option<c_int>, c_int); 23] = [
    (sys::IBV_RATE_2_5_GBPS, Some(1), 2500),
    (sys::IBV_RATE_5_GBPS, Some(2), 5000),
    (sys::IBV_RATE_10_GBPS, Some(4), 10000),
    (sys::IBV_RATE_20_GBPS, Some(8), 20000),
    (sys::IBV_RATE_30_GBPS, Some(12), 30000),
    (sys::IBV_RATE_40_GBPS, Some(16), 40000),
    (sys::IBV_RATE_60_GBPS, Some(24), 60000),
    (sys::IBV_RATE_80_GBPS, Some(32), 80000),
    (sys::IBV_RATE_120_GBPS, Some(48), 120000),
    // FDR and EDR rates: 64b/66b coding, no multiple of 2.5 Gb/s.
    (sys::IBV_RATE_14_GBPS, None, 14062),
    (sys::IBV_RATE_56_GBPS, None, 56250),
    (sys::IBV_RATE_112_GBPS, None, 112500),
    (sys::IBV_RATE_168_GBPS, None, 168750),
    (sys::IBV_RATE_25_GBPS, None, 25781),
    (sys::IBV_RATE_100_GBPS, None, 103125),
    (sys::IBV_RATE_200_GBPS, None, 206250),
    (sys::IBV_RATE_300_GBPS, None, 309375),
    (sys::IBV_RATE_28_GBPS, Some(11), 28125),
    (sys::IBV_RATE_50_GBPS, Some(20), 53125),
    (sys::IBV_RATE_400_GBPS, Some(160), 425000),
    (sys::IBV_RATE_600_GBPS, Some(240), 637500),
    (sys::IBV_RATE_800_GBPS, Some(320), 850000),
    (sys::IBV_RATE_1200_GBPS, Some(480), 1275000),
];

/// `ibv_rate_to_mult`: the rate as a multiple of 2.5 Gb/s; -1 if it is not one.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_rate_to_mult(rate: sys::ibv_rate) -> c_int {
    RATES
        .iter()
        .find(|r| r.0 == rate)
        .and_then(|r| r.1)
        .unwrap_or(-1)
}

/// `mult_to_ibv_rate`: the rate of a multiple of 2.5 Gb/s; `IBV_RATE_MAX` if none is.
#[unsafe(no_mangle)]
pub extern "C" fn mult_to_ibv_rate(mult: c_int) -> sys::ibv_rate {
    RATES
        .iter()
        .find(|r| r.1 == Some(mult))
        .map_or(sys::IBV_RATE_MAX, |r| r.0)
}

/// `ibv_rate_to_mbps`: the rate in Mb/s; -1 for an unknown rate.
#[unsafe(no_mangle)]
pub extern "C" fn ibv_rate_to_mbps(rate: sys::ibv_rate) -> c_int {
    RATES.iter().find(|r| r.0 == rate).map_or(-1, |r| r.2)
}

/// `mbps_to_ibv_rate`: the rate of exactly `mbps` Mb/s; `IBV_RATE_MAX` if none is.
#[unsafe(no_mangle)]
pub extern "C" fn mbps_to_ibv_rate(mbps: c_int) -> sys::ibv_rate {
    RATES
        .iter()
        .find(|r| r.2 == mbps)
        .map_or(sys::IBV_RATE_MAX, |r| r.0)
}

/// The 16 raw bytes of a GID union.
fn gid_raw(g: &sys::ibv_gid) -> [u8; 16] {
    // SAFETY: ibv_gid is a 16-byte union; its `raw` view is always valid.
    unsafe { *(g as *const sys::ibv_gid).cast::<[u8; 16]>() }
}

/// A GID union holding `raw`.
fn gid_from(raw: [u8; 16]) -> sys::ibv_gid {
    let mut g = sys::ibv_gid::default();
    // SAFETY: as in `gid_raw`; writing the `raw` view is always valid.
    unsafe { *(&mut g as *mut sys::ibv_gid).cast::<[u8; 16]>() = raw };
    g
}

fn ah_attr_from_kern(src: &sys::ib_uverbs_ah_attr) -> sys::ibv_ah_attr {
    sys::ibv_ah_attr {
        grh: sys::ibv_global_route {
            dgid: gid_from(src.grh.dgid),
            flow_label: src.grh.flow_label,
            sgid_index: src.grh.sgid_index,
            hop_limit: src.grh.hop_limit,
            traffic_class: src.grh.traffic_class,
        },
        dlid: src.dlid,
        sl: src.sl,
        src_path_bits: src.src_path_bits,
        static_rate: src.static_rate,
        is_global: src.is_global,
        port_num: src.port_num,
    }
}

/// `ibv_copy_ah_attr_from_kern`: the kernel ABI's address vector into libibverbs' (NULL
/// arguments are ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_copy_ah_attr_from_kern(
    dst: *mut sys::ibv_ah_attr,
    src: *const sys::ib_uverbs_ah_attr,
) {
    guard((), || {
        if dst.is_null() || src.is_null() {
            return;
        }
        // SAFETY: checked non-NULL; the caller passes a readable source and a writable
        // destination.
        unsafe { dst.write(ah_attr_from_kern(&*src)) };
    })
}

/// `ibv_copy_qp_attr_from_kern`: the kernel ABI's QP attributes into libibverbs' fields
/// (the rest of `*dst` is left as it was, as libibverbs does; NULL arguments are ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_copy_qp_attr_from_kern(
    dst: *mut sys::ibv_qp_attr,
    src: *const sys::ib_uverbs_qp_attr,
) {
    guard((), || {
        if dst.is_null() || src.is_null() {
            return;
        }
        // SAFETY: checked non-NULL; the caller passes a readable source and a writable
        // destination, distinct structs.
        let (d, s) = unsafe { (&mut *dst, &*src) };
        d.cur_qp_state = s.cur_qp_state;
        d.path_mtu = s.path_mtu;
        d.path_mig_state = s.path_mig_state;
        d.qkey = s.qkey;
        d.rq_psn = s.rq_psn;
        d.sq_psn = s.sq_psn;
        d.dest_qp_num = s.dest_qp_num;
        d.qp_access_flags = s.qp_access_flags;
        d.cap = sys::ibv_qp_cap {
            max_send_wr: s.max_send_wr,
            max_recv_wr: s.max_recv_wr,
            max_send_sge: s.max_send_sge,
            max_recv_sge: s.max_recv_sge,
            max_inline_data: s.max_inline_data,
        };
        d.ah_attr = ah_attr_from_kern(&s.ah_attr);
        d.alt_ah_attr = ah_attr_from_kern(&s.alt_ah_attr);
        d.pkey_index = s.pkey_index;
        d.alt_pkey_index = s.alt_pkey_index;
        d.en_sqd_async_notify = s.en_sqd_async_notify;
        d.sq_draining = s.sq_draining;
        d.max_rd_atomic = s.max_rd_atomic;
        d.max_dest_rd_atomic = s.max_dest_rd_atomic;
        d.min_rnr_timer = s.min_rnr_timer;
        d.port_num = s.port_num;
        d.timeout = s.timeout;
        d.retry_cnt = s.retry_cnt;
        d.rnr_retry = s.rnr_retry;
        d.alt_port_num = s.alt_port_num;
        d.alt_timeout = s.alt_timeout;
    })
}

/// Copies the fields a path record has in both layouts, GIDs as raw bytes; integers
/// convert as C's assignments do (the kernel's `__u32 mtu` into a `uint8_t`, say).
macro_rules! copy_path_rec {
    ($d:expr, $s:expr, $dgid:expr, $sgid:expr) => {{
        let (d, s) = ($d, $s);
        d.dgid = $dgid;
        d.sgid = $sgid;
        d.dlid = s.dlid as _;
        d.slid = s.slid as _;
        d.raw_traffic = s.raw_traffic as _;
        d.flow_label = s.flow_label as _;
        d.hop_limit = s.hop_limit as _;
        d.traffic_class = s.traffic_class as _;
        d.reversible = s.reversible as _;
        d.numb_path = s.numb_path as _;
        d.pkey = s.pkey as _;
        d.sl = s.sl as _;
        d.mtu_selector = s.mtu_selector as _;
        d.mtu = s.mtu as _;
        d.rate_selector = s.rate_selector as _;
        d.rate = s.rate as _;
        d.packet_life_time = s.packet_life_time as _;
        d.preference = s.preference as _;
        d.packet_life_time_selector = s.packet_life_time_selector as _;
    }};
}

/// `ibv_copy_path_rec_from_kern`: the kernel ABI's path record into libibverbs' (NULL
/// arguments are ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_copy_path_rec_from_kern(
    dst: *mut sys::ibv_sa_path_rec,
    src: *const sys::ib_user_path_rec,
) {
    guard((), || {
        if dst.is_null() || src.is_null() {
            return;
        }
        // SAFETY: checked non-NULL; the caller passes a readable source and a writable
        // destination, distinct structs.
        let (d, s) = unsafe { (&mut *dst, &*src) };
        copy_path_rec!(d, s, gid_from(s.dgid), gid_from(s.sgid));
    })
}

/// `ibv_copy_path_rec_to_kern`: libibverbs' path record into the kernel ABI's (NULL
/// arguments are ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ibv_copy_path_rec_to_kern(
    dst: *mut sys::ib_user_path_rec,
    src: *const sys::ibv_sa_path_rec,
) {
    guard((), || {
        if dst.is_null() || src.is_null() {
            return;
        }
        // SAFETY: as in ibv_copy_path_rec_from_kern.
        let (d, s) = unsafe { (&mut *dst, &*src) };
        copy_path_rec!(d, s, gid_raw(&s.dgid), gid_raw(&s.sgid));
    })
}

/// `ibv_get_sysfs_path`: where sysfs is mounted: `$SYSFS_PATH` without its trailing
/// slashes, else `/sys`, read once, as libibverbs does. xrdma devices have no directory
/// there (`ibv_read_sysfs_file` says so).
#[unsafe(no_mangle)]
pub extern "C" fn ibv_get_sysfs_path() -> *const c_char {
    static PATH: OnceLock<CString> = OnceLock::new();
    guard(c"/sys".as_ptr(), || {
        PATH.get_or_init(|| {
            let env = std::env::var_os("SYSFS_PATH")
                .and_then(|p| p.into_string().ok())
                .map(|p| p.trim_end_matches('/').to_owned())
                .filter(|p| !p.is_empty() && !p.contains('\0'));
            // No NUL inside (filtered above): the conversion cannot fail.
            CString::new(env.unwrap_or_else(|| "/sys".into()))
                .unwrap_or_else(|_| c"/sys".to_owned())
        })
        .as_ptr()
    })
}
