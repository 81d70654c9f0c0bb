//! Protection domains: the scope of memory regions, address handles and queue pairs.

use std::sync::Arc;

use super::Error;
use super::ah::{AddressHandle, AhAttr};
use super::context::Context;
use super::mr::{AccessFlags, MemoryRegion, PdHandle};
use super::qp::{QpInitAttr, QueuePair};
use super::srq::{Srq, SrqAttr};
use super::txbuf::TxBufs;

struct PdShared {
    handle: PdHandle,
    ctx: Context,
}

/// A protection domain (`ibv_alloc_pd`). Cloning gives another handle to the same PD.
#[derive(Clone)]
pub struct Pd {
    shared: Arc<PdShared>,
}

impl std::fmt::Debug for Pd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pd")
            .field("handle", &self.shared.handle)
            .finish()
    }
}

/// A registered memory region; deregistered (and unpinned) when dropped.
pub struct Mr {
    region: Arc<MemoryRegion>,
    pd: Pd,
}

impl Mr {
    /// Local key, for scatter/gather entries.
    pub fn lkey(&self) -> super::Lkey {
        self.region.lkey()
    }

    /// Remote key, for peers' RDMA operations.
    pub fn rkey(&self) -> super::Rkey {
        self.region.rkey()
    }

    /// The protection domain.
    pub fn pd(&self) -> &Pd {
        &self.pd
    }

    /// The region's bookkeeping: address, length, access.
    pub fn region(&self) -> &MemoryRegion {
        &self.region
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // Deregistering a key that is registered cannot fail.
        let _ = self
            .pd
            .context()
            .shared
            .mrs
            .write()
            .deregister(self.region.lkey());
    }
}

impl Pd {
    pub(crate) fn new(ctx: Context, handle: u32) -> Pd {
        Pd {
            shared: Arc::new(PdShared {
                handle: PdHandle(handle),
                ctx,
            }),
        }
    }

    pub(crate) fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// True while other objects (memory regions, QPs, SRQs, address handles, send
    /// buffers) still belong to this PD, or other handles to it exist: `ibv_dealloc_pd`
    /// refuses with EBUSY then.
    pub fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    pub(crate) fn handle(&self) -> PdHandle {
        self.shared.handle
    }

    /// Registers `len` bytes at `addr` with `access` (`ibv_reg_mr`); the pages are pinned.
    ///
    /// # Safety
    ///
    /// `addr..addr + len` must be memory the caller owns and keeps valid until the returned
    /// region is dropped; while it is registered, xrdma reads and writes it whenever a work
    /// request or (with remote access) a peer's operation says so.
    pub unsafe fn reg_mr(
        &self,
        addr: *mut u8,
        len: usize,
        access: AccessFlags,
    ) -> Result<Mr, Error> {
        // SAFETY: the caller's contract is reg_mr_iova's.
        unsafe { self.reg_mr_iova(addr, len, addr as u64, access) }
    }

    /// Registers `len` bytes at `addr` that work requests and peers name by addresses from
    /// `iova` on (`ibv_reg_mr_iova`); `iova` must have the same offset in its page as
    /// `addr` (EINVAL otherwise).
    ///
    /// # Safety
    ///
    /// As [`Pd::reg_mr`].
    pub unsafe fn reg_mr_iova(
        &self,
        addr: *mut u8,
        len: usize,
        iova: u64,
        access: AccessFlags,
    ) -> Result<Mr, Error> {
        let ctx = &self.shared.ctx.shared;
        let region = {
            let mut rng = ctx.rng.lock();
            ctx.mrs.write().register(
                self.shared.handle,
                addr as usize,
                len,
                Some(iova),
                access,
                &mut rng,
            )?
        };
        Ok(Mr {
            region,
            pd: self.clone(),
        })
    }

    /// Allocates `count` send buffers inside the backend's transmit memory (the AF_XDP
    /// UMEM on `xdp`), from which UD sends go out without copying their payload; see
    /// [`TxBufs`]. The frames stay set aside for the context's life.
    pub fn alloc_tx_bufs(&self, count: usize) -> Result<TxBufs, Error> {
        TxBufs::new(self, count)
    }

    /// Creates an address handle (`ibv_create_ah`).
    pub fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, Error> {
        AddressHandle::new(self, attr)
    }

    /// Creates a shared receive queue (`ibv_create_srq`); `srq_limit` is ignored, arm it
    /// with `Srq::modify`.
    pub fn create_srq(&self, attr: &SrqAttr) -> Result<Srq, Error> {
        Srq::new(self, attr)
    }

    /// Creates a queue pair (`ibv_create_qp`).
    pub fn create_qp(&self, attr: &QpInitAttr<'_>) -> Result<QueuePair, Error> {
        QueuePair::new(self, attr)
    }
}
