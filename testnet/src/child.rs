//! A test's child processes: waiting for one without letting a hung one hang the test,
//! and servers whose output is read as it comes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Waits for `child` and collects its output; if it runs past `timeout`, kills it (by its
/// pid) and panics naming it `what`.
pub fn wait_or_kill(child: Child, timeout: Duration, what: &str) -> Output {
    wait_within(child, timeout, what).unwrap_or_else(|printed| {
        panic!("{what} still running after {timeout:?}; it printed:\n{printed}")
    })
}

/// Waits for `child` and collects its output; if it runs past `timeout`, kills it (by its
/// pid) and returns what it had printed.
fn wait_within(child: Child, timeout: Duration, what: &str) -> Result<Output, String> {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => Ok(out.unwrap_or_else(|e| panic!("waiting for {what}: {e}"))),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            Err(rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(Result::ok)
                .map(|o| text(&o))
                .unwrap_or_default())
        }
    }
}

/// What a finished program printed: its standard output, then its standard error.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server program whose output (standard output and error, piped) is read line by line
/// as it comes, so that a test can wait for the line it prints once it listens. Dropping
/// it kills the program: a failing test leaves no server behind.
pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    what: String,
}

impl Server {
    /// Starts `cmd`, whose standard output and error must be piped; `what` names it in
    /// failures.
    pub fn start(mut cmd: Command, what: &str) -> Server {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("standard output piped");
        let err = child.stderr.take().expect("standard error piped");
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Server {
            child,
            lines,
            seen: Vec::new(),
            what: what.into(),
        }
    }

    /// Waits up to 30 s for a line containing `marker`; fails showing what came instead.
    pub fn wait_for(&mut self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.seen.iter().any(|l| l.contains(marker)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "{}: no {marker:?} within 30 s; it printed:\n{}",
                    self.what,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits up to `timeout` for the server to exit (then kills it and fails); returns its
    /// status and everything it printed.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        let pid = self.child.id() as libc::pid_t;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for the server") {
                break s;
            }
            if Instant::now() > deadline {
                // SAFETY: kill has no memory-safety preconditions; `pid` is our child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!(
                    "{} still running after {timeout:?}; it printed:\n{}",
                    self.what,
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The readers end with the process's pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }

    /// Stops a server that serves for ever, and returns what it printed.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Waits up to `timeout` for `client`, a client of this server; one that runs longer
    /// is killed, and the test fails showing what it and the server printed.
    pub fn finish_client(&mut self, client: Child, what: &str, timeout: Duration) -> Output {
        wait_within(client, timeout, what).unwrap_or_else(|printed| {
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line);
            }
            panic!(
                "{what} still running after {timeout:?}; it printed:\n{printed}\nthe server printed:\n{}",
                self.seen.join("\n")
            )
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
