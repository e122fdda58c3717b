#!/usr/bin/env bash
# The load harness (not part of .ci/run: timings on shared machines are for reading, not for
# gating). Starts a bare-hyper baseline and fluxtrail (release, embedded store) on loopback and
# drives each with wrk replaying pre-signed, distinct deliveries. Prints one line per run and a
# summary with the ratios to the baseline measured in the same run.
#
#   scripts/bench-load.sh            # DURATION=10s CONNECTIONS=32 RUNS=3 by default
#   FLUXTRAIL_BIN=path/to/fluxtrail scripts/bench-load.sh   # measure another build
#   MILLION=1 scripts/bench-load.sh  # also: resident memory after one million events
#
# Installs wrk from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-10s}
conns=${CONNECTIONS:-32}
runs=${RUNS:-3}
key=bench-key
secret=bench-secret

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --bin fluxtrail --example baseline 2>&1 | tail -1
bin=${FLUXTRAIL_BIN:-target/release/fluxtrail}

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { until curl -s -o /dev/null "http://127.0.0.1:$1/"; do sleep 0.01; done; }

echo "generating pre-signed deliveries…"
python3 scripts/bench/events.py flux 400000 2000 "$key" > "$work/flux.txt"
python3 scripts/bench/events.py badsig 100000 > "$work/badsig.txt"
python3 scripts/bench/events.py github 30000 "$secret" > "$work/github.txt"

# wrk run: label, port, requests file, [delay_ms, connections]
load() {
  local out
  out=$(REQUESTS="$1" DELAY_MS="${3:-0}" wrk -t1 -c"${4:-$conns}" -d"$duration" --timeout 5s -s scripts/bench/replay.lua "http://127.0.0.1:$2" | grep '^RESULT')
  echo "$out"
}
start_fluxtrail() { # port datadir
  FLUXTRAIL_LISTEN=127.0.0.1:$1 FLUXTRAIL_DATA_DIR=$2 FLUXTRAIL_FLUX_HMAC_KEY=$key FLUXTRAIL_GITHUB_SECRET=$secret \
    RUST_LOG=warn "$bin" serve >"$2.log" 2>&1 &
  pids+=($!)
  echo $!
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

declare -A results
for run in $(seq 1 "$runs"); do
  bp=$(free_port); target/release/examples/baseline 127.0.0.1:$bp read & pids+=($!); wait_up $bp
  results[base_read_$run]=$(load "$work/flux.txt" $bp)
  bv=$(free_port); target/release/examples/baseline 127.0.0.1:$bv verify $key & pids+=($!); wait_up $bv
  results[base_verify_$run]=$(load "$work/flux.txt" $bv)
  results[base_reject_$run]=$(load "$work/badsig.txt" $bv)

  fp=$(free_port); pid=$(start_fluxtrail $fp "$work/data-$run"); wait_up $fp
  results[flux_$run]=$(load "$work/flux.txt" $fp)
  results[reject_$run]=$(load "$work/badsig.txt" $fp)
  results[github_$run]=$(load "$work/github.txt" $fp)
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  results[rss_$run]=$rss
  kill $pid; wait $pid 2>/dev/null || true
  # Latency at about 1,000 events/s (12 connections, each pausing 10 ms), on a fresh instance.
  fp=$(free_port); pid=$(start_fluxtrail $fp "$work/rate-$run"); wait_up $fp
  results[rate1k_$run]=$(load "$work/flux.txt" $fp 10 12)
  kill $pid; wait $pid 2>/dev/null || true
done

# Process start to answering GET / (the Functions host polls every 25 ms): 5 starts.
startup() {
  python3 - "$bin" "$work" <<'PY'
import os, socket, subprocess, sys, time
binary, work = sys.argv[1], sys.argv[2]
times = []
for i in range(5):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, FUNCTIONS_CUSTOMHANDLER_PORT=str(port), FLUXTRAIL_DATA_DIR=f"{work}/start-{i}", RUST_LOG="warn")
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=1)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if c.recv(64).startswith(b"HTTP/1.1 200"):
                times.append((time.perf_counter() - t0) * 1000)
                c.close()
                break
        except OSError:
            time.sleep(0.001)
    p.terminate(); p.wait()
times.sort()
print(f"{times[2]:.1f}")
PY
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m() { for r in $(seq 1 "$runs"); do echo "${results[${1}_$r]}" | field "$2"; done | median; }

echo
echo "each run: $duration, wrk 1 thread, $conns connections, loopback, $(nproc) cores; medians of $runs runs"
printf "%-44s %12s %10s %10s %8s\n" run "req/s" "p50 ms" "p99 ms" non2xx
for k in base_read base_verify base_reject flux reject rate1k github; do
  printf "%-44s %12s %10s %10s %8s\n" "$k" "$(m $k rps)" "$(m $k p50_ms)" "$(m $k p99_ms)" "$(m $k non2xx)"
done
flux=$(m flux rps); base=$(m base_read rps); reject=$(m reject rps); breject=$(m base_reject rps)
echo "fluxtrail accepted Flux events/s: $flux = 1/$(python3 -c "print(round($base/$flux, 1))") of the bare-hyper baseline ($base/s)"
echo "rejections/s: $reject = $(python3 -c "print(round(100*$reject/$breject))")% of the baseline's rejections ($breject/s)"
echo "resident memory after the runs (KiB): $(for r in $(seq 1 "$runs"); do echo "${results[rss_$r]}"; done | median)"
echo "process start to answering GET / (median of 5, ms): $(startup)"

if [ "${MILLION:-0}" = 1 ]; then
  # One million distinct events, in 60 s parts (each continues where the last stopped), with
  # resident memory after each part.
  python3 scripts/bench/events.py flux 1000000 5000 "$key" > "$work/million.txt"
  fp=$(free_port); pid=$(start_fluxtrail $fp "$work/million"); wait_up $fp
  sent=0; part=0
  while [ "$sent" -lt 1000000 ]; do
    part=$((part + 1))
    out=$(REQUESTS="$work/million.txt" OFFSET=$sent wrk -t1 -c"$conns" -d60s --timeout 5s -s scripts/bench/replay.lua "http://127.0.0.1:$fp" | grep '^RESULT')
    sent=$((sent + $(echo "$out" | field requests)))
    echo "million part $part: $out sent_total=$sent rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status) wal_mib=$(( $(stat -c %s "$work/million/ledger.db-wal" 2>/dev/null || echo 0) / 1048576 ))"
  done
fi
