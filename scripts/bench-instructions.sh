#!/usr/bin/env bash
# User-space instructions per advert of an idle pair, hav-agent vs keepalived in the same run,
# counted by valgrind's callgrind: a figure that does not move with the machine's load, unlike
# the CPU time of scripts/bench.sh.
#
#   scripts/bench-instructions.sh [TIMING]     # TIMING: v3-100ms, v3-20ms (default), v3-10ms
#
# How: hav-failover-bench starts both pairs with each daemon under callgrind (HAV_AGENT_BIN and
# HAV_KEEPALIVED_BIN name wrappers). Once settled, every daemon is stopped with SIGTERM after a
# short and, in a second run, a long lifetime; each then writes its counts. The difference
# between the two runs, over the adverts of the extra time, is the cost of one advert cycle
# with start-up and stop taken out (the counts are zeroed once the pairs settled, but for
# keepalived's VRRP child, which callgrind_control cannot reach and whose start-up is the same
# in both runs; the stop is the same in both runs too). keepalived's two processes are summed per node.
# A second table counts the code each advert runs, in 64-byte cache lines (instructions run in
# at least 4 adverts of 5, from callgrind's per-instruction counts): after a sleep of 100 ms the
# caches are cold, and those lines are what a wake-up has to fetch again.
# Needs root, keepalived, valgrind and python3. Prints two tables; exits 1 if a count is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

timing=${1:-v3-20ms}
case "$timing" in
  v3-100ms) interval=0.1 ;;
  v3-20ms) interval=0.02 ;;
  v3-10ms) interval=0.01 ;;
  *) echo "usage: $0 [v3-100ms|v3-20ms|v3-10ms]" >&2; exit 2 ;;
esac
short=10 long=40 settle=10

cargo build -q --release -p hav-agent -p hav-tests --bins
work=$(mktemp -d /tmp/hav-instructions.XXXXXX)
bench_pid=
cleanup() {
  [ -n "$bench_pid" ] && kill -- -"$bench_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for daemon in hav keepalived; do
  case $daemon in
    hav) program=$PWD/target/release/hav-agent ;;
    keepalived) program=/usr/sbin/keepalived ;;
  esac
  cat > "$work/$daemon.sh" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --callgrind-out-file="\$HAV_CALLGRIND_DIR/$daemon.%p" $program "\$@"
EOF
  chmod +x "$work/$daemon.sh"
done

# One lifetime: start both pairs, let them settle, run $1 more seconds, stop every daemon.
run() {
  local seconds=$1 dir="$work/$1"
  mkdir -p "$dir"
  HAV_CALLGRIND_DIR=$dir HAV_AGENT_BIN="$work/hav.sh" HAV_KEEPALIVED_BIN="$work/keepalived.sh" \
    setsid target/release/hav-failover-bench --reps 0 --contenders keepalived,hav \
    --idle-timings "$timing" --idle-window-s $((seconds + settle + 120)) --idle-rounds 1 --idle-together \
    > "$dir/bench.log" 2>&1 &
  bench_pid=$!
  local waited=0
  until [ "$(pgrep -fc "callgrind-out-file=$dir/" || true)" -ge 6 ]; do
    sleep 0.5
    waited=$((waited + 1))
    if [ $waited -gt 240 ]; then
      echo "the pairs did not start; see $dir/bench.log" >&2
      cat "$dir/bench.log" >&2
      exit 1
    fi
  done
  # Start-up ends here: the counts restart from zero, so what the harness did to bring the
  # pairs up (status queries until each settled, a number that varies) counts in neither run.
  sleep "$settle"
  local reachable pid answer
  reachable=$(callgrind_control 2>&1 | sed -n 's/^PID \([0-9]*\):.*/\1/p')
  for pid in $(pgrep -f "callgrind-out-file=$dir/"); do
    if ! grep -qx "$pid" <<< "$reachable"; then
      # keepalived's VRRP child, forked under valgrind, is out of callgrind_control's reach;
      # its start-up is the same in both runs, and the difference takes it out.
      case $(ps -o args= -p "$pid") in
        *"callgrind-out-file=$dir/keepalived"*) continue ;;
      esac
    fi
    # It exits 0 even when it found no such run: its answer tells.
    answer=$(callgrind_control -z "$pid" 2>&1)
    case $answer in
      *"sending command zero"*) ;;
      *) echo "could not zero the counts of process $pid: $answer" >&2; exit 1 ;;
    esac
  done
  sleep "$seconds"
  pkill -TERM -f "callgrind-out-file=$dir/" || true
  waited=0
  while pgrep -f "callgrind-out-file=$dir/" > /dev/null; do
    sleep 0.5
    waited=$((waited + 1))
    [ $waited -gt 60 ] && pkill -KILL -f "callgrind-out-file=$dir/" || true
  done
  kill -- -"$bench_pid" 2>/dev/null || true
  wait "$bench_pid" 2>/dev/null || true
  bench_pid=
}

# The callgrind files of `daemon` on `node` (a or b) in the run of `seconds`, by process id.
files() {
  local seconds=$1 daemon=$2 node=$3 file pattern
  case $daemon in
    hav) pattern="/agent-$node/" ;;
    keepalived) pattern="/keepalived-$node/" ;;
  esac
  for file in "$work/$seconds/$daemon".*; do
    grep -q "^cmd:.*$pattern" "$file" 2>/dev/null && echo "$file"
  done | awk -F. '{print $NF, $0}' | sort -n | cut -d' ' -f2-
}

# Distinct 64-byte lines and 4 KiB pages of code run in (nearly) every advert: instructions whose count grew
# by at least 0.8 `adverts` between the short and the long run, summed over the processes (paired
# in process-id order: keepalived's parent, then its VRRP child).
code_lines() {
  python3 - "$@" <<'PY'
import sys
from collections import Counter

def counts(path):
    found, skip = Counter(), False
    with open(path, errors="replace") as lines:
        for line in lines:
            if skip:
                skip = False
            elif line.startswith("calls="):
                skip = True  # the next line is the call's inclusive cost
            elif line.startswith("0x"):
                fields = line.split()
                if len(fields) > 2:
                    found[int(fields[0], 16)] += int(fields[2])
    return found

adverts, short, long = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
lines = pages = 0
for before, after in zip(short, long):
    b, a = counts(before), counts(after)
    hot = [addr for addr, n in a.items() if n - b.get(addr, 0) >= 0.8 * adverts]
    lines += len({addr >> 6 for addr in hot})
    pages += len({addr >> 12 for addr in hot})
print(lines, pages)
PY
}

# Instructions of `daemon` on `node` (a or b) in the run of `seconds`, its processes summed.
total() {
  local sum=0 file
  for file in $(files "$@"); do
    sum=$((sum + $(awk '/^totals:/ {print $2}' "$file")))
  done
  echo "$sum"
}

# One table row: node, then hav's and keepalived's figures and their ratio.
row() {
  local node=$1 hav=$2 keepalived=$3 role=master
  [ "$node" = b ] && role=backup
  ratio=$(awk -v h="$hav" -v k="$keepalived" 'BEGIN {if (k > 0) printf "%.2f", h / k; else print "-"}')
  echo "| $node ($role) | $hav | $keepalived | $ratio |"
}

run $short
run $long
adverts=$(awk -v s=$((long - short)) -v i="$interval" 'BEGIN {printf "%d", s / i}')
declare -A code
for node in a b; do
  for daemon in hav keepalived; do
    code[$daemon$node]=$(code_lines "$adverts" "$(files $short $daemon $node | xargs)" "$(files $long $daemon $node | xargs)")
  done
done
echo "## Instructions per advert, idle pair, $timing ($adverts adverts between the two runs)"
echo
echo "| node | hav | keepalived | hav / keepalived |"
echo "|---|---|---|---|"
status=0
for node in a b; do
  per=()
  for daemon in hav keepalived; do
    small=$(total $short $daemon $node)
    big=$(total $long $daemon $node)
    if [ "$small" -eq 0 ] || [ "$big" -eq 0 ]; then
      echo "no counts for $daemon on node $node" >&2
      status=1
      per+=(0)
      continue
    fi
    per+=($(((big - small) / adverts)))
  done
  row $node "${per[@]}"
done
echo
for unit in lines pages; do
  case $unit in
    lines) echo "## Code run every advert, in 64-byte cache lines"; field=1 ;;
    pages) echo "## Code run every advert, in 4 KiB pages (a TLB entry each)"; field=2 ;;
  esac
  echo
  echo "| node | hav | keepalived | hav / keepalived |"
  echo "|---|---|---|---|"
  for node in a b; do
    per=()
    for daemon in hav keepalived; do
      per+=($(cut -d' ' -f$field <<< "${code[$daemon$node]}"))
    done
    row $node "${per[@]}"
  done
  echo
done
exit $status
