//! One UD QP of a datagram socket (rsocket's `ds_qp`): the QP of one local address, its
//! CQ and completion channel, its receive slots and its send slots. Everything here runs
//! under the socket's lock.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use xrdma_verbs::cm::{CmId, PortSpace, UDP_QKEY};
use xrdma_verbs::verbs::{
    AccessFlags, AddressHandle, AhAttr, CompletionChannel, Context, Cq, Gid, QpCap, QpInitAttr,
    QpType, QueuePair, RecvWr, SendFlags, SendOpcode, SendWr, Sge, UdDest, WcStatus,
    WorkCompletion,
};
use xrdma_verbs::wire::{Qkey, Qpn};

use crate::proto::dgram::{DsHeader, GRH_LEN, SLOT, max_payload};
use crate::regbuf::RegBuf;

/// `wr_id` bit of receives (`RS_WR_ID_FLAG_RECV`); the low 32 bits are the slot's offset.
const RECV_FLAG: u64 = 1 << 63;

/// Completions taken per CQ poll.
const POLL_BATCH: usize = 32;

/// Queue sizes of a socket's QPs, as rsocket sets them (`ds_set_qp_size`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) sq: u32,
    pub(crate) rq: u32,
    pub(crate) inline: u32,
}

/// What a completion brought.
pub(crate) enum Arrival {
    /// A datagram in receive slot `slot`: its header, and where its payload lies.
    Datagram {
        slot: u32,
        src: SocketAddr,
        at: u32,
        len: u32,
    },
    /// A receive that holds no datagram of ours (malformed header): its slot is posted
    /// again.
    Malformed,
    /// A send failed.
    SendFailed,
}

fn os(e: xrdma_verbs::verbs::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

/// The verbs objects of one local address. Fields drop in order: the QP first, so that
/// nothing lands in the slots once they are freed.
pub(crate) struct DsQp {
    qp: QueuePair,
    cq: Cq,
    channel: Arc<CompletionChannel>,
    /// `rq` receive slots, then the GRH area every receive shares.
    rbuf: RegBuf,
    /// `sq` send slots.
    sbuf: RegBuf,
    id: CmId,
    ctx: Context,
    /// The address datagrams from here carry: the QP's IP, the socket's port.
    pub(crate) local: SocketAddr,
    sgid_index: u8,
    /// The largest payload this QP sends.
    pub(crate) max_payload: usize,
    free_slots: Vec<u32>,
    sizes: Sizes,
    armed: bool,
}

impl DsQp {
    /// A QP bound to `local`, on the device that has its address, with its receives
    /// posted.
    pub(crate) fn new(
        channel: &xrdma_verbs::cm::EventChannel,
        local: SocketAddr,
        sizes: Sizes,
    ) -> io::Result<DsQp> {
        crate::device::ensure_local(local.ip())?;
        let id = CmId::new(channel, PortSpace::Udp);
        match DsQp::on_id(&id, local, sizes) {
            Ok(qp) => Ok(qp),
            Err(e) => {
                id.detach_qp();
                id.destroy();
                Err(e)
            }
        }
    }

    fn on_id(id: &CmId, local: SocketAddr, sizes: Sizes) -> io::Result<DsQp> {
        id.bind_addr(local).map_err(os)?;
        let device = id
            .device()
            .ok_or(io::Error::from_raw_os_error(libc::ENODEV))?;
        let ctx = device.context().clone();
        let pd = id
            .default_pd()
            .ok_or(io::Error::from_raw_os_error(libc::ENODEV))?;
        let sgid_index =
            ctx.link()
                .addrs
                .iter()
                .position(|a| *a == local.ip())
                .ok_or(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))? as u8;
        let mtu = ctx.query_port(1).map_err(os)?.active_mtu.bytes();
        let dev = ctx.query_device();
        let inline = sizes.inline.min(dev.max_inline_data);
        let sq = sizes.sq.min(dev.max_qp_wr);
        let rq = sizes.rq.min(dev.max_qp_wr);
        let channel = ctx.create_comp_channel().map_err(os)?;
        channel.set_nonblocking(true)?;
        let cq = ctx.create_cq(sq + rq, Some(&channel)).map_err(os)?;
        let attr = QpInitAttr {
            send_cq: &cq,
            recv_cq: &cq,
            qp_type: QpType::Ud,
            cap: QpCap {
                max_send_wr: sq,
                max_recv_wr: rq,
                max_send_sge: 1,
                max_recv_sge: 2,
                max_inline_data: inline,
            },
            sq_sig_all: true,
            srq: None,
        };
        let qp = id.create_qp(&attr).map_err(os)?;
        let rbuf =
            RegBuf::new(&pd, rq as usize * SLOT + GRH_LEN, AccessFlags::LOCAL_WRITE).map_err(os)?;
        let sbuf = RegBuf::new(&pd, sq as usize * SLOT, AccessFlags::LOCAL_WRITE).map_err(os)?;
        let mut ds = DsQp {
            qp,
            cq,
            channel,
            rbuf,
            sbuf,
            id: id.clone(),
            ctx,
            local,
            sgid_index,
            max_payload: max_payload(local.is_ipv6(), mtu),
            free_slots: (0..sq).rev().map(|i| i * SLOT as u32).collect(),
            sizes: Sizes { sq, rq, inline },
            armed: false,
        };
        for i in 0..rq {
            ds.post_recv(i * SLOT as u32)?;
        }
        // Armed from the start, as rsocket does, so that the first arrival wakes a poller.
        ds.arm();
        Ok(ds)
    }

    pub(crate) fn qpn(&self) -> Qpn {
        self.qp.qpn()
    }

    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }

    pub(crate) fn channel_fd(&self) -> RawFd {
        self.channel.as_raw_fd()
    }

    /// An address handle to `ip`, from this QP's address (what rsocket resolves a route
    /// for in `udp_svc_create_ah`; on RoCE the address is the route).
    pub(crate) fn address_handle(&self, ip: IpAddr) -> io::Result<AddressHandle> {
        let attr = AhAttr {
            sgid_index: self.sgid_index,
            ..AhAttr::new(Gid::from_ip(ip))
        };
        self.qp.pd().create_ah(&attr).map_err(os)
    }

    /// Posts receive slot `slot` (its offset), behind the shared GRH area.
    pub(crate) fn post_recv(&mut self, slot: u32) -> io::Result<()> {
        let lkey = self.rbuf.lkey();
        let sg = [
            Sge {
                addr: self.rbuf.addr() + (self.sizes.rq as usize * SLOT) as u64,
                length: GRH_LEN as u32,
                lkey,
            },
            Sge {
                addr: self.rbuf.addr() + u64::from(slot),
                length: SLOT as u32,
                lkey,
            },
        ];
        let wr = RecvWr {
            wr_id: RECV_FLAG | u64::from(slot),
            sg_list: &sg,
        };
        // SAFETY: both SGEs lie in `rbuf`, registered for the QP's life (the QP drops
        // first); the slot is ours again only through its completion.
        unsafe { self.qp.post_recv(&wr) }.map_err(os)
    }

    /// Copies `dst.len()` bytes of receive slot `slot`, from `at`.
    pub(crate) fn read_slot(&self, slot: u32, at: u32, dst: &mut [u8]) {
        let start = slot as usize + at as usize;
        let n = dst.len().min((slot as usize + SLOT).saturating_sub(start));
        self.rbuf.read(start, &mut dst[..n]);
    }

    /// A send slot is free.
    pub(crate) fn can_send(&self) -> bool {
        !self.free_slots.is_empty()
    }

    /// No send is in flight.
    pub(crate) fn all_sends_done(&self) -> bool {
        self.free_slots.len() == self.sizes.sq as usize
    }

    /// Sends `payload` behind `hdr` to QP `qpn` at `ah`. Call only when
    /// [`can_send`](Self::can_send) and with at most `max_payload` bytes.
    pub(crate) fn send(
        &mut self,
        ah: &AddressHandle,
        qpn: Qpn,
        hdr: &DsHeader,
        payload: &[u8],
    ) -> io::Result<()> {
        let slot = self
            .free_slots
            .pop()
            .ok_or(io::Error::from(io::ErrorKind::WouldBlock))?;
        let mut head = [0u8; 32];
        let h = hdr.emit(&mut head).unwrap_or(0);
        let len = h + payload.len();
        if len > SLOT {
            self.free_slots.push(slot);
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        self.sbuf.write(slot as usize, &head[..h]);
        self.sbuf.write(slot as usize + h, payload);
        let sg = [Sge {
            addr: self.sbuf.addr() + u64::from(slot),
            length: len as u32,
            lkey: self.sbuf.lkey(),
        }];
        let wr = SendWr {
            wr_id: u64::from(slot),
            opcode: SendOpcode::Send,
            send_flags: if len as u32 <= self.sizes.inline {
                SendFlags::INLINE
            } else {
                SendFlags::default()
            },
            sg_list: &sg,
            imm_data: 0,
            ud: Some(UdDest {
                ah,
                remote_qpn: qpn,
                remote_qkey: Qkey::new(UDP_QKEY),
            }),
            rdma: None,
            atomic: None,
        };
        // SAFETY: the SGE names send slot `slot` of `sbuf`, registered for the QP's life;
        // the slot is not written again until this request's completion frees it.
        let posted = unsafe { self.qp.post_send(&wr) }.map_err(os);
        if posted.is_err() {
            self.free_slots.push(slot);
        }
        posted
    }

    fn arm(&mut self) {
        if !self.armed {
            let _ = self.cq.req_notify(false);
            self.armed = true;
        }
    }

    /// Takes every completion there is (frees send slots, hands receives to `arrive`)
    /// and, with `arm`, arms the CQ so that the next one signals the channel (a caller
    /// that goes on polling arms only when it leaves or sleeps: each event would wake the
    /// service thread for nothing).
    pub(crate) fn drive(&mut self, arrive: &mut dyn FnMut(&mut DsQp, Arrival), arm: bool) {
        let mut events = 0u32;
        while self.channel.pending() > 0 && self.channel.get_event().is_ok() {
            events += 1;
        }
        if events > 0 {
            let _ = self.cq.ack_events(events);
            self.armed = false;
        }
        loop {
            let mut wcs = [WorkCompletion::default(); POLL_BATCH];
            let n = self.cq.poll(&mut wcs);
            for wc in &wcs[..n] {
                self.on_completion(wc, arrive);
            }
            if n == POLL_BATCH {
                continue;
            }
            if self.armed || !arm {
                break;
            }
            // Arm, then look once more: a completion between the last poll and the
            // arming would otherwise wait for the next one.
            self.arm();
        }
    }

    fn on_completion(&mut self, wc: &WorkCompletion, arrive: &mut dyn FnMut(&mut DsQp, Arrival)) {
        let slot = wc.wr_id as u32;
        if wc.wr_id & RECV_FLAG == 0 {
            self.free_slots.push(slot);
            if wc.status != WcStatus::Success {
                arrive(self, Arrival::SendFailed);
            }
            return;
        }
        if wc.status != WcStatus::Success {
            // Flushed: the QP is going away.
            return;
        }
        let len = (wc.byte_len as usize).saturating_sub(GRH_LEN).min(SLOT);
        let mut head = [0u8; 24];
        let take = len.min(head.len());
        self.read_slot(slot, 0, &mut head[..take]);
        match DsHeader::parse(&head[..take]) {
            Ok((hdr, _)) => {
                let at = hdr.wire_len();
                arrive(
                    self,
                    Arrival::Datagram {
                        slot,
                        src: hdr.src,
                        at: at as u32,
                        len: (len - at) as u32,
                    },
                );
            }
            Err(_) => {
                arrive(self, Arrival::Malformed);
                let _ = self.post_recv(slot);
            }
        }
    }
}

impl Drop for DsQp {
    fn drop(&mut self) {
        self.id.detach_qp();
        self.id.destroy();
    }
}
