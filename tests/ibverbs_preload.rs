//! rdma-core's own, unmodified programs (Debian's ibverbs-utils) over xrdma: libxrdma.so
//! preloaded under `ibv_devinfo`, `ibv_ud_pingpong` and `ibv_rc_pingpong` between two
//! namespaced hosts, on the xdp and the udp backend; and the pingpongs against xrdma's Rust
//! examples, each way.

mod preloaded;

use std::process::{Command, Stdio};

use preloaded::{finish, installed, library, preloaded, text, wait_listening};
use xrdma_testnet::{Host, Topology, built};

/// `program` from ibverbs-utils, or a failure saying what to install.
fn rdma_core(program: &str) -> &str {
    installed(program, "ibverbs-utils")
}

/// Runs preloaded `ibv_devinfo args` on `host`, with `ifaces` as XRDMA_IFACE.
fn devinfo(host: &Host, ifaces: &str, backend: &str, args: &[&str]) -> String {
    let mut cmd = host.ns().command(rdma_core("ibv_devinfo"));
    cmd.args(args);
    let out = finish(
        preloaded(cmd, ifaces, backend).spawn().unwrap(),
        "ibv_devinfo",
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "ibv_devinfo {args:?} failed ({}): {stdout}{stderr}",
        out.status
    );
    stdout
}

#[test]
fn ibv_devinfo_shows_the_xrdma_device() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let a = t.a();
    let hca = format!("hca_id:\txrdma_{}\n", a.iface());
    for backend in ["xdp", "udp"] {
        let out = devinfo(a, a.iface(), backend, &[]);
        for want in [
            hca.as_str(),
            "transport:\t\t\tInfiniBand (0)",
            "state:\t\t\tPORT_ACTIVE (4)",
            "active_mtu:\t\t1024 (3)",
            "link_layer:\t\tEthernet",
        ] {
            assert!(out.contains(want), "{backend}: no {want:?} in:\n{out}");
        }

        let out = devinfo(a, a.iface(), backend, &["-v"]);
        let gid = format!("GID[  0]:\t\t::ffff:{}, RoCE v2", a.ipv4());
        for want in [hca.as_str(), "max_qp:", "phys_state:\t\tLINK_UP (5)", &gid] {
            assert!(out.contains(want), "{backend}: no {want:?} in:\n{out}");
        }
    }

    let out = devinfo(a, a.iface(), "xdp", &["-l"]);
    assert_eq!(out, format!("1 HCA found:\n\txrdma_{}\n\n", a.iface()));
    // One device per interface named in XRDMA_IFACE, in order.
    let two = format!("{},lo", a.iface());
    let out = devinfo(a, &two, "xdp", &["-l"]);
    assert_eq!(
        out,
        format!("2 HCAs found:\n\txrdma_{}\n\txrdma_lo\n\n", a.iface())
    );
}

#[test]
fn ibv_devinfo_without_xrdma_iface_says_what_to_set() {
    let mut cmd = Command::new(rdma_core("ibv_devinfo"));
    cmd.env("LD_PRELOAD", library())
        .env_remove("XRDMA_IFACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = finish(cmd.spawn().unwrap(), "ibv_devinfo");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("set XRDMA_IFACE"), "{stderr}");
    assert!(
        stderr.contains("Failed to get IB devices list: Function not implemented"),
        "{stderr}"
    );
}

/// Runs ibv_ud_pingpong's server on host A and its client on host B; returns the client's
/// microseconds per iteration.
fn ud_pingpong(t: &Topology, backends: (&str, &str), extra: &[&str], port: u16) -> f64 {
    pingpong("ibv_ud_pingpong", t, backends, extra, port)
}

/// Runs rdma-core's `name` (ibv_ud_pingpong or ibv_rc_pingpong) preloaded, server on host
/// A and client on host B, and checks both print their result line; returns usec/iter.
fn pingpong(name: &str, t: &Topology, backends: (&str, &str), extra: &[&str], port: u16) -> f64 {
    const ITERS: &str = "500";
    let (a, b) = (t.a(), t.b());
    let program = rdma_core(name);
    let port_arg = port.to_string();
    let args = ["-g", "0", "-n", ITERS, "-p", &port_arg];
    let mut cmd = a.ns().command(program);
    cmd.args(args).args(extra);
    let server = preloaded(cmd, a.iface(), backends.0).spawn().unwrap();
    wait_listening(a, port);
    let mut cmd = b.ns().command(program);
    cmd.args(args).args(extra).arg(a.ipv4().to_string());
    let client = preloaded(cmd, b.iface(), backends.1).spawn().unwrap();
    let client = finish(client, &format!("{name} client"));
    let server = finish(server, &format!("{name} server"));
    let mut usec = 0.0;
    for (who, out) in [("server", &server), ("client", &client)] {
        let (stdout, stderr) = text(out);
        assert!(
            out.status.success(),
            "{who} {extra:?} failed ({}): {stdout}{stderr}",
            out.status
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{ITERS} iters in ")) && l.ends_with(" usec/iter"))
            .unwrap_or_else(|| panic!("{who} {extra:?}: no iters line in {stdout}{stderr}"));
        usec = line
            .rsplit(" = ")
            .next()
            .and_then(|s| s.trim_end_matches(" usec/iter").parse().ok())
            .unwrap_or_else(|| panic!("{who}: cannot parse {line:?}"));
        println!("{name} {extra:?} {backends:?} {who}: {line}");
    }
    usec
}

#[test]
fn ibv_ud_pingpong_runs_between_two_hosts() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    // ibv_ud_pingpong's default size, 2048, exceeds the 1024-byte path MTU of a
    // 1500-byte link (as on rxe); 1024 is the largest that fits.
    ud_pingpong(&t, ("xdp", "xdp"), &["-s", "1024"], 18611);
    ud_pingpong(&t, ("xdp", "xdp"), &["-s", "1024", "-e"], 18612);
    ud_pingpong(&t, ("xdp", "xdp"), &["-s", "64"], 18613);
    ud_pingpong(&t, ("udp", "udp"), &["-s", "1024"], 18614);
    ud_pingpong(&t, ("udp", "udp"), &["-s", "1024", "-e"], 18615);
    ud_pingpong(&t, ("udp", "xdp"), &["-s", "1024"], 18616);
}

#[test]
fn ibv_rc_pingpong_runs_between_two_hosts() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    // Default size (4096: four packets at the 1024-byte path MTU) and 64 KiB messages,
    // polling and with completion events, on each backend; then across backends.
    let mut port = 18620;
    for backends in [("xdp", "xdp"), ("udp", "udp")] {
        for extra in [&[][..], &["-e"], &["-s", "65536"], &["-s", "65536", "-e"]] {
            port += 1;
            pingpong("ibv_rc_pingpong", &t, backends, extra, port);
        }
    }
    pingpong("ibv_rc_pingpong", &t, ("udp", "xdp"), &["-e"], port + 1);
}

#[test]
fn rdma_core_pingpongs_run_at_path_mtu_4096_on_a_jumbo_link() {
    let t = Topology::builder()
        .mtu(9000)
        .pair()
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    // ibv_ud_pingpong's default size, 2048, and the most a 4096 path MTU carries; RC with
    // 64 KiB messages, each 16 full packets spanning two UMEM frames.
    ud_pingpong(&t, ("xdp", "xdp"), &[], 18641);
    ud_pingpong(&t, ("xdp", "udp"), &["-s", "4096"], 18642);
    let rc = ["-m", "4096", "-s", "65536"];
    pingpong("ibv_rc_pingpong", &t, ("xdp", "xdp"), &rc, 18643);
    pingpong("ibv_rc_pingpong", &t, ("udp", "xdp"), &rc, 18644);
}

#[test]
fn rdma_core_pingpongs_and_the_rust_examples_talk_to_each_other() {
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    for (port, rust_serves, name) in [
        (18631u16, true, "rc_pingpong"),
        (18632, false, "rc_pingpong"),
        (18633, true, "ud_pingpong"),
        (18634, false, "ud_pingpong"),
    ] {
        let args = ["-n", "500", "-s", "1024", "-p", &port.to_string()].map(String::from);
        let rdma_core_cmd = |host: &Host| {
            let mut cmd = host.ns().command(rdma_core(&format!("ibv_{name}")));
            cmd.args(["-g", "0"]).args(&args);
            preloaded(cmd, host.iface(), "xdp")
        };
        let rust_cmd = |host: &Host| {
            let mut cmd = host.ns().command(built(&format!("examples/{name}")));
            cmd.args(["-d", host.iface()])
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd
        };
        let (mut server, mut client) = if rust_serves {
            (rust_cmd(a), rdma_core_cmd(b))
        } else {
            (rdma_core_cmd(a), rust_cmd(b))
        };
        let server = server.spawn().unwrap();
        wait_listening(a, port);
        let client = client.arg(a.ipv4().to_string()).spawn().unwrap();
        let client = finish(client, &format!("{name} client"));
        let server = finish(server, &format!("{name} server"));
        for (who, out) in [("server", &server), ("client", &client)] {
            let (stdout, stderr) = text(out);
            assert!(
                out.status.success(),
                "{name} {who} (rust serves: {rust_serves}) failed ({}): {stdout}{stderr}",
                out.status
            );
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with("500 iters in ") && l.ends_with(" usec/iter")),
                "{name} {who} (rust serves: {rust_serves}): {stdout}{stderr}"
            );
        }
    }
}
