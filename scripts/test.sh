#!/usr/bin/env bash
# The whole test suite: unit, wire-vector, simulation and property tests of the core, and the
# cross-process tests in network namespaces (real kernel, real keepalived). Needs root (or
# CAP_NET_ADMIN + CAP_NET_RAW + CAP_SYS_ADMIN) for the namespace tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The cross-process tests run the real binaries (hav-agent, hav-coordinator, havctl, the test
# helpers) from target/debug: build them all first.
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --no-fail-fast "$@"
