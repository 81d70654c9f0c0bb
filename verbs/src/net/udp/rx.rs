//! The `udp` backend's receive batch: what one `recvmmsg` brought, delivered datagram by
//! datagram across calls. With `UDP_GRO` on, one buffer may hold many datagrams that the
//! kernel kept together (a GSO send that crossed a veth or loopback whole, or packets its
//! GRO coalesced), split again at the size the kernel reports.

use std::mem;
use std::net::{IpAddr, SocketAddr};

use super::super::{NetStats, RxMeta, sockaddr};

/// Buffers per `recvmmsg`.
pub(super) const RX_MSGS: usize = 32;

/// `UDP_GRO` from `<linux/udp.h>`: as a socket option, turns coalescing on; as a control
/// message, the size of the datagrams a buffer holds.
pub(super) const UDP_GRO: libc::c_int = 104;

/// A buffer holding several datagrams holds at most this much: a UDP payload's limit.
pub(super) const GRO_BUF_LEN: usize = 65536;

/// One received buffer: its sender and the address it came to, its length, and the size of
/// the datagrams in it (its length when it holds one).
#[derive(Clone, Copy)]
struct Received {
    src: SocketAddr,
    dst: IpAddr,
    len: usize,
    size: usize,
}

/// What `recvmmsg` fills, allocated once: zeroing it for every call cost more than the call
/// when nothing had arrived.
struct MsgArrays {
    addrs: [libc::sockaddr_storage; RX_MSGS],
    /// Room for IP_PKTINFO or IPV6_PKTINFO, and UDP_GRO.
    cmsgs: [[u64; 12]; RX_MSGS],
    iovs: [libc::iovec; RX_MSGS],
    hdrs: [libc::mmsghdr; RX_MSGS],
}

// SAFETY: the arrays' pointers are set and read only within one `refill`, pointing into the
// batch that owns them.
unsafe impl Send for MsgArrays {}

/// The buffers of one `recvmmsg` and how far delivery has got through them.
pub(super) struct RxBatch {
    buf: Vec<u8>,
    slot_len: usize,
    got: [Option<Received>; RX_MSGS],
    count: usize,
    /// The buffer delivery is in, and the offset of its next datagram.
    next: usize,
    offset: usize,
    arrays: Box<MsgArrays>,
}

impl RxBatch {
    /// A batch of [`RX_MSGS`] buffers of `slot_len` bytes.
    pub(super) fn new(slot_len: usize) -> Self {
        RxBatch {
            buf: vec![0; slot_len * RX_MSGS],
            slot_len,
            got: [None; RX_MSGS],
            count: 0,
            next: 0,
            offset: 0,
            // SAFETY: all-zero is a valid value for these plain C structs and integers.
            arrays: Box::new(unsafe { mem::zeroed() }),
        }
    }

    /// The next datagram not yet delivered: its addressing, its UDP payload, and its place in
    /// its buffer.
    pub(super) fn next_datagram(&mut self) -> Option<(RxMeta, &[u8], u16)> {
        while self.next < self.count {
            let Some(r) = self.got[self.next] else {
                self.next += 1;
                continue;
            };
            // An empty datagram is delivered too, for the check to count it as truncated.
            if self.offset >= r.len.max(1) {
                self.next += 1;
                self.offset = 0;
                continue;
            }
            let start = self.next * self.slot_len + self.offset;
            let len = r.size.min(r.len - self.offset);
            let nth = (self.offset / r.size) as u16;
            self.offset += len.max(1);
            return Some((
                RxMeta {
                    src: r.src,
                    dst: r.dst,
                },
                &self.buf[start..start + len],
                nth,
            ));
        }
        None
    }

    /// Receives a new batch once the last is delivered: how many buffers came (fewer than
    /// [`RX_MSGS`]: the socket had no more). Buffers without addresses, or cut short, are
    /// counted in `stats` and skipped.
    pub(super) fn refill(
        &mut self,
        fd: libc::c_int,
        stats: &mut NetStats,
    ) -> std::io::Result<usize> {
        debug_assert!(self.next >= self.count, "refilled before delivery");
        let MsgArrays {
            addrs,
            cmsgs,
            iovs,
            hdrs,
        } = &mut *self.arrays;
        for k in 0..RX_MSGS {
            iovs[k] = libc::iovec {
                iov_base: self.buf[k * self.slot_len..].as_mut_ptr().cast(),
                iov_len: self.slot_len,
            };
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = (&mut addrs[k] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[k];
            h.msg_iovlen = 1;
            h.msg_control = cmsgs[k].as_mut_ptr().cast();
            h.msg_controllen = mem::size_of_val(&cmsgs[k]);
            h.msg_flags = 0;
        }
        let got = loop {
            // SAFETY: every header points at live, writable buffers of the stated sizes that
            // outlive the call.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    RX_MSGS as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got >= 0 {
                break got as usize;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(0),
                Some(libc::EINTR) => continue,
                _ => return Err(err),
            }
        };
        for k in 0..got {
            let h = &hdrs[k].msg_hdr;
            let len = hdrs[k].msg_len as usize;
            let (Some(src), Some((dst, size))) = (sockaddr::from_storage(&addrs[k]), control(h))
            else {
                stats.rx_malformed += 1;
                self.got[k] = None;
                continue;
            };
            if h.msg_flags & libc::MSG_TRUNC != 0 {
                stats.rx_truncated += 1;
                self.got[k] = None;
                continue;
            }
            let size = match size {
                Some(size) if size > 0 => {
                    stats.rx_gro_batches += u64::from(len > size);
                    size
                }
                _ => len.max(1),
            };
            self.got[k] = Some(Received {
                src,
                dst,
                len,
                size,
            });
        }
        self.count = got;
        self.next = 0;
        self.offset = 0;
        Ok(got)
    }
}

/// From a received message's control data: the address it was sent to
/// (`IP_PKTINFO`/`IPV6_PKTINFO`), and the size of its datagrams when it holds several
/// (`UDP_GRO`).
fn control(hdr: &libc::msghdr) -> Option<(IpAddr, Option<usize>)> {
    let mut dst = None;
    let mut size = None;
    // SAFETY: `hdr` was filled by recvmmsg, so its control buffer holds well-formed cmsgs
    // that the CMSG_* macros walk within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info = libc::CMSG_DATA(cmsg)
                    .cast::<libc::in_pktinfo>()
                    .read_unaligned();
                dst = Some(IpAddr::from(info.ipi_addr.s_addr.to_ne_bytes()));
            } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info = libc::CMSG_DATA(cmsg)
                    .cast::<libc::in6_pktinfo>()
                    .read_unaligned();
                dst = Some(IpAddr::from(info.ipi6_addr.s6_addr));
            } else if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == UDP_GRO {
                let v = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
                size = usize::try_from(v).ok();
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    Some((dst?, size))
}
