//! rsocket's protocol without I/O: the messages and their encodings ([`msg`]), and the
//! accounting of a stream ([`stream`]).

#![forbid(unsafe_code)]

pub mod msg;
pub mod stream;
