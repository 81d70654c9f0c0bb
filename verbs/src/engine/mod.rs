//! Transport logic without I/O: packets in, packets and completions out, time as an
//! argument where there is any. `#![forbid(unsafe_code)]`.
#![forbid(unsafe_code)]

pub mod cm;
pub mod rc;
pub mod timer;
pub mod ud;
