#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lint and documentation checks, then every test
# of the workspace, with every feature (`tokio`).
# Tests that build network namespaces need root; run as a normal user they fail saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked
# libxrdma.so is a cdylib nothing links against: build it for the tests that preload it.
cargo build --workspace --all-features --locked
cargo test --workspace --all-features --locked
