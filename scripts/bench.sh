#!/usr/bin/env bash
# The benchmarks, each with its reference in the same run, printed as one report.
#
#   scripts/bench.sh            # agent (idle cost and failover vs keepalived), agent at scale
#                               # (510 instances; 10 ms adverts under load), hand-over, coordinator
#                               # (one on redb vs three on a three-member etcd)
#   scripts/bench.sh --quick    # shorter windows and fewer repetitions (a few minutes)
#
# Needs root (network namespaces), keepalived, nftables, strace, stress-ng and etcd
# (scripts/setup-host.sh installs them). Run it on a quiet machine: CPU figures are ratios measured side by side, but a busy host
# still blurs them. The report goes to stdout and to target/bench-report.md.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
  esac
done

if $quick; then
  reps=2; idle_window=10; mixed_timings=v3-10ms; connections=1000; agents=100,1000; loaded=(--quick --cuts 5)
else
  reps=5; idle_window=30; mixed_timings=v3-100ms,v3-20ms,v3-10ms; connections=1000,10000; agents=100,1000,10000; loaded=(--minutes 10 --cuts 20)
fi

cargo build --release --workspace --bins
export HAV_AGENT_BIN=target/release/hav-agent
report=target/bench-report.md
{
  echo "# hav benchmarks ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, keepalived $(keepalived --version 2>&1 | head -1 | awk '{print $2}'))"
  echo
  echo "## Agent: idle cost (100, 20 and 10 ms adverts) and failover, hav vs keepalived"
  target/release/hav-failover-bench --reps "$reps" --scenarios link-cut,crash,graceful-stop \
    --timings v3-100ms,v3-20ms --idle-timings v3-100ms,v3-20ms,v3-10ms \
    --idle-window-s "$idle_window" --syscalls 2>/dev/null
  echo
  echo "## Agent: idle cost in mixed pairs (each master beside keepalived's backup, each backup beside keepalived's master)"
  target/release/hav-failover-bench --reps 0 --idle-peer keepalived \
    --idle-timings "$mixed_timings" --idle-window-s "$idle_window" 2>/dev/null
  echo
  echo "## Agent at scale: 255 IPv4 + 255 IPv6 instances per node, hav vs keepalived"
  target/release/hav-scale-bench many-instances --reps "$reps" --idle-window-s "$idle_window" 2>/dev/null
  echo
  echo "## Agent at scale: 10 ms adverts under stress-ng, hav (also with max_auto_priority) vs keepalived"
  target/release/hav-scale-bench loaded "${loaded[@]}" 2>/dev/null
  echo
  echo "## Planned hand-over with open connections, hav vs keepalived"
  target/release/hav-handover-bench --connections "$connections" --rounds 3 2>/dev/null
  echo
  echo "## Coordinator: fleet-load, one coordinator on redb vs three sharing a three-member etcd"
  cargo bench -q -p hav-coordinator --bench fleet-load -- --agents "$agents" --backends redb,etcd 2>/dev/null
} | tee "$report"
echo "report written to $report" >&2
