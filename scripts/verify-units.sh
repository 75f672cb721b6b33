#!/usr/bin/env bash
# `systemd-analyze verify` and `systemd-analyze security` of the units in deploy/systemd.
# verify insists that ExecStart binaries exist, so it runs in a private mount namespace with
# overlays of /usr/sbin and /usr/bin holding the freshly built hav-agent and hav-coordinator;
# the host's directories are untouched. Needs root (unshare -m) and a built hav-agent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
agent=$root/target/debug/hav-agent
[ -x "$agent" ] || cargo build -p hav-agent
coordinator=$root/target/debug/hav-coordinator
[ -x "$coordinator" ] || cargo build -p hav-coordinator

exec unshare -m bash -euo pipefail -c '
root=$1 agent=$2 coordinator=$3
mount --make-rprivate /
scratch=$(mktemp -d)
mount -t tmpfs tmpfs "$scratch"
for dir in /usr/sbin /usr/bin; do
    key=$(echo "$dir" | tr / _)
    mkdir -p "$scratch/$key/upper" "$scratch/$key/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$scratch/$key/upper,workdir=$scratch/$key/work" "$dir"
done
cp "$agent" /usr/sbin/hav-agent
cp "$coordinator" /usr/bin/hav-coordinator
for unit in "$root"/deploy/systemd/*.service; do
    systemd-analyze verify "$unit"
    echo "verified: $unit"
    systemd-analyze security --offline=yes "$unit" | tail -1
done
' verify "$root" "$agent" "$coordinator"
