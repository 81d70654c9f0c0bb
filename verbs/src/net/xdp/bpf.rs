//! The few `bpf(2)` commands the `xdp` backend needs: create an XSKMAP, load our program,
//! attach it to an interface through a BPF link, and put sockets into the map.
//!
//! A BPF link detaches its program when its last descriptor closes, so an xrdma process that
//! exits or crashes never leaves its program on the interface.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::program::Insn;

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_LINK_CREATE: libc::c_int = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// `prog_flags`: the program handles multi-buffer frames (only reads the first buffer).
const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// `XDP_FLAGS_SKB_MODE`: the generic hook, which every device has.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: the driver's native hook.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `union bpf_attr` is large; every command reads a prefix of it and requires the rest zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }

    fn put_u32(&mut self, offset: usize, v: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn put_u64(&mut self, offset: usize, v: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_int, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable, zero-initialised bpf_attr-sized buffer whose set
    // fields follow the layout the command expects; pointers inside it (if any) were taken
    // from buffers the caller keeps alive for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_from(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the bpf command returned a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// Creates an XSKMAP with `entries` slots (one per receive queue).
pub(crate) fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.put_u32(0, BPF_MAP_TYPE_XSKMAP)
        .put_u32(4, 4)
        .put_u32(8, 4)
        .put_u32(12, entries.max(1));
    attr.0[28..28 + 10].copy_from_slice(b"xrdma_xsks");
    bpf(BPF_MAP_CREATE, &mut attr).map(fd_from)
}

/// Puts the AF_XDP socket `xsk_fd` into slot `queue` of `map`.
pub(crate) fn xskmap_set(map: &OwnedFd, queue: u32, xsk_fd: i32) -> io::Result<()> {
    let key = queue;
    let value = xsk_fd as u32;
    let mut attr = Attr::new();
    attr.put_u32(0, map.as_raw_fd() as u32)
        .put_u64(8, &key as *const u32 as u64)
        .put_u64(16, &value as *const u32 as u64)
        .put_u64(24, 0);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Loads an XDP program. With `frags` it is marked as understanding multi-buffer frames
/// (`BPF_F_XDP_HAS_FRAGS`), which drivers require before they attach it to a link whose
/// frames outgrow a page. On rejection the verifier's log is returned in the error.
pub(crate) fn load_xdp_program(insns: &[Insn], frags: bool) -> io::Result<OwnedFd> {
    let license = c"Dual MIT/GPL";
    let load = |log: Option<&mut [u8]>| {
        let mut attr = Attr::new();
        attr.put_u32(0, BPF_PROG_TYPE_XDP)
            .put_u32(4, insns.len() as u32)
            .put_u64(8, insns.as_ptr() as u64)
            .put_u64(16, license.as_ptr() as u64)
            .put_u32(44, if frags { BPF_F_XDP_HAS_FRAGS } else { 0 });
        if let Some(log) = log {
            attr.put_u32(24, 1)
                .put_u32(28, log.len() as u32)
                .put_u64(32, log.as_mut_ptr() as u64);
        }
        attr.0[48..48 + 10].copy_from_slice(b"xrdma_xdp\0");
        attr.put_u32(68, BPF_XDP);
        bpf(BPF_PROG_LOAD, &mut attr).map(fd_from)
    };
    load(None).or_else(|err| {
        if err.raw_os_error() != Some(libc::EACCES) && err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
        let mut log = vec![0u8; 64 * 1024];
        match load(Some(&mut log)) {
            Ok(fd) => Ok(fd),
            Err(e) => {
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                Err(io::Error::new(
                    e.kind(),
                    format!("{e}; verifier log:\n{text}"),
                ))
            }
        }
    })
}

/// Attaches `prog` to interface `ifindex` with the given XDP mode flags. The program stays
/// attached as long as the returned link descriptor is open.
pub(crate) fn attach_xdp(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.put_u32(0, prog.as_raw_fd() as u32)
        .put_u32(4, ifindex)
        .put_u32(8, BPF_XDP)
        .put_u32(12, flags);
    bpf(BPF_LINK_CREATE, &mut attr).map(fd_from)
}
