//! libibverbs: the `ibv_*` exports, over xrdma's verbs.
//!
//! - [`device`]: the device list from the environment, contexts, device/port/GID queries;
//! - [`objects`]: PDs, MRs, completion channels, CQs, QPs, SRQs and AHs;
//! - [`data_path`]: the calls `<infiniband/verbs.h>` makes inline through `ibv_context.ops`;
//! - [`events`]: asynchronous events, the enum-to-string helpers and the small calls.

pub(crate) mod data_path;
pub(crate) mod device;
pub(crate) mod events;
pub(crate) mod objects;
