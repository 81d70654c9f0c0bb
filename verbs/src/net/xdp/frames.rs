//! Ownership of UMEM frames.
//!
//! xsk-rs hands out `FrameDesc`, a `Copy` descriptor: nothing stops code from writing into a
//! frame that the kernel still owns. Here a frame user space owns is a [`Frame`], which is
//! neither `Copy` nor `Clone`. The only ways to get one are from the pool built at open or
//! from a ring the kernel hands frames back on; the only way to give one to the kernel
//! consumes it. Reusing a frame still in flight therefore does not compile.

use xsk_rs::FrameDesc;

/// A UMEM frame currently owned by user space.
#[derive(Debug)]
pub(crate) struct Frame(FrameDesc);

impl Frame {
    /// Takes ownership of a descriptor the kernel returned (RX ring, completion ring) or that
    /// `Umem::new` created and nobody has submitted yet.
    pub(crate) fn reclaimed(desc: FrameDesc) -> Self {
        Frame(desc)
    }

    /// Gives the frame up, for submission to a kernel ring.
    pub(crate) fn into_desc(self) -> FrameDesc {
        self.0
    }

    /// The descriptor, for reading and writing the frame's data while we own it.
    pub(crate) fn desc_mut(&mut self) -> &mut FrameDesc {
        &mut self.0
    }

    /// The frame's data address in the UMEM.
    pub(crate) fn addr(&self) -> usize {
        self.0.addr()
    }

    /// Sets the descriptor's options (`XDP_PKT_CONTD`) for its next trip to the kernel.
    pub(crate) fn set_options(&mut self, options: u32) {
        self.0.set_options(options);
    }
}

/// A transmit buffer: one frame, or, when the link's frames outgrow one, two frames side by
/// side in the UMEM that a datagram spans as two descriptors (AF_XDP multi-buffer).
#[derive(Debug)]
pub(crate) struct TxSlot {
    pub(crate) head: Frame,
    pub(crate) tail: Option<Frame>,
}
