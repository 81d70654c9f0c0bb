//! The data path of a connected stream: its QP, CQ and registered rings, driven by the
//! protocol's accounting ([`StreamProto`]). Everything here runs under the stream's lock.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use xrdma_verbs::cm::{CmId, ConnParam};
use xrdma_verbs::verbs::{
    AccessFlags, CompletionChannel, Context, Cq, Lkey, QpCap, QpInitAttr, QpType, QueuePair,
    RecvWr, Rkey, SendFlags, SendOpcode, SendWr, Sge, WcFlags, WcStatus, WorkCompletion,
};

use crate::config::Config;
use crate::proto::msg::{ConnData, Ctrl, Msg};
use crate::proto::stream::{CreditUpdate, DataWrite, ProtoError, Received, Sizes, StreamProto};
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
    pub(crate) ctx: Context,
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
    /// Sends were posted since the last [`flush`](Self::flush).
    unflushed: bool,
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
                max_inline_data: inline,
            },
            sq_sig_all: true,
            srq: None,
        };
        let qp = id.create_qp(&attr).map_err(os)?;
        let remote = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE;
        let rbuf = RegBuf::new(&pd, config.rmem as usize, remote).map_err(os)?;
        let sbuf = RegBuf::new(&pd, config.wmem as usize, AccessFlags::LOCAL_WRITE).map_err(os)?;
        let table = RegBuf::new(&pd, crate::proto::stream::SGL_SIZE * 16, remote).map_err(os)?;
        let proto = StreamProto::new(Sizes {
            sq_size: config.sq_size,
            rq_size: config.rq_size,
            rbuf_size: config.rmem,
            sbuf_size: config.wmem,
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
                ctx,
            },
            inline,
            reposts: u32::from(config.rq_size),
            armed: false,
            connected: false,
            unflushed: false,
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
    pub(crate) fn drive(&mut self, happened: &mut Happened) -> usize {
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
            if self.armed {
                break;
            }
            // Arm, then look once more: a completion that came between the last poll and
            // the arming would otherwise wait for the next one.
            let _ = self.res.cq.req_notify(false);
            self.armed = true;
        }
        if happened.error.is_none() && happened.proto_error.is_none() {
            if let Err(e) = self.post_reposts().and_then(|()| self.send_credits()) {
                happened.error = Some(e.raw_os_error().unwrap_or(libc::ECONNRESET));
            }
        }
        taken
    }

    fn on_completion(&mut self, wc: &WorkCompletion, happened: &mut Happened) {
        if wc.wr_id & RECV_FLAG != 0 {
            if wc.status != WcStatus::Success {
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
                    crate::PROTOCOL_ERRORS.fetch_add(1, Ordering::Relaxed);
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
        self.unflushed = true;
        // SAFETY: no memory is named: a zero-byte write reaches none at the peer either.
        unsafe { self.res.qp.post_send(&wr) }.map_err(os)
    }

    /// Hands the sends posted since the last call to the medium, and has the context's
    /// helper thread look at the timers they armed. Posting leaves them to the next CQ
    /// poll when the poster polled just now, and the socket's caller may not poll again:
    /// it may go back to the application, or to sleep on the service's epoll.
    pub(crate) fn flush(&mut self) {
        if std::mem::take(&mut self.unflushed) {
            self.res.ctx.with_backend(|_, _| ());
        }
    }

    /// Sends as much of `data` as the protocol allows now; returns the bytes sent.
    pub(crate) fn send(&mut self, data: &[u8], olen: &mut u32) -> io::Result<usize> {
        let mut sent = 0;
        while sent < data.len() && self.proto.can_send() {
            let w = self.proto.next_write(data.len() - sent, olen);
            let chunk = &data[sent..sent + w.len as usize];
            self.post_data(&w, chunk)?;
            sent += w.len as usize;
        }
        Ok(sent)
    }

    fn post_data(&mut self, w: &DataWrite, chunk: &[u8]) -> io::Result<()> {
        let remote = (w.remote_addr, w.rkey);
        if w.len <= self.inline {
            let sg = [Sge {
                addr: chunk.as_ptr() as u64,
                length: w.len,
                lkey: Lkey(0),
            }];
            return self.post(w.imm, &sg, true, remote);
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
        self.post(w.imm, &sg[..n], false, remote)
    }

    fn post(&mut self, imm: Msg, sg: &[Sge], inline: bool, remote: (u64, u32)) -> io::Result<()> {
        let wr = SendWr {
            wr_id: u64::from(imm.0),
            opcode: SendOpcode::RdmaWriteWithImm,
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
        self.unflushed = true;
        // SAFETY: inline data is copied before post_send returns; other SGEs name the send
        // ring, registered for the connection's life, whose bytes the accounting keeps
        // untouched until this request completes.
        unsafe { self.res.qp.post_send(&wr) }.map_err(os)
    }

    /// Copies up to `buf.len()` queued bytes out (leaving them queued with `peek`).
    pub(crate) fn read(&mut self, buf: &mut [u8], peek: bool) -> usize {
        let rbuf = &self.res.rbuf;
        self.proto.read(buf.len(), peek, &mut |ring, at, n| {
            rbuf.read(ring as usize, &mut buf[at..at + n])
        })
    }
}
