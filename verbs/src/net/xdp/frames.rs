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
}
