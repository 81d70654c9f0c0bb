//! What the tests of rsockets between namespaced hosts share: both hosts' sockets in
//! this one process, and a test run alone in a child process where a process-wide setting
//! (the rsocket backend) must be its own.
#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use xrdma_rsocket::{Builder, RsListener, RsStream};
use xrdma_testnet::{Host, wait_or_kill};

/// Opens every host's rsocket device, each from a thread in the host's namespace.
///
/// The connection manager's devices are process-wide. A client that did not bind would
/// find the device that holds the destination address, the server's, and talk to itself
/// instead of crossing the link; so clients bind to their host's address (see
/// [`connect`]), which needs that host's device open first.
pub fn open_devices(hosts: &[Host]) {
    for h in hosts {
        let ip = h.ipv4();
        h.ns()
            .run(move || RsListener::bind((ip, 0)).map(drop))
            .unwrap_or_else(|e| panic!("opening the rsocket device of {}: {e}", h.iface()));
    }
}

/// `builder`'s listener on `host` at `port`.
pub fn listen(host: &Host, port: u16, builder: &Builder) -> RsListener {
    let ip = host.ipv4();
    host.ns()
        .run(|| builder.listen((ip, port)))
        .unwrap_or_else(|e| panic!("listening on {ip}:{port}: {e}"))
}

/// `builder`'s connection from `host` (bound to its address) to `to`.
pub fn connect(host: &Host, to: SocketAddr, builder: &Builder) -> RsStream {
    let from = SocketAddr::new(host.ipv4().into(), 0);
    host.ns()
        .run(|| builder.clone().bind(from).connect(to))
        .unwrap_or_else(|e| panic!("connecting from {from} to {to}: {e}"))
}

/// Set in the child process [`alone`] starts: the name of the test it runs.
const CHILD: &str = "XRDMA_TEST_ALONE";

/// Runs `body` as test `name` of this binary in a child process of its own (the test binary
/// again, with only that test), killed after `timeout`; fails if the child's test fails.
/// For tests that need process-wide settings of their own, such as
/// `xrdma_rsocket::configure`'s backend, which is set once per process. The children of a
/// test binary run one at a time: these are its heavy tests, and each has the CPU to itself.
pub fn alone(name: &str, timeout: Duration, body: impl FnOnce()) {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        body();
        return;
    }
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name} in a child process: {e}"));
    let out = wait_or_kill(child, timeout, name);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}");
    eprintln!("{stderr}");
    // "1 passed": the child ran the test, rather than matching nothing and passing.
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in its child process: {}",
        out.status
    );
}

/// Runs one of the rsocket examples between two fresh namespaced hosts on `backend`: its
/// server on host B at `port` (once it has printed a line starting with `ready`), then its
/// client on host A, killed after `timeout`. Returns the client's stdout, after checking
/// that it succeeded and ended with `ok`.
pub fn example_between_hosts(
    example: &str,
    port: u16,
    backend: &str,
    ready: &str,
    timeout: Duration,
) -> String {
    use std::io::{BufRead, BufReader};

    let t = xrdma_testnet::Topology::pair()
        .unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let path = xrdma_testnet::built(&format!("examples/{example}"));
    let (a, b) = (t.a(), t.b());
    let at = format!("{}:{port}", b.ipv4());
    let mut server = b
        .ns()
        .command(&path)
        .args(["server", &at])
        .env("XRDMA_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting {example} server (cargo builds it with the tests): {e}")
        });
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with(ready), "{example} server said {line:?}");
    let client = a
        .ns()
        .command(&path)
        .args(["client", &at])
        .env("XRDMA_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {example} client: {e}"));
    let out = wait_or_kill(client, timeout, &format!("{example} client"));
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{example} over {backend}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
