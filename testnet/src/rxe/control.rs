//! The host's end of the control channel: a Unix socket that QEMU connects to at start-up
//! and carries to the guest's virtio-serial port. One thread reads the agent's lines into a
//! [`State`] and wakes whoever waits for it; QEMU's exit closes the socket, which ends the
//! wait the same way, so nothing here polls.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Error;

/// What the agent has said so far.
#[derive(Default, Debug)]
pub(crate) struct State {
    /// `(index, gid, type)` of rxe0's port 1, as the agent listed them at start-up.
    pub(crate) gids: Vec<(u32, String, String)>,
    /// rxe0's port state when the agent reported ready ("4: ACTIVE").
    pub(crate) port_state: Option<String>,
    /// The guest kernel's release, once the agent is ready.
    pub(crate) ready: Option<String>,
    /// Exit statuses of finished jobs, by name.
    pub(crate) done: HashMap<String, i32>,
    /// The agent's `note` lines and anything it said that was not understood.
    pub(crate) notes: Vec<String>,
    /// The channel closed: QEMU exited (or the guest's agent died).
    pub(crate) closed: bool,
}

impl State {
    fn take_line(&mut self, line: &str) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "gid" => {
                let mut parts = rest.splitn(3, ' ');
                let index = parts.next().and_then(|i| i.parse().ok());
                match (index, parts.next(), parts.next()) {
                    (Some(index), Some(gid), Some(kind)) => {
                        self.gids.push((index, gid.to_owned(), kind.to_owned()))
                    }
                    _ => self.notes.push(line.to_owned()),
                }
            }
            "state" => self.port_state = Some(rest.to_owned()),
            "ready" => self.ready = Some(rest.to_owned()),
            "done" => {
                let status = rest.split_once(' ').and_then(|(name, status)| {
                    Some((name.to_owned(), status.trim().parse::<i32>().ok()?))
                });
                match status {
                    Some((name, status)) => {
                        self.done.insert(name, status);
                    }
                    None => self.notes.push(line.to_owned()),
                }
            }
            _ => self.notes.push(line.to_owned()),
        }
    }
}

/// The channel: its writing half and the state its reader thread keeps.
pub(crate) struct Control {
    writer: Mutex<UnixStream>,
    shared: Arc<(Mutex<State>, Condvar)>,
    reader: Option<JoinHandle<()>>,
}

impl Control {
    /// Starts reading `stream`, connected to QEMU's end.
    pub(crate) fn new(stream: UnixStream) -> Result<Control, Error> {
        let writer = stream.try_clone().map_err(|e| Error::Io {
            context: "duplicating the control socket".into(),
            source: e,
        })?;
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("xr-rxe-control".into())
            .spawn(move || {
                let (state, changed) = &*theirs;
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lock(state).take_line(line.trim_end());
                    changed.notify_all();
                }
                lock(state).closed = true;
                changed.notify_all();
            })
            .map_err(|e| Error::Io {
                context: "starting the control channel's reader thread".into(),
                source: e,
            })?;
        Ok(Control {
            writer: Mutex::new(writer),
            shared,
            reader: Some(reader),
        })
    }

    /// Sends one command line to the agent.
    pub(crate) fn send(&self, line: &str) -> Result<(), Error> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| Error::Io {
                context: format!("sending `{line}` to the Soft-RoCE guest"),
                source: e,
            })
    }

    /// Waits until `until` holds for the state, the channel closes, or `timeout` passes;
    /// returns the state then (the caller tells which).
    pub(crate) fn wait(
        &self,
        timeout: Duration,
        until: impl Fn(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let (state, changed) = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut guard = lock(state);
        while !until(&guard) && !guard.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            guard = changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        guard
    }

    /// The state now.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.0)
    }

    /// Waits for the reader thread, which ends once QEMU has exited.
    pub(crate) fn join(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Locks `state`, also after a panic elsewhere poisoned it (the state stays consistent:
/// every update is one assignment or insertion).
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn agent_lines_update_the_state() {
        let mut s = State::default();
        for line in [
            "gid 0 fe80:0000:0000:0000:5054:00ff:fe12:0002 RoCE v2",
            "gid 1 0000:0000:0000:0000:0000:ffff:c613:fe02 RoCE v2",
            "state 4: ACTIVE",
            "ready 6.1.0-57-amd64",
            "done j3 0",
            "done j4 124",
            "note modprobe x failed",
            "done broken",
            "gid x",
        ] {
            s.take_line(line);
        }
        assert_eq!(s.gids.len(), 2);
        assert_eq!(s.gids[1].0, 1);
        assert_eq!(s.gids[1].2, "RoCE v2");
        assert_eq!(s.port_state.as_deref(), Some("4: ACTIVE"));
        assert_eq!(s.ready.as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!((s.done["j3"], s.done["j4"]), (0, 124));
        assert_eq!(s.notes, ["note modprobe x failed", "done broken", "gid x"]);
        assert!(!s.closed);
    }
}
