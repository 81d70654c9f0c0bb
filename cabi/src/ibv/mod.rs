//! libibverbs: the `ibv_*` exports, over xrdma's verbs.
//!
//! - [`device`]: the device list from the environment, contexts, device/port/GID queries;
//! - [`objects`]: PDs, MRs, completion channels, CQs, QPs, SRQs and AHs;
//! - [`data_path`]: the calls `<infiniband/verbs.h>` makes inline through `ibv_context.ops`;
//! - [`events`]: asynchronous events, the enum-to-string helpers and the small calls;
//! - [`addressing`]: extended GID queries, P_Key and device indexes, AHs from received
//!   completions, Ethernet addresses behind GIDs;
//! - [`conversions`]: the pure helpers (rates, kernel ABI copies, the sysfs path);
//! - [`unsupported`]: what xrdma has no way to do, failing as libibverbs does for a device
//!   without it, and saying so once on stderr.

pub(crate) mod addressing;
pub(crate) mod conversions;
pub(crate) mod data_path;
pub(crate) mod device;
pub(crate) mod events;
pub(crate) mod objects;
pub(crate) mod unsupported;
