//! `struct sockaddr` to and from `SocketAddr`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Reads a `sockaddr_in` or `sockaddr_in6`; EINVAL for NULL, EAFNOSUPPORT for another
/// family.
///
/// # Safety
///
/// A non-NULL `sa` must point at a readable socket address of its family's size.
pub(crate) unsafe fn read(sa: *const libc::sockaddr) -> Result<SocketAddr, i32> {
    if sa.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: per the contract, at least the family field is readable.
    let family = i32::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in, per the contract.
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Ok(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6, per the contract.
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // v4-mapped addresses stand for their IPv4 address, as in the kernel's CMA.
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Ok(SocketAddr::new(ip, u16::from_be(sin6.sin6_port)))
        }
        _ => Err(libc::EAFNOSUPPORT),
    }
}

/// Writes `addr` into a `sockaddr_storage` (zeroing the rest); returns its length.
pub(crate) fn write(addr: Option<SocketAddr>, out: &mut libc::sockaddr_storage) -> u32 {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid (family AF_UNSPEC).
    *out = unsafe { std::mem::zeroed() };
    match addr {
        None => 0,
        Some(SocketAddr::V4(a)) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as u32
        }
        Some(SocketAddr::V6(a)) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for addr in ["198.18.0.1:7471", "[2001:db8::1]:80"] {
            let addr: SocketAddr = addr.parse().unwrap();
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            assert!(write(Some(addr), &mut ss) > 0);
            let back = unsafe { read((&ss as *const libc::sockaddr_storage).cast()) };
            assert_eq!(back, Ok(addr));
        }
    }

    #[test]
    fn refuses_null_and_other_families() {
        assert_eq!(unsafe { read(std::ptr::null()) }, Err(libc::EINVAL));
        // SAFETY: all-zero is a valid sockaddr_storage (AF_UNSPEC).
        let ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let r = unsafe { read((&ss as *const libc::sockaddr_storage).cast()) };
        assert_eq!(r, Err(libc::EAFNOSUPPORT));
    }
}
