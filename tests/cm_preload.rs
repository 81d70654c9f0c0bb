//! rdma-core's unmodified rdma_cm programs (Debian's rdmacm-utils and perftest) over
//! xrdma: libxrdma.so preloaded at both ends, between two namespaced hosts, on the xdp and
//! the udp backend. Each must run to completion with its normal output.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use xrdma_testnet::{Host, Server, Topology, built, text, wait_or_kill};

/// How long one program may run before the test kills it and fails.
const TIMEOUT: Duration = Duration::from_secs(240);

/// The machine's CPUs, which udpong's test takes for itself (see
/// [`udpong_runs_its_default_blocking_and_async_tests`]) and the other tests share.
static CPUS: RwLock<()> = RwLock::new(());

/// Held by a test for its whole run: it runs beside the other tests but udpong's.
fn beside_others() -> RwLockReadGuard<'static, ()> {
    CPUS.read().unwrap_or_else(|e| e.into_inner())
}

fn library() -> PathBuf {
    built("libxrdma.so")
}

/// `program`, or a failure saying what to install.
fn installed(program: &str) -> &str {
    xrdma_testnet::installed(program, "rdmacm-utils perftest")
}

/// `program args` on `host`, preloaded, with `backend`; its output line-buffered (stdbuf)
/// so that a server's lines arrive as it prints them.
fn preloaded(host: &Host, backend: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = host.ns().command("stdbuf");
    cmd.args(["-oL", "-eL", installed(program)])
        .args(args)
        .env("LD_PRELOAD", library())
        .env("XRDMA_IFACE", host.iface())
        .env("XRDMA_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// One program run as server on host A and client on host B.
struct Case<'a> {
    program: &'a str,
    /// The client's program, when it is not `program` (rdma_client for rdma_server).
    client_program: Option<&'a str>,
    server: &'a [&'a str],
    client: &'a [&'a str],
    /// What the server prints once it listens (it listens right after printing it).
    listening: &'a str,
    /// What each side prints when it has done its work.
    server_done: &'a str,
    client_done: &'a str,
}

/// Runs `case` on `backend`; the client may find the server a moment from listening
/// (REJECTED 8) and is then started again, as a user would.
fn run(t: &Topology, backend: &str, case: &Case) -> (String, String) {
    let (a, b) = (t.a(), t.b());
    let what = format!("{} server ({backend})", case.program);
    let mut server = Server::start(preloaded(a, backend, case.program, case.server), &what);
    server.wait_for(case.listening);
    let dst = a.ipv4().to_string();
    let client_args: Vec<&str> = case
        .client
        .iter()
        .map(|s| if *s == "SERVER" { dst.as_str() } else { s })
        .collect();
    let mut attempts = 0;
    let client = loop {
        attempts += 1;
        let program = case.client_program.unwrap_or(case.program);
        let cmd = preloaded(b, backend, program, &client_args)
            .spawn()
            .unwrap();
        let what = format!("{} client ({backend})", case.program);
        let out = server.finish_client(cmd, &what, TIMEOUT);
        let rejected = text(&out).contains("REJECTED") || text(&out).contains("status 8");
        if out.status.success() || !rejected || attempts == 3 {
            break out;
        }
    };
    let client_text = text(&client);
    assert!(
        client.status.success() && client_text.contains(case.client_done),
        "{} client ({backend}) failed ({}):\n{client_text}",
        case.program,
        client.status
    );
    let (status, server_text) = server.finish(TIMEOUT);
    assert!(
        status.success() && server_text.contains(case.server_done),
        "{} server ({backend}) failed ({status}):\n{server_text}",
        case.program
    );
    (server_text, client_text)
}

fn pair() -> Topology {
    Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"))
}

#[test]
fn rping_runs_100_pings_with_and_without_its_own_qp() {
    let _cpus = beside_others();
    let t = pair();
    for backend in ["xdp", "udp"] {
        let (_, client) = run(
            &t,
            backend,
            &Case {
                program: "rping",
                client_program: None,
                server: &["-s", "-a", "0.0.0.0", "-C", "100", "-v", "-d"],
                client: &["-c", "-a", "SERVER", "-C", "100", "-v"],
                listening: "rdma_listen",
                server_done: "server DISCONNECT EVENT",
                client_done: "ping data: rdma-ping-99: ",
            },
        );
        assert_eq!(client.matches("ping data: rdma-ping-").count(), 100);
        // -q: the application brings its QP up itself with rdma_init_qp_attr, and the
        // client completes the connection with rdma_establish.
        run(
            &t,
            backend,
            &Case {
                program: "rping",
                client_program: None,
                server: &["-s", "-a", "0.0.0.0", "-C", "10", "-q", "-v", "-d"],
                client: &["-c", "-a", "SERVER", "-C", "10", "-q", "-v", "-d"],
                listening: "rdma_listen",
                server_done: "server DISCONNECT EVENT",
                client_done: "ping data: rdma-ping-9: ",
            },
        );
    }
}

#[test]
fn udaddy_rdma_server_and_ucmatose_complete() {
    let _cpus = beside_others();
    let t = pair();
    for backend in ["xdp", "udp"] {
        run(
            &t,
            backend,
            &Case {
                program: "udaddy",
                client_program: None,
                server: &[],
                client: &["-s", "SERVER"],
                listening: "udaddy: starting server",
                server_done: "return status 0",
                client_done: "return status 0",
            },
        );
        run(
            &t,
            backend,
            &Case {
                program: "rdma_server",
                client_program: Some("rdma_client"),
                server: &[],
                client: &["-s", "SERVER"],
                listening: "rdma_server: start",
                server_done: "rdma_server: end 0",
                client_done: "rdma_client: end 0",
            },
        );
        run(
            &t,
            backend,
            &Case {
                program: "ucmatose",
                client_program: None,
                server: &["-c", "10"],
                client: &["-c", "10", "-s", "SERVER"],
                listening: "cmatose: starting server",
                server_done: "return status 0",
                client_done: "return status 0",
            },
        );
    }
}

#[test]
fn cmtime_sets_up_and_tears_down_200_connections() {
    let _cpus = beside_others();
    let t = pair();
    for backend in ["xdp", "udp"] {
        let (a, b) = (t.a(), t.b());
        let what = format!("cmtime server ({backend})");
        // cmtime's server serves until killed, and prints nothing before: wait for the
        // device it opens (the socket or XDP program of the backend), then connect.
        let server = Server::start(preloaded(a, backend, "cmtime", &["-c", "200"]), &what);
        let dst = a.ipv4().to_string();
        let mut attempts = 0;
        let out = loop {
            attempts += 1;
            let client = preloaded(b, backend, "cmtime", &["-c", "200", "-s", &dst])
                .spawn()
                .unwrap();
            let out = wait_or_kill(client, TIMEOUT, "cmtime client");
            if out.status.success() || attempts == 5 {
                break out;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let client = text(&out);
        let server_text = server.kill();
        assert!(
            out.status.success(),
            "cmtime client ({backend}) failed ({}):\n{client}\nserver:\n{server_text}",
            out.status
        );
        for step in ["connect", "disconnect", "destroy"] {
            let line = client
                .lines()
                .find(|l| l.starts_with(step) && l.contains(':'))
                .unwrap_or_else(|| panic!("no {step} row in:\n{client}"));
            println!("cmtime {backend}: {line}");
        }
    }
}

/// perftest with `-R`: the control connection and the test's QPs are set up by rdma_cm.
fn perftest_rdma_cm(t: &Topology, backend: &str, program: &str, extra: &[&str]) -> String {
    // The READ and atomic tests' servers, and the bandwidth tests' but SEND's, take no
    // part and print no table.
    let server_done = match program {
        "ib_send_lat" | "ib_write_lat" | "ib_send_bw" => "#bytes",
        _ => "remote address",
    };
    let mut server_args = vec!["-R", "-x", "0"];
    server_args.extend_from_slice(extra);
    let mut client_args = server_args.clone();
    client_args.push("SERVER");
    let (_, client) = run(
        t,
        backend,
        &Case {
            program,
            client_program: None,
            server: &server_args,
            client: &client_args,
            listening: "Waiting for client to connect",
            server_done,
            client_done: "#bytes",
        },
    );
    let row = client
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("#bytes"))
        .nth(1)
        .unwrap_or_else(|| panic!("{program}: no result row in:\n{client}"));
    println!("{program} -R {extra:?} ({backend}): {row}");
    row.to_string()
}

#[test]
fn perftest_latency_tests_connect_with_rdma_cm() {
    let _cpus = beside_others();
    let t = pair();
    for backend in ["xdp", "udp"] {
        for program in [
            "ib_send_lat",
            "ib_write_lat",
            "ib_read_lat",
            "ib_atomic_lat",
        ] {
            let row = perftest_rdma_cm(&t, backend, program, &["-n", "1000"]);
            let fields: Vec<&str> = row.split_whitespace().collect();
            assert!(fields.len() >= 5, "{program}: {row}");
            let typical: f64 = fields[4].parse().unwrap_or(0.0);
            assert!(typical > 0.0, "{program} ({backend}): {row}");
        }
    }
}

#[test]
fn perftest_bandwidth_tests_connect_with_rdma_cm() {
    let _cpus = beside_others();
    let t = pair();
    let cases: &[(&str, &str, &[&str])] = &[
        ("xdp", "ib_send_bw", &["-n", "1000"]),
        ("xdp", "ib_write_bw", &["-n", "1000"]),
        ("xdp", "ib_read_bw", &["-n", "1000"]),
        ("xdp", "ib_atomic_bw", &["-n", "1000"]),
        ("xdp", "ib_send_bw", &["-c", "UD", "-n", "1000"]),
        ("xdp", "ib_write_bw", &["-q", "8", "-n", "1000"]),
        ("udp", "ib_send_bw", &["-n", "1000"]),
        ("udp", "ib_write_bw", &["-n", "1000"]),
        ("udp", "ib_send_bw", &["-c", "UD", "-n", "1000"]),
    ];
    for (backend, program, extra) in cases {
        let row = perftest_rdma_cm(&t, backend, program, extra);
        // #bytes #iterations BW peak BW average MsgRate
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert!(fields.len() >= 4, "{program} {extra:?}: {row}");
        let average: f64 = fields[3].parse().unwrap_or(0.0);
        assert!(average > 0.0, "{program} {extra:?} ({backend}): {row}");
    }
}

/// rstream and riostream (rsockets: streams, and riomap/riowrite) with the options the
/// issue names, on `backend`; each must print all its result rows on both sides.
fn rstream_family(t: &Topology, backend: &str, program: &str, options: &[&[&str]]) {
    for extra in options {
        let mut server: Vec<&str> = vec!["-b", "0.0.0.0"];
        server.extend_from_slice(extra);
        let mut client: Vec<&str> = vec!["-s", "SERVER"];
        client.extend_from_slice(extra);
        // The last row of the run: 1 MiB bandwidth by default, 6 MiB with `-S all`.
        let last = if extra.contains(&"all") {
            "6m_bw"
        } else {
            "1m_bw"
        };
        let (_, out) = run(
            t,
            backend,
            &Case {
                program,
                client_program: None,
                server: &server,
                client: &client,
                listening: "usec/xfer",
                server_done: last,
                client_done: last,
            },
        );
        for row in out
            .lines()
            .filter(|l| l.starts_with("64_lat") || l.starts_with("1m_bw"))
        {
            println!("{program} {extra:?} ({backend}): {row}");
        }
    }
}

#[test]
fn rstream_runs_its_default_blocking_nonblocking_and_async_tests() {
    let _cpus = beside_others();
    let t = pair();
    for backend in ["xdp", "udp"] {
        rstream_family(
            &t,
            backend,
            "rstream",
            &[
                &[],
                &["-S", "all"],
                &["-T", "b"],
                &["-T", "n"],
                &["-T", "a"],
            ],
        );
    }
}

/// riostream (riomap/riowrite: each side polls its memory for the peer's RDMA WRITEs) in
/// custom runs: its default run spends 100 000 round trips on 64-byte latency, over two
/// minutes on this 2-core machine, where both processes spin on memory and xrdma's helper
/// threads take the writes between them.
#[test]
fn riostream_runs_latency_and_bandwidth_blocking_nonblocking_and_async() {
    let _cpus = beside_others();
    let t = pair();
    for backend in ["xdp", "udp"] {
        for extra in [
            &["-S", "64", "-C", "1", "-I", "1000"][..],
            &["-S", "1048576", "-C", "100", "-I", "1"],
            &["-S", "4096", "-C", "10", "-I", "100", "-T", "b"],
            &["-S", "4096", "-C", "10", "-I", "100", "-T", "n"],
            &["-S", "4096", "-C", "10", "-I", "100", "-T", "a"],
        ] {
            let mut server: Vec<&str> = vec!["-b", "0.0.0.0"];
            server.extend_from_slice(extra);
            let mut client: Vec<&str> = vec!["-s", "SERVER"];
            client.extend_from_slice(extra);
            let (_, out) = run(
                &t,
                backend,
                &Case {
                    program: "riostream",
                    client_program: None,
                    server: &server,
                    client: &client,
                    listening: "usec/xfer",
                    server_done: "custom",
                    client_done: "custom",
                },
            );
            for row in out.lines().filter(|l| l.starts_with("custom")) {
                println!("riostream {extra:?} ({backend}): {row}");
            }
        }
    }
}

/// The 18 rows of udpong's default run: latency (each datagram echoed before the next
/// goes) and bandwidth, 64 bytes to 1.5 KiB.
const UDPONG_ROWS: [&str; 18] = [
    "64_lat", "128_lat", "192_lat", "256_lat", "384_lat", "512_lat", "768_lat", "1k_lat",
    "1.5k_lat", "64_bw", "128_bw", "192_bw", "256_bw", "384_bw", "512_bw", "768_bw", "1k_bw",
    "1.5k_bw",
];

/// udpong (datagram rsockets), spinning on non-blocking calls (its default, and its
/// `-T n`), blocking (`-T b`) and waiting in rpoll (`-T a`), every row printed: on xdp,
/// its default run spinning; otherwise echo runs (`-T e`: its latency test) of 20 000
/// datagrams of 64 and 1000 bytes.
///
/// udpong's client waits 1 ms for an answer, then sends its message again; an answer that
/// comes later stays in flight for good (the client sends each stale answer back, as it
/// receives it into the very buffer it resends). At the end of a bandwidth test, whose
/// datagrams flood the server, the closing message may be dropped, as UDP drops; with a
/// stale answer in flight, the client then never sends it again and waits for ever. Over
/// kernel UDP too: with a busy loop per core, its default run does not finish in a
/// minute. Blocking and in rpoll, and on the udp backend, xrdma takes datagrams more
/// slowly than the client sends them (a third of 128-byte datagrams arrive in `-T a`), and
/// the default run ended that way in one run out of three or four here. So the test has
/// the CPUs to itself, and runs the bandwidth tests only where they finish every time.
///
/// The link's MTU is 9000: a datagram over RoCE is at most 2032 bytes behind rsocket's
/// header at RoCE MTU 4096, and 1016 at the 1024 a 1500-byte link gives (more is
/// EMSGSIZE, where kernel UDP would fragment).
#[test]
fn udpong_runs_its_default_blocking_and_async_tests() {
    let _cpus = CPUS.write().unwrap_or_else(|e| e.into_inner());
    let t = Topology::builder()
        .mtu(9000)
        .pair()
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let echo: [&[&str]; 2] = [
        &["-T", "e", "-C", "20000", "-S", "64"],
        &["-T", "e", "-C", "20000", "-S", "1000"],
    ];
    for backend in ["xdp", "udp"] {
        for mode in [&[][..], &["-T", "b"], &["-T", "a"]] {
            let runs: &[&[&str]] = if backend == "xdp" && mode.is_empty() {
                &[&[]]
            } else {
                &echo
            };
            for run in runs {
                let extra: Vec<&str> = mode.iter().chain(run.iter()).copied().collect();
                let rows = udpong(&t, backend, &extra);
                let wanted = if run.is_empty() { UDPONG_ROWS.len() } else { 1 };
                assert_eq!(rows.len(), wanted, "udpong {extra:?} ({backend}): {rows:?}");
                for row in rows {
                    println!("udpong {extra:?} ({backend}): {row}");
                }
            }
        }
    }
}

/// One run of udpong with `extra` at both ends; its result rows.
fn udpong(t: &Topology, backend: &str, extra: &[&str]) -> Vec<String> {
    let (a, b) = (t.a(), t.b());
    let mut server_args: Vec<&str> = vec!["-b", "0.0.0.0"];
    server_args.extend_from_slice(extra);
    // udpong's server serves until killed and prints nothing first; its client logs in
    // again every second until the server answers.
    let mut server = Server::start(
        preloaded(a, backend, "udpong", &server_args),
        &format!("udpong server ({backend})"),
    );
    let dst = a.ipv4().to_string();
    let mut client_args: Vec<&str> = vec!["-s", &dst];
    client_args.extend_from_slice(extra);
    let client = preloaded(b, backend, "udpong", &client_args)
        .spawn()
        .unwrap();
    let what = format!("udpong {extra:?} client ({backend})");
    let out = server.finish_client(client, &what, TIMEOUT);
    let client_text = text(&out);
    let server_text = server.kill();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{client_text}\nserver:\n{server_text}",
        out.status
    );
    client_text
        .lines()
        .filter(|l| {
            l.starts_with("custom ") || UDPONG_ROWS.iter().any(|r| l.starts_with(&format!("{r} ")))
        })
        .map(str::to_string)
        .collect()
}
