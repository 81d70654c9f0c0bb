//! The connection manager between two namespaced hosts: `xrdma perf cm-connect` over `xdp`,
//! over `udp` and across the two; and the CM's MADs on the wire, captured with tshark and
//! decoded by Wireshark's IB CM dissector with the fields the ends used.
//!
//! Where to capture: tshark on an interface an `xdp` endpoint uses sees none of its frames,
//! either way (on veth the XDP program takes received frames before the capture taps, and
//! AF_XDP transmits bypass them). So the captures here run on an interface no XDP program
//! is attached to: the bridge port of the `xdp` host in a switched topology (both ends
//! `xdp`), or the interface of the host whose program uses the `udp` backend.
//!
//! Needs root (namespaces, AF_XDP) and tshark; fails saying so without them.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use xrdma::cm::{CmId, ConnParam, Event, EventChannel, EventKind, EventParam, PortSpace};
use xrdma::perf::oob::{Control, Message};
use xrdma::verbs::net::{self, BackendConfig, xdp::XdpConfig};
use xrdma::verbs::verbs::{Context, ContextConfig, QpInitAttr};
use xrdma_testnet::{Host, Loss, Netns, Topology, wait_or_kill};

const XRDMA: &str = env!("CARGO_BIN_EXE_xrdma");
/// The CM port `xrdma perf cm-connect` uses by default.
const CM_PORT: u16 = 7471;
/// Service IDs of the TCP port space (`RDMA_IB_IP_PS_TCP`).
const PS_TCP_SID: u64 = 0x0000_0000_0106_0000;
const WAIT: Duration = Duration::from_secs(60);

/// A JSON number field of the last output line.
fn field(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} missing from {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// `xrdma perf cm-connect --server` on `host`, started.
fn server(host: &Host, backend: &str) -> Child {
    host.ns()
        .command(XRDMA)
        .args(["perf", "cm-connect", "--server", "--backend", backend])
        .args(["--iface", host.iface(), "--timeout", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the cm-connect server")
}

/// `xrdma perf cm-connect --connect` on `host` to `to`, with more arguments, run to its end.
fn client(host: &Host, backend: &str, to: &Host, more: &[&str]) -> Output {
    let child = host
        .ns()
        .command(XRDMA)
        .args(["perf", "cm-connect", "--connect", &to.ipv4().to_string()])
        .args([
            "--backend",
            backend,
            "--iface",
            host.iface(),
            "--timeout",
            "20",
        ])
        .args(more)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the cm-connect client");
    wait_or_kill(child, WAIT, "the cm-connect client")
}

/// Both ends' output, after checking that both succeeded.
fn both_succeeded(server: Child, client: Output) -> (String, String) {
    let server = wait_or_kill(server, WAIT, "the cm-connect server");
    assert!(
        server.status.success() && client.status.success(),
        "server {}: {}\nclient {}: {}",
        server.status,
        String::from_utf8_lossy(&server.stderr),
        client.status,
        String::from_utf8_lossy(&client.stderr)
    );
    let stdout = String::from_utf8(client.stdout).unwrap();
    let last = stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with('{') && last.ends_with('}'),
        "last line is not JSON: {stdout}"
    );
    (last, stdout)
}

#[test]
fn cm_connect_runs_between_two_hosts_over_xdp_udp_and_both() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    const CONNECTIONS: u64 = 50;
    for (server_backend, client_backend) in [
        ("xdp", "xdp"),
        ("udp", "udp"),
        ("udp", "xdp"),
        ("xdp", "udp"),
    ] {
        let s = server(a, server_backend);
        let c = client(
            b,
            client_backend,
            a,
            &["--iters", &CONNECTIONS.to_string(), "--json"],
        );
        let (json, _) = both_succeeded(s, c);
        let run = format!("server {server_backend}, client {client_backend}: {json}");
        assert!(json.contains("\"test\":\"cm-connect\""), "{run}");
        assert!(
            json.contains(&format!("\"backend\":\"{client_backend}\"")),
            "{run}"
        );
        assert_eq!(field(&json, "iters") as u64, CONNECTIONS, "{run}");
        assert_eq!(field(&json, "sent") as u64, CONNECTIONS, "{run}");
        assert!(field(&json, "msg_rate") > 0.0, "{run}");
        let (p50, p99) = (field(&json, "lat_us_p50"), field(&json, "lat_us_p99"));
        assert!(p50 > 0.0 && p50 <= p99, "{run}");
        // A cycle holds its connect, and a disconnect round trip more.
        let (c50, c99) = (field(&json, "cycle_us_p50"), field(&json, "cycle_us_p99"));
        assert!(c50 > p50 && c50 <= c99, "{run}");
        assert!(
            field(&json, "cycle_us_max") >= field(&json, "lat_us_max"),
            "{run}"
        );
    }
}

/// tshark capturing RoCEv2 (and ICMP, to know when it is live) into a file.
struct Capture {
    tshark: Child,
    pcap: PathBuf,
    /// Summary lines tshark prints as it captures.
    lines: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts tshark on `iface` in `ns`, and returns once it captures: when a ping from
    /// `from` to `to` shows up.
    fn start(ns: &Netns, iface: &str, name: &str, from: &Host, to: &Host) -> Capture {
        assert!(
            Command::new("tshark")
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success()),
            "tshark is needed to decode captured frames: apt-get install tshark (scripts/setup.sh does)"
        );
        let pcap =
            std::env::temp_dir().join(format!("xrdma-cm-{name}-{}.pcapng", std::process::id()));
        let _ = std::fs::remove_file(&pcap);
        let mut tshark = ns
            .command("tshark")
            .args(["-i", iface, "-f", "udp port 4791 or icmp", "-l", "-P", "-w"])
            .arg(&pcap)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tshark");
        let stdout = BufReader::new(tshark.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut capture = Capture {
            tshark,
            pcap,
            lines,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "tshark on {iface} caught no ping within 20 s"
            );
            let _ = from
                .ns()
                .command("ping")
                .args(["-c", "1", "-W", "1", &to.ipv4().to_string()])
                .output();
            match capture.lines.recv_timeout(Duration::from_millis(300)) {
                Ok(line) if line.contains("ICMP") => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let out = capture.tshark.try_wait();
                    panic!("tshark on {iface} stopped: {out:?}");
                }
            }
        }
        capture
    }

    /// Stops tshark and returns the CM messages it captured, one row of `fields` each
    /// (separated by `|`), in capture order, with the frame's Info column first.
    fn cm_rows(self, fields: &[&str]) -> Vec<Vec<String>> {
        // Let the last frames reach the file, then stop tshark as Ctrl-C would, so that it
        // finishes the file.
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(self.tshark.id() as libc::pid_t, libc::SIGINT) };
        let out = wait_or_kill(self.tshark, Duration::from_secs(20), "tshark");
        assert!(out.status.success(), "tshark: {}", out.status);
        let mut read = Command::new("tshark");
        read.arg("-r")
            .arg(&self.pcap)
            .args(["-Y", "infiniband.mad.mgmtclass == 0x07"])
            .args(["-T", "fields", "-E", "separator=|", "-e", "_ws.col.Info"]);
        for f in fields {
            read.args(["-e", f]);
        }
        let out = read.output().expect("running tshark -r");
        let _ = std::fs::remove_file(&self.pcap);
        assert!(
            out.status.success(),
            "tshark -r: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect()
    }
}

/// The one message of `info` among `rows` (retransmissions, identical, are allowed).
fn one<'a>(rows: &'a [Vec<String>], info: &str) -> &'a [String] {
    let of: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == info).collect();
    assert!(!of.is_empty(), "no {info} among {rows:#?}");
    assert!(
        of.iter().all(|r| *r == of[0]),
        "different {info} messages: {of:#?}"
    );
    of[0]
}

/// What the in-process client of [`connect_once`] saw of its connection.
#[derive(Debug)]
struct Seen {
    /// Our QP, and the PSN it receives from (the REQ's Starting PSN).
    qpn: u32,
    rq_psn: u32,
    /// The PSN our QP sends from (the REP's Starting PSN).
    sq_psn: u32,
    /// The server's QP, as ESTABLISHED reported it and our QP was set up with.
    peer_qpn: u32,
    /// Our source port (in the rdma_cm header).
    port: u16,
}

/// The next event on `ch`, waiting at most 10 s.
fn next_event(ch: &EventChannel, kind: EventKind) -> Event {
    let mut p = libc::pollfd {
        fd: ch.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, 10_000) };
    assert_eq!(n, 1, "no {} within 10 s", kind.name());
    let ev = ch.get_event().unwrap();
    assert_eq!(ev.kind, kind, "status {}", ev.status);
    ev
}

/// One connection to a `cm-connect` server, from `host` through the `xrdma::cm` API, set
/// up, checked and torn down the way the perf client does, framed by the server's control
/// protocol (HELLO, OK, END, RESULT).
fn connect_once(host: &Host, backend: BackendConfig, server: IpAddr) -> Seen {
    let me = IpAddr::V4(host.ipv4());
    host.ns().run(move || {
        let io = net::open(&backend).unwrap();
        let ctx = Context::new(io, ContextConfig::default()).unwrap();
        xrdma::cm::add_device(&ctx).unwrap();
        let mut ctrl = Control::connect(SocketAddr::new(server, 18515), WAIT).unwrap();
        ctrl.send(
            &Message::new("HELLO")
                .with("test", "cm-connect")
                .with("size", 0)
                .with("roce", SocketAddr::new(me, 4791)),
        )
        .unwrap();
        assert_eq!(ctrl.recv().unwrap().verb, "OK");

        let ch = EventChannel::new().unwrap();
        let id = CmId::new(&ch, PortSpace::Tcp);
        id.resolve_addr(None, SocketAddr::new(server, CM_PORT))
            .unwrap();
        next_event(&ch, EventKind::AddrResolved);
        id.resolve_route().unwrap();
        next_event(&ch, EventKind::RouteResolved);
        let pd = id.default_pd().unwrap();
        let cq = ctx.create_cq(32, None).unwrap();
        let qp = pd.create_qp(&QpInitAttr::rc(&cq, &cq, 16)).unwrap();
        id.attach_qp(&qp).unwrap();
        id.connect(&ConnParam {
            responder_resources: 1,
            initiator_depth: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            ..ConnParam::default()
        })
        .unwrap();
        let est = next_event(&ch, EventKind::Established);
        let EventParam::Conn(p) = &est.param else {
            panic!("ESTABLISHED without connection parameters")
        };
        let attr = qp.query();
        assert_eq!(attr.dest_qp_num, p.qp_num, "the QP talks to the server's");
        let seen = Seen {
            qpn: qp.qpn().value(),
            rq_psn: attr.rq_psn,
            sq_psn: attr.sq_psn,
            peer_qpn: p.qp_num,
            port: id.local_addr().unwrap().port(),
        };
        id.disconnect().unwrap();
        next_event(&ch, EventKind::Disconnected);
        id.destroy();
        drop(qp);
        drop(cq);

        ctrl.send(&Message::new("END").with("sent", 1)).unwrap();
        let result = ctrl.recv().unwrap();
        assert_eq!(result.parse::<u64>("received").unwrap(), 1, "{result:?}");
        xrdma::cm::remove_device(&ctx);
        seen
    })
}

#[test]
fn cm_messages_of_a_connection_decode_in_tshark_with_the_fields_used() {
    let t = Topology::switched(2, Loss::NONE)
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    // Both ends on xdp; the capture on A's bridge port, which no XDP program touches.
    let capture = Capture::start(t.switch().unwrap(), t.switch_port(0).unwrap(), "conn", b, a);
    let s = server(a, "xdp");
    let seen = connect_once(
        b,
        BackendConfig::Xdp(XdpConfig::new(b.iface())),
        IpAddr::V4(a.ipv4()),
    );
    let s = wait_or_kill(s, WAIT, "the cm-connect server");
    assert!(
        s.status.success(),
        "server {}: {}",
        s.status,
        String::from_utf8_lossy(&s.stderr)
    );

    let rows = capture.cm_rows(&[
        "ip.src",
        "infiniband.bth.destqp",
        "infiniband.deth.q_key",
        "infiniband.deth.srcqp",
        "infiniband.cm.req",
        "infiniband.cm.req.serviceid",
        "infiniband.cm.req.localqpn",
        "infiniband.cm.req.startpsn",
        "infiniband.cm.req.ip_cm.sport",
        "infiniband.cm.req.ip_cm.sip4",
        "infiniband.cm.req.ip_cm.dip4",
        "infiniband.cm.rep",
        "infiniband.cm.rep.remotecommid",
        "infiniband.cm.rep.localqpn",
        "infiniband.cm.rep.startpsn",
        "infiniband.cm.rtu.localcommid",
        "infiniband.cm.rtu.remotecommid",
        "infiniband.cm.dreq.localcommid",
        "infiniband.cm.dreq.remotecommid",
        "infiniband.cm.req.remoteqpneecn",
        "infiniband.cm.drsp.localcommid",
        "infiniband.cm.drsp.remotecommid",
    ]);
    // Every message: a UD SEND from QP1 to QP1 with the GSI Q_Key.
    for r in &rows {
        assert_eq!(
            (&r[2][..], &r[3][..], &r[4][..]),
            ("0x000001", "0x0000000080010000", "0x00000001"),
            "{r:?}"
        );
    }
    let (client_ip, server_ip) = (b.ipv4().to_string(), a.ipv4().to_string());
    let hex24 = |v: u32| format!("0x{v:06x}");

    let req = one(&rows, "CM: ConnectRequest");
    assert_eq!(req[1], client_ip, "{req:?}");
    assert_eq!(
        req[6],
        format!("0x{:016x}", PS_TCP_SID | u64::from(CM_PORT)),
        "{req:?}"
    );
    assert_eq!(req[7], hex24(seen.qpn), "REQ local QPN: {req:?} {seen:?}");
    assert_eq!(
        req[8],
        hex24(seen.rq_psn),
        "REQ starting PSN: {req:?} {seen:?}"
    );
    assert_eq!(req[9], format!("0x{:04x}", seen.port), "{req:?} {seen:?}");
    assert_eq!(
        (&req[10][..], &req[11][..]),
        (&client_ip[..], &server_ip[..])
    );
    let client_comm = &req[5];

    let rep = one(&rows, "CM: ConnectReply");
    assert_eq!(rep[1], server_ip, "{rep:?}");
    let server_comm = &rep[12];
    assert_eq!(&rep[13], client_comm, "{rep:?}");
    assert_eq!(
        rep[14],
        hex24(seen.peer_qpn),
        "REP local QPN: {rep:?} {seen:?}"
    );
    assert_eq!(
        rep[15],
        hex24(seen.sq_psn),
        "REP starting PSN: {rep:?} {seen:?}"
    );

    let rtu = one(&rows, "CM: ReadyToUse");
    assert_eq!(rtu[1], client_ip, "{rtu:?}");
    assert_eq!((&rtu[16], &rtu[17]), (client_comm, server_comm), "{rtu:?}");

    let dreq = one(&rows, "CM: DisconnectRequest");
    assert_eq!(dreq[1], client_ip, "{dreq:?}");
    assert_eq!(
        (&dreq[18], &dreq[19]),
        (client_comm, server_comm),
        "{dreq:?}"
    );
    assert_eq!(dreq[20], hex24(seen.peer_qpn), "DREQ remote QPN: {dreq:?}");

    let drep = one(&rows, "CM: DisconnectReply");
    assert_eq!(drep[1], server_ip, "{drep:?}");
    assert_eq!(
        (&drep[21], &drep[22]),
        (server_comm, client_comm),
        "{drep:?}"
    );

    let kinds: Vec<&str> = rows.iter().map(|r| &r[0][..]).collect();
    assert!(
        kinds.iter().all(|k| [
            "CM: ConnectRequest",
            "CM: ConnectReply",
            "CM: ReadyToUse",
            "CM: DisconnectRequest",
            "CM: DisconnectReply"
        ]
        .contains(k)),
        "{kinds:?}"
    );
}

#[test]
fn a_port_nobody_listens_on_is_rejected_with_reason_8() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    // The server on udp: its interface has no XDP program, so tshark sees both ways there.
    let capture = Capture::start(a.ns(), a.iface(), "rej", b, a);
    let s = server(a, "udp");
    let c = client(b, "xdp", a, &["--cm-port", "7999", "--iters", "5"]);
    let s = wait_or_kill(s, WAIT, "the cm-connect server");
    let client_err = String::from_utf8_lossy(&c.stderr);
    let server_err = String::from_utf8_lossy(&s.stderr);
    assert!(!c.status.success(), "the client succeeded: {client_err}");
    assert!(
        client_err.contains("RDMA_CM_EVENT_REJECTED status 8") && client_err.contains("port 7999"),
        "{client_err}"
    );
    // The client told the server why it gave up; the server fails with it.
    assert!(!s.status.success(), "the server succeeded: {server_err}");
    assert!(server_err.contains("REJECTED status 8"), "{server_err}");

    let rows = capture.cm_rows(&[
        "ip.src",
        "infiniband.cm.req",
        "infiniband.cm.req.serviceid",
        "infiniband.cm.rej.localcommid",
        "infiniband.cm.rej.remotecommid",
        "infiniband.cm.rej.msgrej",
        "infiniband.cm.rej.reason",
    ]);
    let req = one(&rows, "CM: ConnectRequest");
    assert_eq!(req[1], b.ipv4().to_string(), "{req:?}");
    assert_eq!(req[3], format!("0x{:016x}", PS_TCP_SID | 7999), "{req:?}");
    let rej = one(&rows, "CM: ConnectReject");
    assert_eq!(rej[1], a.ipv4().to_string(), "{rej:?}");
    // Rejecting a REQ before replying: no local comm ID; the REQ's comm ID; the message
    // rejected is the REQ (0); reason 8, invalid service ID.
    assert_eq!(rej[4], "0x00000000", "{rej:?}");
    assert_eq!(rej[5], req[2], "{rej:?}");
    assert_eq!(rej[6], "0x00", "{rej:?}");
    assert_eq!(rej[7], "0x0008", "{rej:?}");
    // The client asks again for a second (CmConfig::refused_grace): REQ and REJ alternate,
    // the same each time, and nothing else goes by.
    let infos: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        infos.len() >= 2 && infos.len().is_multiple_of(2),
        "{rows:#?}"
    );
    for pair in infos.chunks(2) {
        assert_eq!(
            pair,
            ["CM: ConnectRequest", "CM: ConnectReject"],
            "{rows:#?}"
        );
    }
}
