//! Real tests: they create namespaces, so they need root (and iproute2,
//! iputils-ping, nftables). They run in parallel under the default harness.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use xrdma_testnet::{Error, Loss, Netns, Topology};

const SECOND: Duration = Duration::from_secs(1);

/// Names listed by `ip netns list`.
fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn ns_names(net: &Topology) -> Vec<String> {
    net.namespaces()
        .iter()
        .map(|ns| ns.name().to_owned())
        .collect()
}

fn ifindex(name: &str) -> u32 {
    let name = CString::new(name).unwrap();
    // SAFETY: `name` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// Runs `cmd`, killing it if it takes longer than `limit`; returns its stdout.
fn output_within(cmd: &mut Command, limit: Duration) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{cmd:?} took longer than {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    // ping exits 1 when some replies are missing: that is what we measure.
    assert!(
        status.success() || status.code() == Some(1),
        "{cmd:?}: {status}: {err}"
    );
    out
}

/// Sends `count` pings quickly and returns (transmitted, received).
fn ping_stats(from: &Netns, to: Ipv4Addr, count: u32) -> (u32, u32) {
    let mut ping = from.command("ping");
    ping.args(["-n", "-q", "-i", "0.002", "-W", "1", "-c"])
        .arg(count.to_string())
        .arg(to.to_string());
    let out = output_within(&mut ping, Duration::from_secs(60));
    // "400 packets transmitted, 109 received, [+N errors,] 72.75% packet loss, ..."
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in ping output: {out}"));
    let numbers: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(|s| s.parse().unwrap())
        .collect();
    (numbers[0], numbers[1])
}

/// Sends `count` UDP datagrams from host `from` to `to:port`, received by a
/// socket in `to_ns`; returns how many arrived.
fn udp_blast(from: &Netns, to_ns: &Netns, to: Ipv4Addr, port: u16, count: u32) -> u32 {
    let receiver = to_ns.run(|| UdpSocket::bind((to, port))).unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    thread::scope(|s| {
        let counter = s.spawn(move || {
            let mut buf = [0u8; 2048];
            let mut received = 0;
            loop {
                match receiver.recv(&mut buf) {
                    Ok(n) => {
                        assert_eq!(n, 64);
                        received += 1;
                    }
                    // Timed out: stop once the sender is done.
                    Err(_) if done_rx.try_recv().is_ok() => return received,
                    Err(_) => {}
                }
            }
        });
        from.run(|| {
            let sender = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            for i in 0..count {
                sender.send_to(&[i as u8; 64], (to, port)).unwrap();
                // Pace so that no queue on the way overflows.
                if i % 10 == 9 {
                    thread::sleep(Duration::from_micros(200));
                }
            }
        });
        done_tx.send(()).unwrap();
        counter.join().unwrap()
    })
}

#[test]
fn pair_pings_and_talks_tcp() {
    let net = Topology::pair().unwrap();
    let (a, b) = (net.a(), net.b());
    assert_eq!(a.ipv4().octets()[3], 1);
    assert_eq!(b.ipv4().octets()[3], 2);
    assert_eq!(a.ipv4().octets()[..3], b.ipv4().octets()[..3]);
    assert_eq!(a.prefix(), 24);
    assert_ne!(a.mac(), b.mac());
    net.wait_reachable(a, b.ipv4(), 5 * SECOND).unwrap();
    a.ns()
        .sh(&format!("ping -n -c 3 -i 0.01 -W 1 {}", b.ipv4()))
        .unwrap();

    let listener = b.ns().run(|| TcpListener::bind((b.ipv4(), 18515))).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let (mut conn, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), a.ipv4());
            let mut buf = [0; 5];
            conn.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello");
            conn.write_all(b"world").unwrap();
        });
        a.ns().run(|| {
            let mut conn = TcpStream::connect((b.ipv4(), 18515)).unwrap();
            assert_eq!(conn.local_addr().unwrap().ip(), a.ipv4());
            conn.write_all(b"hello").unwrap();
            let mut buf = [0; 5];
            conn.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"world");
        });
    });
}

#[test]
fn run_enters_the_namespace_only_inside() {
    let net = Topology::pair().unwrap();
    let a = net.a();
    let inside = a.ns().run(|| ifindex(a.iface()));
    assert_ne!(
        inside,
        0,
        "{} not found inside {}",
        a.iface(),
        a.ns().name()
    );
    assert_eq!(ifindex(a.iface()), 0, "{} visible outside", a.iface());
    // The peer end lives in B's namespace, not A's.
    assert_eq!(a.ns().run(|| ifindex(net.b().iface())), 0);
    // Threads spawned inside inherit the namespace.
    let nested = a.ns().run(|| {
        let name = a.iface().to_owned();
        thread::spawn(move || ifindex(&name)).join().unwrap()
    });
    assert_eq!(nested, inside);
    // The caller's own thread is unaffected afterwards.
    assert_eq!(ifindex(a.iface()), 0);
    // `command` sees the same interface.
    let links = a.ns().sh("ip -o link show").unwrap();
    assert!(links.contains(a.iface()), "{links}");
    // IPv6 is off unless asked for: no address at all, not even ::1.
    assert_eq!(a.ns().sh("ip -6 addr show").unwrap().trim(), "");
    assert_eq!(a.ipv6(), None);
}

#[test]
fn run_propagates_panics_and_sh_reports_stderr() {
    let net = Topology::pair().unwrap();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        net.a()
            .ns()
            .run(|| panic!("deliberate panic inside the namespace"))
    }));
    let payload = caught.expect_err("the panic was swallowed");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"deliberate panic inside the namespace")
    );
    let err = net.a().ns().sh("echo oops >&2; exit 3").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("oops") && msg.contains("status 3"), "{msg}");
    assert_eq!(net.a().ns().sh("echo hi").unwrap(), "hi\n");
}

#[test]
fn builder_options_apply() {
    let net = Topology::builder()
        .rx_queues(4)
        .mtu(9000)
        .ipv6(true)
        .pair()
        .unwrap();
    let (a, b) = (net.a(), net.b());
    let details = a
        .ns()
        .sh(&format!("ip -d link show {}", a.iface()))
        .unwrap();
    assert!(details.contains("mtu 9000"), "{details}");
    assert!(details.contains("numrxqueues 4"), "{details}");
    assert!(details.contains("numtxqueues 4"), "{details}");
    let (a6, b6) = (a.ipv6().unwrap(), b.ipv6().unwrap());
    assert_eq!(a6.segments()[..3], [0x2001, 2, 0]);
    net.wait_reachable(a, b6, 5 * SECOND).unwrap();
    // No link-local (fe80::/10) address: only the benchmarking one.
    let addrs = a
        .ns()
        .sh(&format!("ip -6 addr show dev {}", a.iface()))
        .unwrap();
    assert!(!addrs.contains("fe80"), "{addrs}");
    assert!(addrs.contains(&a6.to_string()), "{addrs}");
    // Jumbo frames really pass (no fragmentation allowed).
    a.ns()
        .sh(&format!("ping -n -c1 -W1 -M do -s 8972 {}", b.ipv4()))
        .unwrap();
    // A UDP socket over IPv6 works in-process too.
    let rx = b.ns().run(|| UdpSocket::bind((b6, 0))).unwrap();
    let port = rx.local_addr().unwrap().port();
    a.ns().run(|| {
        let tx = UdpSocket::bind((a6, 0)).unwrap();
        tx.send_to(b"v6", (b6, port)).unwrap();
    });
    rx.set_read_timeout(Some(5 * SECOND)).unwrap();
    let mut buf = [0; 8];
    let (n, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.ip()), (&b"v6"[..], a6.into()));
}

#[test]
fn switched_hosts_all_reach_each_other() {
    let net = Topology::switched(3, Loss::NONE).unwrap();
    assert_eq!(net.hosts().len(), 3);
    let sw = net.switch().unwrap();
    let ports = sw.sh("ip -o link show master br0").unwrap();
    for i in 0..3 {
        let port = net.switch_port(i).unwrap();
        assert!(ports.contains(port), "{port} not in br0: {ports}");
    }
    for from in net.hosts() {
        for to in net.hosts() {
            if from.ipv4() != to.ipv4() {
                net.wait_reachable(from, to.ipv4(), 5 * SECOND).unwrap();
            }
        }
    }
    assert_eq!(net.drop_counter().unwrap(), 0);
}

#[test]
fn switched_loss_on_all_traffic_drops_pings() {
    let loss = 0.5;
    let net = Topology::switched(2, Loss::all(loss)).unwrap();
    let (a, b) = (net.a(), net.b());
    let (sent, received) = ping_stats(a.ns(), b.ipv4(), 400);
    assert_eq!(sent, 400);
    // A round trip survives only if both the request and the reply do.
    let expected = 1.0 - (1.0 - loss) * (1.0 - loss);
    let measured = 1.0 - f64::from(received) / f64::from(sent);
    // sigma = sqrt(0.75 * 0.25 / 400) ~ 0.022: the band is over 5 sigma wide.
    assert!(
        (expected - 0.12..=expected + 0.12).contains(&measured),
        "round-trip loss {measured} is far from the expected {expected}"
    );
    // Each lost round trip is exactly one drop: of the request (so no reply
    // is sent) or of the reply. ARP is spared and IPv6 is off, so nothing else.
    let lost = u64::from(sent - received);
    assert_eq!(net.drop_counter().unwrap(), lost);
}

#[test]
fn switched_loss_on_one_udp_port_spares_everything_else() {
    let net = Topology::switched(2, Loss::udp_port(0.5, 4791)).unwrap();
    let (a, b) = (net.a(), net.b());
    let (sent, received) = ping_stats(a.ns(), b.ipv4(), 200);
    assert_eq!((sent, received), (200, 200), "pings were dropped");
    assert_eq!(net.drop_counter().unwrap(), 0);

    // Another UDP port is spared too.
    let other = udp_blast(a.ns(), b.ns(), b.ipv4(), 4792, 200);
    assert_eq!(other, 200);
    assert_eq!(net.drop_counter().unwrap(), 0);

    let count = 1000;
    let got = udp_blast(a.ns(), b.ns(), b.ipv4(), 4791, count);
    let fraction = 1.0 - f64::from(got) / f64::from(count);
    // sigma = sqrt(0.25 / 1000) ~ 0.016.
    assert!(
        (0.4..=0.6).contains(&fraction),
        "lost {fraction} of UDP 4791 datagrams, expected about 0.5"
    );
    // Every missing datagram was dropped by the switch, and nothing else was.
    assert_eq!(net.drop_counter().unwrap(), u64::from(count - got));
}

#[test]
fn drop_deletes_every_namespace() {
    let net = Topology::switched(2, Loss::all(0.1)).unwrap();
    let names = ns_names(&net);
    assert_eq!(names.len(), 3);
    let listed = netns_list();
    assert!(
        names.iter().all(|n| listed.contains(n)),
        "{names:?} {listed:?}"
    );
    drop(net);
    let listed = netns_list();
    assert!(
        names.iter().all(|n| !listed.contains(n)),
        "{names:?} left in {listed:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| !Path::new("/run/netns").join(n).exists())
    );
}

#[test]
fn drop_deletes_every_namespace_after_a_panic() {
    let mut names = Vec::new();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let net = Topology::pair().unwrap();
        names = ns_names(&net);
        panic!("deliberate panic while a topology is alive");
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 2);
    let listed = netns_list();
    assert!(
        names.iter().all(|n| !listed.contains(n)),
        "{names:?} left in {listed:?}"
    );
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() {
    let dead_pid = 4_194_303; // pid_max is at most 2^22.
    assert!(
        !Path::new(&format!("/proc/{dead_pid}")).exists(),
        "pid {dead_pid} exists; pick another"
    );
    let stale = format!("xr-{dead_pid}-0-a");
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    // Another test's topology may already have removed it again: that is fine.
    assert!(status.success() || !netns_list().contains(&stale));
    let _net = Topology::pair().unwrap();
    let gone = !netns_list().contains(&stale);
    if !gone {
        let _ = Command::new("ip").args(["netns", "del", &stale]).status();
    }
    assert!(gone, "stale namespace {stale} was not removed");
}

#[test]
fn live_namespaces_of_this_process_survive_other_builds() {
    let first = Topology::pair().unwrap();
    let _second = Topology::pair().unwrap();
    let listed = netns_list();
    for name in ns_names(&first) {
        assert!(listed.contains(&name), "{name} was removed");
    }
}

#[test]
fn topologies_build_in_parallel() {
    let nets: Vec<Topology> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    if i % 2 == 0 {
                        Topology::pair()
                    } else {
                        Topology::switched(2, Loss::NONE)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let mut names: Vec<String> = nets.iter().flat_map(ns_names).collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total, "namespace names collide");
    for net in &nets {
        net.wait_reachable(net.a(), net.b().ipv4(), 5 * SECOND)
            .unwrap();
    }
}

#[test]
fn bad_arguments_are_refused_with_reasons() {
    let msg = |e: Error| e.to_string();
    assert!(msg(Topology::switched(0, Loss::NONE).unwrap_err()).contains("1 to 254 hosts"));
    assert!(
        msg(Topology::switched(2, Loss::all(1.5)).unwrap_err()).contains("between 0.0 and 1.0")
    );
    assert!(msg(Topology::builder().mtu(1000).ipv6(true).pair().unwrap_err()).contains("1280"));
    assert!(msg(Netns::new("a/b").unwrap_err()).contains("file name"));
}

#[test]
fn not_root_message_says_why() {
    let e = Error::NotRoot { euid: 1000 };
    assert!(e.to_string().starts_with(
        "creating network namespaces needs root (CAP_SYS_ADMIN): run the tests as root"
    ));
}

#[test]
fn failing_netns_add_says_why() {
    let name = format!("xr-{}-dup-x", std::process::id());
    let first = Netns::new(name.as_str()).unwrap();
    let msg = Netns::new(name.as_str()).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "creating network namespace {name}: `ip netns add {name}`"
        )) && msg.contains("File exists"),
        "{msg}"
    );
    drop(first);
    assert!(!netns_list().contains(&name));
}
