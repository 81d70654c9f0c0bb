//! Ports bound per port space: `rdma_bind_addr`'s EADDRINUSE, and ephemeral ports.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::id::{IdInner, PortSpace, errno};
use crate::verbs::Error;

/// Who holds a port: the address, whether it allows reuse, and the id (by address).
type Holder = (IpAddr, bool, usize);

/// Ports bound per port space (`rdma_bind_addr`'s EADDRINUSE, and ephemeral ports).
#[derive(Default)]
pub(super) struct Ports {
    bound: Mutex<HashMap<(PortSpace, u16), Vec<Holder>>>,
    next: Mutex<u16>,
}

pub(super) fn ports() -> &'static Ports {
    static PORTS: OnceLock<Ports> = OnceLock::new();
    PORTS.get_or_init(Ports::default)
}

impl Ports {
    pub(super) fn bind(
        &self,
        ps: PortSpace,
        addr: SocketAddr,
        reuse: bool,
        owner: &Arc<IdInner>,
    ) -> Result<u16, Error> {
        let key = Arc::as_ptr(owner) as usize;
        let mut bound = self.bound.lock();
        let conflicts = |port: u16, bound: &HashMap<(PortSpace, u16), Vec<Holder>>| {
            bound.get(&(ps, port)).is_some_and(|v| {
                v.iter().any(|(ip, r, _)| {
                    !(reuse && *r)
                        && (ip.is_unspecified() || addr.ip().is_unspecified() || *ip == addr.ip())
                })
            })
        };
        let port = if addr.port() != 0 {
            if conflicts(addr.port(), &bound) {
                return Err(errno(libc::EADDRINUSE));
            }
            addr.port()
        } else {
            let mut next = self.next.lock();
            let mut found = None;
            for _ in 0..28_232 {
                if *next < 32_768 || *next >= 61_000 {
                    *next = 32_768 + (std::process::id() % 28_232) as u16;
                }
                let p = *next;
                *next += 1;
                if !conflicts(p, &bound) {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or(errno(libc::EADDRNOTAVAIL))?
        };
        bound
            .entry((ps, port))
            .or_default()
            .push((addr.ip(), reuse, key));
        Ok(port)
    }

    pub(super) fn release(&self, owner: &Arc<IdInner>) {
        let key = Arc::as_ptr(owner) as usize;
        self.bound.lock().retain(|_, v| {
            v.retain(|(_, _, k)| *k != key);
            !v.is_empty()
        });
    }
}
