//! Interoperability with Linux's own RDMA stack: rdma-core's unmodified programs over
//! libxrdma.so on one side, the same programs over the kernel's Soft-RoCE driver (rdma_rxe)
//! in a QEMU guest on the other ([`xrdma_testnet::RxePeer`]), on the `xdp` and the `udp`
//! backend, with xrdma serving and with xrdma connecting.
//!
//! One guest serves every test of this file (booting it takes a minute or two without KVM);
//! the tests take turns on it. Each case of [`CASES`] runs four times: per backend, the guest
//! serving and the host (xrdma) serving. Adding a program is one entry in [`CASES`]. The
//! cases of [`BANDWIDTH`] count, at the guest, the packets xrdma sent it twice.
//!
//! Needs root and the packages of scripts/setup.sh (QEMU, Debian's 6.1 kernel, rdma-core);
//! without them the tests fail saying what is missing.

use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xrdma_testnet::{RxePeer, built};

/// How long one program may run before the test kills it and fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server gets to finish once its client has failed.
const AFTER_FAILURE: Duration = Duration::from_secs(5);

/// How long a server may take to start listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A program pair run between xrdma and the rxe guest.
///
/// `server` and `client` are command lines (words split on spaces, no shell), with
/// `{gid}` -> the GID index on that side (the guest's RoCE v2 IPv4 GID, or 0 for xrdma),
/// `{port}` -> a TCP port of the case's own, `{server}` -> the server's IPv4 address.
/// The client starts once the server is ready (see [`Ready`]).
struct Case {
    name: &'static str,
    server: &'static str,
    client: &'static str,
    /// Both sides must print this, and exit with status 0.
    expect: &'static str,
    ready: Ready,
}

/// How the test knows a server is ready for its client.
#[derive(Clone, Copy)]
enum Ready {
    /// It listens on TCP `{port}` (rdma-core's pingpongs and perftest exchange their
    /// addresses there).
    Tcp,
    /// It listens on rdma_cm port `{port}`: in the guest, the kernel lists a CM id in
    /// LISTEN on it; on the host, xrdma's CM holds a request that comes before the
    /// listener for a moment, and the peer resends one that came before the device was
    /// open, so the client can start with the server.
    RdmaCm,
}

const CASES: &[Case] = &[
    Case {
        name: "ibv_rc_pingpong 4 KiB",
        server: "ibv_rc_pingpong -g {gid} -n 100 -p {port}",
        client: "ibv_rc_pingpong -g {gid} -n 100 -p {port} {server}",
        expect: "100 iters in",
        ready: Ready::Tcp,
    },
    Case {
        // 64 packets a message, and completion channels instead of polling.
        name: "ibv_rc_pingpong 64 KiB -e",
        server: "ibv_rc_pingpong -g {gid} -s 65536 -e -n 50 -p {port}",
        client: "ibv_rc_pingpong -g {gid} -s 65536 -e -n 50 -p {port} {server}",
        expect: "50 iters in",
        ready: Ready::Tcp,
    },
    Case {
        // 1024: the largest UD message at the 1024-byte path MTU of a 1500-byte link.
        name: "ibv_ud_pingpong 1 KiB",
        server: "ibv_ud_pingpong -g {gid} -s 1024 -n 100 -p {port}",
        client: "ibv_ud_pingpong -g {gid} -s 1024 -n 100 -p {port} {server}",
        expect: "100 iters in",
        ready: Ready::Tcp,
    },
    Case {
        // The connection manager: REQ/REP/RTU, then DREQ/DREP, between the kernel's CM and
        // xrdma's; SEND, RDMA READ and WRITE on the QPs it connected.
        name: "rping -C 10",
        server: "rping -s -a 0.0.0.0 -p {port} -C 10 -v",
        client: "rping -c -a {server} -p {port} -C 10 -v",
        expect: "rdma-ping-9: ",
        ready: Ready::RdmaCm,
    },
    Case {
        name: "ib_send_lat -R",
        server: "ib_send_lat -R -x {gid} -p {port} -n 200",
        client: "ib_send_lat -R -x {gid} -p {port} -n 200 {server}",
        expect: "#bytes",
        ready: Ready::RdmaCm,
    },
    Case {
        name: "ib_write_bw",
        server: "ib_write_bw -x {gid} -p {port} -n 200",
        client: "ib_write_bw -x {gid} -p {port} -n 200 {server}",
        expect: "#bytes",
        ready: Ready::Tcp,
    },
];

/// Which side serves.
#[derive(Clone, Copy, Debug)]
enum Server {
    Guest,
    Xrdma,
}

/// Fills in a command template.
fn command(template: &str, gid: u32, port: u16, server: &str) -> String {
    template
        .replace("{gid}", &gid.to_string())
        .replace("{port}", &port.to_string())
        .replace("{server}", server)
}

/// libxrdma.so in the target directory this test was built in.
fn library() -> PathBuf {
    built("libxrdma.so")
}

/// Starts `cmdline` on the host side, in the peer's namespace, over libxrdma.so.
fn spawn_xrdma(peer: &RxePeer, backend: &str, cmdline: &str) -> Result<Child, String> {
    let mut words = cmdline.split_whitespace();
    let program = words.next().ok_or("empty command")?;
    peer.ns_command(program)
        .args(words)
        .env("LD_PRELOAD", library())
        .env("XRDMA_IFACE", peer.tap())
        .env("XRDMA_BACKEND", backend)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{cmdline}`: {e}"))
}

/// Waits for a host program, killing it if it runs past `timeout`.
fn wait_xrdma(child: Child, cmdline: &str, timeout: Duration) -> Result<String, String> {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(|e| format!("waiting for `{cmdline}`: {e}"))?,
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(format!("xrdma's `{cmdline}` still ran after {timeout:?}"));
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "xrdma's `{cmdline}` failed ({}):\n{text}",
            out.status
        ))
    }
}

/// Runs a guest command to its end.
fn run_guest(peer: &RxePeer, cmdline: &str) -> Result<String, String> {
    let out = peer.run(cmdline, TIMEOUT).map_err(|e| e.to_string())?;
    if out.success() {
        Ok(out.output)
    } else {
        Err(format!(
            "the guest's `{cmdline}` failed (status {}):\n{}",
            out.status, out.output
        ))
    }
}

/// Waits until the server of a case is ready for its client.
fn wait_ready(peer: &RxePeer, server: Server, ready: Ready, port: u16) -> Result<(), String> {
    match (server, ready) {
        (Server::Guest, Ready::Tcp) => peer.wait_guest_listening(port, LISTEN_TIMEOUT),
        (Server::Xrdma, Ready::Tcp) => peer.wait_host_listening(port, LISTEN_TIMEOUT),
        (Server::Guest, Ready::RdmaCm) => {
            let cmd = format!(
                "while ! rdma res show cm_id | grep 'state LISTEN' | grep -q ':{port} '; \
                 do sleep 0.05; done"
            );
            match peer.run(&cmd, LISTEN_TIMEOUT) {
                Ok(out) if out.success() => Ok(()),
                Ok(out) => return Err(format!("no rdma_cm listener on {port}: {}", out.output)),
                Err(e) => Err(e),
            }
        }
        (Server::Xrdma, Ready::RdmaCm) => Ok(()),
    }
    .map_err(|e| e.to_string())
}

/// Runs `case` once: server on one side, client on the other; returns both outputs.
fn run_case(
    peer: &RxePeer,
    case: &Case,
    backend: &str,
    server: Server,
    port: u16,
) -> Result<(String, String), String> {
    let guest_gid = peer.gid_index();
    match server {
        Server::Guest => {
            let server_cmd = command(case.server, guest_gid, port, "");
            let client_cmd = command(case.client, 0, port, &peer.guest_ip().to_string());
            let job = peer.spawn(&server_cmd).map_err(|e| e.to_string())?;
            wait_ready(peer, server, case.ready, port)?;
            let client = spawn_xrdma(peer, backend, &client_cmd)
                .and_then(|child| wait_xrdma(child, &client_cmd, TIMEOUT));
            let client = match client {
                Ok(client) => client,
                Err(e) => {
                    let served = match job.wait(AFTER_FAILURE) {
                        Ok(out) => out.output,
                        Err(e) => e.to_string(),
                    };
                    return Err(format!(
                        "{e}
the guest's server said:
{served}"
                    ));
                }
            };
            let served = job.wait(TIMEOUT).map_err(|e| e.to_string())?;
            if !served.success() {
                return Err(format!(
                    "the guest's `{server_cmd}` failed (status {}):\n{}\nxrdma's client said:\n{client}",
                    served.status, served.output
                ));
            }
            Ok((served.output, client))
        }
        Server::Xrdma => {
            let server_cmd = command(case.server, 0, port, "");
            let client_cmd = command(case.client, guest_gid, port, &peer.host_ip().to_string());
            let child = spawn_xrdma(peer, backend, &server_cmd)?;
            let client = wait_ready(peer, server, case.ready, port)
                .and_then(|()| run_guest(peer, &client_cmd));
            let wait = if client.is_ok() {
                TIMEOUT
            } else {
                AFTER_FAILURE
            };
            let served = wait_xrdma(child, &server_cmd, wait);
            match (served, client) {
                (Ok(served), Ok(client)) => Ok((served, client)),
                (Err(e), Ok(client)) => Err(format!("{e}\nthe guest's client said:\n{client}")),
                (Ok(served), Err(e)) => Err(format!("{e}\nxrdma's server said:\n{served}")),
                (Err(s), Err(c)) => Err(format!("{s}\n{c}")),
            }
        }
    }
}

/// Runs every case both ways on `backend`; fails listing every case that failed.
fn interoperate(backend: &str, first_port: u16) {
    let peer = RxePeer::shared().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "rxe peer: kernel {}, {:?}, booted in {:.1?}, guest GID index {}",
        peer.kernel_release(),
        peer.accel(),
        peer.boot_time(),
        peer.gid_index()
    );
    let mut failures = Vec::new();
    let mut port = first_port;
    for case in CASES {
        for server in [Server::Guest, Server::Xrdma] {
            port += 1;
            let started = Instant::now();
            let result = run_case(&peer, case, backend, server, port).and_then(|(s, c)| {
                for (who, out) in [("server", &s), ("client", &c)] {
                    if !out.contains(case.expect) {
                        return Err(format!("the {who} did not print {:?}:\n{out}", case.expect));
                    }
                }
                Ok(())
            });
            let what = format!("{} on {backend}, {server:?} serving", case.name);
            println!("{what}: {:.1?}", started.elapsed());
            if let Err(e) = result {
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    assert_none_failed(&peer, &failures);
}

/// Fails listing `failures`, with the end of the guest's console, if there are any.
fn assert_none_failed(peer: &RxePeer, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{}\n\n{}",
        failures.join("\n\n"),
        console_tail(peer)
    );
}

/// The end of the guest's console (its kernel's messages and its agent's), for a failure
/// that may be the guest's own: the peer's directory, where the whole log is, goes with
/// the next peer or topology.
fn console_tail(peer: &RxePeer) -> String {
    let console = peer.console();
    let lines: Vec<&str> = console.lines().collect();
    let tail = &lines[lines.len().saturating_sub(60)..];
    format!(
        "the guest's console, last {} lines:\n{}",
        tail.len(),
        tail.join("\n")
    )
}

#[test]
fn rdma_core_programs_interoperate_with_soft_roce_over_xdp() {
    interoperate("xdp", 18700);
}

#[test]
fn rdma_core_programs_interoperate_with_soft_roce_over_udp() {
    // rxe numbers the IPv4 identification of its datagrams, which the ICRC covers and a UDP
    // socket does not show: this passes only because the udp backend solves for it.
    interoperate("udp", 18750);
}

/// perftest's bandwidth runs with xrdma sending to the guest, whose replies take 1-10 ms.
const BANDWIDTH: &[Case] = &[
    Case {
        name: "ib_write_bw",
        server: "ib_write_bw -x {gid} -p {port} -n 500",
        client: "ib_write_bw -x {gid} -p {port} -n 500 {server}",
        expect: "#bytes",
        ready: Ready::Tcp,
    },
    Case {
        name: "ib_send_bw",
        server: "ib_send_bw -x {gid} -p {port} -n 500",
        client: "ib_send_bw -x {gid} -p {port} -n 500 {server}",
        expect: "#bytes",
        ready: Ready::Tcp,
    },
];

/// The guest's rxe counters `names`, in that order.
fn rxe_counters(peer: &RxePeer, names: &[&str]) -> Vec<u64> {
    let files: Vec<String> = names
        .iter()
        .map(|n| format!("/sys/class/infiniband/rxe0/ports/1/hw_counters/{n}"))
        .collect();
    let out = peer
        .run(&format!("cat {}", files.join(" ")), TIMEOUT)
        .unwrap_or_else(|e| panic!("reading the guest's counters: {e}"));
    assert!(
        out.success(),
        "reading the guest's counters: {}",
        out.output
    );
    let values: Vec<u64> = out
        .output
        .split_whitespace()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("a counter reads {v:?}"))
        })
        .collect();
    assert_eq!(values.len(), names.len(), "{}", out.output);
    values
}

/// xrdma's retransmissions follow the round trip the peer really has: a peer that answers
/// in milliseconds is not sent the same packets again before it could answer. Counted at
/// the peer: rxe's `duplicate_request` against the packets it received, under 1 %.
#[test]
fn a_slow_peer_receives_under_one_percent_duplicates() {
    let peer = RxePeer::shared().unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    let mut port = 18800;
    for backend in ["xdp", "udp"] {
        for case in BANDWIDTH {
            port += 1;
            let names = ["rcvd_pkts", "duplicate_request"];
            let before = rxe_counters(&peer, &names);
            let result = run_case(&peer, case, backend, Server::Guest, port);
            let after = rxe_counters(&peer, &names);
            let (received, duplicates) = (after[0] - before[0], after[1] - before[1]);
            let what = format!("{} on {backend}, the guest serving", case.name);
            println!("{what}: {duplicates} duplicates of {received} packets received");
            match result {
                Err(e) => failures.push(format!("{what}: {e}")),
                Ok(_) if duplicates * 100 >= received => failures.push(format!(
                    "{what}: {duplicates} duplicates of {received} packets received"
                )),
                Ok(_) => {}
            }
        }
    }
    assert_none_failed(&peer, &failures);
}

#[test]
fn the_soft_roce_peer_runs_commands_and_reaches_the_host() {
    let peer = RxePeer::shared().unwrap_or_else(|e| panic!("{e}"));
    let out = peer
        .run(
            "cat /sys/class/infiniband/rxe0/ports/1/state; echo oops >&2; exit 3",
            TIMEOUT,
        )
        .unwrap();
    assert_eq!(out.status, 3, "{out:?}");
    assert_eq!(out.output, "4: ACTIVE\noops\n");
    let gid = format!(
        "/sys/class/infiniband/rxe0/ports/1/gids/{}",
        peer.gid_index()
    );
    let out = peer.run(&format!("cat {gid}"), TIMEOUT).unwrap();
    let [a, b, c, d] = peer.guest_ip().octets();
    assert_eq!(
        out.output.trim(),
        format!("0000:0000:0000:0000:0000:ffff:{a:02x}{b:02x}:{c:02x}{d:02x}")
    );
    // A command past its time is killed, and the error says so.
    let err = peer
        .run("echo started; sleep 61", Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("killed it") && err.contains("started"),
        "{err}"
    );
    let out = peer.run("pgrep -af 'sleep 61'", TIMEOUT).unwrap();
    assert_eq!(out.status, 1, "still running: {}", out.output);
    // So is a job dropped before it ends.
    drop(peer.spawn("sleep 62").unwrap());
    let out = peer
        .run(
            "while pgrep -f 'sleep 62' >/dev/null; do sleep 0.1; done",
            TIMEOUT,
        )
        .unwrap();
    assert!(out.success(), "{out:?}");
    // The host side reaches the guest over the tap device.
    let out = peer
        .ns_command("ping")
        .args(["-c", "1", "-W", "5", &peer.guest_ip().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", console_tail(&peer));
}
