#!/usr/bin/env bash
# An A/B of the Flux ingest between two builds (not part of .ci/run). bench-load.sh measures
# one build against a bare-hyper baseline; on a shared 2-core VM the baseline itself moves by
# 15-20% between runs minutes apart, so two builds measured in two bench-load runs differ by
# as much as the change being measured. This runs the same Flux load (bench-load.sh's: wrk,
# 32 connections, pre-signed distinct events, a fresh embedded store each run) on the two
# builds alternately, run after run, and prints each pair's ratio and the medians.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY         # RUNS=8 DURATION=8s by default
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release) ...
#
# Installs wrk from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
runs=${RUNS:-8}
duration=${DURATION:-8s}
key=bench-key
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { until curl -s -o /dev/null "http://127.0.0.1:$1/"; do sleep 0.01; done; }

python3 scripts/bench/events.py flux 400000 2000 "$key" > "$work/flux.txt"
declare -A rps
for r in $(seq 1 "$runs"); do
  for side in old new; do
    bin=$1; [ "$side" = new ] && bin=$2
    port=$(free_port)
    FLUXTRAIL_LISTEN=127.0.0.1:$port FLUXTRAIL_DATA_DIR="$work/data-$r-$side" FLUXTRAIL_FLUX_HMAC_KEY=$key \
      RUST_LOG=warn "$bin" serve >"$work/$r-$side.log" 2>&1 &
    pid=$!
    wait_up "$port"
    rps[$r-$side]=$(REQUESTS="$work/flux.txt" DELAY_MS=0 wrk -t1 -c32 -d"$duration" --timeout 5s \
      -s scripts/bench/replay.lua "http://127.0.0.1:$port" | sed -n 's/^RESULT.* rps=\([0-9]*\).*/\1/p')
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    rm -rf "$work/data-$r-$side"
  done
  echo "run $r: old ${rps[$r-old]}/s, new ${rps[$r-new]}/s, new/old $(python3 -c "print(round(${rps[$r-new]}/${rps[$r-old]}, 3))")"
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
old=$(for r in $(seq 1 "$runs"); do echo "${rps[$r-old]}"; done | median)
new=$(for r in $(seq 1 "$runs"); do echo "${rps[$r-new]}"; done | median)
pairs=$(for r in $(seq 1 "$runs"); do python3 -c "print(${rps[$r-new]}/${rps[$r-old]})"; done | median)
echo "medians of $runs alternating runs ($duration each): old $old/s, new $new/s (new/old $(python3 -c "print(round($new/$old, 3))")); median of the pairs' ratios $(python3 -c "print(round($pairs, 3))")"
