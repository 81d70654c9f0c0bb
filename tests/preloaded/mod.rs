//! Running unmodified rdma-core programs over xrdma in the test hosts: libxrdma.so
//! preloaded, the program found on PATH, its output collected under a time limit, and a
//! wait for its TCP side channel to listen. Shared by the tests that preload.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use xrdma_testnet::installed;
use xrdma_testnet::{Host, built, wait_or_kill};

/// How long one program may run before the test kills it and fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// libxrdma.so in the target directory this test was built in (target/<profile>/), where
/// `cargo build` puts it; scripts/test.sh builds the workspace before testing.
pub fn library() -> PathBuf {
    built("libxrdma.so")
}

/// Sets the environment of a preloaded verbs program on `iface` with `backend`.
pub fn preloaded(mut cmd: Command, iface: &str, backend: &str) -> Command {
    cmd.env("LD_PRELOAD", library())
        .env("XRDMA_IFACE", iface)
        .env("XRDMA_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for a spawned program, killing it if it runs past [`TIMEOUT`].
pub fn finish(child: Child, what: &str) -> Output {
    wait_or_kill(child, TIMEOUT, what)
}

/// A program's stdout and stderr, as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until something listens on TCP `port` in `host`'s namespace.
pub fn wait_listening(host: &Host, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listening = host
            .ns()
            .sh(&format!("ss -Hltn 'sport = :{port}'"))
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false);
        if listening {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} in {}",
            host.ns().name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
