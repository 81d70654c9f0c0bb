//! Where sockets get their contexts: one per interface per process, opened when an address
//! is first routed through the interface, shared by every socket on it.
//!
//! The interface is the one the kernel's routing table picks for the peer's address. The
//! backend is `xdp` where the process may use AF_XDP, `udp` otherwise (and always on a
//! loopback interface). `XRDMA_IFACE` (interfaces, comma-separated) limits sockets to those
//! interfaces, `XRDMA_BACKEND` (`xdp` or `udp`) forces a backend and `XRDMA_UDP_PORT` sets
//! the RoCEv2 port; [`configure`] does the same from code, before the first socket.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use xrdma_verbs::cm;
use xrdma_verbs::net::netlink::Netlink;
use xrdma_verbs::net::{self, BackendConfig, udp::UdpConfig, xdp::XdpConfig};
use xrdma_verbs::verbs::{Context, ContextConfig, Error};
use xrdma_verbs::wire::udp::ROCEV2_PORT;

/// A backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// AF_XDP.
    Xdp,
    /// A kernel UDP socket.
    Udp,
}

/// Which interfaces and backend sockets use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Only these interfaces (all when empty).
    pub ifaces: Vec<String>,
    /// This backend (`None`: `xdp` where allowed, else `udp`).
    pub backend: Option<Backend>,
    /// The RoCEv2 UDP port.
    pub port: u16,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            ifaces: Vec::new(),
            backend: None,
            port: ROCEV2_PORT,
        }
    }
}

impl Settings {
    /// The settings of `XRDMA_IFACE`, `XRDMA_BACKEND` and `XRDMA_UDP_PORT`.
    pub fn from_env() -> io::Result<Settings> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let ifaces = std::env::var("XRDMA_IFACE")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let backend = match std::env::var("XRDMA_BACKEND").as_deref() {
            Err(_) | Ok("") => None,
            Ok("xdp") => Some(Backend::Xdp),
            Ok("udp") => Some(Backend::Udp),
            Ok(other) => {
                return Err(invalid(format!(
                    "XRDMA_BACKEND={other} is not a backend: use xdp or udp"
                )));
            }
        };
        let port = match std::env::var("XRDMA_UDP_PORT") {
            Err(_) => ROCEV2_PORT,
            Ok(p) => p
                .trim()
                .parse()
                .map_err(|_| invalid(format!("XRDMA_UDP_PORT={p} is not a port number")))?,
        };
        Ok(Settings {
            ifaces,
            backend,
            port,
        })
    }
}

struct Devices {
    settings: Settings,
    contexts: Mutex<HashMap<String, Context>>,
}

static DEVICES: OnceLock<Result<Arc<Devices>, (io::ErrorKind, String)>> = OnceLock::new();
static CONFIGURED: Mutex<Option<Settings>> = Mutex::new(None);

/// Sets which interfaces and backend sockets use, instead of the environment. Fails with
/// `EBUSY` once a socket has been created.
pub fn configure(settings: Settings) -> io::Result<()> {
    if DEVICES.get().is_some() {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    *CONFIGURED.lock() = Some(settings);
    Ok(())
}

/// Makes sure the connection manager can open the devices sockets need.
pub(crate) fn ensure() -> io::Result<()> {
    let devices = DEVICES.get_or_init(|| {
        let settings = match CONFIGURED.lock().clone() {
            Some(s) => s,
            None => Settings::from_env().map_err(|e| (e.kind(), e.to_string()))?,
        };
        let devices = Arc::new(Devices {
            settings,
            contexts: Mutex::new(HashMap::new()),
        });
        for iface in &devices.settings.ifaces {
            let ctx = devices
                .open(iface)
                .map_err(|e| (io::ErrorKind::Other, format!("opening {iface}: {e}")))?;
            cm::add_device(&ctx).map_err(|e| (io::ErrorKind::Other, e.to_string()))?;
        }
        let d = devices.clone();
        cm::set_device_opener(Arc::new(move |iface: &str| d.open(iface)));
        Ok(devices)
    });
    match devices {
        Ok(_) => Ok(()),
        Err((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
    }
}

/// Makes sure a listener on `ip` has its devices: the interface that holds `ip`, or for
/// a wildcard address every interface with an address of its family (loopback aside).
pub(crate) fn ensure_local(ip: IpAddr) -> io::Result<()> {
    ensure()?;
    if !ip.is_unspecified() && cm::devices().iter().any(|d| d.has_addr(ip)) {
        return Ok(());
    }
    let Some(Ok(devices)) = DEVICES.get() else {
        return Ok(());
    };
    let mut nl = Netlink::open()?;
    let mut found = false;
    for link in nl.links()? {
        let addrs = nl.addresses(link.index)?;
        let wanted = if ip.is_unspecified() {
            !is_loopback(&link.name) && addrs.iter().any(|(a, _)| a.is_ipv4() == ip.is_ipv4())
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
        match devices.open(&link.name) {
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

impl Devices {
    /// The context of `iface`, opened on first use.
    fn open(&self, iface: &str) -> Result<Context, Error> {
        let s = &self.settings;
        if !s.ifaces.is_empty() && !s.ifaces.iter().any(|i| i == iface) {
            return Err(Error::Cm(libc::ENODEV));
        }
        let mut contexts = self.contexts.lock();
        if let Some(ctx) = contexts.get(iface) {
            return Ok(ctx.clone());
        }
        let udp = || {
            BackendConfig::Udp(UdpConfig {
                port: s.port,
                ..UdpConfig::new(iface)
            })
        };
        let xdp = BackendConfig::Xdp(XdpConfig {
            port: s.port,
            ..XdpConfig::new(iface)
        });
        let io = match s.backend {
            Some(Backend::Xdp) => net::open(&xdp)?,
            Some(Backend::Udp) => net::open(&udp())?,
            None if is_loopback(iface) => net::open(&udp())?,
            None => match net::open(&xdp) {
                Ok(io) => io,
                Err(_) => net::open(&udp())?,
            },
        };
        let ctx = Context::new(io, ContextConfig::default())?;
        contexts.insert(iface.to_string(), ctx.clone());
        Ok(ctx)
    }
}

fn is_loopback(iface: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/type")).is_ok_and(|t| t.trim() == "772")
}
