#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lint and documentation checks, then every test
# of the workspace.
# Tests that build network namespaces need root; run as a normal user they fail saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
# libxrdma.so is a cdylib nothing links against: build it for the tests that preload it.
cargo build --workspace --locked
cargo test --workspace --locked
