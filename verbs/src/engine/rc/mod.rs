//! The reliable connected transport, without I/O. So far: message segmentation at the
//! path MTU. The requester and responder state machines come with RC queue pairs.

pub mod segment;
