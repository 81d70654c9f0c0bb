//! rsocket's protocol without I/O: the messages and their encodings ([`msg`]), the
//! accounting of a stream ([`stream`]), and the headers of datagrams ([`dgram`]).

#![forbid(unsafe_code)]

pub mod dgram;
pub mod msg;
pub mod stream;
