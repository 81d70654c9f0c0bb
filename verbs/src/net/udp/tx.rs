//! The `udp` backend's transmit ring: datagrams queued by `send`, handed to the kernel by
//! `flush` with `sendmmsg`, consecutive equal-size datagrams to one peer as one UDP GSO
//! message (`UDP_SEGMENT`), which the kernel cuts back into datagrams as late as it can.
//!
//! A RoCE message's packets are equal in size but for the first (which carries the RETH) and
//! the last, so a 64 KiB RDMA WRITE leaves in two or three system calls' worth of messages
//! where it took one datagram per packet.
//!
//! The ICRC covers the IPv4 identification, which Linux numbers on from the first piece of a
//! GSO message (0, since our socket sets DF with `IP_PMTUDISC_DO`), so a datagram is sealed
//! when its place in a message is known: at flush. A message a partial `sendmmsg` left
//! behind is rebuilt as it was sealed at the next flush, growing only by datagrams queued
//! since.

use std::mem;
use std::net::SocketAddr;

use super::super::{NetError, NetStats, datagram, sockaddr};
use crate::wire::icrc;

/// Datagrams the ring holds.
pub(super) const TX_SLOTS: usize = 64;

/// At most this many datagrams in one GSO message (the kernel's `UDP_MAX_SEGMENTS` has been
/// 64 since GSO came, 128 in later kernels).
const GSO_MAX_SEGMENTS: usize = 64;

/// Fewer datagrams than this go as messages of their own: the kernel's cutting a GSO message
/// up costs more than it saves on two or three (a reply and an ACK, in a ping-pong, cost 0.6 us
/// more of round trip so).
const GSO_MIN_SEGMENTS: usize = 4;

/// A GSO message's UDP payload: the 16-bit lengths of IPv4 and UDP, less their headers.
const GSO_MAX_BYTES: usize = 65507;

/// `UDP_SEGMENT` from `<linux/udp.h>`: the size of a GSO message's pieces.
pub(super) const UDP_SEGMENT: libc::c_int = 103;

/// The transmit ring.
pub(super) struct TxRing {
    buf: Vec<u8>,
    slot_len: usize,
    /// Transport bytes (BTH up to pad, without the ICRC) of each queued datagram.
    lens: [usize; TX_SLOTS],
    peers: [Option<SocketAddr>; TX_SLOTS],
    /// Whether each queued datagram's peer takes GSO messages.
    gso_ok: [bool; TX_SLOTS],
    /// Queued datagrams are `head..tail`.
    head: usize,
    tail: usize,
    /// Datagrams before this one have their ICRC written, as the `nth` of their message.
    sealed: usize,
    nth: [u16; TX_SLOTS],
    /// Whether to build GSO messages; turned off for good when the kernel refuses one.
    pub(super) gso: bool,
    arrays: Box<MsgArrays>,
}

/// What `sendmmsg` reads, allocated once and filled for the messages of each call.
struct MsgArrays {
    addrs: [libc::sockaddr_storage; TX_SLOTS],
    iovs: [libc::iovec; TX_SLOTS],
    /// Room for one `UDP_SEGMENT` control message (a u16) per message.
    cmsgs: [[u64; 4]; TX_SLOTS],
    hdrs: [libc::mmsghdr; TX_SLOTS],
}

// SAFETY: the arrays' pointers are set and read only within one `sendmmsg` call, pointing
// into the ring that owns them.
unsafe impl Send for MsgArrays {}

/// One message of a `sendmmsg` call: `count` datagrams from slot `first`.
#[derive(Clone, Copy, Default)]
struct Run {
    first: usize,
    count: usize,
}

impl TxRing {
    pub(super) fn new(slot_len: usize, gso: bool) -> Self {
        TxRing {
            buf: vec![0; slot_len * TX_SLOTS],
            slot_len,
            lens: [0; TX_SLOTS],
            peers: [None; TX_SLOTS],
            gso_ok: [false; TX_SLOTS],
            head: 0,
            tail: 0,
            sealed: 0,
            nth: [0; TX_SLOTS],
            gso,
            // SAFETY: all-zero is a valid value for these plain C structs and integers.
            arrays: Box::new(unsafe { mem::zeroed() }),
        }
    }

    /// Whether every slot is queued.
    pub(super) fn is_full(&self) -> bool {
        self.tail == TX_SLOTS
    }

    /// The next free slot, to write a transport packet of at most `max` bytes into; the ICRC
    /// goes after it. [`TxRing::push`] queues it.
    pub(super) fn next_slot(&mut self, max: usize) -> &mut [u8] {
        let i = self.tail;
        &mut self.buf[i * self.slot_len..][..max]
    }

    /// Queues the slot [`TxRing::next_slot`] gave, holding `len` transport bytes for `peer`,
    /// which takes GSO messages if `gso_ok`.
    pub(super) fn push(&mut self, peer: SocketAddr, len: usize, gso_ok: bool) {
        self.lens[self.tail] = len;
        self.peers[self.tail] = Some(peer);
        self.gso_ok[self.tail] = gso_ok;
        self.tail += 1;
    }

    /// How many queued datagrams from slot `first` on go in one message: with GSO, those that
    /// follow to the same peer with the same length, the last of them perhaps shorter.
    /// A datagram sealed at an earlier flush stays in the message it was sealed for, so a
    /// message cut off by a partial send is rebuilt as it was.
    fn run_at(&self, first: usize) -> Run {
        let mut run = Run { first, count: 1 };
        if !self.gso || !self.gso_ok[first] {
            return run;
        }
        let size = self.lens[first] + icrc::ICRC_LEN;
        let limit = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / size);
        while first + run.count < self.tail && run.count < limit {
            let next = first + run.count;
            if next < self.sealed {
                // Sealed at an earlier flush, in the message it joined then.
                if self.nth[next] == 0 {
                    break;
                }
                run.count += 1;
                if self.lens[next] < self.lens[first] {
                    break;
                }
                continue;
            }
            if self.peers[next] != self.peers[first]
                || !self.gso_ok[next]
                || self.lens[next] > self.lens[first]
            {
                break;
            }
            if self.lens[next] < self.lens[first] {
                // A shorter one ends the run, unless a run of its own size starts there
                // (the first packet of a message is longer than the rest).
                let starts_run = next + 1 < self.tail
                    && self.peers[next + 1] == self.peers[next]
                    && self.lens[next + 1] == self.lens[next];
                if !starts_run {
                    run.count += 1;
                }
                break;
            }
            run.count += 1;
        }
        if run.count < GSO_MIN_SEGMENTS && first >= self.sealed {
            run.count = 1;
        }
        run
    }

    /// Writes the ICRC of slot `i`, the `nth` datagram of its message.
    fn seal(&mut self, local: SocketAddr, i: usize, nth: usize) -> Result<(), NetError> {
        let peer = self.peers[i].expect("queued slot has a peer");
        let slot = &mut self.buf[i * self.slot_len..][..self.slot_len];
        datagram::seal_nth(local, peer, slot, self.lens[i], nth as u16)
            .map_err(|_| NetError::AddressFamily(peer.ip()))?;
        self.nth[i] = nth as u16;
        Ok(())
    }

    /// Sends the queued datagrams from `sock`, oldest first, until the kernel pushes back.
    pub(super) fn send_queued(
        &mut self,
        fd: libc::c_int,
        local: SocketAddr,
        stats: &mut NetStats,
    ) -> Result<(), NetError> {
        while self.head < self.tail {
            let mut runs = [Run::default(); TX_SLOTS];
            let mut count = 0;
            let mut at = self.head;
            while at < self.tail {
                let run = self.run_at(at);
                for nth in 0..run.count {
                    if run.first + nth >= self.sealed {
                        self.seal(local, run.first + nth, nth)?;
                    }
                }
                runs[count] = run;
                count += 1;
                at += run.count;
            }
            self.sealed = self.tail;
            let sent = self.sendmmsg(fd, &runs[..count]);
            let sent = match sent {
                Ok(sent) => sent,
                Err(err) => {
                    let first = runs[0];
                    match err.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::ENOBUFS) => return Ok(()),
                        Some(libc::EINTR) => continue,
                        // The kernel or the route refuses GSO (no checksum offload on the
                        // way, an old kernel): send datagram by datagram from now on, each
                        // sealed again as a first piece.
                        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
                            if first.count > 1 =>
                        {
                            self.gso = false;
                            self.sealed = self.head;
                            continue;
                        }
                        // The first message cannot be sent (no route, too big, ...): drop it,
                        // as a NIC drops a frame it cannot deliver, and go on with the rest.
                        Some(
                            libc::ENETUNREACH
                            | libc::EHOSTUNREACH
                            | libc::EMSGSIZE
                            | libc::EINVAL
                            | libc::EPERM,
                        ) => {
                            stats.tx_dropped += first.count as u64;
                            self.head += first.count;
                            continue;
                        }
                        _ => return Err(NetError::Io("sending UDP datagrams", err)),
                    }
                }
            };
            for run in &runs[..sent] {
                stats.tx_packets += run.count as u64;
                stats.tx_gso_sends += u64::from(run.count > 1);
                for i in run.first..run.first + run.count {
                    stats.tx_bytes += self.lens[i] as u64;
                }
                self.head += run.count;
            }
        }
        self.head = 0;
        self.tail = 0;
        self.sealed = 0;
        Ok(())
    }

    /// One `sendmmsg` of `runs`, each a message; how many messages the kernel took.
    fn sendmmsg(&mut self, fd: libc::c_int, runs: &[Run]) -> std::io::Result<usize> {
        let MsgArrays {
            addrs,
            iovs,
            cmsgs,
            hdrs,
        } = &mut *self.arrays;
        for (k, run) in runs.iter().enumerate() {
            let peer = self.peers[run.first].expect("queued slot has a peer");
            let addr_len = sockaddr::to_storage(&peer, &mut addrs[k]);
            let slots = run.first..run.first + run.count;
            for (i, iov) in slots.clone().zip(&mut iovs[slots]) {
                *iov = libc::iovec {
                    iov_base: self.buf[i * self.slot_len..].as_mut_ptr().cast(),
                    iov_len: self.lens[i] + icrc::ICRC_LEN,
                };
            }
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = (&mut addrs[k] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = addr_len;
            h.msg_iov = &mut iovs[run.first];
            h.msg_iovlen = run.count;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            if run.count > 1 {
                let size = (self.lens[run.first] + icrc::ICRC_LEN) as u16;
                h.msg_control = cmsgs[k].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE of a u16 is 24 bytes, within the 32 of `cmsgs[k]`, which
                // CMSG_FIRSTHDR then points at.
                unsafe {
                    h.msg_controllen = libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize;
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
                    libc::CMSG_DATA(c).cast::<u16>().write_unaligned(size);
                }
            }
        }
        // SAFETY: `hdrs[..runs.len()]` point at live addresses, iovecs, control messages and
        // slot buffers that outlive the call; the kernel only reads them.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                runs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message sizes the ring groups `lens` (to peers `peers`) into.
    fn runs(lens: &[usize], peers: &[u8], gso: bool) -> Vec<usize> {
        let mut ring = TxRing::new(2048, gso);
        for (len, peer) in lens.iter().zip(peers) {
            ring.next_slot(2000);
            ring.push(
                SocketAddr::from(([198, 18, 0, *peer], 4791)),
                *len,
                *peer != 9,
            );
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at < ring.tail {
            let run = ring.run_at(at);
            out.push(run.count);
            at += run.count;
        }
        out
    }

    #[test]
    fn runs_are_equal_sizes_to_one_peer_ending_at_a_shorter_one() {
        // A message: a longer first packet, equal middles, a shorter last; then another.
        let lens = [1040, 1024, 1024, 1024, 300, 1040, 1024, 1024, 1024, 1024];
        assert_eq!(runs(&lens, &[1; 10], true), [1, 4, 1, 4]);
        // Another peer breaks a run; fewer than four go one by one.
        let peers = [1, 1, 1, 1, 2, 2, 2, 1];
        assert_eq!(runs(&[100; 8], &peers, true), [4, 1, 1, 1, 1]);
        // No more than fit a UDP payload: 65507 / 2004 = 32.
        assert_eq!(runs(&[2000; 40], &[1; 40], true), [32, 8]);
        // Nor more segments than the kernel takes.
        assert_eq!(runs(&[20; 64], &[1; 64], true), [64]);
        // Without GSO, one datagram per message; nor to a peer that does not take it (9).
        assert_eq!(runs(&[100; 3], &[1; 3], false), [1, 1, 1]);
        assert_eq!(runs(&[100; 4], &[9; 4], true), [1, 1, 1, 1]);
    }

    #[test]
    fn a_sealed_message_is_rebuilt_as_it_was() {
        let local = SocketAddr::from(([198, 18, 0, 1], 4791));
        let mut ring = TxRing::new(2048, true);
        for len in [1024, 1024, 1024, 300] {
            ring.next_slot(2000);
            ring.push(SocketAddr::from(([198, 18, 0, 2], 4791)), len, true);
        }
        // Sealed as one message, as a flush does before the kernel takes none of it...
        let run = ring.run_at(0);
        for nth in 0..run.count {
            ring.seal(local, nth, nth).unwrap();
        }
        ring.sealed = ring.tail;
        assert_eq!(run.count, 4);
        // ... then more of the short size is queued, which alone would start a run there.
        for _ in 0..3 {
            ring.next_slot(2000);
            ring.push(SocketAddr::from(([198, 18, 0, 2], 4791)), 300, true);
        }
        assert_eq!(ring.run_at(0).count, 4);
        // (Three alone would go one by one.)
        assert_eq!(ring.run_at(4).count, 1);
        // Nothing joins a message after its shorter last datagram.
        ring.tail = 4;
        ring.next_slot(2000);
        ring.push(SocketAddr::from(([198, 18, 0, 2], 4791)), 1024, true);
        assert_eq!(ring.run_at(0).count, 4);
    }
}
