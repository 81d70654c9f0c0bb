//! The C user's path: `scripts/install.sh` puts libxrdma, its headers and xrdma.pc under a
//! prefix, and the programs of `cabi/examples/` are built against them with
//! `pkg-config --cflags --libs xrdma` and `-Wall -Wextra -Werror -pedantic`.
//!
//! - `api_check.c`, as C11 and C++17, and linked with the static library, runs alone (no
//!   network, no root), also under valgrind's memcheck, which must report no error.
//! - `rs_echo.c` (stream echo), `rs_dgram_ping.c` (datagram ping) and `rs_epoll.c` (a
//!   repoll loop over an rsocket and a pipe) run between two namespaced hosts, on the xdp
//!   and udp backends, and under valgrind on the udp backend. On xdp memcheck reports an
//!   over-read in libxdp (vendored by xsk-rs), not in xrdma: `xsk_create_ctx` copies
//!   IFNAMSIZ - 1 bytes of the interface name whatever its length.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use xrdma_testnet::{Host, Server, Topology, built, text, wait_or_kill};

const TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ok(out: &Output, what: &str) -> String {
    let text = text(out);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

fn run(cmd: &mut Command, what: &str) -> String {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e} (scripts/setup.sh installs what it needs)"));
    ok(&wait_or_kill(child, TIMEOUT, what), what)
}

/// Installs the dev-profile build (which the test's own build made) under a new prefix,
/// named by `tag`.
fn install(tag: &str) -> PathBuf {
    built("libxrdma.so");
    let prefix = std::env::temp_dir().join(format!("xrdma-install-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    run(
        Command::new(repo().join("scripts/install.sh"))
            .arg("--debug")
            .arg("--prefix")
            .arg(&prefix),
        "scripts/install.sh",
    );
    for f in [
        "lib/libxrdma.so",
        "lib/libxrdma.a",
        "include/xrdma/rsocket.h",
        "include/xrdma/xrdma.h",
        "lib/pkgconfig/xrdma.pc",
        "lib/libxrdma_preload.so",
        "bin/xrdma",
    ] {
        assert!(prefix.join(f).exists(), "install.sh did not install {f}");
    }
    prefix
}

#[test]
fn the_installed_command_runs_a_program_over_the_installed_preload_library() {
    let prefix = install("run");
    let lib = prefix
        .join("lib/libxrdma_preload.so")
        .canonicalize()
        .unwrap();
    // The program sees the library preloaded (found in ../lib from the command), and runs
    // under it: sh's own descriptors go through the library's calls untouched.
    let out = run(
        Command::new(prefix.join("bin/xrdma")).args([
            "run",
            "--debug",
            "--",
            "sh",
            "-c",
            "echo \"$LD_PRELOAD\"; echo through a pipe | cat",
        ]),
        "xrdma run",
    );
    assert!(out.contains(lib.to_str().unwrap()), "{out}");
    assert!(out.contains("through a pipe"), "{out}");
    // A program that does not exist is an error, not a silent success.
    let failed = Command::new(prefix.join("bin/xrdma"))
        .args(["run", "--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("running /nonexistent/program"),
        "{failed:?}"
    );
    let _ = std::fs::remove_dir_all(&prefix);
}

/// `pkg-config --cflags --libs xrdma` against `prefix`.
fn pkg_config(prefix: &Path) -> Vec<String> {
    let out = run(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "xrdma"])
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
        "pkg-config xrdma",
    );
    out.split_whitespace().map(String::from).collect()
}

#[test]
fn the_installed_headers_and_library_build_and_run_the_api_check() {
    let prefix = install("api");
    let flags = pkg_config(&prefix);
    let source = repo().join("cabi/examples/api_check.c");
    let strict = ["-Wall", "-Wextra", "-Werror", "-pedantic"];
    let mut programs = Vec::new();
    for (compiler, lang) in [("cc", "c"), ("c++", "c++")] {
        let exe = prefix.join(format!("api_check_{}", lang.replace('+', "x")));
        let std = if lang == "c" {
            "-std=c11"
        } else {
            "-std=c++17"
        };
        run(
            Command::new(compiler)
                .args(["-x", lang, std])
                .args(strict)
                .arg(&source)
                .arg("-o")
                .arg(&exe)
                .args(&flags),
            &format!("{compiler} api_check.c"),
        );
        programs.push(exe);
    }
    let lib = prefix.join("lib");
    for exe in &programs {
        let out = run(
            Command::new(exe).env("LD_LIBRARY_PATH", &lib),
            &exe.display().to_string(),
        );
        assert!(out.contains("api_check: ok"), "{out}");
    }
    // Linked with the static library instead: what `pkg-config --static` adds must do.
    let private: Vec<String> = run(
        Command::new("pkg-config")
            .args(["--static", "--libs-only-l", "xrdma"])
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
        "pkg-config --static xrdma",
    )
    .split_whitespace()
    .filter(|f| *f != "-lxrdma")
    .map(String::from)
    .collect();
    let fixed = prefix.join("api_check_static");
    run(
        Command::new("cc")
            .args(["-std=c11"])
            .args(strict)
            .arg(format!("-I{}", prefix.join("include").display()))
            .arg(&source)
            .arg(prefix.join("lib/libxrdma.a"))
            .args(&private)
            .arg("-o")
            .arg(&fixed),
        "cc api_check.c libxrdma.a",
    );
    let out = run(&mut Command::new(&fixed), "api_check_static");
    assert!(out.contains("api_check: ok"), "{out}");
    let out = run(
        Command::new("valgrind")
            .args([
                "--tool=memcheck",
                "--error-exitcode=99",
                "--errors-for-leak-kinds=definite",
                "--leak-check=full",
            ])
            .arg(&programs[0])
            .env("LD_LIBRARY_PATH", &lib),
        "valgrind api_check",
    );
    assert!(out.contains("ERROR SUMMARY: 0 errors"), "{out}");
    let _ = std::fs::remove_dir_all(&prefix);
}

/// Builds `cabi/examples/NAME.c` against the installed library, as C11; the program's path.
fn build_example(prefix: &Path, name: &str) -> PathBuf {
    let exe = prefix.join(name);
    run(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg(repo().join(format!("cabi/examples/{name}.c")))
            .arg("-o")
            .arg(&exe)
            .args(pkg_config(prefix)),
        &format!("cc {name}.c"),
    );
    exe
}

/// `exe args` on `host` with `backend`, optionally under valgrind (which must report no
/// error: exit status 99 otherwise).
fn example(
    host: &Host,
    prefix: &Path,
    backend: &str,
    valgrind: bool,
    exe: &Path,
    args: &[&str],
) -> Command {
    let mut cmd = if valgrind {
        let mut c = host.ns().command("valgrind");
        c.args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--errors-for-leak-kinds=definite",
            "--leak-check=full",
        ])
        .arg(exe);
        c
    } else {
        host.ns().command(exe)
    };
    cmd.args(args)
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .env("XRDMA_IFACE", host.iface())
        .env("XRDMA_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// An example's server and client (program and arguments), and what the client prints
/// when it succeeded.
struct Case<'a> {
    server: (&'a Path, Vec<&'a str>),
    client: (&'a Path, Vec<&'a str>),
    done: &'a str,
}

#[test]
fn the_c_examples_run_between_two_hosts_also_under_valgrind() {
    let prefix = install("examples");
    let echo = build_example(&prefix, "rs_echo");
    let ping = build_example(&prefix, "rs_dgram_ping");
    let epoll = build_example(&prefix, "rs_epoll");
    let t = Topology::pair().unwrap_or_else(|e| panic!("cannot build the test hosts: {e}"));
    let (a, b) = (t.a(), t.b());
    let server_ip = a.ipv4().to_string();
    let ip = server_ip.as_str();
    for (backend, valgrind) in [("xdp", false), ("udp", false), ("udp", true)] {
        let label = format!("{backend}{}", if valgrind { ", valgrind" } else { "" });
        let cases = [
            Case {
                server: (&echo, vec!["server", ip, "7600"]),
                client: (&echo, vec!["client", ip, "7600", "100", "4096"]),
                done: "rs_echo: ok",
            },
            Case {
                server: (&ping, vec!["server", ip, "7601"]),
                client: (&ping, vec!["client", ip, "7601", "50"]),
                done: "rs_dgram_ping: ok",
            },
            Case {
                server: (&echo, vec!["server", ip, "7602"]),
                client: (&epoll, vec![ip, "7602", "1000"]),
                done: "rs_epoll: ok",
            },
        ];
        for Case {
            server: (server_exe, server_args),
            client: (client_exe, client_args),
            done,
        } in cases
        {
            let what = format!("{} ({label})", client_exe.display());
            let mut server = Server::start(
                example(a, &prefix, backend, valgrind, server_exe, &server_args),
                &format!("{} server ({label})", server_exe.display()),
            );
            server.wait_for("listening");
            let client = example(b, &prefix, backend, valgrind, client_exe, &client_args)
                .spawn()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let out = ok(&server.finish_client(client, &what, TIMEOUT), &what);
            assert!(out.contains(done), "{what}: {out}");
            let (status, server_text) = server.finish(TIMEOUT);
            assert!(
                status.success(),
                "the server of {what} failed ({status}):\n{server_text}"
            );
            println!(
                "{what}: {}",
                out.lines().find(|l| l.contains(done)).unwrap_or("")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&prefix);
}
