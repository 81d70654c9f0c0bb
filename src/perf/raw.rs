//! `raw-lat` and `raw-bw`: frames carrying a BTH and a DETH (a UD SEND_ONLY with no QP
//! behind it), to show what the path itself gives before any transport logic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xrdma_verbs::net::{FrameIo, TxMeta};
use xrdma_verbs::wire::{
    self, BthPacket, BthRepr, DethRepr, Opcode, Psn, Qkey, Qpn, TransportRepr,
};

use super::oob::{Control, Message};
use super::{Limit, Options, PerfError, Report, Result, Role, Test, count_until_end, meet};

/// QP number and Q_Key the raw tests put in their headers.
const RAW_QPN: u32 = 0x00_0001;
const RAW_QKEY: u32 = 0x1111_1111;
/// BTH + DETH.
const HEADERS: usize = wire::bth::HEADER_LEN + wire::deth::HEADER_LEN;
/// UDP source port of raw frames.
const SRC_PORT: u16 = 0xc001;
/// A ping not answered within this is sent again.
const RESEND_AFTER: Duration = Duration::from_millis(200);
/// A ping is given up after this many resends.
const MAX_RESENDS: u32 = 5;
/// Round trips run before measuring.
const WARMUP: u64 = 1000;

/// Runs `raw-lat` or `raw-bw` as `opts` says.
pub(super) fn run(opts: &Options, mut io: Box<dyn FrameIo>) -> Result<Report> {
    let io = io.as_mut();
    let mut s = meet(opts, io.link(), max_payload(io), &[])?;
    match (opts.role, opts.test) {
        (Role::Server, Test::RawLat) => lat_server(io, &mut s.ctrl, s.peer, s.size),
        (Role::Server, _) => bw_server(io, &mut s.ctrl, s.size),
        (Role::Client(_), Test::RawLat) => lat_client(io, &mut s.ctrl, s.peer, s.size, s.limit),
        (Role::Client(_), _) => bw_client(io, &mut s.ctrl, s.peer, s.size, s.limit),
    }
}

/// The largest payload a raw frame carries on this link.
pub(super) fn max_payload(io: &dyn FrameIo) -> usize {
    io.link()
        .max_transport_len(false)
        .saturating_sub(HEADERS + 3)
}

/// Writes a raw frame's transport packet with `size` payload bytes; returns its length.
fn write_packet(buf: &mut [u8], psn: u32, size: usize) -> usize {
    let repr = TransportRepr {
        deth: Some(DethRepr {
            qkey: Qkey::new(RAW_QKEY),
            src_qp: Qpn::new_masked(RAW_QPN),
        }),
        ..TransportRepr::new(BthRepr::new(
            Opcode::UD_SEND_ONLY,
            Qpn::new_masked(RAW_QPN),
            Psn::new_masked(psn),
        ))
    };
    // `size` was checked against the link by `max_payload`, so the headers always fit.
    let offset = repr
        .emit_headers(size, buf)
        .expect("a raw packet fits the buffer the backend offers");
    for (i, b) in buf[offset..offset + size].iter_mut().enumerate() {
        *b = i as u8;
    }
    repr.buffer_len(size)
}

/// The PSN of a raw frame, if it is one.
fn psn_of(packet: &[u8]) -> Option<u32> {
    let bth = BthPacket::new_checked(packet).ok()?;
    (bth.opcode() == Opcode::UD_SEND_ONLY).then(|| bth.psn().value())
}

fn send_packet(io: &mut dyn FrameIo, to: &TxMeta, psn: u32, size: usize) -> Result<()> {
    // A full transmit ring drains as the medium takes frames: flush until one is free.
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        if io.send(to, &mut |buf| write_packet(buf, psn, size))? {
            return Ok(());
        }
        io.flush()?;
        if Instant::now() > give_up {
            return Err(PerfError("the transmit ring stayed full for 5 s".into()));
        }
    }
}

fn report(io: &dyn FrameIo, test: &str, size: usize) -> Report {
    let link = io.link();
    Report {
        test: test.into(),
        backend: link.backend.to_string(),
        mode: link.mode.to_string(),
        size,
        ..Report::default()
    }
}

/// Client side of `raw-lat`: ping, wait for the echo, repeat.
pub(super) fn lat_client(
    io: &mut dyn FrameIo,
    ctrl: &mut Control,
    peer: SocketAddr,
    size: usize,
    limit: Limit,
) -> Result<Report> {
    let to = TxMeta::to(peer, SRC_PORT);
    let mut samples = Vec::with_capacity(limit.iters.min(10_000_000) as usize);
    let mut sent = 0u64;
    let mut lost = 0u64;
    let mut started: Option<Instant> = None;
    let mut i = 0u64;
    loop {
        if i >= WARMUP {
            let start = *started.get_or_insert_with(Instant::now);
            if limit.done(i - WARMUP, start) {
                break;
            }
        }
        let psn = (i & 0xff_ffff) as u32;
        let t0 = Instant::now();
        send_packet(io, &to, psn, size)?;
        io.flush()?;
        sent += 1;
        let mut resends = 0;
        let mut last_send = t0;
        let answered = loop {
            let mut got = false;
            io.recv(32, &mut |_, packet| got |= psn_of(packet) == Some(psn))?;
            if got {
                break true;
            }
            if last_send.elapsed() > RESEND_AFTER {
                if resends == MAX_RESENDS {
                    break false;
                }
                resends += 1;
                last_send = Instant::now();
                send_packet(io, &to, psn, size)?;
                io.flush()?;
            }
        };
        let rtt = t0.elapsed();
        if !answered {
            lost += 1;
        } else if i >= WARMUP && resends == 0 {
            samples.push(rtt / 2);
        }
        i += 1;
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    ctrl.send(&Message::new("END").with("sent", sent))?;
    let result = ctrl.recv()?;
    let echoed: u64 = result.parse("received")?;
    samples.sort_unstable();
    let mut r = report(io, "raw-lat", size);
    r.iters = samples.len() as u64;
    r.sent = samples.len() as u64 + lost;
    r.elapsed = elapsed;
    r.latencies = samples;
    if echoed == 0 && sent > 0 {
        return Err(PerfError("the server echoed nothing".into()));
    }
    Ok(r)
}

/// Server side of `raw-lat`: echo every raw frame back to the client until it says END.
pub(super) fn lat_server(
    io: &mut dyn FrameIo,
    ctrl: &mut Control,
    peer: SocketAddr,
    size: usize,
) -> Result<Report> {
    let to = TxMeta::to(peer, SRC_PORT);
    let mut echoed = 0u64;
    let mut first: Option<Instant> = None;
    let mut pending: Vec<u32> = Vec::with_capacity(64);
    let mut last_ctrl_check = Instant::now();
    loop {
        io.recv(64, &mut |_, packet| {
            if let Some(psn) = psn_of(packet) {
                pending.push(psn);
            }
        })?;
        for psn in pending.drain(..) {
            send_packet(io, &to, psn, size)?;
            first.get_or_insert_with(Instant::now);
            echoed += 1;
        }
        io.flush()?;
        if last_ctrl_check.elapsed() > Duration::from_millis(5) {
            last_ctrl_check = Instant::now();
            if let Some(end) = ctrl.try_recv()? {
                let sent: u64 = end.parse("sent")?;
                ctrl.send(&Message::new("RESULT").with("received", echoed))?;
                let mut r = report(io, "raw-lat", size);
                r.iters = echoed;
                r.sent = sent;
                r.elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
                return Ok(r);
            }
        }
    }
}

/// Client side of `raw-bw`: stream frames as fast as the backend takes them.
pub(super) fn bw_client(
    io: &mut dyn FrameIo,
    ctrl: &mut Control,
    peer: SocketAddr,
    size: usize,
    limit: Limit,
) -> Result<Report> {
    let to = TxMeta::to(peer, SRC_PORT);
    let start = Instant::now();
    let mut sent = 0u64;
    while !limit.done(sent, start) {
        send_packet(io, &to, (sent & 0xff_ffff) as u32, size)?;
        sent += 1;
    }
    // Let the last frames leave before saying we are done.
    for _ in 0..50 {
        io.flush()?;
        std::thread::sleep(Duration::from_micros(200));
    }
    ctrl.send(&Message::new("END").with("sent", sent))?;
    let result = ctrl.recv()?;
    let mut r = report(io, "raw-bw", size);
    r.iters = result.parse("received")?;
    r.sent = sent;
    r.elapsed = Duration::from_nanos(result.parse("elapsed_ns")?);
    Ok(r)
}

/// Server side of `raw-bw`: count what arrives, from the first frame to the last.
pub(super) fn bw_server(io: &mut dyn FrameIo, ctrl: &mut Control, size: usize) -> Result<Report> {
    let counted = count_until_end(ctrl, || {
        let mut n = 0u64;
        io.recv(256, &mut |_, packet| {
            if psn_of(packet).is_some() {
                n += 1;
            }
        })?;
        Ok(n)
    })?;
    let mut r = report(io, "raw-bw", size);
    r.iters = counted.received;
    r.sent = counted.sent;
    r.elapsed = counted.elapsed;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_packets_parse_as_ud_sends_with_their_psn() {
        let mut buf = [0u8; 256];
        for size in [0, 1, 3, 4, 64, 200] {
            let len = write_packet(&mut buf, 0xabcdef, size);
            assert_eq!(len % 4, 0);
            let (repr, payload) = wire::TransportRepr::parse(&buf[..len]).unwrap();
            assert_eq!(repr.bth.psn.value(), 0xabcdef);
            assert_eq!(payload.len(), size);
            assert_eq!(repr.deth.unwrap().qkey, Qkey::new(RAW_QKEY));
            assert_eq!(psn_of(&buf[..len]), Some(0xabcdef));
        }
        assert_eq!(psn_of(&[0u8; 4]), None);
    }
}
