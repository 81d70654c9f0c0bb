//! A datagram socket's state under its lock: its kernel UDP socket, its QPs (one per local
//! address), the destinations it knows, the datagrams received and not yet read, and the
//! readiness its descriptor shows. Here is rsocket's protocol (`ds_sendto`,
//! `ds_get_dest`, `udp_svc_process_rs`, `ds_recvfrom`):
//!
//! - A destination first met is given the QP of the local address that reaches it. Until
//!   its QPN is known, datagrams to it go over the UDP socket behind a [`UdpHeader`]
//!   naming ours.
//! - Data arriving on the UDP socket is delivered, answered with a control header naming
//!   the QPN of the QP that reaches the sender, and teaches us the sender's QPN: an
//!   address handle is made for it. A control header only teaches the QPN.
//! - Once a destination's QPN is known, datagrams to it go over UD behind a
//!   [`DsHeader`] naming our UDP address.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use xrdma_verbs::verbs::AddressHandle;
use xrdma_verbs::wire::Qpn;

use super::qp::{Arrival, DsQp, Sizes};
use crate::config::Config;
use crate::proto::dgram::{DsHeader, SLOT, UdpHeader, UdpOp};
use crate::readiness::Readiness;
use crate::service::service;
use crate::shared::{Calls, Drive};

/// A destination (rsocket's `ds_dest`): the QP that reaches it and, once learnt, its QPN
/// and an address handle.
struct Dest {
    qp: usize,
    remote: Option<(AddressHandle, Qpn)>,
}

/// Where a received datagram's payload is.
enum Payload {
    /// In a receive slot of QP `qp`, posted again once read.
    Slot { qp: usize, slot: u32, at: u32 },
    /// Copied off the UDP socket.
    Copied(Vec<u8>),
}

struct Received {
    src: SocketAddr,
    len: usize,
    payload: Payload,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

pub(crate) struct DgramState {
    udp: UdpSocket,
    token: u64,
    sizes: Sizes,
    pub(crate) config: Config,
    qps: Vec<DsQp>,
    dests: HashMap<SocketAddr, Dest>,
    received: VecDeque<Received>,
    pub(crate) ready: Readiness,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) so_error: Option<i32>,
    pub(crate) nonblocking: bool,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    calls: Calls,
}

/// The sizes of a socket's QPs: rsocket's `ds_set_qp_size`, which holds the queues to
/// the slots the buffer sizes allow.
fn sizes(config: &Config) -> Sizes {
    let slots = |mem: u32| (mem as usize / SLOT).max(1) as u32;
    let max = u32::from(*crate::config::QP_SIZE_RANGE.end());
    Sizes {
        sq: u32::from(config.sq_size).min(max).min(slots(config.wmem)),
        rq: u32::from(config.rq_size).min(max).min(slots(config.rmem)),
        inline: u32::from(config.inline),
    }
}

impl DgramState {
    /// A socket on `udp`, a bound kernel socket; [`attach`](Self::attach) it next.
    pub(crate) fn new(udp: UdpSocket, config: Config) -> io::Result<DgramState> {
        udp.set_nonblocking(true)?;
        let mut st = DgramState {
            udp,
            token: 0,
            sizes: sizes(&config),
            config,
            qps: Vec::new(),
            dests: HashMap::new(),
            received: VecDeque::new(),
            ready: Readiness::new()?,
            peer: None,
            so_error: None,
            nonblocking: false,
            read_timeout: None,
            write_timeout: None,
            calls: Calls::default(),
        };
        st.publish();
        Ok(st)
    }

    /// Has the service watch the socket under `token`.
    pub(crate) fn attach(&mut self, token: u64) -> io::Result<()> {
        self.token = token;
        self.calls.set_token(token);
        service()?.watch(self.udp.as_raw_fd(), token)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub(crate) fn udp(&self) -> &UdpSocket {
        &self.udp
    }

    /// The descriptors a blocked call waits on beside the readiness one: the UDP socket
    /// and the completion channels, with a context to drive meanwhile.
    pub(crate) fn wait_fds(&self, out: &mut Vec<RawFd>) -> Option<xrdma_verbs::verbs::Context> {
        out.push(self.udp.as_raw_fd());
        out.extend(self.qps.iter().map(DsQp::channel_fd));
        self.qps.first().map(|q| q.context().clone())
    }

    /// The local address datagrams to `dst` leave from (`ds_get_src_addr`): the bound
    /// address, or for a wildcard or loopback one, the kernel's choice for `dst`, with
    /// the bound port.
    fn source_for(&self, dst: SocketAddr) -> io::Result<SocketAddr> {
        let local = self.udp.local_addr()?;
        let any_or_loopback = match local.ip() {
            IpAddr::V4(a) => a.is_unspecified() || a == Ipv4Addr::LOCALHOST,
            IpAddr::V6(a) => a.is_unspecified() || a == Ipv6Addr::LOCALHOST,
        };
        if !any_or_loopback {
            return Ok(local);
        }
        let unspecified: IpAddr = match dst {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        // Connecting a UDP socket sends nothing: it only asks the routing table.
        let probe = UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
        probe.connect(dst)?;
        Ok(SocketAddr::new(probe.local_addr()?.ip(), local.port()))
    }

    /// The destination `dst`, met now if not before (`ds_get_dest`): the index of the QP
    /// that reaches it, made if needed.
    fn dest(&mut self, dst: SocketAddr) -> io::Result<usize> {
        if let Some(d) = self.dests.get(&dst) {
            return Ok(d.qp);
        }
        let src = self.source_for(dst)?;
        let qp = match self.qps.iter().position(|q| q.local == src) {
            Some(i) => i,
            None => {
                let svc = service()?;
                let qp = DsQp::new(&svc.channel, src, self.sizes)?;
                svc.watch(qp.channel_fd(), self.token)?;
                self.qps.push(qp);
                self.qps.len() - 1
            }
        };
        self.dests.insert(dst, Dest { qp, remote: None });
        Ok(qp)
    }

    /// Checks that `dst` is of the socket's family (EAFNOSUPPORT otherwise, as Linux says
    /// for an IPv6 address given to an IPv4 socket).
    fn check_family(&self, dst: SocketAddr) -> io::Result<()> {
        if self.udp.local_addr()?.is_ipv4() != dst.is_ipv4() {
            return Err(errno(libc::EAFNOSUPPORT));
        }
        Ok(())
    }

    /// The largest payload `send_to(dst)` takes.
    pub(crate) fn max_payload(&mut self, dst: SocketAddr) -> io::Result<usize> {
        self.check_family(dst)?;
        let qp = self.dest(dst)?;
        Ok(self.qps[qp].max_payload)
    }

    /// One attempt at sending `payload` to `dst`: `Ok(None)` if it must wait for a send
    /// slot.
    pub(crate) fn try_send(
        &mut self,
        payload: &[u8],
        dst: SocketAddr,
    ) -> io::Result<Option<usize>> {
        self.check_family(dst)?;
        let qp = self.dest(dst)?;
        if payload.len() > self.qps[qp].max_payload {
            return Err(errno(libc::EMSGSIZE));
        }
        let Some(Dest {
            remote: Some((ah, qpn)),
            ..
        }) = self.dests.get(&dst)
        else {
            return self.send_udp(qp, UdpOp::Data, payload, dst).map(Some);
        };
        let q = &mut self.qps[qp];
        if !q.can_send() {
            return Ok(None);
        }
        let hdr = DsHeader { src: q.local };
        let r = q
            .send(ah, *qpn, &hdr, payload)
            .map(|()| Some(payload.len()));
        self.publish();
        r
    }

    /// Sends `payload` to `dst` over the UDP socket, behind a header naming QP `qp`
    /// (`ds_sendv_udp`); the payload bytes sent.
    fn send_udp(&self, qp: usize, op: UdpOp, payload: &[u8], dst: SocketAddr) -> io::Result<usize> {
        let q = &self.qps[qp];
        let hdr = UdpHeader {
            op,
            qpn: q.qpn(),
            addr: q.local.ip(),
        };
        let mut buf = [0u8; SLOT];
        let h = hdr.emit(&mut buf).unwrap_or(0);
        let end = h + payload.len();
        if end > buf.len() {
            return Err(errno(libc::EMSGSIZE));
        }
        buf[h..end].copy_from_slice(payload);
        let n = self.udp.send_to(&buf[..end], dst)?;
        Ok(n.saturating_sub(h))
    }

    /// [`drive`](Drive::drive) without publishing readiness, reading the UDP socket only
    /// with `udp` (a spinning caller reads it once, and again after it slept) and arming
    /// the CQs only with `arm`: for a caller that goes on under the lock and drives
    /// before it leaves or sleeps.
    pub(crate) fn progress(&mut self, udp: bool, arm: bool) {
        let arm = arm || self.calls.must_arm();
        if udp {
            self.drain_udp();
        }
        let mut received = std::mem::take(&mut self.received);
        let mut failed = false;
        let room = self.sizes.rq as usize;
        let peer = self.peer;
        for (i, qp) in self.qps.iter_mut().enumerate() {
            qp.drive(
                &mut |qp, arrival| match arrival {
                    Arrival::Datagram { slot, src, at, len } => {
                        let wanted = peer.is_none_or(|p| p == src);
                        if wanted && received.len() < room {
                            received.push_back(Received {
                                src,
                                len: len as usize,
                                payload: Payload::Slot { qp: i, slot, at },
                            });
                        } else {
                            // Not for a connected socket's peer, or no room: lost, as UDP.
                            let _ = qp.post_recv(slot);
                        }
                    }
                    Arrival::Malformed => {
                        crate::DGRAM_DROPPED.fetch_add(1, Ordering::Relaxed);
                    }
                    Arrival::SendFailed => failed = true,
                },
                arm,
            );
        }
        self.received = received;
        if failed {
            self.so_error.get_or_insert(libc::EIO);
        }
    }

    /// What a call does as it returns: updates the descriptor, leaving the CQs as they
    /// are (see [`Calls`]).
    pub(crate) fn call_done(&mut self) {
        self.publish();
        self.calls.returned();
    }

    /// A caller goes to sleep on the socket's events ([`Self::before_sleep`] arms them);
    /// [`Self::sleep_ends`] when it wakes.
    pub(crate) fn sleep_begins(&mut self) {
        self.calls.sleep_begins();
    }

    pub(crate) fn sleep_ends(&mut self) {
        self.calls.sleep_ends();
    }

    /// A caller is about to sleep on the descriptor and the CQs' channels: arms them, and
    /// publishes readiness.
    pub(crate) fn before_sleep(&mut self) {
        self.calls.sleeping();
        self.drive();
    }

    /// Handles every datagram waiting on the UDP socket (`udp_svc_process_rs`).
    fn drain_udp(&mut self) {
        let mut buf = [0u8; SLOT];
        loop {
            let (n, from) = match self.udp.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock; or an error an ICMP message left (SO_ERROR), which
                // take_error reports.
                Err(_) => return,
            };
            let Ok((hdr, payload)) = UdpHeader::parse(&buf[..n], from) else {
                crate::DGRAM_DROPPED.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Ok(qp) = self.dest(from) else {
                continue;
            };
            if hdr.op == UdpOp::Data {
                let _ = self.send_udp(qp, UdpOp::Ctrl, &[], from);
            }
            let known = self
                .dests
                .get(&from)
                .and_then(|d| d.remote.as_ref())
                .is_some_and(|(_, qpn)| *qpn == hdr.qpn);
            if !known {
                if let Ok(ah) = self.qps[qp].address_handle(from.ip()) {
                    if let Some(d) = self.dests.get_mut(&from) {
                        d.remote = Some((ah, hdr.qpn));
                    }
                }
            }
            let wanted = self.peer.is_none_or(|p| p == from);
            if hdr.op == UdpOp::Data && wanted && self.received.len() < self.sizes.rq as usize {
                self.received.push_back(Received {
                    src: from,
                    len: payload.len(),
                    payload: Payload::Copied(payload.to_vec()),
                });
            }
        }
    }

    /// One attempt at receiving into `buf`: the bytes copied and the sender, or `None` if
    /// nothing is waiting. The rest of a datagram longer than `buf` is lost unless
    /// `peek`.
    pub(crate) fn try_recv(&mut self, buf: &mut [u8], peek: bool) -> Option<(usize, SocketAddr)> {
        let r = self.received.front()?;
        let n = buf.len().min(r.len);
        match &r.payload {
            Payload::Slot { qp, slot, at } => self.qps[*qp].read_slot(*slot, *at, &mut buf[..n]),
            Payload::Copied(v) => buf[..n].copy_from_slice(&v[..n]),
        }
        let src = r.src;
        if !peek {
            if let Some(Received {
                payload: Payload::Slot { qp, slot, .. },
                ..
            }) = self.received.pop_front()
            {
                if self.qps[qp].post_recv(slot).is_err() {
                    self.so_error.get_or_insert(libc::EIO);
                }
            }
            self.publish();
        }
        Some((n, src))
    }

    /// `connect(2)`: the kernel socket's, and the peer's destination met now.
    pub(crate) fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.check_family(peer)?;
        self.udp.connect(peer)?;
        self.dest(peer)?;
        self.peer = Some(peer);
        Ok(())
    }

    /// A datagram waits.
    fn readable(&self) -> bool {
        !self.received.is_empty()
    }

    /// A send can go at once (`ds_can_send`).
    fn writable(&self) -> bool {
        self.qps.iter().all(DsQp::can_send)
    }

    pub(crate) fn ready_now(&self) -> crate::Ready {
        crate::Ready {
            readable: self.readable(),
            writable: self.writable(),
        }
    }

    pub(crate) fn publish(&mut self) {
        let now = self.ready_now();
        self.ready.set(now.readable, now.writable);
    }

    /// No send is in flight.
    pub(crate) fn all_sends_done(&self) -> bool {
        self.qps.iter().all(DsQp::all_sends_done)
    }

    /// Stops the service's watching, before the descriptors close.
    pub(crate) fn unwatch(&self) {
        if let Ok(svc) = service() {
            svc.unwatch(self.udp.as_raw_fd());
            for q in &self.qps {
                svc.unwatch(q.channel_fd());
            }
        }
    }
}

impl Drive for DgramState {
    /// Makes the socket's progress: reads its UDP socket, takes its completions, arms the
    /// CQs unless calls are coming (see [`Calls`]), and updates the
    /// readiness descriptor.
    fn drive(&mut self) {
        let arm = !self.calls.active();
        self.progress(true, arm);
        self.publish();
    }
}
