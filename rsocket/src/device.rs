//! Where sockets get their contexts: the process's device of each interface
//! ([`xrdma_verbs::devices`], shared with libxrdma.so's verbs), opened when an address is
//! first routed through the interface.
//!
//! The interface is the one the kernel's routing table picks for the peer's address. The
//! backend is `xdp` where the process may use AF_XDP, `udp` otherwise (and always on a
//! loopback interface). `XRDMA_IFACE` (interfaces, comma-separated) limits sockets to those
//! interfaces, `XRDMA_BACKEND` (`xdp` or `udp`) forces a backend and `XRDMA_UDP_PORT` sets
//! the RoCEv2 port; [`configure`] does the same from code, before the first socket.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use xrdma_verbs::net::netlink::Netlink;
use xrdma_verbs::{cm, devices};

pub use xrdma_verbs::devices::{Backend, Settings, configure};

static READY: OnceLock<Result<(), (io::ErrorKind, String)>> = OnceLock::new();

/// Makes sure the connection manager can open the devices sockets need.
pub(crate) fn ensure() -> io::Result<()> {
    let ready = READY.get_or_init(|| {
        let settings = devices::settings().map_err(|e| (e.kind(), e.to_string()))?;
        for iface in &settings.ifaces {
            let ctx = devices::open(iface)
                .map_err(|e| (errno_kind(e.errno()), format!("opening {iface}: {e}")))?;
            cm::add_device(&ctx).map_err(|e| (errno_kind(e.errno()), e.to_string()))?;
        }
        cm::set_device_opener(Arc::new(devices::open));
        Ok(())
    });
    match ready {
        Ok(()) => Ok(()),
        Err((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
    }
}

/// The kind of error `errno` is, so that an error with a message still says which it is.
fn errno_kind(errno: i32) -> io::ErrorKind {
    io::Error::from_raw_os_error(errno).kind()
}

/// Makes sure a listener on `ip` has its devices: the interface that holds `ip`, or for
/// a wildcard address every interface with an address of its family (loopback aside). The
/// IPv6 wildcard takes IPv4 as well, as a dual-stack socket bound to `[::]` does.
pub(crate) fn ensure_local(ip: IpAddr) -> io::Result<()> {
    ensure()?;
    if !ip.is_unspecified() && cm::devices().iter().any(|d| d.has_addr(ip)) {
        return Ok(());
    }
    let mut nl = Netlink::open()?;
    let mut found = false;
    for link in nl.links()? {
        let addrs = nl.addresses(link.index)?;
        let wanted = if ip.is_unspecified() {
            !devices::is_loopback(&link.name)
                && addrs
                    .iter()
                    .any(|(a, _)| a.is_ipv4() == ip.is_ipv4() || ip.is_ipv6())
        } else {
            addrs.iter().any(|(a, _)| *a == ip)
        };
        if !wanted
            || cm::devices()
                .iter()
                .any(|d| d.context().link().iface == link.name)
        {
            found |= wanted;
            continue;
        }
        match devices::open(&link.name) {
            Ok(ctx) => {
                cm::add_device(&ctx).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
                found = true;
            }
            // A wildcard listener does without the interfaces it may not use.
            Err(_) if ip.is_unspecified() => {}
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        }
    }
    if found {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))
    }
}
