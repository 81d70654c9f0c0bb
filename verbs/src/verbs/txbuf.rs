//! Send buffers inside the backend's own transmit memory (`Pd::alloc_tx_bufs`).
//!
//! On the `xdp` backend the buffers are frames of the AF_XDP UMEM, registered as a memory
//! region. An application writes a UD message's payload where [`TxBufs::ud_sge`] points and
//! posts a send naming exactly that range: the QP writes its headers in front of the payload,
//! the backend its frame headers in front of those and the ICRC after, and the frame goes to
//! the NIC as it is; the payload is never copied. Its completion comes once the NIC is done
//! with the frame, so, as for any send, the buffer must not be touched until then.
//!
//! On other backends the buffers are ordinary memory with the same layout, and sends from
//! them are copied as usual, so code written for in-place sends runs everywhere.

use std::sync::Arc;

use super::Error;
use super::mr::{AccessFlags, Lkey};
use super::pd::{Mr, Pd};
use super::wr::Sge;
use crate::engine::ud::UdHeader;
use crate::net::TxReservation;
use crate::wire::{Psn, Qkey, Qpn, icrc};

/// Where the buffers are.
enum Memory {
    /// Frames of the backend's transmit memory, `first` being the backend's index of ours.
    Backend { first: usize },
    /// Ordinary memory laid out the same way.
    Heap(#[allow(dead_code)] Box<[u8]>),
}

pub(crate) struct TxBufsShared {
    // The registration goes before the memory it covers.
    mr: Mr,
    base: usize,
    stride: usize,
    count: usize,
    capacity: usize,
    memory: Memory,
}

/// Send buffers inside the backend's transmit memory. Cloning gives another handle.
#[derive(Clone)]
pub struct TxBufs {
    pub(crate) shared: Arc<TxBufsShared>,
}

/// The UD headers' length before a payload (BTH, DETH, and ImmDt when `with_imm`).
fn ud_headers_len(with_imm: bool) -> usize {
    UdHeader {
        dest_qp: Qpn::new_masked(0),
        qkey: Qkey::new(0),
        src_qp: Qpn::new_masked(0),
        psn: Psn::ZERO,
        imm: with_imm.then_some(0),
        solicited: false,
    }
    .headers_len()
}

/// Frame headers before the transport packet (Ethernet, IP, UDP).
fn frame_headers_len(ipv6: bool) -> usize {
    let r = TxReservation {
        first: 0,
        count: 0,
        base: 0,
        stride: 0,
        capacity: 0,
    };
    r.transport_offset(ipv6)
}

impl TxBufs {
    pub(crate) fn new(pd: &Pd, count: usize) -> Result<TxBufs, Error> {
        if count == 0 {
            return Err(Error::invalid("no buffers asked for"));
        }
        let ctx = &pd.context().shared;
        let reservation = ctx.io.lock().reserve_tx(count)?;
        let (base, stride, capacity, memory) = match reservation {
            Some(r) => (
                r.base,
                r.stride,
                r.capacity,
                Memory::Backend { first: r.first },
            ),
            None => {
                let stride = 4096;
                let mut heap = vec![0u8; count * stride].into_boxed_slice();
                (
                    heap.as_mut_ptr() as usize,
                    stride,
                    stride,
                    Memory::Heap(heap),
                )
            }
        };
        let len = (count - 1) * stride + capacity;
        // SAFETY: the range is memory these buffers own (UMEM frames handed to us, or the
        // heap block kept in `memory`), alive as long as the registration, which is dropped
        // first.
        let mr = unsafe { pd.reg_mr(base as *mut u8, len, AccessFlags::LOCAL_WRITE) }?;
        ctx.in_place.lock().reserve(count);
        let shared = Arc::new(TxBufsShared {
            mr,
            base,
            stride,
            count,
            capacity,
            memory,
        });
        ctx.tx_bufs
            .write()
            .insert(shared.mr.lkey(), Arc::downgrade(&shared));
        Ok(TxBufs { shared })
    }

    /// Number of buffers.
    pub fn len(&self) -> usize {
        self.shared.count
    }

    /// True when there are none (never, for buffers that were allocated).
    pub fn is_empty(&self) -> bool {
        self.shared.count == 0
    }

    /// True when sends from these buffers go out in place (the `xdp` backend).
    pub fn in_place(&self) -> bool {
        matches!(self.shared.memory, Memory::Backend { .. })
    }

    /// The local key of the buffers' memory region.
    pub fn lkey(&self) -> Lkey {
        self.shared.mr.lkey()
    }

    /// Offset in each buffer where a UD payload goes for a send to an IPv6 (or IPv4)
    /// peer, with or without immediate data.
    pub fn ud_payload_offset(&self, ipv6: bool, with_imm: bool) -> usize {
        frame_headers_len(ipv6) + ud_headers_len(with_imm)
    }

    /// The longest UD payload a buffer holds (the path MTU may be shorter).
    pub fn max_ud_payload(&self, ipv6: bool, with_imm: bool) -> usize {
        self.shared
            .capacity
            .saturating_sub(self.ud_payload_offset(ipv6, with_imm) + 3 + icrc::ICRC_LEN)
    }

    /// The scatter/gather entry naming `len` payload bytes of buffer `i`, for a UD send to
    /// a peer of that IP version, with or without immediate data.
    pub fn ud_sge(&self, i: usize, len: usize, ipv6: bool, with_imm: bool) -> Option<Sge> {
        if i >= self.shared.count || len > self.max_ud_payload(ipv6, with_imm) {
            return None;
        }
        let addr =
            self.shared.base + i * self.shared.stride + self.ud_payload_offset(ipv6, with_imm);
        Some(Sge {
            addr: addr as u64,
            length: len as u32,
            lkey: self.lkey(),
        })
    }

    /// The payload bytes [`TxBufs::ud_sge`] names, to fill.
    ///
    /// # Safety
    ///
    /// Buffer `i` must not be in flight (a send from it posted and not yet completed), and
    /// no other reference to those bytes may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn ud_payload_mut(
        &self,
        i: usize,
        len: usize,
        ipv6: bool,
        with_imm: bool,
    ) -> Option<&mut [u8]> {
        let sge = self.ud_sge(i, len, ipv6, with_imm)?;
        // SAFETY: the range lies inside buffer `i` (checked by ud_sge), memory these
        // buffers own; the caller guarantees exclusive access.
        Some(unsafe { std::slice::from_raw_parts_mut(sge.addr as *mut u8, len) })
    }
}

impl TxBufsShared {
    /// The backend index of the in-place buffer whose UD payload slot is exactly `len`
    /// bytes at `addr` for a send of that kind, if these buffers are in place and the
    /// payload, its pad and the ICRC fit the buffer.
    pub(crate) fn in_place_index(
        &self,
        addr: u64,
        len: usize,
        ipv6: bool,
        with_imm: bool,
    ) -> Option<usize> {
        let Memory::Backend { first } = self.memory else {
            return None;
        };
        let offset = frame_headers_len(ipv6) + ud_headers_len(with_imm);
        if offset + len + 3 + icrc::ICRC_LEN > self.capacity {
            return None;
        }
        let rel = (addr as usize).checked_sub(self.base + offset)?;
        (rel % self.stride == 0 && rel / self.stride < self.count)
            .then(|| first + rel / self.stride)
    }
}

impl Drop for TxBufsShared {
    fn drop(&mut self) {
        self.mr
            .pd()
            .context()
            .shared
            .tx_bufs
            .write()
            .remove(&self.mr.lkey());
    }
}
