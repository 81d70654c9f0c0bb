//! `rdma_getaddrinfo` and `rdma_freeaddrinfo`: addresses from names, with the QP type and
//! port space an id for them takes.

use std::ffi::{CStr, c_char, c_int};
use std::net::SocketAddr;

use super::guard_ret;
use super::sockaddr;
use crate::sys;

/// `RAI_PASSIVE`: the address is to listen on.
pub(crate) const RAI_PASSIVE: c_int = 1;
/// `RAI_NUMERICHOST`: the node is a numeric address.
const RAI_NUMERICHOST: c_int = 2;
/// `IBV_QPT_RC`, `IBV_QPT_UD`.
const QPT_RC: c_int = 2;
const QPT_UD: c_int = 4;

/// Resolves `node`/`service` with the system's resolver; a passive lookup without a node
/// is the wildcard address.
fn resolve(
    node: Option<&CStr>,
    service: Option<&CStr>,
    family: c_int,
    passive: bool,
    numeric: bool,
) -> Result<Vec<SocketAddr>, i32> {
    // SAFETY: all-zero is a valid addrinfo hint (no flags, any family).
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = family;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_flags =
        if passive { libc::AI_PASSIVE } else { 0 } | if numeric { libc::AI_NUMERICHOST } else { 0 };
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings or NULL, a valid hint, a writable result pointer.
    let r = unsafe {
        libc::getaddrinfo(
            node.map_or(std::ptr::null(), CStr::as_ptr),
            service.map_or(std::ptr::null(), CStr::as_ptr),
            &hints,
            &mut res,
        )
    };
    if r != 0 {
        return Err(match r {
            libc::EAI_NONAME | libc::EAI_NODATA => libc::ENODATA,
            libc::EAI_MEMORY => libc::ENOMEM,
            libc::EAI_FAMILY => libc::EAFNOSUPPORT,
            libc::EAI_SERVICE => libc::EINVAL,
            libc::EAI_SYSTEM => std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
            _ => libc::EINVAL,
        });
    }
    let mut out = Vec::new();
    let mut p = res;
    while !p.is_null() {
        // SAFETY: a node of the list getaddrinfo returned.
        let ai = unsafe { &*p };
        // SAFETY: ai_addr holds an address of ai_family's size.
        if let Ok(a) = unsafe { sockaddr::read(ai.ai_addr) } {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        p = ai.ai_next;
    }
    // SAFETY: `res` comes from getaddrinfo.
    unsafe { libc::freeaddrinfo(res) };
    Ok(out)
}

/// A socket address in memory from calloc, as `rdma_freeaddrinfo` frees it.
fn alloc_sockaddr(addr: SocketAddr) -> Result<(*mut libc::sockaddr, u32), i32> {
    // SAFETY: calloc has no preconditions; the result is checked for NULL.
    let p: *mut libc::sockaddr_storage =
        unsafe { libc::calloc(1, size_of::<libc::sockaddr_storage>()) }.cast();
    if p.is_null() {
        return Err(libc::ENOMEM);
    }
    // SAFETY: `p` is a fresh, zeroed sockaddr_storage.
    let len = sockaddr::write(Some(addr), unsafe { &mut *p });
    Ok((p.cast(), len))
}

/// `rdma_getaddrinfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const sys::rdma_addrinfo,
    res: *mut *mut sys::rdma_addrinfo,
) -> c_int {
    guard_ret(|| {
        if res.is_null() || (node.is_null() && service.is_null()) {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller's strings are NUL-terminated or NULL.
        let (node, service) = unsafe {
            (
                (!node.is_null()).then(|| CStr::from_ptr(node)),
                (!service.is_null()).then(|| CStr::from_ptr(service)),
            )
        };
        // SAFETY: NULL or a readable hint.
        let hints = unsafe { hints.as_ref() };
        let flags = hints.map_or(0, |h| h.ai_flags);
        let passive = flags & RAI_PASSIVE != 0;
        let family = hints.map_or(libc::AF_UNSPEC, |h| h.ai_family);
        let port_space = match hints.map_or(0, |h| h.ai_port_space) {
            0 => match hints.map_or(0, |h| h.ai_qp_type) {
                QPT_UD => sys::RDMA_PS_UDP as c_int,
                _ => sys::RDMA_PS_TCP as c_int,
            },
            ps => ps,
        };
        let qp_type = match hints.map_or(0, |h| h.ai_qp_type) {
            0 if port_space == sys::RDMA_PS_UDP as c_int => QPT_UD,
            0 => QPT_RC,
            t => t,
        };
        let addrs = resolve(node, service, family, passive, flags & RAI_NUMERICHOST != 0)?;
        let first = *addrs.first().ok_or(libc::ENODATA)?;
        // SAFETY: calloc has no preconditions; the result is checked for NULL.
        let ai: *mut sys::rdma_addrinfo =
            unsafe { libc::calloc(1, size_of::<sys::rdma_addrinfo>()) }.cast();
        if ai.is_null() {
            return Err(libc::ENOMEM);
        }
        // SAFETY: a fresh, zeroed rdma_addrinfo.
        let a = unsafe { &mut *ai };
        a.ai_flags = flags;
        a.ai_family = if first.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        a.ai_qp_type = qp_type;
        a.ai_port_space = port_space;
        let fill = |a: &mut sys::rdma_addrinfo| -> Result<(), i32> {
            if passive {
                let (p, len) = alloc_sockaddr(first)?;
                a.ai_src_addr = p;
                a.ai_src_len = len;
            } else {
                let (p, len) = alloc_sockaddr(first)?;
                a.ai_dst_addr = p;
                a.ai_dst_len = len;
                // A source the caller named in the hints goes with it.
                if let Some(src) = hints.filter(|h| !h.ai_src_addr.is_null()) {
                    // SAFETY: the hint's source is an address of its family's size.
                    let src = unsafe { sockaddr::read(src.ai_src_addr) }?;
                    let (p, len) = alloc_sockaddr(src)?;
                    a.ai_src_addr = p;
                    a.ai_src_len = len;
                }
            }
            Ok(())
        };
        if let Err(e) = fill(a) {
            // SAFETY: `ai` is ours, partly filled.
            unsafe { rdma_freeaddrinfo(ai) };
            return Err(e);
        }
        // SAFETY: `res` is writable, checked non-NULL.
        unsafe { res.write(ai) };
        Ok(())
    })
}

/// `rdma_freeaddrinfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rdma_freeaddrinfo(res: *mut sys::rdma_addrinfo) {
    crate::guard((), || {
        let mut p = res;
        while !p.is_null() {
            // SAFETY: a node from rdma_getaddrinfo, freed once.
            let a = unsafe { &*p };
            let next = a.ai_next;
            // SAFETY: each pointer is calloc'd by rdma_getaddrinfo or NULL.
            unsafe {
                libc::free(a.ai_src_addr.cast());
                libc::free(a.ai_dst_addr.cast());
                libc::free(a.ai_src_canonname.cast());
                libc::free(a.ai_dst_canonname.cast());
                libc::free(a.ai_route);
                libc::free(a.ai_connect);
                libc::free(p.cast());
            }
            p = next;
        }
    })
}
