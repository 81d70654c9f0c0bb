//! The devices the connection manager works on: one context per interface, each with its
//! QP1 agent, and which one serves an address.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::agent::Agent;
use crate::engine::cm::{CmConfig, CmEngine};
use crate::net::netlink::Netlink;
use crate::verbs::{Context, Error};

/// A device the connection manager can use: a context and its QP1 agent.
#[derive(Clone)]
pub struct Device {
    pub(crate) ctx: Context,
    pub(crate) agent: Arc<Agent>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("iface", &self.ctx.link().iface)
            .finish()
    }
}

impl Device {
    /// The device's context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// True if `ip` is one of the device's addresses.
    pub fn has_addr(&self, ip: IpAddr) -> bool {
        self.ctx.link().addrs.contains(&ip)
    }

    /// The device's first address of `ip`'s family.
    fn addr_like(&self, ip: IpAddr) -> Option<IpAddr> {
        let addrs = &self.ctx.link().addrs;
        addrs.iter().copied().find(|a| a.is_ipv4() == ip.is_ipv4())
    }

    /// Same device.
    pub fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.agent, &other.agent)
    }
}

/// Opens the context of an interface, for addresses routed through one that no registered
/// device serves yet.
pub type DeviceOpener = dyn Fn(&str) -> Result<Context, Error> + Send + Sync;

#[derive(Default)]
struct Registry {
    devices: Vec<Device>,
    opener: Option<Arc<DeviceOpener>>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Makes a context available to the connection manager and gives it a QP1 agent. A
/// context added twice is one device.
pub fn add_device(ctx: &Context) -> Result<Device, Error> {
    let mut reg = registry().lock();
    if let Some(d) = reg
        .devices
        .iter()
        .find(|d| Arc::ptr_eq(&d.ctx.shared, &ctx.shared))
    {
        return Ok(d.clone());
    }
    let seed = u64::from(ctx.shared.next_random()) << 32 | u64::from(ctx.shared.next_random());
    let config = CmConfig {
        ca_guid: ctx.query_device().node_guid,
        seed,
        ..CmConfig::default()
    };
    let agent = Agent::new(ctx, CmEngine::new(config));
    ctx.set_qp1_agent(agent.clone())?;
    let device = Device {
        ctx: ctx.clone(),
        agent,
    };
    reg.devices.push(device.clone());
    Ok(device)
}

/// Forgets a device (its context stops answering CM MADs).
pub fn remove_device(ctx: &Context) {
    let mut reg = registry().lock();
    reg.devices
        .retain(|d| !Arc::ptr_eq(&d.ctx.shared, &ctx.shared));
    ctx.clear_qp1_agent();
}

/// Sets how a device is opened for an interface that has none yet.
pub fn set_device_opener(opener: Arc<DeviceOpener>) {
    registry().lock().opener = Some(opener);
}

/// Every device so far.
pub fn devices() -> Vec<Device> {
    registry().lock().devices.clone()
}

/// The device one of whose addresses is `ip`.
pub(crate) fn device_with_addr(ip: IpAddr) -> Option<Device> {
    registry()
        .lock()
        .devices
        .iter()
        .find(|d| d.has_addr(ip))
        .cloned()
}

/// The device and source address the kernel's routing table picks for `dst`, opening the
/// device if needed. Without a route (a simulated network), the first device with an
/// address of `dst`'s family.
pub(crate) fn device_for_dst(dst: IpAddr) -> Result<(Device, IpAddr), Error> {
    if let Some(d) = device_with_addr(dst) {
        // Our own address: the loopback case, served by that device.
        return Ok((d, dst));
    }
    let route = Netlink::open().and_then(|mut nl| {
        let route = nl.route_get(dst)?;
        let link = nl.link_by_index(route.oif)?;
        Ok((route, link))
    });
    if let Ok((route, link)) = route {
        let existing = registry()
            .lock()
            .devices
            .iter()
            .find(|d| d.ctx.link().ifindex == route.oif && route.oif != 0)
            .cloned();
        let device = match existing {
            Some(d) => Some(d),
            None => {
                let opener = registry().lock().opener.clone();
                match opener {
                    Some(open) => Some(add_device(&open(&link.name)?)?),
                    None => None,
                }
            }
        };
        if let Some(d) = device {
            let src = route
                .prefsrc
                .filter(|s| d.has_addr(*s))
                .or_else(|| d.addr_like(dst))
                .ok_or(Error::Invalid("the device has no address of that family"))?;
            return Ok((d, src));
        }
    }
    registry()
        .lock()
        .devices
        .iter()
        .find_map(|d| d.addr_like(dst).map(|src| (d.clone(), src)))
        .ok_or(Error::Invalid("no device routes to that address"))
}
