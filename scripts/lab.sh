#!/usr/bin/env bash
# The main job: build hav, bring up in network namespaces a coordinator, two proxy pairs, a
# client and the DNS; push a fleet config, show status, kill a master (client outage and the
# failover trace), drain a node, and tear it all down (also on Ctrl-C). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
cargo build --workspace --bins --locked
exec target/debug/hav-lab "$@"
