//! The C user's path: `scripts/install.sh` puts libxrdma, its headers and xrdma.pc under a
//! prefix; `cabi/examples/api_check.c` is built with `pkg-config --cflags --libs xrdma`,
//! as C (`-std=c11`) and as C++, with `-Wall -Wextra -Werror -pedantic`, and run, also
//! under valgrind's memcheck, which must report no error. Needs no network or root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use xrdma_testnet::{built, wait_or_kill};

const TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ok(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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

/// Installs the dev-profile build (which the test's own build made) under a new prefix.
fn install() -> PathBuf {
    built("libxrdma.so");
    let prefix = std::env::temp_dir().join(format!("xrdma-install-{}", std::process::id()));
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
    ] {
        assert!(prefix.join(f).exists(), "install.sh did not install {f}");
    }
    prefix
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
    let prefix = install();
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
