//! A peer that breaks the stream protocol ends its connection, and nothing else: a raw peer
//! speaks the connection manager and rsocket's connection data, then writes into an
//! rsocket's QP an immediate rsocket reserves, data beyond the ring space granted, an SGE
//! no ring can hold, an SGE over one still in use, or bytes outside the receive ring. Each
//! time the rsocket's reader gets ECONNRESET, the peer hears DISCONNECTED, the protocol
//! errors counted grow by one (the write outside the ring is refused by the QP, whose
//! receive then completes in error), and the service thread does not panic. On the
//! simulated network.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xrdma_rsocket::proto::msg::{CONN_FLAG_NET, ConnData, Msg, Op, RS_SGE_LEN, RsSge, SgeOrder};
use xrdma_rsocket::{RsListener, RsStream, stats};
use xrdma_verbs::cm::{CmId, ConnParam, Event, EventChannel, EventKind, EventParam, PortSpace};
use xrdma_verbs::verbs::*;

mod common;

use common::{at, hosts};

/// The tests run one at a time, so that each sees only its own protocol error counted.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long a wait for the outcome may take before the test fails: a guard against a hang,
/// not a timing bound.
const WAIT: Duration = Duration::from_secs(30);

/// The raw peer's registered memory: its target table (two SGEs), a scratch area for what
/// it writes, and its receive ring.
const TABLE: usize = 0;
const SCRATCH: usize = 2 * RS_SGE_LEN;
const RING: usize = 4 * RS_SGE_LEN;
const RING_LEN: usize = 8192;

/// A peer with a bare RC QP, connected to an rsocket through the CM. Field order is drop
/// order: the QP before the memory it names.
struct RawPeer {
    id: CmId,
    ch: EventChannel,
    qp: QueuePair,
    cq: Cq,
    mr: Mr,
    mem: Vec<u8>,
    /// The rsocket's connection data: its target table and the first half of its ring.
    theirs: ConnData,
}

fn next_event(ch: &EventChannel) -> Event {
    let mut p = libc::pollfd {
        fd: ch.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    let n = unsafe { libc::poll(&mut p, 1, WAIT.as_millis() as i32) };
    assert_eq!(n, 1, "no CM event within {WAIT:?}");
    ch.get_event().unwrap()
}

fn expect(ch: &EventChannel, kind: EventKind) -> Event {
    let ev = next_event(ch);
    assert_eq!(ev.kind, kind, "status {}", ev.status);
    ev
}

impl RawPeer {
    /// Connects to the rsocket listening on host 2 at `port`, from host 1.
    fn connect(port: u16) -> RawPeer {
        let (a, b) = hosts();
        let ch = EventChannel::new().unwrap();
        let id = CmId::new(&ch, PortSpace::Tcp);
        id.resolve_addr(Some(at(a, 0)), at(b, port)).unwrap();
        expect(&ch, EventKind::AddrResolved);
        id.resolve_route().unwrap();
        expect(&ch, EventKind::RouteResolved);
        let ctx = id.device().unwrap().context().clone();
        let pd = id.default_pd().unwrap();
        let cq = ctx.create_cq(64, None).unwrap();
        let qp = id.create_qp(&QpInitAttr::rc(&cq, &cq, 16)).unwrap();
        let mut mem = vec![0u8; RING + RING_LEN];
        let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE;
        // SAFETY: `mem` outlives `mr`: both live in the RawPeer, `mr` dropped first.
        let mr = unsafe { pd.reg_mr(mem.as_mut_ptr(), mem.len(), access) }.unwrap();
        // Receives for the rsocket's credit updates (their data lands by RDMA WRITE).
        for _ in 0..16 {
            // SAFETY: no memory is named.
            unsafe {
                qp.post_recv(&RecvWr {
                    wr_id: 0,
                    sg_list: &[],
                })
            }
            .unwrap();
        }
        let base = mem.as_ptr() as u64;
        let ours = ConnData {
            flags: if SgeOrder::HOST == SgeOrder::Big {
                CONN_FLAG_NET
            } else {
                0
            },
            credits: 16,
            target_iomap_size: 0,
            target_sgl: RsSge {
                addr: base + TABLE as u64,
                key: mr.rkey().0,
                length: 2,
            },
            data_buf: RsSge {
                addr: base + RING as u64,
                key: mr.rkey().0,
                length: RING_LEN as u32 / 2,
            },
        };
        id.connect(&ConnParam {
            private_data: ours.to_bytes().to_vec(),
            responder_resources: 1,
            initiator_depth: 1,
            flow_control: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            ..ConnParam::default()
        })
        .unwrap();
        let ev = expect(&ch, EventKind::Established);
        let EventParam::Conn(p) = &ev.param else {
            panic!("ESTABLISHED without connection parameters")
        };
        let theirs = ConnData::parse(&p.private_data).unwrap();
        RawPeer {
            id,
            ch,
            qp,
            cq,
            mr,
            mem,
            theirs,
        }
    }

    /// An RDMA WRITE WITH IMMEDIATE of `bytes` (copied to the scratch area first; at most
    /// its size) to `addr` under `key` in the rsocket's memory, with `msg` as immediate.
    fn write(&mut self, msg: Msg, bytes: &[u8], addr: u64, key: u32) {
        self.mem[SCRATCH..SCRATCH + bytes.len()].copy_from_slice(bytes);
        let sge = [Sge {
            addr: self.mem.as_ptr() as u64 + SCRATCH as u64,
            length: bytes.len() as u32,
            lkey: self.mr.lkey(),
        }];
        let wr = SendWr {
            wr_id: 1,
            opcode: SendOpcode::RdmaWriteWithImm,
            send_flags: SendFlags::SIGNALED,
            sg_list: if bytes.is_empty() { &[] } else { &sge },
            imm_data: msg.0,
            ud: None,
            rdma: Some((addr, Rkey(key))),
            atomic: None,
        };
        // SAFETY: the scratch area is registered and lives in `self` until the QP is gone.
        unsafe { self.qp.post_send(&wr) }.unwrap();
        // Done (well or not) before the scratch area is used again. Receives (wr_id 0) are
        // the rsocket's credit updates.
        let deadline = Instant::now() + WAIT;
        let mut wc = [WorkCompletion::default(); 1];
        while !(self.cq.poll(&mut wc) == 1 && wc[0].wr_id == 1) {
            assert!(Instant::now() < deadline, "the write did not complete");
        }
    }

    /// A message with no data, to the start of the rsocket's ring.
    fn say(&mut self, msg: Msg) {
        let ring = self.theirs.data_buf;
        self.write(msg, &[], ring.addr, ring.key);
    }

    /// Offers `sge` in entry `entry` of the rsocket's target table, with credits, as a
    /// credit update does.
    fn offer(&mut self, entry: u64, sge: RsSge) {
        let table = self.theirs.target_sgl;
        let bytes = sge.to_bytes(self.theirs.sge_order());
        let addr = table.addr + entry * RS_SGE_LEN as u64;
        self.write(Msg::new(Op::Sgl, 16), &bytes, addr, table.key);
    }

    /// An SGE of our ring, `len` bytes.
    fn ring_sge(&self, len: u32) -> RsSge {
        RsSge {
            addr: self.mem.as_ptr() as u64 + RING as u64,
            key: self.mr.rkey().0,
            length: len,
        }
    }
}

/// Connects a raw peer to an rsocket listening at `port`, has `misbehave` break the
/// protocol, and checks the connection ends as it should, the protocol errors counted
/// growing by `counted`.
fn ends_the_connection(port: u16, counted: u64, misbehave: impl FnOnce(&mut RawPeer)) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_, b) = hosts();
    let listener = RsListener::bind(at(b, port)).unwrap();
    let mut peer = RawPeer::connect(port);
    let (server, _): (RsStream, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    let before = stats();
    misbehave(&mut peer);
    let e = (&server).read(&mut [0u8; 64]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET), "the reader: {e}");
    let after = stats();
    assert_eq!(
        after.protocol_errors - before.protocol_errors,
        counted,
        "protocol errors counted"
    );
    // The peer hears of it.
    loop {
        if next_event(&peer.ch).kind == EventKind::Disconnected {
            break;
        }
    }
    assert_eq!(after.service_panics, 0, "the service thread panicked");
    peer.id.disconnect().ok();
    drop(server);
    peer.id.destroy();
}

#[test]
fn a_reserved_operation_ends_the_connection() {
    ends_the_connection(7401, 1, |p| p.say(Msg::new(Op::Reserved(1), 0)));
}

#[test]
fn data_beyond_the_ring_space_granted_ends_the_connection() {
    ends_the_connection(7402, 1, |p| {
        // More than the whole ring, both halves granted.
        let claimed = 2 * p.theirs.data_buf.length + 1;
        p.say(Msg::new(Op::Data, claimed));
    });
}

#[test]
fn an_sge_no_ring_can_hold_ends_the_connection() {
    ends_the_connection(7403, 1, |p| {
        let huge = p.ring_sge(1 << 31);
        p.offer(1, huge);
    });
}

#[test]
fn an_sge_offered_over_one_in_use_ends_the_connection() {
    ends_the_connection(7404, 1, |p| {
        // Entry 1 is free, so the first offer is good; entry 0 still holds the ring the
        // connection data gave, unused, so the second is not.
        let half = p.ring_sge(RING_LEN as u32 / 2);
        p.offer(1, half);
        p.offer(0, half);
    });
}

#[test]
fn bytes_outside_the_receive_ring_end_the_connection() {
    ends_the_connection(7405, 1, |p| {
        let ring = p.theirs.data_buf;
        // Just past the ring's end: the rsocket's rkey does not reach there.
        let past = ring.addr + 2 * u64::from(ring.length);
        p.write(Msg::new(Op::Data, 16), &[0xee; 16], past, ring.key);
    });
}
