//! Named network namespaces.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::panic;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use crate::{Error, cmd};

/// Where `ip netns` keeps its namespace handles (bind mounts of `/proc/PID/ns/net`).
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Prefix of every namespace this crate names; see [`remove_stale`].
pub(crate) const NAME_PREFIX: &str = "xr-";

/// A named network namespace, as made by `ip netns add NAME`.
///
/// The namespace is deleted (`ip netns del NAME`) when the value is dropped,
/// including while unwinding from a panic. Interfaces inside it (for example the
/// ends of veth pairs) disappear with it. Deleting only removes the name: a
/// process spawned with [`command`](Netns::command) that is still running, or a
/// socket created inside [`run`](Netns::run) that is still open, keeps the
/// (now nameless) namespace alive until it exits or is closed.
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates the network namespace `name` (`ip netns add NAME`).
    ///
    /// Fails with [`Error::NotRoot`] unless running as root, with
    /// [`Error::Invalid`] for a name that cannot be a file name, and with
    /// [`Error::Command`] carrying `ip`'s error output if `ip netns add` fails
    /// (for example because the name is taken).
    pub fn new(name: impl Into<String>) -> Result<Netns, Error> {
        let name = name.into();
        if name.is_empty()
            || name.len() > 255
            || name == "."
            || name == ".."
            || name.contains(['/', '\0'])
        {
            return Err(Error::Invalid(format!(
                "{name:?} cannot be a network namespace name (it must be a file name)"
            )));
        }
        cmd::require_root()?;
        cmd::ip(
            &["netns", "add", &name],
            &format!("creating network namespace {name}"),
        )?;
        let path = Path::new(NETNS_DIR).join(&name);
        Ok(Netns { name, path })
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's handle, `/run/netns/NAME`; open it and `setns(2)` to enter.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    ///
    /// Network namespace membership is per thread, so sockets (including
    /// netlink, BPF and AF_XDP sockets) created inside `f`, and threads spawned
    /// from it, belong to this namespace; the rest of the process is
    /// unaffected. Sockets keep their namespace after `f` returns, so they may
    /// be returned and used from any thread.
    ///
    /// A panic in `f` is propagated to the caller with its original payload.
    ///
    /// # Panics
    ///
    /// Panics if the namespace cannot be entered (see [`try_run`](Netns::try_run)
    /// for a version that returns the error instead), or if `f` panics.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.try_run(f) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`run`](Netns::run), but returns an error if the namespace cannot
    /// be entered (it was deleted, or `setns(2)` is not permitted).
    ///
    /// A panic in `f` is still propagated as a panic.
    pub fn try_run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, Error> {
        let handle = File::open(&self.path).map_err(|e| Error::Io {
            context: format!(
                "opening {} to enter network namespace {}",
                self.path.display(),
                self.name
            ),
            source: e,
        })?;
        let joined = thread::scope(|scope| {
            thread::Builder::new()
                .name("xr-netns".into())
                .spawn_scoped(scope, move || {
                    // SAFETY: `handle` is an open file descriptor for the whole call;
                    // setns only changes this (fresh, not yet shared) thread's namespace.
                    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // Make sure this thread really is in the namespace before `f`
                    // (which may write sysctls) runs: never act on the caller's.
                    let wanted = handle.metadata()?;
                    let now = std::fs::metadata("/proc/thread-self/ns/net")?;
                    if (wanted.dev(), wanted.ino()) != (now.dev(), now.ino()) {
                        return Err(io::Error::other(
                            "setns succeeded but the thread is not in the namespace",
                        ));
                    }
                    drop(handle);
                    Ok(f())
                })
                .map(|thread| thread.join())
        });
        match joined {
            Err(e) => Err(Error::Io {
                context: format!("spawning a thread to enter network namespace {}", self.name),
                source: e,
            }),
            Ok(Err(payload)) => panic::resume_unwind(payload),
            Ok(Ok(Err(e))) => Err(Error::Io {
                context: format!(
                    "entering network namespace {} with setns(CLONE_NEWNET)",
                    self.name
                ),
                source: e,
            }),
            Ok(Ok(Ok(r))) => Ok(r),
        }
    }

    /// A [`Command`] that runs `program` inside this namespace
    /// (`ip netns exec NAME program`); add arguments and spawn it as usual.
    ///
    /// `ip netns exec` also gives the program a private mount namespace with
    /// this namespace's `/sys`. Stop long-running programs (tshark, servers)
    /// before dropping the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(&self.name).arg(program);
        cmd
    }

    /// Runs `cmdline` with `sh -c` inside this namespace and returns its
    /// standard output; fails with an error carrying its standard error if it
    /// exits with a non-zero status.
    pub fn sh(&self, cmdline: &str) -> Result<String, Error> {
        cmd::run(
            self.command("sh").arg("-c").arg(cmdline),
            &format!("running `{cmdline}` in network namespace {}", self.name),
            None,
        )
    }

    /// Sets a `net.*` sysctl of this namespace; `key` is a path under
    /// `/proc/sys/net`, e.g. `ipv6/conf/all/disable_ipv6`. A key that does not
    /// exist (e.g. IPv6 compiled out) is ignored when `ignore_missing`.
    pub(crate) fn set_net_sysctl(
        &self,
        key: &str,
        value: &str,
        ignore_missing: bool,
    ) -> Result<(), Error> {
        let path = Path::new("/proc/sys/net").join(key);
        // /proc/sys/net shows the namespace of the thread that opens the file.
        match self.try_run(|| std::fs::write(&path, value))? {
            Ok(()) => Ok(()),
            Err(e) if ignore_missing && e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                context: format!(
                    "writing {value} to {} in network namespace {}",
                    path.display(),
                    self.name
                ),
                source: e,
            }),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd::ip(
            &["netns", "del", &self.name],
            &format!("deleting network namespace {}", self.name),
        ) {
            eprintln!("xrdma-testnet: {e}");
        }
    }
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Netns").field(&self.name).finish()
    }
}

/// The pid encoded in a name made by this crate (`xr-<pid>-...`), if any.
pub(crate) fn pid_of_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Deletes namespaces left behind by dead processes: those named
/// `xr-<pid>-...` whose `<pid>` no longer exists (no `/proc/<pid>`), e.g.
/// after a test run was killed with SIGKILL. Errors are printed, not returned.
pub(crate) fn remove_stale() {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            eprintln!("xrdma-testnet: listing {NETNS_DIR} to remove stale namespaces: {e}");
            return;
        }
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = pid_of_name(name) else {
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match cmd::ip(
            &["netns", "del", name],
            &format!("deleting stale network namespace {name} (its process {pid} is gone)"),
        ) {
            Ok(_) => {}
            // Another process cleaning up at the same time got there first.
            Err(_) if !Path::new(NETNS_DIR).join(name).exists() => {}
            Err(e) => eprintln!("xrdma-testnet: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pid_of_name;

    #[test]
    fn parses_pids_from_names() {
        assert_eq!(pid_of_name("xr-123-4-a"), Some(123));
        assert_eq!(pid_of_name("xr-4194303-0-sw"), Some(4194303));
        assert_eq!(pid_of_name("xr--4-a"), None);
        assert_eq!(pid_of_name("xr-12x-4-a"), None);
        assert_eq!(pid_of_name("xr-123"), None);
        assert_eq!(pid_of_name("other-123-4-a"), None);
    }
}
