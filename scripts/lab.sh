#!/usr/bin/env bash
# The main job: build hav, bring up a proxy pair in network namespaces, break it in the ways
# production does (proxy death, link cut, planned stop) and show what a client saw. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
cargo build --workspace --bins --locked
exec target/debug/hav-lab "$@"
