//! Memory regions: registered user buffers, their keys, and the checks every access passes.
//!
//! A memory region (MR) records a buffer the application owns: its protection domain, its
//! address and length, the address remote peers use for it (the IOVA), its access rights and
//! two random 32-bit keys. The local key (lkey) names the region in the application's own
//! scatter/gather entries; the remote key (rkey) names it in RDMA READ, WRITE and atomic
//! requests from peers. [`MrTable`] owns the live regions of one context, pins their pages and
//! answers [`MrTable::check_local`] and [`MrTable::check_remote`] before a byte moves.
//!
//! # Example
//!
//! ```
//! use xrdma_verbs::verbs::mr::{AccessFlags, MrTable, PdHandle, RemoteAccessError};
//! use xrdma_verbs::rng::Rng;
//!
//! let mut rng = Rng::seed_from_u64(7);
//! let mut table = MrTable::new();
//! let buf = vec![0u8; 4096];
//! let pd = PdHandle(1);
//! let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ;
//! let mr = table.register(pd, buf.as_ptr() as usize, buf.len(), None, access, &mut rng)?;
//!
//! // A peer may READ the last 16 bytes, but not WRITE them.
//! let va = mr.iova() + 4096 - 16;
//! assert!(table.check_remote(pd, mr.rkey(), va, 16, AccessFlags::REMOTE_READ).is_ok());
//! assert_eq!(
//!     table.check_remote(pd, mr.rkey(), va, 16, AccessFlags::REMOTE_WRITE).unwrap_err(),
//!     RemoteAccessError::Permission,
//! );
//! table.deregister(mr.lkey())?;
//! # Ok::<(), xrdma_verbs::verbs::mr::MrError>(())
//! ```
//!
//! # Rules, and where they come from
//!
//! - **Access flags** are libibverbs' `enum ibv_access_flags` (`libibverbs/verbs.h`, equal to
//!   the kernel's `enum ib_uverbs_access_flags`). [`AccessFlags::validate`] applies the kernel's
//!   `ib_check_mr_access` (`include/rdma/ib_verbs.h`) in its order: REMOTE_WRITE or
//!   REMOTE_ATOMIC without LOCAL_WRITE is `EINVAL`; a bit outside the defined mandatory bits
//!   (0..=9) and the optional range (20..=29) is `EINVAL`; ON_DEMAND and the FLUSH bits, which
//!   xrdma does not implement, are `EOPNOTSUPP`, as for a device without those capabilities.
//!   Optional bits (RELAXED_ORDERING and the rest of 20..=29) are accepted and have no effect,
//!   as libibverbs strips them for devices that do not support them. MW_BIND, ZERO_BASED and
//!   HUGETLB are accepted and recorded; xrdma has no memory windows, and, as in rxe, ZERO_BASED
//!   does not change addressing (register with an explicit IOVA for that).
//! - **Registration** follows `ib_uverbs_reg_mr` and `ib_umem_get`: the IOVA must have the
//!   same offset within a page as the address (`EINVAL`), a zero length or a range that wraps
//!   is `EINVAL`, and pinning more than `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK` is `ENOMEM`.
//!   Pinning is `mlock(2)` on the page-aligned range covering the buffer; pages shared by
//!   overlapping regions are locked once and unlocked when the last region covering them goes.
//! - **Keys** are consecutive draws from the owner's [`Rng`], skipping 0 and any key already
//!   in use as an lkey or rkey of a live region; a region's lkey and rkey are different. So a
//!   fixed seed and a fixed sequence of calls give the same keys. (rxe uses a pool index in the
//!   top 24 bits and 8 random bits, and rkey == lkey; xrdma draws all 32 bits of each.)
//! - **Checks** mirror rxe's `lookup_mr` then `mr_check_range` (`drivers/infiniband/sw/rxe/
//!   rxe_mr.c`): key, then protection domain, then access rights, then bounds, then, for
//!   atomics, 8-byte alignment (`rxe_mr_do_atomic_op`). Addresses are in the region's IOVA
//!   space for local and remote accesses alike, as in rxe's `copy_data` (an SGE's `addr` is an
//!   IOVA); for a region registered without an explicit IOVA that is the virtual address.
//!   A zero-length access is valid and touches nothing, and its key is not looked up: rxe's
//!   `copy_data` skips zero-length SGEs, and `check_rkey` skips the rkey of a zero-length READ
//!   or WRITE (IBA C9-88). The checks then return `Ok(None)`.
//! - **Completion status** on failure: every local failure is `IBV_WC_LOC_PROT_ERR`, the IBTA
//!   meaning (rxe's completer uses it for READ and atomic responses that cannot be stored).
//!   A remote key, PD, bounds or rights failure is NAKed with Remote Access Error (AETH 0x62),
//!   and the requester completes with `IBV_WC_REM_ACCESS_ERR`; a misaligned atomic is NAKed
//!   with Invalid Request (0x61) and gives `IBV_WC_REM_INV_REQ_ERR` (`rxe_resp.c`).
//!
//! # Threads and locking
//!
//! [`MrTable`] and [`MemoryRegion`] are `Send + Sync`. The owner keeps the table behind a
//! `parking_lot::RwLock`: checks take `&self`, registration and deregistration `&mut self`.
//! The checks return a reference borrowed from the table, so an owner that holds the read lock
//! from the check until the copy is done gets libibverbs' guarantee for free: once
//! [`MrTable::deregister`] (under the write lock) returns, no access to the region is in flight
//! and none can start. A caller that clones the `Arc` keeps the region's record alive, not the
//! application's buffer; it must re-check the key before each later access, as rxe re-looks-up
//! the rkey for every READ response packet (`rxe_recheck_mr`).
//!
//! # Who frees what
//!
//! The buffer belongs to the application, which must deregister it before freeing it. The
//! table unpins every region still registered when it is dropped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::rng::Rng;

/// `IBV_WC_LOC_PROT_ERR` from libibverbs' `enum ibv_wc_status`.
pub const IBV_WC_LOC_PROT_ERR: u32 = 4;
/// `IBV_WC_REM_INV_REQ_ERR` from libibverbs' `enum ibv_wc_status`.
pub const IBV_WC_REM_INV_REQ_ERR: u32 = 9;
/// `IBV_WC_REM_ACCESS_ERR` from libibverbs' `enum ibv_wc_status`.
pub const IBV_WC_REM_ACCESS_ERR: u32 = 10;

/// How many draws [`MrTable::register`] makes for one key before giving up. With fewer than
/// 2^31 keys in use, 64 draws all failing has probability below 2^-64.
const KEY_DRAWS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Access flags
// ---------------------------------------------------------------------------------------------

/// Access rights of a memory region: libibverbs' `enum ibv_access_flags`.
///
/// Local read access is always granted and has no flag.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AccessFlags(u32);

impl AccessFlags {
    /// No rights beyond local read.
    pub const EMPTY: Self = Self(0);
    /// `IBV_ACCESS_LOCAL_WRITE`: the local side may write (receives, READ responses, atomics).
    pub const LOCAL_WRITE: Self = Self(1);
    /// `IBV_ACCESS_REMOTE_WRITE`: peers may RDMA WRITE. Needs LOCAL_WRITE.
    pub const REMOTE_WRITE: Self = Self(1 << 1);
    /// `IBV_ACCESS_REMOTE_READ`: peers may RDMA READ.
    pub const REMOTE_READ: Self = Self(1 << 2);
    /// `IBV_ACCESS_REMOTE_ATOMIC`: peers may compare-and-swap and fetch-and-add. Needs
    /// LOCAL_WRITE.
    pub const REMOTE_ATOMIC: Self = Self(1 << 3);
    /// `IBV_ACCESS_MW_BIND`: memory windows may be bound (recorded; xrdma has no windows).
    pub const MW_BIND: Self = Self(1 << 4);
    /// `IBV_ACCESS_ZERO_BASED` (recorded; addressing is set by the IOVA instead).
    pub const ZERO_BASED: Self = Self(1 << 5);
    /// `IBV_ACCESS_ON_DEMAND`: on-demand paging (not supported: `EOPNOTSUPP`).
    pub const ON_DEMAND: Self = Self(1 << 6);
    /// `IBV_ACCESS_HUGETLB`: a hint that huge pages back the region (recorded).
    pub const HUGETLB: Self = Self(1 << 7);
    /// `IBV_ACCESS_FLUSH_GLOBAL` (not supported: `EOPNOTSUPP`).
    pub const FLUSH_GLOBAL: Self = Self(1 << 8);
    /// `IBV_ACCESS_FLUSH_PERSISTENT` (not supported: `EOPNOTSUPP`).
    pub const FLUSH_PERSISTENT: Self = Self(1 << 9);
    /// `IBV_ACCESS_RELAXED_ORDERING`, the first optional bit (accepted, no effect).
    pub const RELAXED_ORDERING: Self = Self(1 << 20);
    /// `IBV_ACCESS_OPTIONAL_RANGE`: bits 20..=29, which a provider may ignore.
    pub const OPTIONAL_RANGE: Self = Self(0x3ff0_0000);
    /// The three rights a peer can use: REMOTE_READ, REMOTE_WRITE and REMOTE_ATOMIC.
    pub const REMOTE: Self =
        Self(Self::REMOTE_WRITE.0 | Self::REMOTE_READ.0 | Self::REMOTE_ATOMIC.0);

    /// The defined mandatory bits, LOCAL_WRITE..=FLUSH_PERSISTENT.
    const MANDATORY: u32 = (1 << 10) - 1;
    /// Bits the kernel accepts at all (`IB_ACCESS_SUPPORTED`).
    const SUPPORTED: u32 = Self::MANDATORY | Self::OPTIONAL_RANGE.0;
    /// Defined bits xrdma refuses with `EOPNOTSUPP`.
    const UNSUPPORTED: u32 = Self::ON_DEMAND.0 | Self::FLUSH_GLOBAL.0 | Self::FLUSH_PERSISTENT.0;

    /// No flags.
    pub const fn empty() -> Self {
        Self::EMPTY
    }

    /// The flags as libibverbs' `int access`.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits, keeping unknown ones (so that [`validate`](Self::validate) can
    /// reject them).
    pub const fn from_bits_retain(bits: u32) -> Self {
        Self(bits)
    }

    /// True if no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if every flag of `other` is set in `self` (always true for an empty `other`).
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if `self` and `other` share a flag.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// The flags set in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The flags of `self` not in `other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether these flags may be used to register a region, with the kernel's errno rules
    /// (`ib_check_mr_access`), checked in the kernel's order:
    ///
    /// 1. REMOTE_WRITE or REMOTE_ATOMIC without LOCAL_WRITE: [`MrError::RemoteWithoutLocalWrite`]
    ///    (`EINVAL`).
    /// 2. Bits that libibverbs does not define, that is outside 0..=9 and 20..=29:
    ///    [`MrError::UnknownAccess`] (`EINVAL`).
    /// 3. ON_DEMAND, FLUSH_GLOBAL, FLUSH_PERSISTENT: [`MrError::UnsupportedAccess`]
    ///    (`EOPNOTSUPP`).
    ///
    /// Optional bits (20..=29) pass and are ignored.
    pub const fn validate(self) -> Result<(), MrError> {
        if self.intersects(Self::REMOTE_WRITE.union(Self::REMOTE_ATOMIC))
            && !self.contains(Self::LOCAL_WRITE)
        {
            return Err(MrError::RemoteWithoutLocalWrite(self));
        }
        if self.0 & !Self::SUPPORTED != 0 {
            return Err(MrError::UnknownAccess(Self(self.0 & !Self::SUPPORTED)));
        }
        if self.0 & Self::UNSUPPORTED != 0 {
            return Err(MrError::UnsupportedAccess(Self(self.0 & Self::UNSUPPORTED)));
        }
        Ok(())
    }
}

impl BitOr for AccessFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl BitOrAssign for AccessFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for AccessFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(AccessFlags, &str); 11] = [
            (AccessFlags::LOCAL_WRITE, "LOCAL_WRITE"),
            (AccessFlags::REMOTE_WRITE, "REMOTE_WRITE"),
            (AccessFlags::REMOTE_READ, "REMOTE_READ"),
            (AccessFlags::REMOTE_ATOMIC, "REMOTE_ATOMIC"),
            (AccessFlags::MW_BIND, "MW_BIND"),
            (AccessFlags::ZERO_BASED, "ZERO_BASED"),
            (AccessFlags::ON_DEMAND, "ON_DEMAND"),
            (AccessFlags::HUGETLB, "HUGETLB"),
            (AccessFlags::FLUSH_GLOBAL, "FLUSH_GLOBAL"),
            (AccessFlags::FLUSH_PERSISTENT, "FLUSH_PERSISTENT"),
            (AccessFlags::RELAXED_ORDERING, "RELAXED_ORDERING"),
        ];
        write!(f, "AccessFlags(")?;
        let mut rest = self.0;
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                write!(f, "{}{name}", if first { "" } else { " | " })?;
                rest &= !flag.0;
                first = false;
            }
        }
        if rest != 0 || first {
            write!(f, "{}{rest:#x}", if first { "" } else { " | " })?;
        }
        write!(f, ")")
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and handles
// ---------------------------------------------------------------------------------------------

macro_rules! key_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#010x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#010x}", self.0)
            }
        }
    };
}

key_newtype!(
    /// A local key: names a memory region in the application's own scatter/gather entries.
    Lkey
);
key_newtype!(
    /// A remote key: names a memory region in a peer's RETH or AtomicETH.
    Rkey
);

/// A protection domain. A region can only be used by queue pairs of its own domain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PdHandle(pub u32);

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a registration or deregistration failed. [`errno`](Self::errno) is what libibverbs
/// would leave in `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MrError {
    /// REMOTE_WRITE or REMOTE_ATOMIC without LOCAL_WRITE (`EINVAL`). Carries the flags asked.
    RemoteWithoutLocalWrite(AccessFlags),
    /// Bits libibverbs does not define (`EINVAL`). Carries those bits.
    UnknownAccess(AccessFlags),
    /// ON_DEMAND or FLUSH_*, which xrdma does not implement (`EOPNOTSUPP`). Carries those bits.
    UnsupportedAccess(AccessFlags),
    /// A zero-length region (`EINVAL`, as `ib_umem_get` gives for zero pages).
    ZeroLength,
    /// The address range, its page-aligned cover, or the IOVA range wraps around, or is longer
    /// than `isize::MAX` (`EINVAL`).
    RangeOverflow,
    /// The IOVA's offset within a page differs from the address's (`EINVAL`, as in
    /// `ib_uverbs_reg_mr`).
    IovaPageOffset,
    /// Part of the range is not mapped in this process (`EFAULT`, as pinning would give).
    BadAddress,
    /// Pinning the pages would exceed `RLIMIT_MEMLOCK` (`ENOMEM`). `len` is the page-rounded
    /// size of the region; `limit` is the soft limit in bytes, `None` if unlimited.
    Memlock {
        /// Bytes the registration covers, rounded out to whole pages.
        len: usize,
        /// `RLIMIT_MEMLOCK` when the registration failed, in bytes; `None` for unlimited.
        limit: Option<u64>,
    },
    /// `mlock` failed for another reason; carries its errno (usually `EAGAIN`).
    Pin(i32),
    /// No unused key was found (`ENOMEM`); practically unreachable.
    KeysExhausted,
    /// No live region has this lkey (`EINVAL`).
    UnknownKey(Lkey),
}

impl MrError {
    /// The errno libibverbs reports for this failure.
    pub const fn errno(&self) -> i32 {
        match self {
            MrError::RemoteWithoutLocalWrite(_)
            | MrError::UnknownAccess(_)
            | MrError::ZeroLength
            | MrError::RangeOverflow
            | MrError::IovaPageOffset
            | MrError::UnknownKey(_) => libc::EINVAL,
            MrError::UnsupportedAccess(_) => libc::EOPNOTSUPP,
            MrError::BadAddress => libc::EFAULT,
            MrError::Memlock { .. } | MrError::KeysExhausted => libc::ENOMEM,
            MrError::Pin(errno) => *errno,
        }
    }
}

impl fmt::Display for MrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MrError::RemoteWithoutLocalWrite(a) => write!(
                f,
                "memory region access {a:?} asks for remote write or atomic access without LOCAL_WRITE"
            ),
            MrError::UnknownAccess(a) => write!(f, "unknown memory region access bits {a:?}"),
            MrError::UnsupportedAccess(a) => {
                write!(f, "memory region access {a:?} is not supported by xrdma")
            }
            MrError::ZeroLength => write!(f, "memory region of length 0"),
            MrError::RangeOverflow => write!(f, "memory region range wraps around"),
            MrError::IovaPageOffset => write!(
                f,
                "memory region IOVA and address have different offsets within a page"
            ),
            MrError::BadAddress => write!(f, "memory region range is not mapped"),
            MrError::Memlock { len, limit } => {
                write!(
                    f,
                    "cannot pin {len} bytes of registered memory: RLIMIT_MEMLOCK is "
                )?;
                match limit {
                    Some(limit) => write!(f, "{limit} bytes")?,
                    None => write!(f, "unlimited")?,
                }
                write!(
                    f,
                    " and counts every registered page; raise it (`ulimit -l`, LimitMEMLOCK=, \
                     docker --ulimit memlock=) or run with CAP_IPC_LOCK"
                )
            }
            MrError::Pin(errno) => write!(
                f,
                "cannot pin memory region: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            MrError::KeysExhausted => write!(f, "no free memory region key"),
            MrError::UnknownKey(lkey) => write!(f, "no memory region with lkey {lkey}"),
        }
    }
}

impl std::error::Error for MrError {}

/// Why a local access (a scatter/gather entry of the application's own work request) was
/// refused. Every kind completes the work request with `IBV_WC_LOC_PROT_ERR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalAccessError {
    /// No live region has this lkey.
    InvalidKey,
    /// The region belongs to another protection domain than the queue pair.
    PdMismatch,
    /// The region lacks a right the access needs (LOCAL_WRITE for writes).
    Permission,
    /// The range is not inside the region.
    OutOfBounds,
}

impl LocalAccessError {
    /// The completion status of the work request: `IBV_WC_LOC_PROT_ERR` (4).
    pub const fn wc_status_hint(&self) -> u32 {
        IBV_WC_LOC_PROT_ERR
    }
}

impl fmt::Display for LocalAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LocalAccessError::InvalidKey => {
                "local protection error: no memory region has this lkey"
            }
            LocalAccessError::PdMismatch => {
                "local protection error: memory region belongs to another protection domain"
            }
            LocalAccessError::Permission => {
                "local protection error: memory region was registered without LOCAL_WRITE"
            }
            LocalAccessError::OutOfBounds => {
                "local protection error: range is outside the memory region"
            }
        })
    }
}

impl std::error::Error for LocalAccessError {}

/// Why a peer's RDMA READ, WRITE or atomic was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteAccessError {
    /// No live region has this rkey. NAK Remote Access Error.
    InvalidKey,
    /// The region belongs to another protection domain than the queue pair. NAK Remote
    /// Access Error.
    PdMismatch,
    /// The region lacks the right the operation needs. NAK Remote Access Error.
    Permission,
    /// The range is not inside the region. NAK Remote Access Error.
    OutOfBounds,
    /// An atomic whose address is not 8-byte aligned. NAK Invalid Request.
    MisalignedAtomic,
    /// The request itself is malformed: `need` is not a non-empty set of remote rights, or an
    /// atomic's length is not 8. NAK Invalid Request.
    InvalidRequest,
}

impl RemoteAccessError {
    /// The status the requester's work request completes with once the NAK arrives:
    /// `IBV_WC_REM_ACCESS_ERR` (10) for key, PD, rights and bounds failures,
    /// `IBV_WC_REM_INV_REQ_ERR` (9) for a misaligned atomic or a malformed request.
    pub const fn wc_status_hint(&self) -> u32 {
        match self {
            RemoteAccessError::InvalidKey
            | RemoteAccessError::PdMismatch
            | RemoteAccessError::Permission
            | RemoteAccessError::OutOfBounds => IBV_WC_REM_ACCESS_ERR,
            RemoteAccessError::MisalignedAtomic | RemoteAccessError::InvalidRequest => {
                IBV_WC_REM_INV_REQ_ERR
            }
        }
    }
}

impl fmt::Display for RemoteAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteAccessError::InvalidKey => "remote access error: no memory region has this rkey",
            RemoteAccessError::PdMismatch => {
                "remote access error: memory region belongs to another protection domain"
            }
            RemoteAccessError::Permission => {
                "remote access error: memory region does not grant this remote access"
            }
            RemoteAccessError::OutOfBounds => {
                "remote access error: range is outside the memory region"
            }
            RemoteAccessError::MisalignedAtomic => {
                "invalid request: atomic address is not 8-byte aligned"
            }
            RemoteAccessError::InvalidRequest => "invalid request: malformed remote access",
        })
    }
}

impl std::error::Error for RemoteAccessError {}

// ---------------------------------------------------------------------------------------------
// Memory region
// ---------------------------------------------------------------------------------------------

/// One registered buffer. Shared (`Arc`) between the table and whoever holds it; the bytes
/// belong to the application, the region only records where they are.
#[derive(Debug)]
pub struct MemoryRegion {
    pd: PdHandle,
    addr: usize,
    len: usize,
    iova: u64,
    access: AccessFlags,
    lkey: Lkey,
    rkey: Rkey,
}

impl MemoryRegion {
    /// The protection domain it was registered in.
    pub fn pd(&self) -> PdHandle {
        self.pd
    }

    /// The buffer's address in this process.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The buffer's length in bytes (never 0).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: zero-length regions cannot be registered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the buffer's first byte in work requests and in peers' requests. Equal
    /// to [`addr`](Self::addr) unless the region was registered with an explicit IOVA
    /// (`ibv_reg_mr_iova`).
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The rights it was registered with, as given.
    pub fn access(&self) -> AccessFlags {
        self.access
    }

    /// Its local key.
    pub fn lkey(&self) -> Lkey {
        self.lkey
    }

    /// Its remote key.
    pub fn rkey(&self) -> Rkey {
        self.rkey
    }

    /// The offset in the buffer of the `len` bytes at IOVA `va`, if they all lie inside the
    /// region. Never overflows, for any input.
    pub fn range_offset(&self, va: u64, len: u64) -> Option<usize> {
        let offset = va.checked_sub(self.iova)?;
        let region_len = self.len as u64;
        if len > region_len || offset > region_len - len {
            return None;
        }
        // offset <= region_len, which came from a usize.
        Some(offset as usize)
    }

    /// The bounds check shared by the accessors: `Some(address)` if `[offset, offset + len)`
    /// lies inside the buffer.
    fn host_range(&self, offset: usize, len: usize) -> Option<usize> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // addr + len does not wrap: registration checked it.
        Some(self.addr + offset)
    }

    /// The `len` bytes at `offset` in the buffer, or `None` if they are not all inside it.
    ///
    /// # Safety
    ///
    /// For as long as the returned slice lives:
    /// - the application's buffer must still be mapped and readable. Verbs makes the
    ///   application deregister a buffer before freeing it; xrdma keeps its side by using a
    ///   region only while it is registered (see "Threads and locking" in the module docs), and
    /// - nothing may write these bytes: neither the application nor xrdma through
    ///   [`slice_mut`](Self::slice_mut) or [`atomic_u64`](Self::atomic_u64).
    pub unsafe fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let start = self.host_range(offset, len)?;
        if len == 0 {
            return Some(&[]);
        }
        let ptr = std::ptr::with_exposed_provenance::<u8>(start);
        // SAFETY: [start, start + len) lies inside the registered buffer (host_range), whose
        // address came from the application's pointer and whose length is at most
        // isize::MAX without wrapping (register checked both). The caller promises the buffer
        // is mapped and readable and that nothing writes it while the slice lives.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    /// The `len` bytes at `offset` in the buffer, writable, or `None` if they are not all
    /// inside it.
    ///
    /// # Safety
    ///
    /// For as long as the returned slice lives:
    /// - the application's buffer must still be mapped and writable (see
    ///   [`slice`](Self::slice)), and
    /// - nothing else may read or write these bytes: neither the application nor xrdma through
    ///   another [`slice`](Self::slice), `slice_mut` or [`atomic_u64`](Self::atomic_u64).
    #[allow(clippy::mut_from_ref)] // The bytes are the application's, not part of `self`.
    pub unsafe fn slice_mut(&self, offset: usize, len: usize) -> Option<&mut [u8]> {
        let start = self.host_range(offset, len)?;
        if len == 0 {
            return Some(&mut []);
        }
        let ptr = std::ptr::with_exposed_provenance_mut::<u8>(start);
        // SAFETY: as in `slice`; in addition the caller promises the buffer is writable and
        // that no other reference to these bytes exists while this one lives.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    /// The 8 bytes at `offset` as an atomic, or `None` if they are not inside the buffer or
    /// not 8-byte aligned in memory.
    ///
    /// Registration makes the IOVA and the address agree modulo the page size, so an IOVA that
    /// passed [`MrTable::check_remote`]'s alignment check is aligned here too.
    ///
    /// # Safety
    ///
    /// For as long as the returned reference lives, the application's buffer must still be
    /// mapped and writable, and these bytes may only be accessed atomically (no
    /// [`slice`](Self::slice) or [`slice_mut`](Self::slice_mut) over them, and no plain access
    /// by the application).
    pub unsafe fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        let start = self.host_range(offset, 8)?;
        if !start.is_multiple_of(8) {
            return None;
        }
        let ptr = std::ptr::with_exposed_provenance_mut::<u64>(start);
        // SAFETY: the 8 bytes lie inside the registered buffer and are 8-byte aligned (checked
        // above); the caller promises they stay mapped, writable and only atomically accessed
        // for the reference's lifetime, which is what AtomicU64::from_ptr requires.
        Some(unsafe { AtomicU64::from_ptr(ptr) })
    }
}

// ---------------------------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------------------------

/// The live memory regions of one context, indexed by lkey and by rkey, and the pages they
/// pin. `Send + Sync`; the owner wraps it in a `parking_lot::RwLock` (see the module docs).
#[derive(Debug)]
pub struct MrTable {
    by_lkey: HashMap<Lkey, Arc<MemoryRegion>>,
    by_rkey: HashMap<Rkey, Arc<MemoryRegion>>,
    pins: PinSet,
    page_size: usize,
}

impl Default for MrTable {
    fn default() -> Self {
        Self::new()
    }
}

impl MrTable {
    /// An empty table.
    pub fn new() -> Self {
        MrTable {
            by_lkey: HashMap::new(),
            by_rkey: HashMap::new(),
            pins: PinSet::default(),
            page_size: page_size(),
        }
    }

    /// How many regions are registered.
    pub fn len(&self) -> usize {
        self.by_lkey.len()
    }

    /// True if no region is registered.
    pub fn is_empty(&self) -> bool {
        self.by_lkey.is_empty()
    }

    /// The region with this lkey, if registered.
    pub fn get(&self, lkey: Lkey) -> Option<&Arc<MemoryRegion>> {
        self.by_lkey.get(&lkey)
    }

    /// Registers `len` bytes at `addr` in protection domain `pd` (`ibv_reg_mr`), or, with
    /// `iova: Some(..)`, at that IOVA (`ibv_reg_mr_iova`), and pins the pages covering them.
    ///
    /// Errors, checked in this order: `iova`'s page offset differs from `addr`'s
    /// ([`MrError::IovaPageOffset`]); `access` fails [`AccessFlags::validate`]; `len` is 0
    /// ([`MrError::ZeroLength`]); the range or its page cover wraps, or the IOVA range does, or
    /// `len > isize::MAX` ([`MrError::RangeOverflow`]); no free key ([`MrError::KeysExhausted`]);
    /// pinning fails ([`MrError::Memlock`], [`MrError::BadAddress`], [`MrError::Pin`]). On
    /// error nothing stays pinned or registered; the generator may have advanced.
    ///
    /// Keys are drawn from `rng` (lkey first, then rkey), skipping 0 and keys in use.
    pub fn register(
        &mut self,
        pd: PdHandle,
        addr: usize,
        len: usize,
        iova: Option<u64>,
        access: AccessFlags,
        rng: &mut Rng,
    ) -> Result<Arc<MemoryRegion>, MrError> {
        let page = self.page_size;
        let iova = iova.unwrap_or(addr as u64);
        if iova % page as u64 != (addr % page) as u64 {
            return Err(MrError::IovaPageOffset);
        }
        access.validate()?;
        if len == 0 {
            return Err(MrError::ZeroLength);
        }
        if len > isize::MAX as usize || iova.checked_add(len as u64).is_none() {
            return Err(MrError::RangeOverflow);
        }
        let (start, end) = page_cover(addr, len, page).ok_or(MrError::RangeOverflow)?;

        let lkey = Lkey(self.draw_key(rng, 0)?);
        let rkey = Rkey(self.draw_key(rng, lkey.0)?);

        self.pins
            .acquire(start, end, mlock_range, munlock_range)
            .map_err(|errno| pin_error(errno, start, end, page))?;

        let mr = Arc::new(MemoryRegion {
            pd,
            addr,
            len,
            iova,
            access,
            lkey,
            rkey,
        });
        self.by_lkey.insert(lkey, Arc::clone(&mr));
        self.by_rkey.insert(rkey, Arc::clone(&mr));
        Ok(mr)
    }

    /// Deregisters the region with this lkey (`ibv_dereg_mr`) and unpins the pages no other
    /// live region covers. Unknown lkey: [`MrError::UnknownKey`] (`EINVAL`).
    ///
    /// `Arc`s to the region held elsewhere stay valid as records, but the region's keys no
    /// longer pass any check.
    pub fn deregister(&mut self, lkey: Lkey) -> Result<(), MrError> {
        let mr = self
            .by_lkey
            .remove(&lkey)
            .ok_or(MrError::UnknownKey(lkey))?;
        self.by_rkey.remove(&mr.rkey);
        if let Some((start, end)) = page_cover(mr.addr, mr.len, self.page_size) {
            self.pins.release(start, end, munlock_range);
        }
        Ok(())
    }

    /// Checks a local access: `len` bytes at IOVA `va` through `lkey`, from a queue pair in
    /// `pd`, needing `need` (empty for reads, LOCAL_WRITE for writes).
    ///
    /// `Ok(None)` for `len == 0`: nothing is touched and the key is not looked up (rxe's
    /// `copy_data` skips zero-length SGEs). Otherwise the checks run in rxe's order: key, PD,
    /// rights, bounds. Pure apart from the hash lookup.
    pub fn check_local(
        &self,
        pd: PdHandle,
        lkey: Lkey,
        va: u64,
        len: u64,
        need: AccessFlags,
    ) -> Result<Option<&Arc<MemoryRegion>>, LocalAccessError> {
        if len == 0 {
            return Ok(None);
        }
        let mr = self
            .by_lkey
            .get(&lkey)
            .ok_or(LocalAccessError::InvalidKey)?;
        if mr.pd != pd {
            return Err(LocalAccessError::PdMismatch);
        }
        if !mr.access.contains(need) {
            return Err(LocalAccessError::Permission);
        }
        if mr.range_offset(va, len).is_none() {
            return Err(LocalAccessError::OutOfBounds);
        }
        Ok(Some(mr))
    }

    /// Checks a peer's access: `len` bytes at IOVA `va` through `rkey`, arriving on a queue
    /// pair in `pd`, needing `need`: REMOTE_READ, REMOTE_WRITE or REMOTE_ATOMIC (a union is
    /// allowed and needs every right in it).
    ///
    /// `need` empty or with a non-remote bit, or an atomic with `len != 8`:
    /// [`RemoteAccessError::InvalidRequest`]. A zero-length READ or WRITE gives `Ok(None)`
    /// without looking up the rkey (IBA C9-88, rxe's `check_rkey`). Otherwise the checks run
    /// in rxe's order: key, PD, rights, bounds, then atomic alignment. Pure apart from the
    /// hash lookup.
    pub fn check_remote(
        &self,
        pd: PdHandle,
        rkey: Rkey,
        va: u64,
        len: u64,
        need: AccessFlags,
    ) -> Result<Option<&Arc<MemoryRegion>>, RemoteAccessError> {
        if need.is_empty() || !AccessFlags::REMOTE.contains(need) {
            return Err(RemoteAccessError::InvalidRequest);
        }
        let atomic = need.contains(AccessFlags::REMOTE_ATOMIC);
        if atomic && len != 8 {
            return Err(RemoteAccessError::InvalidRequest);
        }
        if len == 0 {
            return Ok(None);
        }
        let mr = self
            .by_rkey
            .get(&rkey)
            .ok_or(RemoteAccessError::InvalidKey)?;
        if mr.pd != pd {
            return Err(RemoteAccessError::PdMismatch);
        }
        if !mr.access.contains(need) {
            return Err(RemoteAccessError::Permission);
        }
        if mr.range_offset(va, len).is_none() {
            return Err(RemoteAccessError::OutOfBounds);
        }
        if atomic && !va.is_multiple_of(8) {
            return Err(RemoteAccessError::MisalignedAtomic);
        }
        Ok(Some(mr))
    }

    /// Draws a key that is not 0, not `also_not`, and not an lkey or rkey of a live region.
    fn draw_key(&self, rng: &mut Rng, also_not: u32) -> Result<u32, MrError> {
        for _ in 0..KEY_DRAWS {
            let key = rng.next_u32();
            if key != 0
                && key != also_not
                && !self.by_lkey.contains_key(&Lkey(key))
                && !self.by_rkey.contains_key(&Rkey(key))
            {
                return Ok(key);
            }
        }
        Err(MrError::KeysExhausted)
    }
}

impl Drop for MrTable {
    fn drop(&mut self) {
        for (start, end) in self.pins.ranges() {
            munlock_range(start, end);
        }
    }
}

// The owner shares the table between threads behind a lock, and hands regions to others.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<MrTable>();
    send_sync::<MemoryRegion>();
    send_sync::<Arc<MemoryRegion>>();
};

// ---------------------------------------------------------------------------------------------
// Pinning
// ---------------------------------------------------------------------------------------------

/// Pinned pages as disjoint, sorted byte ranges (page-aligned), each with the number of live
/// regions covering it (at least 1). Neighbouring ranges that touch have different counts.
///
/// The operating-system calls come in as arguments so that the interval logic can be tested
/// on its own; the table always passes `mlock`/`munlock`.
#[derive(Debug, Default)]
struct PinSet {
    segs: BTreeMap<usize, Seg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    end: usize,
    count: u32,
}

impl PinSet {
    /// Adds one cover of `[start, end)`. Locks exactly the parts no range covered yet; if a
    /// lock fails, unlocks the parts it locked, leaves the set unchanged and returns the error.
    fn acquire<E>(
        &mut self,
        start: usize,
        end: usize,
        mut lock: impl FnMut(usize, usize) -> Result<(), E>,
        mut unlock: impl FnMut(usize, usize),
    ) -> Result<(), E> {
        let gaps = self.gaps(start, end);
        for (i, &(s, e)) in gaps.iter().enumerate() {
            if let Err(err) = lock(s, e) {
                for &(s, e) in &gaps[..i] {
                    unlock(s, e);
                }
                return Err(err);
            }
        }
        self.split_at(start);
        self.split_at(end);
        for (_, seg) in self.segs.range_mut(start..end) {
            seg.count += 1;
        }
        for (s, e) in gaps {
            self.segs.insert(s, Seg { end: e, count: 1 });
        }
        self.coalesce(start, end);
        Ok(())
    }

    /// Removes one cover of `[start, end)` (which must have been acquired) and unlocks the
    /// parts no range covers any more.
    fn release(&mut self, start: usize, end: usize, mut unlock: impl FnMut(usize, usize)) {
        self.split_at(start);
        self.split_at(end);
        let mut freed: Vec<(usize, usize)> = Vec::new();
        let starts: Vec<usize> = self.segs.range(start..end).map(|(&s, _)| s).collect();
        for s in starts {
            let Some(seg) = self.segs.get_mut(&s) else {
                continue;
            };
            seg.count -= 1;
            if seg.count == 0 {
                let e = seg.end;
                self.segs.remove(&s);
                match freed.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => freed.push((s, e)),
                }
            }
        }
        for (s, e) in freed {
            unlock(s, e);
        }
        self.coalesce(start, end);
    }

    /// The parts of `[start, end)` no range covers, in order.
    fn gaps(&self, start: usize, end: usize) -> Vec<(usize, usize)> {
        let mut gaps = Vec::new();
        let mut cur = start;
        if let Some((_, seg)) = self.segs.range(..start).next_back() {
            cur = cur.max(seg.end.min(end));
        }
        for (&s, seg) in self.segs.range(start..end) {
            if s > cur {
                gaps.push((cur, s));
            }
            cur = cur.max(seg.end.min(end));
        }
        if cur < end {
            gaps.push((cur, end));
        }
        gaps
    }

    /// Splits the range straddling `p`, if any, so that a range starts at `p`.
    fn split_at(&mut self, p: usize) {
        let straddling = self
            .segs
            .range_mut(..p)
            .next_back()
            .filter(|(_, seg)| seg.end > p)
            .map(|(_, seg)| {
                let tail = *seg;
                seg.end = p;
                tail
            });
        if let Some(tail) = straddling {
            self.segs.insert(p, tail);
        }
    }

    /// Merges touching ranges with equal counts from the range before `start` to the one
    /// starting at `end`.
    fn coalesce(&mut self, start: usize, end: usize) {
        let first = self
            .segs
            .range(..start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        let starts: Vec<usize> = self.segs.range(first..=end).map(|(&s, _)| s).collect();
        let mut prev: Option<(usize, Seg)> = None;
        for s in starts {
            let Some(&seg) = self.segs.get(&s) else {
                continue;
            };
            if let Some((p, mut pseg)) = prev {
                if pseg.end == s && pseg.count == seg.count {
                    pseg.end = seg.end;
                    self.segs.remove(&s);
                    self.segs.insert(p, pseg);
                    prev = Some((p, pseg));
                    continue;
                }
            }
            prev = Some((s, seg));
        }
    }

    /// The pinned byte ranges, merged where they touch.
    fn ranges(&self) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for (&s, seg) in &self.segs {
            match out.last_mut() {
                Some(last) if last.1 == s => last.1 = seg.end,
                _ => out.push((s, seg.end)),
            }
        }
        out
    }
}

/// `[start, end)`: the page-aligned cover of `len` bytes at `addr`, if it does not wrap.
fn page_cover(addr: usize, len: usize, page: usize) -> Option<(usize, usize)> {
    let end = addr.checked_add(len)?;
    let end = end.checked_add(page - 1)? & !(page - 1);
    Some((addr & !(page - 1), end))
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a configuration value and touches no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    match usize::try_from(size) {
        Ok(size) if size.is_power_of_two() => size,
        _ => 4096,
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `mlock` on a page-aligned range; `Err(errno)` on failure.
fn mlock_range(start: usize, end: usize) -> Result<(), i32> {
    // SAFETY: mlock changes whether pages may be swapped out; it reads and writes no memory of
    // ours, and fails with ENOMEM if part of the range is not mapped.
    let rc = unsafe { libc::mlock(std::ptr::without_provenance(start), end - start) };
    if rc == 0 { Ok(()) } else { Err(last_errno()) }
}

/// `munlock` on a page-aligned range. Failure (the application unmapped the buffer before
/// deregistering it, which unlocked the pages anyway) is ignored.
fn munlock_range(start: usize, end: usize) {
    // SAFETY: munlock only changes whether pages may be swapped out; it touches no memory.
    unsafe { libc::munlock(std::ptr::without_provenance(start), end - start) };
}

/// The `RLIMIT_MEMLOCK` soft limit in bytes; `None` if unlimited.
fn memlock_limit() -> Option<u64> {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass, which lives on our stack.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rlim) };
    if rc != 0 || rlim.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(rlim.rlim_cur)
    }
}

/// True if every page of the page-aligned range `[start, end)` is mapped.
fn is_mapped(start: usize, end: usize, page: usize) -> bool {
    let mut vec = [0u8; 256];
    let mut p = start;
    while p < end {
        let pages = ((end - p) / page).min(vec.len());
        // SAFETY: mincore writes one byte per page of [p, p + pages * page) into `vec`, which
        // has room for `pages` bytes; it does not access the range itself and fails with
        // ENOMEM if part of it is unmapped.
        let rc = unsafe {
            libc::mincore(
                std::ptr::without_provenance_mut(p),
                pages * page,
                vec.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return false;
        }
        p += pages * page;
    }
    true
}

/// Turns a failed `mlock` of the region `[start, end)` into the error libibverbs would give.
fn pin_error(errno: i32, start: usize, end: usize, page: usize) -> MrError {
    match errno {
        libc::ENOMEM if !is_mapped(start, end, page) => MrError::BadAddress,
        libc::ENOMEM | libc::EPERM => MrError::Memlock {
            len: end - start,
            limit: memlock_limit(),
        },
        errno => MrError::Pin(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::{Mutex, RwLock};
    use std::cell::RefCell;
    use std::collections::HashSet;

    /// Held by every test that pins memory: VmLck and RLIMIT_MEMLOCK belong to the process,
    /// and tests run on parallel threads.
    static PIN_LOCK: Mutex<()> = Mutex::new(());

    const PD: PdHandle = PdHandle(1);
    const LW: AccessFlags = AccessFlags::LOCAL_WRITE;

    fn pg() -> usize {
        page_size()
    }

    /// Bytes of `n` pages in kB, as /proc/self/status reports them.
    fn kib(n: usize) -> u64 {
        (n * pg() / 1024) as u64
    }

    /// VmLck of this process, in kB.
    fn vmlck_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Fresh anonymous pages, unmapped on drop.
    struct Pages {
        addr: usize,
        len: usize,
    }

    impl Pages {
        fn new(n: usize) -> Pages {
            let len = n * pg();
            // SAFETY: a new private anonymous mapping; no existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Pages {
                addr: p.expose_provenance(),
                len,
            }
        }
    }

    impl Drop for Pages {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping `new` created, which nothing borrows any more.
            unsafe { libc::munmap(std::ptr::with_exposed_provenance_mut(self.addr), self.len) };
        }
    }

    fn lkey_of(
        r: Result<Option<&Arc<MemoryRegion>>, LocalAccessError>,
    ) -> Result<Option<Lkey>, LocalAccessError> {
        r.map(|m| m.map(|m| m.lkey()))
    }

    fn rkey_of(
        r: Result<Option<&Arc<MemoryRegion>>, RemoteAccessError>,
    ) -> Result<Option<Rkey>, RemoteAccessError> {
        r.map(|m| m.map(|m| m.rkey()))
    }

    // ----- access flags -------------------------------------------------------------------

    #[test]
    fn access_flag_values_match_libibverbs() {
        let values = [
            (AccessFlags::LOCAL_WRITE, 1),
            (AccessFlags::REMOTE_WRITE, 2),
            (AccessFlags::REMOTE_READ, 4),
            (AccessFlags::REMOTE_ATOMIC, 8),
            (AccessFlags::MW_BIND, 16),
            (AccessFlags::ZERO_BASED, 32),
            (AccessFlags::ON_DEMAND, 64),
            (AccessFlags::HUGETLB, 128),
            (AccessFlags::FLUSH_GLOBAL, 256),
            (AccessFlags::FLUSH_PERSISTENT, 512),
            (AccessFlags::RELAXED_ORDERING, 1 << 20),
            (AccessFlags::OPTIONAL_RANGE, 1_072_693_248),
        ];
        for (flag, bits) in values {
            assert_eq!(flag.bits(), bits, "{flag:?}");
        }
        let rw = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ;
        assert!(rw.contains(AccessFlags::REMOTE_READ) && !rw.contains(AccessFlags::REMOTE));
        assert!(rw.contains(AccessFlags::EMPTY) && rw.intersects(AccessFlags::REMOTE));
        assert_eq!(
            rw.difference(AccessFlags::LOCAL_WRITE),
            AccessFlags::REMOTE_READ
        );
        assert_eq!(AccessFlags::from_bits_retain(rw.bits()), rw);
        assert_eq!(format!("{rw:?}"), "AccessFlags(LOCAL_WRITE | REMOTE_READ)");
        assert_eq!(
            format!("{:?}", AccessFlags::from_bits_retain(1 << 12 | 1)),
            "AccessFlags(LOCAL_WRITE | 0x1000)"
        );
        assert_eq!(format!("{:?}", AccessFlags::EMPTY), "AccessFlags(0x0)");
    }

    #[test]
    fn validate_follows_ib_check_mr_access() {
        use AccessFlags as A;
        let f = A::from_bits_retain;
        assert_eq!(
            A::REMOTE_WRITE.validate(),
            Err(MrError::RemoteWithoutLocalWrite(A::REMOTE_WRITE))
        );
        assert_eq!(
            A::REMOTE_WRITE.validate().unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            (A::REMOTE_ATOMIC | A::REMOTE_READ).validate(),
            Err(MrError::RemoteWithoutLocalWrite(
                A::REMOTE_ATOMIC | A::REMOTE_READ
            ))
        );
        for ok in [
            A::EMPTY,
            A::REMOTE_READ,
            A::LOCAL_WRITE,
            A::LOCAL_WRITE | A::REMOTE_WRITE,
            A::LOCAL_WRITE | A::REMOTE_ATOMIC | A::REMOTE_READ | A::REMOTE_WRITE,
            A::MW_BIND | A::ZERO_BASED | A::HUGETLB,
            A::RELAXED_ORDERING,
            f(1 << 29 | 1 << 25 | 4),
        ] {
            assert_eq!(ok.validate(), Ok(()), "{ok:?}");
        }
        for bit in (10..20).chain(30..32) {
            assert_eq!(
                f(1 << bit | 1).validate(),
                Err(MrError::UnknownAccess(f(1 << bit)))
            );
            assert_eq!(f(1 << bit).validate().unwrap_err().errno(), libc::EINVAL);
        }
        // The LOCAL_WRITE rule comes first, as in the kernel.
        assert_eq!(
            f(1 << 31 | 2).validate(),
            Err(MrError::RemoteWithoutLocalWrite(f(1 << 31 | 2)))
        );
        for flag in [A::ON_DEMAND, A::FLUSH_GLOBAL, A::FLUSH_PERSISTENT] {
            assert_eq!(flag.validate(), Err(MrError::UnsupportedAccess(flag)));
            assert_eq!(flag.validate().unwrap_err().errno(), libc::EOPNOTSUPP);
        }
        // Unknown bits come before unsupported ones.
        assert_eq!(
            (A::ON_DEMAND | f(1 << 12)).validate(),
            Err(MrError::UnknownAccess(f(1 << 12)))
        );
    }

    // ----- registration -------------------------------------------------------------------

    #[test]
    fn register_rejects_bad_arguments_without_pinning() {
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(2);
        let base = vmlck_kib();
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(3);
        let p = pg();
        let a = pages.addr + 100;
        let mut reg = |addr: usize, len: usize, iova: Option<u64>, access: AccessFlags| {
            t.register(PD, addr, len, iova, access, &mut rng)
                .map(|_| ())
        };

        assert_eq!(
            reg(a, 10, None, AccessFlags::REMOTE_WRITE),
            Err(MrError::RemoteWithoutLocalWrite(AccessFlags::REMOTE_WRITE))
        );
        assert_eq!(
            reg(a, 10, None, AccessFlags::ON_DEMAND),
            Err(MrError::UnsupportedAccess(AccessFlags::ON_DEMAND))
        );
        assert_eq!(reg(a, 0, None, LW), Err(MrError::ZeroLength));
        assert_eq!(
            reg(a, 10, Some(a as u64 + 1), LW),
            Err(MrError::IovaPageOffset)
        );
        assert_eq!(reg(a, 10, Some(0), LW), Err(MrError::IovaPageOffset));
        let top_iova = !(p as u64 - 1) + (a % p) as u64;
        assert_eq!(reg(a, p, Some(top_iova), LW), Err(MrError::RangeOverflow));
        assert_eq!(
            reg(usize::MAX - 10, 100, None, LW),
            Err(MrError::RangeOverflow)
        );
        // addr + len fits, but rounding up to a page does not.
        assert_eq!(
            reg(usize::MAX - 200, 100, None, LW),
            Err(MrError::RangeOverflow)
        );
        assert_eq!(
            reg(
                a,
                isize::MAX as usize + 1,
                Some(0x1000 + (a % p) as u64),
                LW
            ),
            Err(MrError::RangeOverflow)
        );
        // Below mmap_min_addr nothing is ever mapped.
        assert_eq!(reg(p, 100, None, LW), Err(MrError::BadAddress));
        assert_eq!(MrError::BadAddress.errno(), libc::EFAULT);
        assert_eq!(MrError::ZeroLength.errno(), libc::EINVAL);
        assert_eq!(MrError::IovaPageOffset.errno(), libc::EINVAL);
        assert_eq!(MrError::RangeOverflow.errno(), libc::EINVAL);

        assert!(t.is_empty());
        assert_eq!(vmlck_kib(), base);
        // REMOTE_READ alone is fine.
        let mr = t
            .register(PD, a, 10, None, AccessFlags::REMOTE_READ, &mut rng)
            .unwrap();
        assert_eq!(
            (mr.addr(), mr.len(), mr.iova(), mr.pd()),
            (a, 10, a as u64, PD)
        );
        assert_eq!(mr.access(), AccessFlags::REMOTE_READ);
        assert!(!mr.is_empty());
        assert_eq!(t.get(mr.lkey()).map(|m| m.rkey()), Some(mr.rkey()));
        assert_eq!(
            t.deregister(Lkey(mr.rkey().0)),
            Err(MrError::UnknownKey(Lkey(mr.rkey().0)))
        );
        assert_eq!(MrError::UnknownKey(Lkey(1)).errno(), libc::EINVAL);
        t.deregister(mr.lkey()).unwrap();
        assert_eq!(t.deregister(mr.lkey()), Err(MrError::UnknownKey(mr.lkey())));
        assert_eq!(t.get(mr.lkey()).map(|m| m.lkey()), None);
    }

    /// Keys of `n` registrations over one page, in draw order: lkey, rkey, lkey, ...
    fn key_sequence(seed: u64, n: usize, pages: &Pages) -> Vec<u32> {
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(seed);
        let mut keys = Vec::with_capacity(2 * n);
        for i in 0..n {
            let mr = t
                .register(
                    PD,
                    pages.addr + i % 4000,
                    1 + i % 96,
                    None,
                    LW | AccessFlags::REMOTE_READ,
                    &mut rng,
                )
                .unwrap();
            keys.push(mr.lkey().0);
            keys.push(mr.rkey().0);
        }
        keys
    }

    #[test]
    fn keys_are_unique_nonzero_and_follow_the_seed() {
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(1);
        let n = 10_000;
        // A seed whose raw stream repeats a value within the 2n draws, so the test fails if
        // the table did not skip keys in use.
        let seed = (0..10_000u64)
            .find(|&s| {
                let mut rng = Rng::seed_from_u64(s);
                let mut seen = HashSet::new();
                (0..2 * n).any(|_| !seen.insert(rng.next_u32()))
            })
            .expect("some seed repeats a 32-bit value within 20,000 draws");

        let keys = key_sequence(seed, n, &pages);
        let unique: HashSet<u32> = keys.iter().copied().collect();
        assert_eq!(unique.len(), 2 * n);
        assert!(!unique.contains(&0));
        assert!(keys.chunks(2).all(|pair| pair[0] != pair[1]));

        // Exactly the raw stream with 0 and repeats skipped.
        let mut rng = Rng::seed_from_u64(seed);
        let mut seen = HashSet::new();
        let mut expected = Vec::new();
        let mut skipped = 0;
        while expected.len() < 2 * n {
            let k = rng.next_u32();
            if k != 0 && seen.insert(k) {
                expected.push(k);
            } else {
                skipped += 1;
            }
        }
        assert!(skipped > 0);
        assert_eq!(keys, expected);

        assert_eq!(key_sequence(seed, 1000, &pages), keys[..2000]);
        assert_ne!(key_sequence(seed + 1, 1000, &pages), keys[..2000]);
    }

    // ----- checks -------------------------------------------------------------------------

    #[test]
    fn check_local_key_pd_rights_bounds_and_zero_length() {
        use LocalAccessError as E;
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(1);
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(11);
        let addr = pages.addr + 100;
        let ro = t
            .register(PD, addr, 1000, None, AccessFlags::EMPTY, &mut rng)
            .unwrap();
        let rw = t.register(PD, addr, 1000, None, LW, &mut rng).unwrap();
        let va = addr as u64;
        let read = |key: Lkey, va: u64, len: u64| {
            lkey_of(t.check_local(PD, key, va, len, AccessFlags::EMPTY))
        };
        let (r, w) = (ro.lkey(), rw.lkey());

        assert_eq!(read(r, va, 1000), Ok(Some(r)));
        assert_eq!(read(r, va + 990, 10), Ok(Some(r)));
        assert_eq!(read(r, va + 999, 1), Ok(Some(r)));
        for (v, l) in [
            (va - 1, 10),
            (va - 1, 1),
            (va + 991, 10),
            (va + 1000, 1),
            (va, 1001),
            (va + 10, u64::MAX),
            (va, u64::MAX - va + 1),
            (u64::MAX, 1),
            (u64::MAX, u64::MAX),
            (0, u64::MAX),
            (0, 1),
        ] {
            assert_eq!(read(r, v, l), Err(E::OutOfBounds), "va {v:#x} len {l}");
        }
        assert_eq!(read(Lkey(ro.rkey().0), va, 1), Err(E::InvalidKey));
        assert_eq!(read(Lkey(0), va, 1), Err(E::InvalidKey));
        assert_eq!(
            lkey_of(t.check_local(PdHandle(2), r, va, 1, AccessFlags::EMPTY)),
            Err(E::PdMismatch)
        );
        assert_eq!(lkey_of(t.check_local(PD, r, va, 1, LW)), Err(E::Permission));
        assert_eq!(lkey_of(t.check_local(PD, w, va, 1000, LW)), Ok(Some(w)));
        // rxe's order: PD before rights before bounds.
        assert_eq!(
            lkey_of(t.check_local(PdHandle(2), r, va - 1, 1, LW)),
            Err(E::PdMismatch)
        );
        assert_eq!(
            lkey_of(t.check_local(PD, r, va - 1, 1, LW)),
            Err(E::Permission)
        );
        // Zero length: valid, nothing to touch, key not even looked up.
        assert_eq!(read(Lkey(0), u64::MAX, 0), Ok(None));
        assert_eq!(lkey_of(t.check_local(PdHandle(9), r, 0, 0, LW)), Ok(None));
        for e in [E::InvalidKey, E::PdMismatch, E::Permission, E::OutOfBounds] {
            assert_eq!(e.wc_status_hint(), IBV_WC_LOC_PROT_ERR);
            assert_eq!(e.wc_status_hint(), 4);
            assert!(e.to_string().starts_with("local protection error"));
        }
    }

    #[test]
    fn check_remote_uses_iova_and_checks_rights_bounds_alignment() {
        use AccessFlags as A;
        use RemoteAccessError as E;
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(1);
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(12);
        let p = pg() as u64;
        let addr = pages.addr + 100;
        let iova = 0x7000_0000_0000 + addr as u64 % p;
        let all = A::LOCAL_WRITE | A::REMOTE;
        let full = t
            .register(PD, addr, 1000, Some(iova), all, &mut rng)
            .unwrap();
        let ro = t
            .register(PD, addr, 1000, Some(iova), A::REMOTE_READ, &mut rng)
            .unwrap();
        let local = t
            .register(PD, addr, 1000, Some(iova), LW, &mut rng)
            .unwrap();
        assert_eq!(full.iova(), iova);
        let (f, r, l) = (full.rkey(), ro.rkey(), local.rkey());
        let check = |key: Rkey, va: u64, len: u64, need: AccessFlags| {
            rkey_of(t.check_remote(PD, key, va, len, need))
        };

        assert_eq!(check(f, iova, 1000, A::REMOTE_READ), Ok(Some(f)));
        assert_eq!(check(f, iova + 990, 10, A::REMOTE_WRITE), Ok(Some(f)));
        assert_eq!(
            check(f, iova, 1000, A::REMOTE_READ | A::REMOTE_WRITE),
            Ok(Some(f))
        );
        // The host address is not in the IOVA space.
        assert_eq!(
            check(f, addr as u64, 10, A::REMOTE_READ),
            Err(E::OutOfBounds)
        );
        for (v, n) in [
            (iova - 1, 10),
            (iova + 991, 10),
            (iova, 1001),
            (iova + 1, u64::MAX),
            (u64::MAX, 1),
            (u64::MAX - 1, u64::MAX),
        ] {
            assert_eq!(
                check(f, v, n, A::REMOTE_READ),
                Err(E::OutOfBounds),
                "va {v:#x} len {n}"
            );
        }
        assert_eq!(check(r, iova, 10, A::REMOTE_READ), Ok(Some(r)));
        assert_eq!(check(r, iova, 10, A::REMOTE_WRITE), Err(E::Permission));
        assert_eq!(check(r, iova + 4, 8, A::REMOTE_ATOMIC), Err(E::Permission));
        assert_eq!(
            check(r, iova, 10, A::REMOTE_READ | A::REMOTE_WRITE),
            Err(E::Permission)
        );
        assert_eq!(check(l, iova, 10, A::REMOTE_READ), Err(E::Permission));
        assert_eq!(
            check(Rkey(full.lkey().0), iova, 10, A::REMOTE_READ),
            Err(E::InvalidKey)
        );
        assert_eq!(check(Rkey(0), iova, 10, A::REMOTE_READ), Err(E::InvalidKey));
        assert_eq!(
            rkey_of(t.check_remote(PdHandle(2), f, iova, 10, A::REMOTE_READ)),
            Err(E::PdMismatch)
        );

        // iova % 8 == 4 here: iova + 4 is aligned.
        assert_eq!(iova % 8, 4);
        assert_eq!(check(f, iova + 4, 8, A::REMOTE_ATOMIC), Ok(Some(f)));
        assert_eq!(check(f, iova + 988, 8, A::REMOTE_ATOMIC), Ok(Some(f)));
        assert_eq!(
            check(f, iova + 5, 8, A::REMOTE_ATOMIC),
            Err(E::MisalignedAtomic)
        );
        assert_eq!(
            check(f, iova, 8, A::REMOTE_ATOMIC),
            Err(E::MisalignedAtomic)
        );
        // Bounds before alignment, as in rxe.
        assert_eq!(
            check(f, iova + 996, 8, A::REMOTE_ATOMIC),
            Err(E::OutOfBounds)
        );
        assert_eq!(
            check(f, iova + 993, 8, A::REMOTE_ATOMIC),
            Err(E::OutOfBounds)
        );
        assert_eq!(
            check(f, iova + 4, 4, A::REMOTE_ATOMIC),
            Err(E::InvalidRequest)
        );
        assert_eq!(
            check(f, iova + 4, 0, A::REMOTE_ATOMIC),
            Err(E::InvalidRequest)
        );
        for need in [
            A::EMPTY,
            A::LOCAL_WRITE,
            A::REMOTE_READ | A::LOCAL_WRITE,
            A::MW_BIND,
        ] {
            assert_eq!(check(f, iova, 10, need), Err(E::InvalidRequest), "{need:?}");
        }
        // A zero-length READ or WRITE carries no usable rkey (C9-88).
        assert_eq!(check(Rkey(0), 0, 0, A::REMOTE_READ), Ok(None));
        assert_eq!(check(l, u64::MAX, 0, A::REMOTE_WRITE), Ok(None));
        assert_eq!(
            rkey_of(t.check_remote(PdHandle(2), f, iova, 0, A::REMOTE_WRITE)),
            Ok(None)
        );

        for e in [E::InvalidKey, E::PdMismatch, E::Permission, E::OutOfBounds] {
            assert_eq!(e.wc_status_hint(), IBV_WC_REM_ACCESS_ERR);
            assert_eq!(e.wc_status_hint(), 10);
        }
        for e in [E::MisalignedAtomic, E::InvalidRequest] {
            assert_eq!(e.wc_status_hint(), IBV_WC_REM_INV_REQ_ERR);
            assert_eq!(e.wc_status_hint(), 9);
        }
    }

    /// The bounds check against a plain one in 128-bit arithmetic, over random and boundary
    /// (va, len) pairs, for a region at its host address and one near the top of the IOVA space.
    #[test]
    fn bounds_match_reference_for_random_ranges() {
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(1);
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(13);
        let p = pg() as u64;
        let addr = pages.addr + 100;
        let len = 1000u64;
        let top = (u64::MAX - 2 * p) & !(p - 1);
        let access = LW | AccessFlags::REMOTE_READ;
        let regions = [
            t.register(PD, addr, len as usize, None, access, &mut rng)
                .unwrap(),
            t.register(
                PD,
                addr,
                len as usize,
                Some(top + addr as u64 % p),
                access,
                &mut rng,
            )
            .unwrap(),
        ];
        let mut pairs = Rng::seed_from_u64(0xb0b);
        let mut pick = |around: u64| -> (u64, u64) {
            let va = match pairs.below(5) {
                0 => around.wrapping_add(pairs.below(3000)).wrapping_sub(1000),
                1 => pairs.next_u64(),
                2 => u64::MAX - pairs.below(2000),
                3 => pairs.below(2000),
                _ => around.wrapping_add(len).wrapping_sub(pairs.below(16)),
            };
            let n = match pairs.below(5) {
                0 | 1 => pairs.below(1100),
                2 => pairs.next_u64(),
                3 => u64::MAX - pairs.below(2000),
                _ => (around.wrapping_add(len))
                    .wrapping_sub(va)
                    .wrapping_add(pairs.below(3))
                    .wrapping_sub(1),
            };
            (va, n)
        };
        let mut inside = 0;
        for mr in &regions {
            let iova = mr.iova();
            for _ in 0..100_000 {
                let (va, n) = pick(iova);
                let ok = va as u128 >= iova as u128
                    && va as u128 + n as u128 <= iova as u128 + len as u128;
                let local = lkey_of(t.check_local(PD, mr.lkey(), va, n, AccessFlags::EMPTY));
                let remote =
                    rkey_of(t.check_remote(PD, mr.rkey(), va, n, AccessFlags::REMOTE_READ));
                let offset = mr.range_offset(va, n);
                if n == 0 {
                    assert_eq!(local, Ok(None));
                    assert_eq!(remote, Ok(None));
                } else if ok {
                    inside += 1;
                    assert_eq!(local, Ok(Some(mr.lkey())), "va {va:#x} len {n}");
                    assert_eq!(remote, Ok(Some(mr.rkey())), "va {va:#x} len {n}");
                } else {
                    assert_eq!(
                        local,
                        Err(LocalAccessError::OutOfBounds),
                        "va {va:#x} len {n}"
                    );
                    assert_eq!(
                        remote,
                        Err(RemoteAccessError::OutOfBounds),
                        "va {va:#x} len {n}"
                    );
                }
                assert_eq!(
                    offset,
                    ok.then(|| (va - iova) as usize),
                    "va {va:#x} len {n}"
                );
            }
        }
        assert!(inside > 5_000, "{inside}");
    }

    #[test]
    fn accessors_reach_the_registered_bytes_only() {
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(1);
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(14);
        let addr = pages.addr + 100;
        let mr = t
            .register(
                PD,
                addr,
                1000,
                None,
                LW | AccessFlags::REMOTE_ATOMIC,
                &mut rng,
            )
            .unwrap();
        // SAFETY: `pages` stays mapped and writable for the whole test, and each reference
        // below is dropped before the next one over the same bytes is made.
        unsafe {
            mr.slice_mut(0, 4).unwrap().copy_from_slice(&[1, 2, 3, 4]);
            mr.slice_mut(996, 4).unwrap().copy_from_slice(&[5, 6, 7, 8]);
            assert_eq!(mr.slice(0, 4).unwrap(), &[1, 2, 3, 4]);
            assert_eq!(mr.slice(996, 4).unwrap(), &[5, 6, 7, 8]);
            assert_eq!(
                *std::ptr::with_exposed_provenance::<u8>(pages.addr + 100),
                1
            );
            assert_eq!(
                *std::ptr::with_exposed_provenance::<u8>(pages.addr + 1099),
                8
            );
            assert!(mr.slice(997, 4).is_none());
            assert!(mr.slice(0, 1001).is_none());
            assert!(mr.slice(usize::MAX, 2).is_none());
            assert!(mr.slice_mut(1, usize::MAX).is_none());
            assert_eq!(mr.slice(1000, 0).unwrap(), &[] as &[u8]);
            assert!(mr.slice(1001, 0).is_none());

            // The remote check accepted va + 4 (see above); the memory agrees.
            let off = mr.range_offset(mr.iova() + 4, 8).unwrap();
            let a = mr.atomic_u64(off).unwrap();
            a.store(40, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(a.fetch_add(2, std::sync::atomic::Ordering::SeqCst), 40);
            assert_eq!(mr.slice(4, 8).unwrap(), &42u64.to_ne_bytes());
            assert!(mr.atomic_u64(988).is_some());
            assert!(mr.atomic_u64(5).is_none());
            assert!(mr.atomic_u64(993).is_none());
            assert!(mr.atomic_u64(996).is_none());
        }
    }

    // ----- pinning ------------------------------------------------------------------------

    #[test]
    fn register_locks_the_page_cover_and_deregister_unlocks_it() {
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(8);
        let p = pg();
        let base = vmlck_kib();
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(21);
        // Two pages' worth of bytes starting 100 bytes into page 1: pages 1, 2 and 3.
        let mr = t
            .register(PD, pages.addr + p + 100, 2 * p, None, LW, &mut rng)
            .unwrap();
        assert_eq!(vmlck_kib(), base + kib(3));
        // Exactly page 5.
        let one = t
            .register(PD, pages.addr + 5 * p, p, None, LW, &mut rng)
            .unwrap();
        assert_eq!(vmlck_kib(), base + kib(4));
        t.deregister(mr.lkey()).unwrap();
        assert_eq!(vmlck_kib(), base + kib(1));
        t.deregister(one.lkey()).unwrap();
        assert_eq!(vmlck_kib(), base);
        assert!(t.pins.segs.is_empty());
    }

    #[test]
    fn overlapping_regions_keep_shared_pages_locked() {
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(8);
        let p = pg();
        let base = vmlck_kib();
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(22);
        for first_a in [true, false] {
            // A covers pages 0..3, B pages 2..5, C a few bytes of page 2.
            let a = t
                .register(PD, pages.addr + 10, 3 * p - 20, None, LW, &mut rng)
                .unwrap();
            assert_eq!(vmlck_kib(), base + kib(3));
            let b = t
                .register(PD, pages.addr + 2 * p + 5, 3 * p - 10, None, LW, &mut rng)
                .unwrap();
            assert_eq!(vmlck_kib(), base + kib(5));
            let c = t
                .register(PD, pages.addr + 2 * p + 100, 10, None, LW, &mut rng)
                .unwrap();
            assert_eq!(vmlck_kib(), base + kib(5));
            let (x, y) = if first_a { (a, b) } else { (b, a) };
            t.deregister(x.lkey()).unwrap();
            // The other region's three pages stay locked.
            assert_eq!(vmlck_kib(), base + kib(3));
            t.deregister(y.lkey()).unwrap();
            // Page 2 is still C's.
            assert_eq!(vmlck_kib(), base + kib(1));
            t.deregister(c.lkey()).unwrap();
            assert_eq!(vmlck_kib(), base);
        }
    }

    #[test]
    fn dropping_the_table_unlocks_everything() {
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(4);
        let p = pg();
        let base = vmlck_kib();
        let mut t = MrTable::new();
        let mut rng = Rng::seed_from_u64(23);
        t.register(PD, pages.addr, p, None, LW, &mut rng).unwrap();
        t.register(PD, pages.addr + 2 * p, 2 * p, None, LW, &mut rng)
            .unwrap();
        assert_eq!(vmlck_kib(), base + kib(3));
        drop(t);
        assert_eq!(vmlck_kib(), base);
    }

    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    /// Drops CAP_IPC_LOCK from this thread's effective set (capabilities are per thread).
    fn drop_cap_ipc_lock_in_this_thread() {
        const VERSION_3: u32 = 0x2008_0522;
        const CAP_IPC_LOCK: u32 = 14;
        let mut header = CapHeader {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: capget with version 3 writes two CapData into `data`, which holds two.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                data.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        data[0].effective &= !(1 << CAP_IPC_LOCK);
        // SAFETY: capset reads the header and two CapData; pid 0 is the calling thread.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        };
        assert_eq!(rc, 0);
    }

    /// Lowers the soft RLIMIT_MEMLOCK of the process; restores it on drop.
    struct MemlockLimit(libc::rlimit);

    impl MemlockLimit {
        fn set(bytes: u64) -> MemlockLimit {
            let mut old = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes one rlimit into `old`.
            assert_eq!(
                unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut old) },
                0
            );
            let new = libc::rlimit {
                rlim_cur: bytes.min(old.rlim_max),
                rlim_max: old.rlim_max,
            };
            // SAFETY: setrlimit reads one rlimit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &new) }, 0);
            MemlockLimit(old)
        }
    }

    impl Drop for MemlockLimit {
        fn drop(&mut self) {
            // SAFETY: setrlimit reads one rlimit; raising the soft limit back up to the
            // unchanged hard limit needs no privilege.
            unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &self.0) };
        }
    }

    #[test]
    fn exceeding_rlimit_memlock_is_enomem_naming_the_limit() {
        let _pin = PIN_LOCK.lock();
        std::thread::spawn(|| {
            drop_cap_ipc_lock_in_this_thread();
            let _limit = MemlockLimit::set(64 * 1024);
            let pages = Pages::new(64);
            let p = pg();
            let base = vmlck_kib();
            assert!(base + kib(2) <= 64, "{base} kB already locked");
            let mut t = MrTable::new();
            let mut rng = Rng::seed_from_u64(24);
            let small = t
                .register(PD, pages.addr + 2 * p, 2 * p, None, LW, &mut rng)
                .unwrap();
            assert_eq!(vmlck_kib(), base + kib(2));

            // Pages 0..2 fit under the limit and get locked, 4..64 do not: the first part is
            // unlocked again, and the small region's pages stay locked.
            let err = t
                .register(PD, pages.addr, 64 * p, None, LW, &mut rng)
                .unwrap_err();
            assert_eq!(
                err,
                MrError::Memlock {
                    len: 64 * p,
                    limit: Some(64 * 1024)
                }
            );
            assert_eq!(err.errno(), libc::ENOMEM);
            let msg = err.to_string();
            for part in [
                &*(64 * p).to_string(),
                "RLIMIT_MEMLOCK is 65536 bytes",
                "ulimit -l",
                "CAP_IPC_LOCK",
            ] {
                assert!(msg.contains(part), "{msg:?} lacks {part:?}");
            }
            assert_eq!(vmlck_kib(), base + kib(2));
            assert_eq!(t.len(), 1);
            t.deregister(small.lkey()).unwrap();
            assert_eq!(vmlck_kib(), base);
        })
        .join()
        .unwrap();
        let unlimited = MrError::Memlock {
            len: 4096,
            limit: None,
        }
        .to_string();
        assert!(
            unlimited.contains("RLIMIT_MEMLOCK is unlimited"),
            "{unlimited}"
        );
    }

    #[test]
    fn table_behind_rwlock_serves_checks_while_registering() {
        let _pin = PIN_LOCK.lock();
        let pages = Pages::new(1);
        let mut rng = Rng::seed_from_u64(25);
        let table = Arc::new(RwLock::new(MrTable::new()));
        let mr = table
            .write()
            .register(
                PD,
                pages.addr,
                64,
                None,
                LW | AccessFlags::REMOTE_READ,
                &mut rng,
            )
            .unwrap();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let table = Arc::clone(&table);
                let (rkey, iova) = (mr.rkey(), mr.iova());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let t = table.read();
                        let got = t.check_remote(PD, rkey, iova, 64, AccessFlags::REMOTE_READ);
                        assert_eq!(rkey_of(got), Ok(Some(rkey)));
                    }
                })
            })
            .collect();
        for i in 0..2_000 {
            let other = table
                .write()
                .register(PD, pages.addr + i % 64, 8, None, LW, &mut rng)
                .unwrap();
            table.write().deregister(other.lkey()).unwrap();
        }
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(table.read().len(), 1);
    }

    // ----- the interval set on its own --------------------------------------------------------

    /// Random acquire/release sequences, with locks that sometimes fail, against per-page
    /// counts: a page is locked exactly when some cover holds it, each lock and unlock call
    /// changes exactly the pages it should, and the set stays sorted, disjoint and merged.
    #[test]
    fn pin_set_matches_per_page_counts() {
        const PAGES: usize = 48;
        const UNIT: usize = 4096;
        let mut rng = Rng::seed_from_u64(31);
        for _round in 0..200 {
            let mut set = PinSet::default();
            let mut counts = [0u32; PAGES];
            let locked = RefCell::new([false; PAGES]);
            let mut live: Vec<(usize, usize)> = Vec::new();
            for _ in 0..60 {
                if live.is_empty() || rng.chance(0.6) {
                    let s = rng.below(PAGES as u64) as usize;
                    let e = s + 1 + rng.below((PAGES - s) as u64) as usize;
                    let fail_at = if rng.chance(0.15) {
                        Some(rng.below(3) as usize)
                    } else {
                        None
                    };
                    let mut calls = 0;
                    let result = set.acquire(
                        s * UNIT,
                        e * UNIT,
                        |a, b| {
                            calls += 1;
                            if fail_at == Some(calls - 1) {
                                return Err(());
                            }
                            let mut l = locked.borrow_mut();
                            for page in a / UNIT..b / UNIT {
                                assert!(!l[page] && counts[page] == 0, "page {page} locked twice");
                                l[page] = true;
                            }
                            Ok(())
                        },
                        |a, b| {
                            let mut l = locked.borrow_mut();
                            for page in a / UNIT..b / UNIT {
                                assert!(l[page], "page {page} unlocked twice");
                                l[page] = false;
                            }
                        },
                    );
                    if result.is_ok() {
                        live.push((s, e));
                        for c in &mut counts[s..e] {
                            *c += 1;
                        }
                    }
                } else {
                    let (s, e) = live.swap_remove(rng.below(live.len() as u64) as usize);
                    for c in &mut counts[s..e] {
                        *c -= 1;
                    }
                    set.release(s * UNIT, e * UNIT, |a, b| {
                        let mut l = locked.borrow_mut();
                        for page in a / UNIT..b / UNIT {
                            assert!(
                                l[page] && counts[page] == 0,
                                "page {page} unlocked while held"
                            );
                            l[page] = false;
                        }
                    });
                }
                // The set agrees with the counts, and is in canonical form.
                let l = locked.borrow();
                let mut cur = 0;
                let mut prev: Option<Seg> = None;
                for (&s, seg) in &set.segs {
                    assert!(s >= cur && seg.end > s && seg.count > 0);
                    if let Some(prev) = prev {
                        assert!(prev.end != s || prev.count != seg.count, "unmerged at {s}");
                    }
                    let held = &counts[s / UNIT..seg.end / UNIT];
                    assert!(held.iter().all(|&c| c == seg.count), "{held:?} vs {seg:?}");
                    cur = seg.end;
                    prev = Some(*seg);
                }
                for page in 0..PAGES {
                    assert_eq!(l[page], counts[page] > 0, "page {page}");
                    let covered = set
                        .segs
                        .iter()
                        .any(|(&s, seg)| s <= page * UNIT && page * UNIT < seg.end);
                    assert_eq!(covered, counts[page] > 0, "page {page}");
                }
            }
        }
    }

    #[test]
    fn page_cover_rounds_out_and_detects_wrap() {
        assert_eq!(
            page_cover(4096 + 100, 2 * 4096, 4096),
            Some((4096, 4 * 4096))
        );
        assert_eq!(page_cover(8192, 4096, 4096), Some((8192, 12288)));
        assert_eq!(page_cover(8191, 2, 4096), Some((4096, 12288)));
        assert_eq!(page_cover(usize::MAX - 10, 11, 4096), None);
        assert_eq!(page_cover(usize::MAX - 4095, 4096, 4096), None);
        assert_eq!(
            page_cover(usize::MAX - 8191, 4096, 4096),
            Some((usize::MAX - 8191, usize::MAX - 4095))
        );
    }

    #[test]
    fn keys_and_errors_display() {
        assert_eq!(format!("{:?}", Lkey(0xab)), "Lkey(0x000000ab)");
        assert_eq!(Rkey(0xdead_beef).to_string(), "0xdeadbeef");
        assert_eq!(
            MrError::UnknownKey(Lkey(1)).to_string(),
            "no memory region with lkey 0x00000001"
        );
        assert!(
            MrError::Pin(libc::EAGAIN)
                .to_string()
                .starts_with("cannot pin memory region")
        );
        assert_eq!(MrError::Pin(libc::EAGAIN).errno(), libc::EAGAIN);
        assert_eq!(MrError::KeysExhausted.errno(), libc::ENOMEM);
    }
}
