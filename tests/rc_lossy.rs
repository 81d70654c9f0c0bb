//! RC over xdp between two hosts joined by a switch that drops 5 % of RoCEv2 packets at
//! random (both ways): a 1 GiB RDMA WRITE, a 1 GiB RDMA READ of it back and a 1 GiB stream
//! of SENDs arrive intact, and every request completes in order. Then the same on a
//! jumbo-frame link at path MTU 4096, where every full packet spans two UMEM frames.

use std::time::{Duration, Instant};

use xrdma_testnet::{Host, Loss, Topology};
use xrdma_verbs::net::FrameIo;
use xrdma_verbs::net::xdp::{XdpConfig, XdpIo};
use xrdma_verbs::verbs::*;

const GIB: usize = 1 << 30;
/// Each SEND of the stream (and the WRITE's pieces' alignment).
const CHUNK: usize = 1 << 20;
const DEPTH: u32 = 64;
/// Generous: at 5 % loss a GiB takes tens of seconds on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(600);

fn context(host: &Host) -> Context {
    let iface = host.iface().to_string();
    host.ns().run(move || {
        let io: Box<dyn FrameIo> = Box::new(XdpIo::open(&XdpConfig::new(iface)).expect("xdp"));
        Context::new(io, ContextConfig::default()).expect("context")
    })
}

/// One end: a QP, its CQ and a registered buffer. Field order is drop order.
struct End {
    qp: QueuePair,
    cq: Cq,
    mr: Mr,
    buf: Vec<u8>,
    ctx: Context,
}

fn end(host: &Host, len: usize) -> End {
    let ctx = context(host);
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(4 * DEPTH, None).unwrap();
    let qp = pd.create_qp(&QpInitAttr::rc(&cq, &cq, DEPTH)).unwrap();
    let mut buf = vec![0u8; len];
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ;
    let mr = unsafe { pd.reg_mr(buf.as_mut_ptr(), buf.len(), access) }.unwrap();
    End {
        qp,
        cq,
        mr,
        buf,
        ctx,
    }
}

fn connect(e: &End, peer: &End, path_mtu: Mtu) {
    e.qp.bring_up_rc(&RcPeer {
        ah: AhAttr::new(peer.ctx.gid(0).unwrap()),
        qpn: peer.qp.qpn().value(),
        psn: 0x00_1000,
        our_psn: 0x00_1000,
        path_mtu,
        access: AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ,
        rd_atomic: 1,
    })
    .unwrap();
}

/// Fills `buf` with a pattern that differs for every 8 bytes and for every `seed`.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// The first offset where `got` differs from `want`, if any.
fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.chunks(CHUNK)
        .zip(want.chunks(CHUNK))
        .position(|(g, w)| g != w)
        .map(|c| {
            c * CHUNK
                + got[c * CHUNK..]
                    .iter()
                    .zip(&want[c * CHUNK..])
                    .position(|(g, w)| g != w)
                    .unwrap_or(0)
        })
}

/// Polls `cq` for one completion, failing on an error status or at `deadline`.
fn next_completion(cq: &Cq, deadline: Instant, what: &str) -> WorkCompletion {
    let mut wc = [WorkCompletion::default(); 1];
    loop {
        if cq.poll(&mut wc) == 1 {
            assert_eq!(wc[0].status, WcStatus::Success, "{what}: {:?}", wc[0]);
            return wc[0];
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not done by the deadline"
        );
        std::hint::spin_loop();
    }
}

#[test]
fn a_gib_written_read_and_sent_arrives_intact_through_5_percent_loss() {
    let t = Topology::switched(2, Loss::udp_port(0.05, 4791))
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    through_loss(&t, Mtu::Mtu1024, GIB);
}

#[test]
fn jumbo_frames_at_path_mtu_4096_arrive_intact_through_5_percent_loss() {
    let t = Topology::builder()
        .mtu(9000)
        .switched(2, Loss::udp_port(0.05, 4791))
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    through_loss(&t, Mtu::Mtu4096, GIB / 4);
}

/// Writes `len` bytes from `t`'s first host to its second in one RDMA WRITE, reads them back
/// in one RDMA READ, then sends `len` bytes more as SENDs of `CHUNK`, over RC at `path_mtu`;
/// checks every byte and every completion.
fn through_loss(t: &Topology, path_mtu: Mtu, len: usize) {
    let (mut a, mut b) = (end(t.a(), len), end(t.b(), len));
    for (x, peer) in [(&a, &b), (&b, &a)] {
        assert_eq!(x.ctx.query_port(1).unwrap().active_mtu, path_mtu);
        connect(x, peer, path_mtu);
    }
    fill(&mut a.buf, 1);
    let deadline = Instant::now() + DEADLINE;

    // One RDMA WRITE of the whole GiB.
    let started = Instant::now();
    let wr = SendWr {
        wr_id: 1,
        opcode: SendOpcode::RdmaWrite,
        send_flags: SendFlags::SIGNALED,
        sg_list: &[Sge {
            addr: a.buf.as_ptr() as u64,
            length: len as u32,
            lkey: a.mr.lkey(),
        }],
        imm_data: 0,
        ud: None,
        rdma: Some((b.buf.as_ptr() as u64, b.mr.rkey())),
        atomic: None,
    };
    unsafe { a.qp.post_send(&wr) }.unwrap();
    let wc = next_completion(&a.cq, deadline, "the WRITE");
    assert_eq!((wc.wr_id, wc.byte_len as usize), (1, len));
    let write_time = started.elapsed();
    assert_eq!(first_difference(&b.buf, &a.buf), None, "the WRITE's bytes");

    // One RDMA READ of the whole GiB back.
    a.buf.fill(0);
    let started = Instant::now();
    let read = SendWr {
        wr_id: 2,
        opcode: SendOpcode::RdmaRead,
        ..wr
    };
    unsafe { a.qp.post_send(&read) }.unwrap();
    let wc = next_completion(&a.cq, deadline, "the READ");
    assert_eq!((wc.wr_id, wc.byte_len as usize), (2, len));
    let read_time = started.elapsed();
    assert_eq!(first_difference(&a.buf, &b.buf), None, "the READ's bytes");
    // A GiB of SENDs, CHUNK each, into receives posted as the stream goes.
    fill(&mut a.buf, 2);
    b.buf.fill(0);
    let chunks = (len / CHUNK) as u64;
    let sge = |e: &End, i: u64| Sge {
        addr: e.buf.as_ptr() as u64 + i * CHUNK as u64,
        length: CHUNK as u32,
        lkey: e.mr.lkey(),
    };
    let started = Instant::now();
    let (mut posted_recv, mut posted, mut sent, mut received) = (0u64, 0u64, 0u64, 0u64);
    let mut wc = [WorkCompletion::default(); 16];
    while received < chunks || sent < chunks {
        while posted_recv < chunks && posted_recv - received < u64::from(DEPTH) {
            let recv = RecvWr {
                wr_id: posted_recv,
                sg_list: &[sge(&b, posted_recv)],
            };
            unsafe { b.qp.post_recv(&recv) }.unwrap();
            posted_recv += 1;
        }
        while posted < chunks && posted - sent < u64::from(DEPTH) {
            let wr = SendWr {
                wr_id: posted,
                opcode: SendOpcode::Send,
                sg_list: &[sge(&a, posted)],
                rdma: None,
                ..wr
            };
            unsafe { a.qp.post_send(&wr) }.unwrap();
            posted += 1;
        }
        for (e, count, what) in [(&a, &mut sent, "send"), (&b, &mut received, "receive")] {
            let n = e.cq.poll(&mut wc);
            for w in &wc[..n] {
                assert_eq!(w.status, WcStatus::Success, "{what} {:?}", w);
                assert_eq!(w.wr_id, *count, "{what}s complete in order");
                assert_eq!(w.byte_len as usize, CHUNK);
                *count += 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "SEND stream: {sent} sent, {received} received of {chunks} by the deadline"
        );
    }
    let send_time = started.elapsed();
    assert_eq!(first_difference(&b.buf, &a.buf), None, "the SENDs' bytes");
    let dropped = t.drop_counter().unwrap();
    let gbps = |t: Duration| 8.0 * len as f64 / 1e9 / t.as_secs_f64();
    println!(
        "{} MiB at path MTU {}: WRITE in {write_time:.2?} ({:.2} Gb/s), READ in \
         {read_time:.2?} ({:.2} Gb/s), SENDs in {send_time:.2?} ({:.2} Gb/s); the switch \
         dropped {dropped} packets",
        len >> 20,
        path_mtu.bytes(),
        gbps(write_time),
        gbps(read_time),
        gbps(send_time),
    );
    assert!(
        dropped > 0,
        "the switch dropped nothing: the test tested no loss"
    );
}
