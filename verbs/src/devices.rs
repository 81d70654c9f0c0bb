//! The process's devices: one verbs context per network interface, opened on first use and
//! shared by everything in the process that needs one (the rsockets, and libxrdma.so's
//! libibverbs and librdmacm devices), so that an interface's backend is bound once.
//!
//! Which interfaces, which backend and which RoCEv2 port come from `XRDMA_IFACE`
//! (comma-separated; none: any), `XRDMA_BACKEND` (`xdp` or `udp`; none: `xdp` where the
//! process may use AF_XDP, else `udp`, and always `udp` on a loopback interface) and
//! `XRDMA_UDP_PORT`, read once, or from [`configure`] before the first device opens.

use std::collections::HashMap;
use std::io;
use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::net::{self, BackendConfig, udp::UdpConfig, xdp::XdpConfig};
use crate::verbs::{Context, ContextConfig, Error};
use crate::wire::udp::ROCEV2_PORT;

/// A backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// AF_XDP.
    Xdp,
    /// A kernel UDP socket.
    Udp,
}

impl std::str::FromStr for Backend {
    type Err = io::Error;

    /// `xdp` or `udp`.
    fn from_str(name: &str) -> io::Result<Backend> {
        match name {
            "xdp" => Ok(Backend::Xdp),
            "udp" => Ok(Backend::Udp),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} is not a backend: use xdp or udp"),
            )),
        }
    }
}

/// The interfaces of a comma-separated list, as `XRDMA_IFACE` gives them (blanks dropped).
pub fn iface_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Which interfaces and backend the process's devices use.
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
        let ifaces = iface_list(&std::env::var("XRDMA_IFACE").unwrap_or_default());
        let backend = match std::env::var("XRDMA_BACKEND").as_deref() {
            Err(_) | Ok("") => None,
            Ok(name) => Some(
                name.parse()
                    .map_err(|e| invalid(format!("XRDMA_BACKEND={e}")))?,
            ),
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

static SETTINGS: OnceLock<Result<Settings, (io::ErrorKind, String)>> = OnceLock::new();
static CONFIGURED: Mutex<Option<Settings>> = Mutex::new(None);
static CONTEXTS: Mutex<Option<HashMap<String, Context>>> = Mutex::new(None);

/// Sets which interfaces and backend the devices use, instead of the environment. Fails
/// with `EBUSY` once the settings were read (the first device opened, or
/// [`settings`] called).
pub fn configure(settings: Settings) -> io::Result<()> {
    if SETTINGS.get().is_some() {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    *CONFIGURED.lock() = Some(settings);
    Ok(())
}

/// The settings in force: [`configure`]'s, else the environment's, read once.
pub fn settings() -> io::Result<&'static Settings> {
    let s = SETTINGS.get_or_init(|| match CONFIGURED.lock().clone() {
        Some(s) => Ok(s),
        None => Settings::from_env().map_err(|e| (e.kind(), e.to_string())),
    });
    s.as_ref()
        .map_err(|(kind, msg)| io::Error::new(*kind, msg.clone()))
}

/// The context of interface `iface`, opened on first use with the [`settings`]' backend
/// and port, and the same one after. `ENODEV` for an interface the settings leave out.
pub fn open(iface: &str) -> Result<Context, Error> {
    let s = settings().map_err(|_| Error::Cm(libc::EINVAL))?;
    if !s.ifaces.is_empty() && !s.ifaces.iter().any(|i| i == iface) {
        return Err(Error::Cm(libc::ENODEV));
    }
    let mut contexts = CONTEXTS.lock();
    let contexts = contexts.get_or_insert_with(HashMap::new);
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

/// The contexts opened so far, with their interfaces.
pub fn opened() -> Vec<(String, Context)> {
    CONTEXTS
        .lock()
        .iter()
        .flatten()
        .map(|(iface, ctx)| (iface.clone(), ctx.clone()))
        .collect()
}

/// True for a loopback interface (ARPHRD_LOOPBACK).
pub fn is_loopback(iface: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/type")).is_ok_and(|t| t.trim() == "772")
}
