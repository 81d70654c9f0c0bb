//! Running external tools (`ip`, `nft`, `ping`) and turning failures into [`Error`]s.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::process::{Command, Stdio};

use crate::Error;

/// Renders a command line for messages.
pub(crate) fn display(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Says which package provides a tool, for "not found" messages.
fn package_of(program: &OsStr) -> &'static str {
    match program.to_str() {
        Some("ip") => " (install iproute2)",
        Some("nft") => " (install nftables)",
        Some("ping") => " (install iputils-ping)",
        _ => "",
    }
}

pub(crate) fn spawn_error(cmd: &Command, context: &str, err: io::Error) -> Error {
    let program = cmd.get_program();
    let context = if err.kind() == io::ErrorKind::NotFound {
        format!(
            "{context}: cannot run `{}`: program not found{}",
            program.to_string_lossy(),
            package_of(program)
        )
    } else {
        format!("{context}: cannot run `{}`", display(cmd))
    };
    Error::Io {
        context,
        source: err,
    }
}

/// Runs `cmd` to completion, optionally feeding `stdin`; returns its stdout on success.
pub(crate) fn run(cmd: &mut Command, context: &str, stdin: Option<&str>) -> Result<String, Error> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|e| spawn_error(cmd, context, e))?;
    if let Some(input) = stdin {
        // Dropping the handle at the end of this block closes the pipe.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes()).map_err(|e| Error::Io {
            context: format!("{context}: writing to `{}`", display(cmd)),
            source: e,
        })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Io {
        context: format!("{context}: waiting for `{}`", display(cmd)),
        source: e,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            context: context.to_owned(),
            command: display(cmd),
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip ARGS...`.
pub(crate) fn ip<S: AsRef<OsStr>>(args: &[S], context: &str) -> Result<String, Error> {
    run(Command::new("ip").args(args), context, None)
}

/// Fails unless the effective user is root.
pub(crate) fn require_root() -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(Error::NotRoot { euid })
    }
}
