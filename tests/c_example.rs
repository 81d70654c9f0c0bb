//! Plain C verbs programs written against the system's `<infiniband/verbs.h>` and linked
//! directly against libxrdma.so (no preloading), over loopback with the unprivileged `udp`
//! backend. Need no root.
//!
//! - `tests/c/ud_loopback.c`: two UD QPs in one process exchange a SEND with immediate,
//!   through a completion channel.
//! - `tests/c/srq_events.c`: an SRQ shared by two UD QPs, its limit event and a CQ overrun
//!   read with `ibv_get_async_event`; `ibv_query_pkey` and the `*_str` helpers.
//! - `tests/c/rc_loopback.c`: two RC QPs in one process, connected as ibv_rc_pingpong
//!   connects them: SEND, WRITE with immediate, READ, compare-and-swap and fetch-and-add.
//! - `tests/c/ibv_exports.c`: the rest of libibverbs' exports: device and P_Key indexes,
//!   extended GID queries, AHs from a received completion, `ibv_rereg_mr`, L2 resolution,
//!   the pure helpers, and the calls xrdma cannot honour failing cleanly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use xrdma_testnet::wait_or_kill;

/// How long the C program may run before the test kills it and fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The target directory this test was built in (target/<profile>/), where `cargo build`
/// puts libxrdma.so; scripts/test.sh builds the workspace before testing.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf();
    let lib = dir.join("libxrdma.so");
    assert!(
        lib.exists(),
        "{} missing: build it first with `cargo build -p xrdma-cabi` (scripts/test.sh does)",
        lib.display()
    );
    dir
}

/// A fresh directory for the build, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("xrdma-c-example-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Compiles `source` into `exe`, linked against libxrdma.so in `lib_dir`; fails saying
/// what to install when the C compiler or libibverbs' header is missing.
fn compile(source: &Path, exe: &Path, lib_dir: &Path) {
    let header = Path::new("/usr/include/infiniband/verbs.h");
    assert!(
        header.exists(),
        "{} missing: run scripts/setup.sh (it installs libibverbs-dev)",
        header.display()
    );
    let out = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(exe)
        .arg(source)
        .arg("-L")
        .arg(lib_dir)
        .arg("-lxrdma")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run cc ({e}): run scripts/setup.sh (it installs gcc and libibverbs-dev)")
        });
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "cc {} failed ({}): {stdout}{stderr}",
        source.display(),
        out.status
    );
}

/// Runs `cmd`, killing it if it runs past [`TIMEOUT`].
fn run(name: &str, mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_or_kill(child, TIMEOUT, name)
}

/// Compiles `tests/c/<name>.c`, runs it on its own UDP port (`port_offset` keeps the tests
/// of one run apart) and checks that it printed "<name>: ok"; returns its stderr.
fn compile_and_run(name: &str, port_offset: u32) -> String {
    let lib_dir = library_dir();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let tmp = TempDir::new(name);
    let exe = tmp.0.join(name);
    compile(&source, &exe, &lib_dir);

    // A port of our own, so that parallel runs do not share one UDP endpoint; below Linux's
    // ephemeral range (32768 and up), where another socket's local port could hold it.
    let port = 10000 + std::process::id() % 20000 + port_offset;
    let mut cmd = Command::new(&exe);
    cmd.env_remove("LD_PRELOAD")
        .env("XRDMA_IFACE", "lo")
        .env("XRDMA_BACKEND", "udp")
        .env("XRDMA_UDP_PORT", port.to_string());
    let out = run(name, cmd);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{name} failed ({}) on UDP port {port}: {stdout}{stderr}",
        out.status
    );
    let ok = format!("{name}: ok");
    assert!(
        stdout.lines().any(|l| l == ok),
        "no \"{ok}\" in: {stdout}{stderr}"
    );
    stderr
}

#[test]
fn c_ud_loopback_runs_linked_against_libxrdma() {
    compile_and_run("ud_loopback", 0);
}

#[test]
fn c_srq_events_runs_linked_against_libxrdma() {
    compile_and_run("srq_events", 1);
}

#[test]
fn c_rc_loopback_runs_linked_against_libxrdma() {
    compile_and_run("rc_loopback", 2);
}

#[test]
fn c_ibv_exports_behave_linked_against_libxrdma() {
    let stderr = compile_and_run("ibv_exports", 3);
    // What xrdma cannot do fails cleanly and says so, once, naming the call.
    for call in [
        "ibv_attach_mcast",
        "ibv_detach_mcast",
        "ibv_query_ece",
        "ibv_set_ece",
        "ibv_qp_to_qp_ex",
        "ibv_import_device",
        "ibv_import_pd",
        "ibv_import_mr",
        "ibv_import_dm",
        "ibv_reg_dmabuf_mr",
        "ibv_register_driver",
    ] {
        let said = format!("xrdma: {call}: ");
        assert_eq!(
            stderr.matches(&said).count(),
            1,
            "want one line starting {said:?} in:\n{stderr}"
        );
    }
}

#[test]
fn c_cm_loopback_connects_through_librdmacms_api() {
    compile_and_run("cm_loopback", 4);
}
