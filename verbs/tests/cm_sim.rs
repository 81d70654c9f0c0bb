//! The connection manager between two contexts of a simulated network: RC connections set
//! up by the CM carry data and come down on both sides; rejections and unknown services
//! end in REJECTED with the right reason; UD ids resolve the peer's QP by SIDR.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use xrdma_verbs::cm::*;
use xrdma_verbs::net::sim::{self, SimConfig, SimNetwork};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::Qkey;

/// Two devices on their own simulated network, at 198.18.0.`n` and `n + 1`.
fn devices(n: u8) -> (Context, Context) {
    let (a, b, _) = devices_on_net(n);
    (a, b)
}

/// [`devices`], and their network, whose virtual time the test moves.
fn devices_on_net(n: u8) -> (Context, Context, SimNetwork) {
    let net = SimNetwork::new(SimConfig {
        delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let open = |n: u8| {
        let io = net.endpoint(sim::host_addr(n)).unwrap();
        Context::new(Box::new(io), ContextConfig::seeded(u64::from(n))).unwrap()
    };
    let (a, b) = (open(n), open(n + 1));
    add_device(&a).unwrap();
    add_device(&b).unwrap();
    (a, b, net)
}

fn addr(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(sim::host_addr(n).ip(), port)
}

/// The next event on `ch`, waiting for its descriptor to poll readable (10 s at most).
fn next_event(ch: &EventChannel) -> Event {
    let mut p = libc::pollfd {
        fd: ch.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, 10_000) };
    assert_eq!(n, 1, "no event within 10 s");
    ch.get_event().unwrap()
}

fn expect(ch: &EventChannel, kind: EventKind) -> Event {
    let ev = next_event(ch);
    assert_eq!(ev.kind, kind, "status {}", ev.status);
    ev
}

/// A client id on `ch` with its route resolved from 198.18.0.`from` to `to`.
fn resolved(ch: &EventChannel, ps: PortSpace, from: u8, to: SocketAddr) -> CmId {
    let id = CmId::new(ch, ps);
    id.resolve_addr(Some(addr(from, 0)), to).unwrap();
    expect(ch, EventKind::AddrResolved);
    id.resolve_route().unwrap();
    expect(ch, EventKind::RouteResolved);
    id
}

fn listener(ch: &EventChannel, ps: PortSpace, at: SocketAddr) -> CmId {
    let id = CmId::new(ch, ps);
    id.bind_addr(at).unwrap();
    id.listen(4).unwrap();
    id
}

struct Rc {
    cq: Cq,
    qp: QueuePair,
    buf: Vec<u8>,
    mr: Mr,
}

fn rc_qp(id: &CmId) -> Rc {
    let ctx = id.device().unwrap().context().clone();
    let pd = id.default_pd().unwrap();
    let cq = ctx.create_cq(16, None).unwrap();
    let qp = pd.create_qp(&QpInitAttr::rc(&cq, &cq, 8)).unwrap();
    id.attach_qp(&qp).unwrap();
    let mut buf = vec![0u8; 64];
    // SAFETY: `buf` outlives `mr`: both live in the returned struct, `mr` dropped first.
    let mr = unsafe { pd.reg_mr(buf.as_mut_ptr(), buf.len(), AccessFlags::LOCAL_WRITE) }.unwrap();
    Rc { cq, qp, buf, mr }
}

fn poll_one(cq: &Cq) -> WorkCompletion {
    let mut wc = [WorkCompletion::default(); 1];
    let start = std::time::Instant::now();
    while cq.poll(&mut wc) == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no completion");
    }
    wc[0]
}

#[test]
fn rc_connection_carries_data_and_disconnects_on_both_sides() {
    let (_a, _b) = devices(10);
    let (sch, cch) = (EventChannel::new().unwrap(), EventChannel::new().unwrap());
    let lid = listener(&sch, PortSpace::Tcp, addr(11, 7471));
    let client = resolved(&cch, PortSpace::Tcp, 10, addr(11, 7471));
    let c = rc_qp(&client);
    client
        .connect(&ConnParam {
            private_data: b"hello".to_vec(),
            responder_resources: 1,
            initiator_depth: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            ..ConnParam::default()
        })
        .unwrap();

    let req = expect(&sch, EventKind::ConnectRequest);
    assert!(req.listen_id.as_ref().unwrap().same(&lid));
    let EventParam::Conn(p) = &req.param else {
        panic!("no conn param")
    };
    assert_eq!(&p.private_data[..5], b"hello");
    assert_eq!(
        p.private_data.len(),
        56,
        "REQ private data past the rdma_cm header"
    );
    assert_eq!(p.qp_num, c.qp.qpn().value());
    let server = req.id;
    assert_eq!(server.peer_addr(), client.local_addr());
    assert_eq!(server.local_addr(), Some(addr(11, 7471)));
    let s = rc_qp(&server);
    let sge = Sge {
        addr: s.buf.as_ptr() as u64,
        length: 64,
        lkey: s.mr.lkey(),
    };
    // SAFETY: the buffer and its region live until the completion is polled below.
    unsafe {
        s.qp.post_recv(&RecvWr {
            wr_id: 5,
            sg_list: &[sge],
        })
    }
    .unwrap();
    server
        .accept(Some(&ConnParam {
            private_data: b"welcome".to_vec(),
            responder_resources: 1,
            initiator_depth: 1,
            rnr_retry_count: 7,
            ..ConnParam::default()
        }))
        .unwrap();

    let est = expect(&cch, EventKind::Established);
    let EventParam::Conn(p) = &est.param else {
        panic!("no conn param")
    };
    assert_eq!(&p.private_data[..7], b"welcome");
    assert_eq!(p.qp_num, s.qp.qpn().value());
    expect(&sch, EventKind::Established);
    assert_eq!(c.qp.query().qp_state, QpState::Rts);
    assert_eq!(s.qp.query().qp_state, QpState::Rts);

    let msg = *b"over the CM";
    let mut c = c;
    c.buf[..msg.len()].copy_from_slice(&msg);
    let wr = SendWr {
        wr_id: 9,
        opcode: SendOpcode::Send,
        send_flags: SendFlags::SIGNALED,
        sg_list: &[Sge {
            addr: c.buf.as_ptr() as u64,
            length: msg.len() as u32,
            lkey: c.mr.lkey(),
        }],
        imm_data: 0,
        ud: None,
        rdma: None,
        atomic: None,
    };
    // SAFETY: the buffer and its region live until the completion is polled below.
    unsafe { c.qp.post_send(&wr) }.unwrap();
    assert_eq!(poll_one(&c.cq).status, WcStatus::Success);
    let wc = poll_one(&s.cq);
    assert_eq!((wc.status, wc.wr_id), (WcStatus::Success, 5));
    assert_eq!(&s.buf[..msg.len()], &msg);

    client.disconnect().unwrap();
    assert_eq!(c.qp.query().qp_state, QpState::Err);
    expect(&sch, EventKind::Disconnected);
    // As with the kernel's CM, the peer's DREQ leaves the QP alone (what is in flight may
    // still be acknowledged); the application's own rdma_disconnect stops it.
    assert_eq!(s.qp.query().qp_state, QpState::Rts);
    server.disconnect().unwrap();
    assert_eq!(s.qp.query().qp_state, QpState::Err);
    expect(&cch, EventKind::Disconnected);
    for id in [&client, &server, &lid] {
        id.destroy();
    }
}

#[test]
fn rejection_reaches_the_client_with_reason_28_and_private_data() {
    let (_a, _b) = devices(20);
    let (sch, cch) = (EventChannel::new().unwrap(), EventChannel::new().unwrap());
    let lid = listener(&sch, PortSpace::Tcp, addr(21, 9000));
    let client = resolved(&cch, PortSpace::Tcp, 20, addr(21, 9000));
    client
        .connect(&ConnParam {
            qp_num: 0x42,
            ..ConnParam::default()
        })
        .unwrap();
    let req = expect(&sch, EventKind::ConnectRequest);
    req.id.reject(b"not today").unwrap();
    let rej = expect(&cch, EventKind::Rejected);
    assert_eq!(rej.status, 28);
    let EventParam::Conn(p) = &rej.param else {
        panic!("no conn param")
    };
    assert_eq!(&p.private_data[..9], b"not today");
    assert_eq!(p.private_data.len(), 148);
    for id in [&client, &req.id, &lid] {
        id.destroy();
    }
}

#[test]
fn nobody_listening_is_rejected_with_reason_8() {
    let (_a, _b, net) = devices_on_net(30);
    let cch = EventChannel::new().unwrap();
    let client = resolved(&cch, PortSpace::Tcp, 30, addr(31, 9999));
    client
        .connect(&ConnParam {
            qp_num: 0x42,
            ..ConnParam::default()
        })
        .unwrap();
    // The server's CM waits a moment for a listener before it refuses: move virtual
    // time on until the refusal comes.
    let mut p = libc::pollfd {
        fd: cch.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    for _ in 0..200 {
        net.advance(Duration::from_millis(50));
        // SAFETY: one live pollfd for the duration of the call.
        if unsafe { libc::poll(&mut p, 1, 50) } == 1 {
            break;
        }
    }
    assert_eq!(expect(&cch, EventKind::Rejected).status, 8);
    client.destroy();
}

#[test]
fn ud_ids_learn_the_peers_qp_and_qkey_by_sidr() {
    let (_a, _b) = devices(40);
    let (sch, cch) = (EventChannel::new().unwrap(), EventChannel::new().unwrap());
    let lid = listener(&sch, PortSpace::Udp, addr(41, 7174));
    let client = resolved(&cch, PortSpace::Udp, 40, addr(41, 7174));
    client
        .connect(&ConnParam {
            private_data: b"ud?".to_vec(),
            ..ConnParam::default()
        })
        .unwrap();
    let req = expect(&sch, EventKind::ConnectRequest);
    let EventParam::Ud(p) = &req.param else {
        panic!("no UD param")
    };
    assert_eq!(&p.private_data[..3], b"ud?");
    let server = req.id;
    let ctx = server.device().unwrap().context().clone();
    let cq = ctx.create_cq(4, None).unwrap();
    let qp = server.create_qp(&QpInitAttr::ud(&cq, &cq, 4)).unwrap();
    assert_eq!(qp.query().qp_state, QpState::Rts);
    server.accept(None).unwrap();
    let est = expect(&cch, EventKind::Established);
    let EventParam::Ud(p) = &est.param else {
        panic!("no UD param")
    };
    assert_eq!(p.qp_num, qp.qpn().value());
    assert_eq!(Qkey::new(p.qkey), Qkey::new(UDP_QKEY));
    assert_eq!(p.ah_attr.dgid, Gid::from_ip(addr(41, 0).ip()));
    for id in [&client, &server, &lid] {
        id.destroy();
    }
}
