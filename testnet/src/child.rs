//! Waiting for a test's child process without letting a hung one hang the test.

use std::process::{Child, Output};
use std::sync::mpsc;
use std::time::Duration;

/// Waits for `child` and collects its output; if it runs past `timeout`, kills it (by its
/// pid) and panics naming it `what`.
pub fn wait_or_kill(child: Child, timeout: Duration, what: &str) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{what} still running after {timeout:?}");
        }
    }
}
