//! Unmodified socket programs (iperf3, sockperf, redis) run by `xrdma run`, with
//! libxrdma_preload.so under them, between two namespaced hosts over xdp: their TCP goes
//! over xrdma, and where the peer has no xrdma, over kernel TCP as before.

use std::process::{Command, Stdio};
use std::time::Duration;

use xrdma_testnet::{Host, Server, Topology, built, text};

/// How long one program may run before the test kills it and fails.
const TIMEOUT: Duration = Duration::from_secs(120);

/// `program`, or a failure saying what to install.
fn installed(program: &str) -> &str {
    // Programs given by path are the test's own.
    if program.starts_with('/') {
        return program;
    }
    let package = match program {
        "redis-server" => "redis-server",
        "redis-cli" | "redis-benchmark" => "redis-tools",
        p => p,
    };
    xrdma_testnet::installed(program, package)
}

/// `xrdma run --debug -- program args` on `host` over xdp, with `tcp` as `--tcp` if
/// given; output piped.
fn run_on(host: &Host, tcp: Option<&str>, program: &str, args: &[&str]) -> Command {
    let options = match tcp {
        Some(tcp) => vec!["--tcp", tcp],
        None => vec![],
    };
    let xrdma = built("xrdma");
    let lib = built("libxrdma_preload.so");
    let mut cmd = host.xrdma_run(&xrdma, &lib, &options, installed(program));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// `program args` on `host` without xrdma.
fn plain(host: &Host, program: &str, args: &[&str]) -> Command {
    let mut cmd = host.ns().command(installed(program));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn pair() -> Topology {
    Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"))
}

/// The `bytes` of the object `key` of iperf3's JSON report's `end` section.
fn end_bytes(json: &str, key: &str) -> u64 {
    // The top-level key, one tab in: the streams' and intervals' times are "end" too.
    let end = json
        .find("\n\t\"end\":")
        .unwrap_or_else(|| panic!("no end section in:\n{json}"));
    let at = json[end..]
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in the end section of:\n{json}"))
        + end;
    let bytes = json[at..].find("\"bytes\":").expect("bytes") + at + "\"bytes\":".len();
    let digits: String = json[bytes..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a byte count")
}

/// A program's JSON report, without the lines xrdma's `--debug` adds.
fn json_of(output: &str) -> String {
    output
        .lines()
        .filter(|l| !l.starts_with("xrdma: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs iperf3 for `seconds` with `extra` client options, both ends over xrdma; checks both
/// ends report the same byte counts and that the receiver got what was sent but the tail
/// in flight when the test ended. The client's report.
fn iperf3(t: &Topology, seconds: u32, extra: &[&str]) -> String {
    let (a, b) = (t.a(), t.b());
    let what = format!("iperf3 server {extra:?}");
    let mut server = Server::start(run_on(a, None, "iperf3", &["-s", "-1", "-J"]), &what);
    server.wait_for("listen on");
    let dst = a.ipv4().to_string();
    let secs = seconds.to_string();
    let mut args = vec!["-c", dst.as_str(), "-t", secs.as_str(), "-J"];
    args.extend(extra);
    let client = run_on(b, None, "iperf3", &args).spawn().unwrap();
    let out = server.finish_client(client, &format!("iperf3 client {extra:?}"), TIMEOUT);
    let client_text = text(&out);
    assert!(out.status.success(), "iperf3 client failed:\n{client_text}");
    let (status, server_text) = server.finish(TIMEOUT);
    assert!(status.success(), "iperf3 server failed:\n{server_text}");
    for (side, out) in [("client", &client_text), ("server", &server_text)] {
        assert!(
            out.contains(&format!("connect to {dst}:5201: xrdma"))
                || out.contains(": xrdma\n")
                || out.ends_with(": xrdma"),
            "the {side}'s connections did not go over xrdma:\n{out}"
        );
    }
    let (c, s) = (
        json_of(&String::from_utf8_lossy(&out.stdout)),
        json_of(&server_text),
    );
    // The client reports both counts; the server, its own side's: what it received, or
    // with -R what it sent.
    let (sent, received) = (end_bytes(&c, "sum_sent"), end_bytes(&c, "sum_received"));
    let servers = if extra.contains(&"-R") {
        "sum_sent"
    } else {
        "sum_received"
    };
    assert_eq!(
        end_bytes(&s, servers),
        end_bytes(&c, servers),
        "the two ends disagree on {servers}"
    );
    assert!(
        received <= sent && received >= sent / 100 * 99 && received > 0,
        "sent {sent}, received {received}"
    );
    client_text
}

#[test]
fn iperf3_runs_10_s_one_and_four_streams_and_reversed() {
    let t = pair();
    iperf3(&t, 10, &[]);
    iperf3(&t, 10, &["-P", "4"]);
    iperf3(&t, 10, &["-R"]);
}

/// Runs a sockperf server on host A (`server_xrdma`: under xrdma) and `client` (a
/// sockperf client command for host B, given A's address); returns what each printed.
fn sockperf(
    t: &Topology,
    server_xrdma: bool,
    client: impl FnOnce(&str) -> Command,
) -> (String, String) {
    let (a, _) = (t.a(), t.b());
    let dst = a.ipv4().to_string();
    let args = ["sr", "--tcp", "-i", dst.as_str(), "-p", "11111"];
    let (cmd, listening) = if server_xrdma {
        (run_on(a, None, "sockperf", &args), "listen on")
    } else {
        (
            plain(
                a,
                "stdbuf",
                &[&["-oL", "-eL", "sockperf"][..], &args].concat(),
            ),
            "using",
        )
    };
    let mut server = Server::start(cmd, "sockperf server");
    server.wait_for(listening);
    let out = server.finish_client(client(&dst).spawn().unwrap(), "sockperf client", TIMEOUT);
    let client_text = text(&out);
    assert!(
        out.status.success(),
        "sockperf client failed:\n{client_text}"
    );
    (server.kill(), client_text)
}

#[test]
fn sockperf_ping_pong_and_throughput_complete() {
    let t = pair();
    let b = t.b();
    for (mode, summary) in [
        ("pp", "Summary: Latency is"),
        ("tp", "Summary: Message Rate is"),
    ] {
        let (server, client) = sockperf(&t, true, |dst| {
            run_on(
                b,
                None,
                "sockperf",
                &[mode, "--tcp", "-i", dst, "-p", "11111", "-t", "3"],
            )
        });
        assert!(client.contains(summary), "sockperf {mode}:\n{client}");
        assert!(
            client.contains(&format!("connect to {}:11111: xrdma", t.a().ipv4())),
            "sockperf {mode} did not connect over xrdma:\n{client}"
        );
        assert!(
            server.contains(": xrdma"),
            "the server did not accept over xrdma:\n{server}"
        );
    }
}

#[test]
fn kernel_tcp_serves_whatever_xrdma_cannot() {
    let t = pair();
    let b = t.b();
    let pp = |dst: &str| ["pp", "--tcp", "-i", dst, "-p", "11111", "-t", "1"].map(String::from);
    // A client under xrdma, a server without: the client's host refuses RoCEv2, and the
    // connection goes over kernel TCP.
    let (_, client) = sockperf(&t, false, |dst| {
        let args = pp(dst);
        run_on(b, None, "sockperf", &args.each_ref().map(String::as_str))
    });
    assert!(client.contains("Summary: Latency is"), "{client}");
    assert!(
        client.contains("kernel TCP (its host refuses RoCEv2)"),
        "the client did not fall back to kernel TCP:\n{client}"
    );
    // A server under xrdma, a client without: the server accepts over kernel TCP.
    let (server, client) = sockperf(&t, true, |dst| {
        let args = pp(dst);
        plain(b, "sockperf", &args.each_ref().map(String::as_str))
    });
    assert!(client.contains("Summary: Latency is"), "{client}");
    assert!(
        server.contains(": kernel TCP"),
        "the server did not accept over kernel TCP:\n{server}"
    );
    // Both under xrdma, but the client's configuration leaves the port out.
    let (server, client) = sockperf(&t, true, |dst| {
        let args = pp(dst);
        run_on(
            b,
            Some("*:5201"),
            "sockperf",
            &args.each_ref().map(String::as_str),
        )
    });
    assert!(client.contains("Summary: Latency is"), "{client}");
    assert!(
        client.contains("kernel TCP (XRDMA_TCP leaves it out)"),
        "the client did not keep to kernel TCP:\n{client}"
    );
    assert!(server.contains(": kernel TCP"), "{server}");
}

#[test]
fn redis_serves_redis_cli_and_redis_benchmark() {
    let t = pair();
    let (a, b) = (t.a(), t.b());
    let dst = a.ipv4().to_string();
    let mut server = Server::start(
        run_on(
            a,
            None,
            "redis-server",
            &[
                "--port",
                "6390",
                "--bind",
                &dst,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
        ),
        "redis-server",
    );
    server.wait_for("listen on");
    let mut cli = |args: &[&str]| {
        let mut all = vec!["-h", dst.as_str(), "-p", "6390"];
        all.extend(args);
        let client = run_on(b, None, "redis-cli", &all).spawn().unwrap();
        let out = server.finish_client(client, "redis-cli", TIMEOUT);
        let text = text(&out);
        assert!(out.status.success(), "redis-cli {args:?}:\n{text}");
        assert!(
            text.contains(": xrdma"),
            "redis-cli did not connect over xrdma:\n{text}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        cli(&["set", "xrdma-key", "written over xrdma"]).trim(),
        "OK"
    );
    assert_eq!(cli(&["get", "xrdma-key"]).trim(), "written over xrdma");
    let bench = run_on(
        b,
        None,
        "redis-benchmark",
        &[
            "-h", &dst, "-p", "6390", "-t", "set,get", "-n", "100000", "-c", "50", "-q",
        ],
    )
    .spawn()
    .unwrap();
    let out = server.finish_client(bench, "redis-benchmark", TIMEOUT);
    let bench_text = text(&out);
    assert!(out.status.success(), "redis-benchmark:\n{bench_text}");
    for test in ["SET: ", "GET: "] {
        assert!(
            bench_text
                .lines()
                .flat_map(|l| l.split('\r'))
                .any(|l| l.starts_with(test) && l.contains("requests per second")),
            "no {test}result:\n{bench_text}"
        );
    }
    // The 50 connections went over xrdma.
    assert!(
        bench_text.matches(": xrdma").count() >= 50,
        "redis-benchmark's connections:\n{bench_text}"
    );
    let server_text = server.kill();
    assert!(
        server_text.matches(": xrdma").count() >= 52,
        "redis-server's connections:\n{server_text}"
    );
}

/// tests/c/preload_stress.c, compiled into a directory of its own, named by `tag` (the
/// tests run side by side).
fn stress_program(tag: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("xrdma-preload-stress-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("preload_stress");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/preload_stress.c");
    let out = Command::new("cc")
        .args(["-O2", "-pthread", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&source)
        .output()
        .expect("cc (apt-get install gcc)");
    assert!(out.status.success(), "cc failed:\n{}", text(&out));
    exe
}

#[test]
fn threads_and_forked_children_open_use_and_close_sockets_losing_no_byte() {
    let t = pair();
    let (a, b) = (t.a(), t.b());
    let exe = stress_program("threads");
    let exe = exe.to_str().unwrap();
    let dst = a.ipv4().to_string();
    let mut server = Server::start(
        run_on(a, None, exe, &["server", &dst, "7700"]),
        "preload_stress server",
    );
    server.wait_for("listening");
    let (threads, rounds, forks) = (6, 15, 4);
    let client = run_on(
        b,
        None,
        exe,
        &[
            "client",
            &dst,
            "7700",
            &threads.to_string(),
            &rounds.to_string(),
            &forks.to_string(),
        ],
    )
    .spawn()
    .unwrap();
    let out = server.finish_client(client, "preload_stress client", TIMEOUT);
    let client_text = text(&out);
    assert!(
        out.status.success(),
        "preload_stress client failed:\n{client_text}"
    );
    // Over xrdma: every connection of the parent's threads, the one made before each fork
    // (which the child used through the parent's relay), and the two of the endings'
    // check (SIGPIPE, close_range). Over the kernel: the forked children's own (three
    // each), as xrdma is the parent's.
    let parents = threads * rounds;
    assert!(
        client_text.contains(&format!("ok: {parents} connections")),
        "{client_text}"
    );
    assert!(client_text.contains("endings: ok"), "{client_text}");
    let over_xrdma = parents + forks + 2;
    assert_eq!(
        client_text.matches(": xrdma").count(),
        over_xrdma,
        "{client_text}"
    );
    assert!(
        client_text.matches("relayed by the parent").count() >= forks,
        "{client_text}"
    );
    let server_text = server.kill();
    let accepted = |over: &str| {
        server_text
            .lines()
            .filter(|l| l.starts_with("xrdma: accepted") && l.ends_with(over))
            .count()
    };
    assert_eq!(accepted(": xrdma"), over_xrdma, "{server_text}");
    assert_eq!(accepted(": kernel TCP"), forks * 3, "{server_text}");
    let _ = std::fs::remove_dir_all(std::path::Path::new(exe).parent().unwrap());
}

#[test]
fn a_forked_child_accepts_kernel_tcp_clients_on_an_inherited_listener() {
    let t = pair();
    let (a, b) = (t.a(), t.b());
    let exe = stress_program("prefork");
    let exe = exe.to_str().unwrap();
    let dst = a.ipv4().to_string();
    // The server listens on both and forks; only its child accepts (a prefork server).
    let mut server = Server::start(
        run_on(a, None, exe, &["server", &dst, "7701", "prefork"]),
        "preload_stress prefork server",
    );
    server.wait_for("listening");
    let client = plain(b, exe, &["client", &dst, "7701", "2", "3", "0"])
        .spawn()
        .unwrap();
    let out = server.finish_client(client, "preload_stress client", TIMEOUT);
    let client_text = text(&out);
    assert!(
        out.status.success() && client_text.contains("endings: ok"),
        "{client_text}"
    );
    let server_text = server.kill();
    assert!(
        server_text.contains(": kernel TCP and xrdma"),
        "{server_text}"
    );
    // 2 threads of 3 connections, and the two of the endings' check.
    let accepted = server_text
        .lines()
        .filter(|l| l.starts_with("xrdma: accepted") && l.ends_with(": kernel TCP"))
        .count();
    assert_eq!(accepted, 8, "{server_text}");
    let _ = std::fs::remove_dir_all(std::path::Path::new(exe).parent().unwrap());
}
