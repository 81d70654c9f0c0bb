//! librdmacm: the `rdma_*` exports, over [`xrdma_verbs::cm`].
//!
//! - [`device`]: the devices librdmacm opens for itself (`id->verbs`, `id->pd`);
//! - [`channel`]: event channels, `rdma_get_cm_event`/`rdma_ack_cm_event`, `rdma_event_str`;
//! - [`id`]: CM ids, addresses, listening, connecting, accepting, options;
//! - [`qp`]: `rdma_create_qp(_ex)`, `rdma_destroy_qp` and the SRQ calls;
//! - [`addrinfo`]: `rdma_getaddrinfo` and `rdma_freeaddrinfo`;
//! - [`ep`]: `rdma_create_ep`, `rdma_destroy_ep`, `rdma_get_request` (synchronous ids).
//!
//! Errors follow librdmacm: `int` calls return 0, or -1 with errno; constructors NULL with
//! errno. What xrdma does not implement (multicast) fails with ENOSYS and says so on
//! stderr.

pub(crate) mod addrinfo;
pub(crate) mod channel;
pub(crate) mod device;
pub(crate) mod ep;
pub(crate) mod id;
pub(crate) mod qp;
pub(crate) mod sockaddr;

use std::ffi::c_int;

use crate::guard_or;

/// Runs an `int` export's body: 0, or -1 with errno (EIO for a panic).
fn guard_ret(body: impl FnOnce() -> Result<(), i32>) -> c_int {
    guard_or(-1, || body().map(|()| 0))
}

/// The errno of a verbs-layer error.
fn errno_of(e: xrdma_verbs::verbs::Error) -> i32 {
    e.errno()
}
