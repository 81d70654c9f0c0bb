//! The crate's error type.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// Why a namespace, topology or command inside one could not be set up or run.
///
/// Every variant's [`Display`](fmt::Display) says in plain words what went wrong
/// and, where it can, what to do about it, so a test that cannot run fails
/// saying why. [`Debug`](fmt::Debug) prints the same message, so
/// `Topology::pair().unwrap()` is readable too.
#[non_exhaustive]
pub enum Error {
    /// The effective user is not root, so network namespaces cannot be created.
    NotRoot {
        /// The effective uid found.
        euid: u32,
    },
    /// An external command ran but failed.
    Command {
        /// What was being done, e.g. "creating network namespace xr-12-0-a".
        context: String,
        /// The command line, shell-like.
        command: String,
        /// Its exit code, `None` if it was killed by a signal.
        status: Option<i32>,
        /// What it wrote to standard error (trimmed).
        stderr: String,
    },
    /// An I/O error, e.g. a program that is not installed or a file that cannot be opened.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An argument was out of range (host count, loss fraction, name length, ...).
    Invalid(String),
    /// The Soft-RoCE peer ([`RxePeer`](crate::RxePeer)) could not start, or its guest failed
    /// to run a command; the message says why and, where it helps, ends with the guest's
    /// console.
    Rxe(String),
    /// [`wait_reachable`](crate::Host::wait_reachable) ran out of time.
    Unreachable {
        /// Namespace the pings were sent from.
        from: String,
        /// Address that did not answer.
        to: IpAddr,
        /// How long it tried.
        waited: Duration,
        /// Output of the last `ping` attempt.
        last_output: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotRoot { euid } => write!(
                f,
                "creating network namespaces needs root (CAP_SYS_ADMIN): run the tests as root \
                 (effective uid is {euid}, not 0)"
            ),
            Error::Command {
                context,
                command,
                status,
                stderr,
            } => {
                write!(f, "{context}: `{command}` ")?;
                match status {
                    Some(code) => write!(f, "exited with status {code}")?,
                    None => write!(f, "was killed by a signal")?,
                }
                if stderr.is_empty() {
                    write!(f, " (no error output)")
                } else {
                    write!(f, ": {stderr}")
                }
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Invalid(msg) | Error::Rxe(msg) => f.write_str(msg),
            Error::Unreachable {
                from,
                to,
                waited,
                last_output,
            } => write!(
                f,
                "{to} is not reachable from namespace {from} after {waited:?} of pinging; last ping said: {}",
                last_output.trim()
            ),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
