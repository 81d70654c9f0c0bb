//! Registered memory that a peer writes into: page-aligned, zeroed, freed only after its
//! registration is gone, and never referenced by a Rust slice, since the QP's progress
//! may write it at any time; bytes move in and out by copies.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use xrdma_verbs::verbs::{AccessFlags, Error, Mr, Pd};

use crate::proto::msg::{IOMAP_ENTRY_LEN, IomapEntry, RS_SGE_LEN, RsSge};

/// A registered buffer. See the [module documentation](self).
pub(crate) struct RegBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Dropped (deregistered) before the memory is freed.
    mr: Option<Mr>,
}

// SAFETY: the buffer is plain memory owned by this value; the connection that owns it reads
// and writes it only under its lock, and the verbs layer only as the registration allows.
unsafe impl Send for RegBuf {}
// SAFETY: as above; `&RegBuf` methods copy through raw pointers only.
unsafe impl Sync for RegBuf {}

impl RegBuf {
    /// `len` zeroed bytes registered in `pd` with `access`.
    pub(crate) fn new(pd: &Pd, len: usize, access: AccessFlags) -> Result<RegBuf, Error> {
        let layout = Layout::from_size_align(len.max(1), 4096)
            .map_err(|_| Error::Invalid("buffer too large"))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(Error::Full("memory"))?;
        let mut buf = RegBuf {
            ptr,
            layout,
            mr: None,
        };
        // SAFETY: the memory is ours until `drop`, which deregisters it before freeing it.
        buf.mr = Some(unsafe { pd.reg_mr(ptr.as_ptr(), len, access) }?);
        Ok(buf)
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    fn mr(&self) -> &Mr {
        self.mr.as_ref().expect("registered until dropped")
    }

    pub(crate) fn lkey(&self) -> xrdma_verbs::verbs::Lkey {
        self.mr().lkey()
    }

    pub(crate) fn rkey(&self) -> u32 {
        self.mr().rkey().0
    }

    /// Copies `dst.len()` bytes from `offset`. Bytes outside the buffer are not read: the
    /// copy stops at its end.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) {
        let n = dst.len().min(self.len().saturating_sub(offset));
        // SAFETY: `offset..offset + n` lies inside the allocation; `dst` is a distinct live
        // buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), dst.as_mut_ptr(), n)
        };
    }

    /// Copies `src` in at `offset`, as far as the buffer goes.
    pub(crate) fn write(&self, offset: usize, src: &[u8]) {
        let n = src.len().min(self.len().saturating_sub(offset));
        // SAFETY: as `read`, the other way.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), n) };
    }

    /// Takes the SGE a peer wrote into entry `index` of a target table held here, and
    /// clears the entry so that the next one can be told from it; `None` if the entry is
    /// empty.
    pub(crate) fn take_sge(&self, index: usize) -> Option<RsSge> {
        let at = index * RS_SGE_LEN;
        if at + RS_SGE_LEN > self.len() {
            return None;
        }
        let mut b = [0u8; RS_SGE_LEN];
        // SAFETY: 16 bytes inside the allocation; volatile, since the peer's write landed
        // through another thread (its completion, which we have seen, orders it before).
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(at + i)) };
        }
        let sge = RsSge::from_host_bytes(&b);
        if sge.length == 0 {
            return None;
        }
        self.write(at, &[0u8; RS_SGE_LEN]);
        Some(sge)
    }
}

impl RegBuf {
    /// The iomap entry a peer wrote at byte `at` of a table held here, if the entry is in
    /// use (its length is not 0).
    pub(crate) fn read_iomap(&self, at: usize) -> Option<IomapEntry> {
        if at + IOMAP_ENTRY_LEN > self.len() {
            return None;
        }
        let mut b = [0u8; IOMAP_ENTRY_LEN];
        // SAFETY: inside the allocation; volatile, since the peer writes it at any time (a
        // torn entry only misplaces a write the peer's QP then checks against its keys).
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(at + i)) };
        }
        let e = IomapEntry::from_host_bytes(&b);
        (e.sge.length != 0).then_some(e)
    }
}

impl Drop for RegBuf {
    fn drop(&mut self) {
        drop(self.mr.take());
        // SAFETY: allocated in `new` with this layout; no registration names it any more.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
