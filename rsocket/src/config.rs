//! rsocket's tunables and their defaults (rdma-core's `def_*` values).

use std::time::Duration;

use crate::proto::msg::{scale_to_value, value_to_scale};

/// The sizes and timings of a socket. The defaults are rsocket's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Send queue entries (`RDMA_SQSIZE`, default 384), 4 of them kept for control messages.
    pub sq_size: u16,
    /// Receive queue entries (`RDMA_RQSIZE`, default 384): the messages a peer may send
    /// before it hears of our reading them.
    pub rq_size: u16,
    /// Bytes sent inline, without copying into the send ring (`RDMA_INLINE`, default 64).
    pub inline: u16,
    /// Entries of the iomap table, where the peer announces buffers it mapped for our
    /// `iowrite` (`RDMA_IOMAPSIZE`, default 0: none). Rounded as rsocket's 8-bit scaled
    /// encoding has it.
    pub iomap_size: u16,
    /// Receive ring bytes (`SO_RCVBUF`, default 128 KiB).
    pub rmem: u32,
    /// Send ring bytes (`SO_SNDBUF`, default 128 KiB).
    pub wmem: u32,
    /// How long a blocked call polls before it sleeps (rsocket's `polling_time`, 10 µs).
    pub polling_time: Duration,
    /// Keepalive interval of the sockets made, if on (see `RsStream::set_keepalive`;
    /// off by default, as `SO_KEEPALIVE` is).
    pub keepalive: Option<Duration>,
    /// `SO_LINGER` of the sockets made (see `RsStream::set_linger`; default `None`).
    pub linger: Option<Duration>,
}

/// Queue sizes rsocket allows (`RS_QP_MIN_SIZE`, `RS_QP_MAX_SIZE`).
pub const QP_SIZE_RANGE: std::ops::RangeInclusive<u16> = 16..=0xfffe;

impl Default for Config {
    fn default() -> Config {
        Config {
            sq_size: 384,
            rq_size: 384,
            inline: 64,
            iomap_size: 0,
            rmem: 1 << 17,
            wmem: 1 << 17,
            polling_time: Duration::from_micros(10),
            keepalive: None,
            linger: None,
        }
    }
}

impl Config {
    /// The sizes clamped as rsocket clamps them (`rs_set_qp_size`), to at most
    /// `max_qp_wr` queue entries; rings are rounded to an even number of at least 4 KiB.
    pub(crate) fn clamped(mut self, max_qp_wr: u32) -> Config {
        let max = (*QP_SIZE_RANGE.end()).min(max_qp_wr.min(u32::from(u16::MAX)) as u16);
        self.sq_size = self.sq_size.clamp(*QP_SIZE_RANGE.start(), max);
        self.rq_size = self.rq_size.clamp(*QP_SIZE_RANGE.start(), max);
        self.rmem = self.rmem.max(4096) & !1;
        self.wmem = self.wmem.max(4096);
        let iomap = u32::from(self.iomap_size);
        self.iomap_size =
            scale_to_value(value_to_scale(iomap, 8), 8).min(u32::from(u16::MAX)) as u16;
        self
    }
}
