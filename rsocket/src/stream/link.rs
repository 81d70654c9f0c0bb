//! The data path of a connected stream: its QP, CQ and registered rings, driven by the
//! protocol's accounting ([`StreamProto`]). Everything here runs under the stream's lock.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use xrdma_verbs::cm::{CmId, ConnParam};
use xrdma_verbs::verbs::{
    AccessFlags, CompletionChannel, Context, Cq, Lkey, Mr, Pd, QpCap, QpInitAttr, QpType,
    QueuePair, RecvWr, Rkey, SendFlags, SendOpcode, SendWr, Sge, WcFlags, WcStatus, WorkCompletion,
};

use crate::config::Config;
use crate::proto::msg::{ConnData, Ctrl, IOMAP_ENTRY_LEN, IomapEntry, Msg, RS_SGE_LEN, RsSge};
use crate::proto::stream::{
    CreditUpdate, DataWrite, ProtoError, Received, SGL_SIZE, Sizes, StreamProto,
};
use crate::regbuf::RegBuf;

/// `wr_id` bit of receives (`RS_WR_ID_FLAG_RECV`); sends carry their message.
const RECV_FLAG: u64 = 1 << 63;

/// Completions taken per CQ poll.
const POLL_BATCH: usize = 32;

/// What completions told: the socket applies it.
#[derive(Debug, Default)]
pub(crate) struct Happened {
    /// The peer sends no more.
    pub(crate) peer_shut: bool,
    /// The peer is gone (it will not read either).
    pub(crate) peer_gone: bool,
    /// The connection failed with this errno.
    pub(crate) error: Option<i32>,
    /// The peer broke the protocol.
    pub(crate) proto_error: Option<ProtoError>,
}

/// The verbs objects of a connection. Fields drop in order: the QP first, so that nothing
/// writes into the rings once they are freed.
pub(crate) struct Resources {
    qp: QueuePair,
    cq: Cq,
    pub(crate) channel: Arc<CompletionChannel>,
    rbuf: RegBuf,
    sbuf: RegBuf,
    table: RegBuf,
    /// Our buffers mapped for the peer to write into (`riomap`), each registered.
    maps: Vec<LocalMap>,
    pd: Pd,
    pub(crate) ctx: Context,
}

/// A buffer of ours the peer may write into: announced in slot `index` of its iomap table.
struct LocalMap {
    /// Registered for the peer's writes; deregistered when the mapping goes.
    mr: Mr,
    addr: u64,
    len: usize,
    offset: u64,
    index: u32,
    announced: bool,
}

/// A connection's data path.
pub(crate) struct Link {
    pub(crate) proto: StreamProto,
    pub(crate) res: Resources,
    inline: u32,
    /// Receives taken by completions, to post again.
    reposts: u32,
    armed: bool,
    /// The peer's connection data is in: credits can go.
    connected: bool,
    /// Entries of our iomap table.
    iomap_size: u16,
    /// The peer broke the protocol (counted once).
    violated: bool,
}

fn os(e: xrdma_verbs::verbs::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

impl Link {
    /// Creates the connection's QP (attached to `id`), CQ and rings, and posts its
    /// receives.
    pub(crate) fn new(id: &CmId, config: Config) -> io::Result<Link> {
        let device = id
            .device()
            .ok_or(io::Error::from_raw_os_error(libc::ENODEV))?;
        let ctx = device.context().clone();
        let pd = id
            .default_pd()
            .ok_or(io::Error::from_raw_os_error(libc::ENODEV))?;
        let dev = ctx.query_device();
        let config = config.clamped(dev.max_qp_wr);
        let inline = u32::from(config.inline).min(dev.max_inline_data);
        let channel = ctx.create_comp_channel().map_err(os)?;
        channel.set_nonblocking(true)?;
        let cq = ctx
            .create_cq(
                u32::from(config.sq_size) + u32::from(config.rq_size),
                Some(&channel),
            )
            .map_err(os)?;
        let attr = QpInitAttr {
            send_cq: &cq,
            recv_cq: &cq,
            qp_type: QpType::Rc,
            cap: QpCap {
                max_send_wr: u32::from(config.sq_size),
                max_recv_wr: u32::from(config.rq_size),
                max_send_sge: 2,
                max_recv_sge: 1,
                // Credit updates carry their SGE inline, whatever the data's threshold
                // (rsocket copies it to a registered control buffer instead when
                // `RDMA_INLINE` is smaller).
                max_inline_data: inline.max(RS_SGE_LEN as u32).min(dev.max_inline_data),
            },
            sq_sig_all: true,
            srq: None,
        };
        let qp = id.create_qp(&attr).map_err(os)?;
        let remote = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE;
        let rbuf = RegBuf::new(&pd, config.rmem as usize, remote).map_err(os)?;
        let sbuf = RegBuf::new(&pd, config.wmem as usize, AccessFlags::LOCAL_WRITE).map_err(os)?;
        let table_len = SGL_SIZE * RS_SGE_LEN + usize::from(config.iomap_size) * IOMAP_ENTRY_LEN;
        let table = RegBuf::new(&pd, table_len, remote).map_err(os)?;
        let proto = StreamProto::new(Sizes {
            sq_size: config.sq_size,
            rq_size: config.rq_size,
            rbuf_size: config.rmem,
            sbuf_size: config.wmem,
            iomap_size: config.iomap_size,
        });
        let mut link = Link {
            proto,
            res: Resources {
                qp,
                cq,
                channel,
                rbuf,
                sbuf,
                table,
                maps: Vec::new(),
                pd,
                ctx,
            },
            inline,
            reposts: u32::from(config.rq_size),
            armed: false,
            connected: false,
            iomap_size: config.iomap_size,
            violated: false,
        };
        link.post_reposts()?;
        Ok(link)
    }

    /// Our connection data for the REQ or REP.
    pub(crate) fn conn_param(&self, template: Option<&ConnParam>) -> ConnParam {
        let cd = self.proto.conn_data(
            (self.res.table.addr(), self.res.table.rkey()),
            (self.res.rbuf.addr(), self.res.rbuf.rkey()),
        );
        let mut param = template.cloned().unwrap_or_default();
        param.private_data = cd.to_bytes().to_vec();
        param.flow_control = 1;
        param.retry_count = 7;
        param.rnr_retry_count = 7;
        param
    }

    /// Takes in the peer's connection data (the private data of its REQ or REP).
    pub(crate) fn accept_peer(&mut self, private: &[u8]) -> io::Result<()> {
        let cd =
            ConnData::parse(private).map_err(|_| io::Error::from_raw_os_error(libc::EPROTO))?;
        self.proto
            .accept_conn_data(&cd)
            .map_err(|_| io::Error::from_raw_os_error(libc::EPROTO))?;
        self.connected = true;
        Ok(())
    }

    fn post_reposts(&mut self) -> io::Result<()> {
        while self.reposts > 0 {
            let wr = RecvWr {
                wr_id: RECV_FLAG,
                sg_list: &[],
            };
            // SAFETY: no memory is named; the data of writes lands in the registered ring.
            unsafe { self.res.qp.post_recv(&wr) }.map_err(os)?;
            self.reposts -= 1;
        }
        Ok(())
    }

    /// Takes every completion there is, arms the CQ so that the next one wakes whoever
    /// waits, and sends what the protocol owes (receives to repost, credits). Returns how
    /// many completions it took.
    ///
    /// The CQ is armed only with `arm`: a caller that goes on polling needs no event (each
    /// would wake the service thread for nothing), and arms before it leaves or sleeps.
    pub(crate) fn drive(&mut self, happened: &mut Happened, arm: bool) -> usize {
        let mut taken = 0;
        let mut events = 0u32;
        // `pending` first: it costs no system call, and a spinning caller comes here often.
        while self.res.channel.pending() > 0 && self.res.channel.get_event().is_ok() {
            events += 1;
        }
        if events > 0 {
            let _ = self.res.cq.ack_events(events);
            self.armed = false;
        }
        loop {
            let mut wcs = [WorkCompletion::default(); POLL_BATCH];
            let n = self.res.cq.poll(&mut wcs);
            for wc in &wcs[..n] {
                self.on_completion(wc, happened);
            }
            taken += n;
            if n == POLL_BATCH {
                continue;
            }
            if self.armed || !arm {
                break;
            }
            // Arm, then look once more: a completion that came between the last poll and
            // the arming would otherwise wait for the next one.
            let _ = self.res.cq.req_notify(false);
            self.armed = true;
        }
        if happened.error.is_none() && happened.proto_error.is_none() {
            let owed = self
                .post_reposts()
                .and_then(|()| self.send_credits())
                .and_then(|()| self.announce_maps());
            if let Err(e) = owed {
                happened.error = Some(e.raw_os_error().unwrap_or(libc::ECONNRESET));
            }
        }
        taken
    }

    fn on_completion(&mut self, wc: &WorkCompletion, happened: &mut Happened) {
        if wc.wr_id & RECV_FLAG != 0 {
            if wc.status != WcStatus::Success {
                if wc.status == WcStatus::RemAccessErr {
                    // The peer wrote where it was not given room: its QP refused it.
                    self.count_violation();
                }
                happened.error.get_or_insert(libc::ECONNRESET);
                return;
            }
            self.reposts += 1;
            if !wc.wc_flags.contains(WcFlags::WITH_IMM) {
                happened.proto_error = Some(ProtoError::ReservedOp(0xff));
                return;
            }
            let msg = Msg(wc.imm_data.host_value());
            let table = &self.res.table;
            match self.proto.on_recv(msg, &mut |i| table.take_sge(i)) {
                Ok(Received::Progress | Received::Nothing) => {}
                Ok(Received::Shutdown) => happened.peer_shut = true,
                Ok(Received::Disconnect) => {
                    happened.peer_shut = true;
                    happened.peer_gone = true;
                }
                Err(e) => {
                    self.count_violation();
                    happened.proto_error = Some(e);
                }
            }
        } else {
            self.proto.on_send_done(Msg(wc.wr_id as u32));
            match wc.status {
                WcStatus::Success => {}
                WcStatus::RetryExcErr | WcStatus::RnrRetryExcErr => {
                    happened.error = Some(libc::ETIMEDOUT);
                }
                WcStatus::WrFlushErr => {
                    happened.error.get_or_insert(libc::ECONNRESET);
                }
                _ => happened.error = Some(libc::ECONNRESET),
            }
        }
    }

    /// Counts the peer's breaking the protocol, once for the connection it ends.
    fn count_violation(&mut self) {
        if !std::mem::replace(&mut self.violated, true) {
            crate::PROTOCOL_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Posts a credit update if one is due.
    fn send_credits(&mut self) -> io::Result<()> {
        if !self.connected {
            return Ok(());
        }
        let rbuf = (self.res.rbuf.addr(), self.res.rbuf.rkey());
        let Some(CreditUpdate { imm, sge }) = self.proto.credit_update(rbuf) else {
            return Ok(());
        };
        match sge {
            Some((bytes, entry, key)) => {
                let sg = [Sge {
                    addr: bytes.as_ptr() as u64,
                    length: bytes.len() as u32,
                    lkey: Lkey(0),
                }];
                self.post(imm, &sg, true, (entry, key))
            }
            None => self.post(imm, &[], true, (0, 0)),
        }
    }

    /// Posts a control message. Call only when a control slot is free.
    pub(crate) fn send_ctrl(&mut self, ctrl: Ctrl) -> io::Result<()> {
        let msg = self.proto.ctrl(ctrl);
        self.post(msg, &[], true, (0, 0))
    }

    /// Posts a keepalive: rsocket's zero-byte RDMA WRITE without immediate data, which the
    /// peer's QP acknowledges without its application. Its failure (no ACK within the
    /// retries) breaks the connection. Call only when a control slot is free.
    pub(crate) fn send_keepalive(&mut self) -> io::Result<()> {
        let msg = self.proto.ctrl(Ctrl::Keepalive);
        let wr = SendWr {
            wr_id: u64::from(msg.0),
            opcode: SendOpcode::RdmaWrite,
            send_flags: SendFlags::default(),
            sg_list: &[],
            imm_data: 0,
            ud: None,
            rdma: Some((0, Rkey(0))),
            atomic: None,
        };
        // SAFETY: no memory is named: a zero-byte write reaches none at the peer either.
        unsafe { self.res.qp.post_send(&wr) }.map_err(os)
    }

    /// Sends as much of `data` as the protocol allows now; returns the bytes sent.
    pub(crate) fn send(&mut self, data: &[u8], olen: &mut u32) -> io::Result<usize> {
        // Mappings first, as rsocket sends them: data after them tells the peer they are in.
        self.announce_maps()?;
        let mut sent = 0;
        while sent < data.len() && self.proto.can_send() {
            let w = self.proto.next_write(data.len() - sent, olen);
            let chunk = &data[sent..sent + w.len as usize];
            self.post_data(&w, chunk)?;
            sent += w.len as usize;
        }
        Ok(sent)
    }

    /// Posts `chunk` (`w.len` bytes) to `w`'s place: inline if it is short enough, else
    /// copied into the send ring. With an immediate (`w.imm` on the wire) for messages, a
    /// plain RDMA WRITE for direct writes (`w.imm` is then only the `wr_id`).
    fn post_data(&mut self, w: &DataWrite, chunk: &[u8]) -> io::Result<()> {
        self.post_chunk(w, chunk, SendOpcode::RdmaWriteWithImm)
    }

    fn post_chunk(&mut self, w: &DataWrite, chunk: &[u8], opcode: SendOpcode) -> io::Result<()> {
        let remote = (w.remote_addr, w.rkey);
        if w.len <= self.inline {
            let sg = [Sge {
                addr: chunk.as_ptr() as u64,
                length: w.len,
                lkey: Lkey(0),
            }];
            return self.post_op(opcode, w.imm, &sg, true, remote);
        }
        let span = self.proto.place_in_ring(w.len);
        let (first, second) = chunk.split_at(span.first as usize);
        let sbuf = &self.res.sbuf;
        sbuf.write(span.offset as usize, first);
        sbuf.write(0, second);
        let lkey = sbuf.lkey();
        let sg = [
            Sge {
                addr: sbuf.addr() + u64::from(span.offset),
                length: span.first,
                lkey,
            },
            Sge {
                addr: sbuf.addr(),
                length: span.second,
                lkey,
            },
        ];
        let n = if span.second > 0 { 2 } else { 1 };
        self.post_op(opcode, w.imm, &sg[..n], false, remote)
    }

    fn post(&self, imm: Msg, sg: &[Sge], inline: bool, remote: (u64, u32)) -> io::Result<()> {
        self.post_op(SendOpcode::RdmaWriteWithImm, imm, sg, inline, remote)
    }

    fn post_op(
        &self,
        opcode: SendOpcode,
        imm: Msg,
        sg: &[Sge],
        inline: bool,
        remote: (u64, u32),
    ) -> io::Result<()> {
        let wr = SendWr {
            wr_id: u64::from(imm.0),
            opcode,
            send_flags: if inline && !sg.is_empty() {
                SendFlags::INLINE
            } else {
                SendFlags::default()
            },
            sg_list: sg,
            imm_data: imm.0,
            ud: None,
            rdma: Some((remote.0, Rkey(remote.1))),
            atomic: None,
        };
        // SAFETY: inline data is copied before post_send returns; other SGEs name the send
        // ring, registered for the connection's life, whose bytes the accounting keeps
        // untouched until this request completes.
        unsafe { self.res.qp.post_send(&wr) }.map_err(os)
    }

    /// Maps `len` bytes at `buf` for the peer to write into with its `riowrite` at
    /// `offset` (the buffer's address if `None`); returns the offset. The mapping is
    /// announced in the peer's iomap table as soon as the protocol lets a message go.
    /// ENOMEM when the peer's table is full (or it has none).
    ///
    /// # Safety
    ///
    /// `buf..buf + len` stays valid until [`iounmap`](Self::iounmap) or the connection's
    /// end, and the program expects the peer to write into it at any time.
    pub(crate) unsafe fn iomap(
        &mut self,
        buf: *mut u8,
        len: usize,
        offset: Option<u64>,
    ) -> io::Result<u64> {
        let index = (0..self.proto.remote_iomap_len())
            .find(|i| self.res.maps.iter().all(|m| m.index != *i))
            .ok_or(io::Error::from_raw_os_error(libc::ENOMEM))?;
        let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE;
        // SAFETY: the caller keeps the buffer valid while it is mapped.
        let mr = unsafe { self.res.pd.reg_mr(buf, len, access) }.map_err(os)?;
        let offset = offset.unwrap_or(buf as u64);
        self.res.maps.push(LocalMap {
            mr,
            addr: buf as u64,
            len,
            offset,
            index,
            announced: false,
        });
        self.announce_maps()?;
        Ok(offset)
    }

    /// Unmaps the buffer mapped at `buf` with `len` bytes (EINVAL if none is). As with
    /// rsocket, the peer is not told: its writes there fail from now on.
    pub(crate) fn iounmap(&mut self, buf: *mut u8, len: usize) -> io::Result<()> {
        let at = self
            .res
            .maps
            .iter()
            .position(|m| m.addr == buf as u64 && m.len == len)
            .ok_or(io::Error::from_raw_os_error(libc::EINVAL))?;
        self.res.maps.swap_remove(at);
        Ok(())
    }

    /// Sends the announcements of mappings not yet made, as far as the protocol allows.
    fn announce_maps(&mut self) -> io::Result<()> {
        if !self.connected {
            return Ok(());
        }
        while let Some(i) = self.res.maps.iter().position(|m| !m.announced) {
            if !self.proto.can_send() {
                break;
            }
            let m = &mut self.res.maps[i];
            m.announced = true;
            let entry = IomapEntry {
                offset: m.offset,
                sge: RsSge {
                    addr: m.addr,
                    key: m.mr.rkey().0,
                    length: m.len.min(u32::MAX as usize) as u32,
                },
            };
            let (bytes, addr, key, imm) = self.proto.iomap_write(m.index, entry);
            let w = DataWrite {
                len: IOMAP_ENTRY_LEN as u32,
                remote_addr: addr,
                rkey: key,
                imm,
            };
            self.post_data(&w, &bytes)?;
        }
        Ok(())
    }

    /// The peer's mapping that holds `offset`, from our iomap table: where a write there
    /// lands, its key, and the bytes the mapping holds from there.
    fn peer_map(&self, offset: u64) -> Option<(u64, u32, u64)> {
        (0..usize::from(self.iomap_size)).find_map(|i| {
            let e = self
                .res
                .table
                .read_iomap(SGL_SIZE * RS_SGE_LEN + i * IOMAP_ENTRY_LEN)?;
            let dest = e.place(offset, 1)?;
            let room = e.offset + u64::from(e.sge.length) - offset;
            Some((dest, e.sge.key, room))
        })
    }

    /// Writes as much of `data` as the protocol allows now into the peer's mapping at
    /// `offset` (`riowrite`), with plain RDMA WRITEs; returns the bytes written. EINVAL if
    /// no mapping of the peer's holds `offset`.
    pub(crate) fn iowrite(
        &mut self,
        data: &[u8],
        offset: u64,
        olen: &mut u32,
    ) -> io::Result<usize> {
        self.announce_maps()?;
        let mut sent = 0;
        while sent < data.len() && self.proto.can_send() {
            let at = offset + sent as u64;
            let Some((dest, key, room)) = self.peer_map(at) else {
                if sent == 0 {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
                break;
            };
            let (len, imm) = self.proto.next_direct_write(data.len() - sent, room, olen);
            let w = DataWrite {
                len,
                remote_addr: dest,
                rkey: key,
                imm,
            };
            self.post_chunk(&w, &data[sent..sent + len as usize], SendOpcode::RdmaWrite)?;
            sent += len as usize;
        }
        Ok(sent)
    }

    /// Copies up to `buf.len()` queued bytes out (leaving them queued with `peek`).
    pub(crate) fn read(&mut self, buf: &mut [u8], peek: bool) -> usize {
        let rbuf = &self.res.rbuf;
        self.proto.read(buf.len(), peek, &mut |ring, at, n| {
            rbuf.read(ring as usize, &mut buf[at..at + n])
        })
    }
}
