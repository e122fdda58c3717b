#!/usr/bin/env bash
# Part 12's benchmark (not part of .ci/run): the backfill drains at the rate the host's limit
# allows, never over it, while ingest keeps its throughput.
#
#   scripts/bench-backfill.sh          # ITEMS=10000 LIMIT=1000 WINDOW=10 (1,000 requests per 10 s) DURATION=10s
#
# 1. The drain: fluxtrail with the GitHub API on the stand-in (`examples/git_api_standin.rs`,
#    the tests' stand-in as a process, LIMIT requests per WINDOW-second window with GitHub's
#    headers, refusing past it): 100 objects following `127.0.0.1/bench/fleet` report ITEMS
#    commits no push described (ITEMS queued items); timed from the first queued item to an
#    empty queue (`/api/health` backfill.queue.queued = 0); requests refused counted.
# 2. Ingest: RUNS (4) rounds of three servers, each on its own store, while wrk replays the
#    load harness's Flux events → events/s: A, a fresh store without any host API; B, the
#    seeded store with ITEMS queued and draining during the whole load; C, the same seeding
#    without a host API (nothing queued). B/C is the drain's own cost; B/A adds the seeded
#    store's.
set -euo pipefail
cd "$(dirname "$0")/.."
items=${ITEMS:-10000}
limit=${LIMIT:-1000}
window=${WINDOW:-10}
duration=${DURATION:-10s}
key=bench-key
secret=bench-secret

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --bin fluxtrail --example git_api_standin 2>&1 | tail -1
bin=${FLUXTRAIL_BIN:-target/release/fluxtrail}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { until curl -s -o /dev/null "http://127.0.0.1:$1/"; do sleep 0.01; done; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
load() { REQUESTS="$work/flux.txt" DELAY_MS=0 wrk -t1 -c32 -d"$duration" --timeout 5s -s scripts/bench/replay.lua "http://127.0.0.1:$1" | grep '^RESULT' | field rps; }

python3 scripts/bench/events.py flux 400000 2000 "$key" > "$work/flux.txt"
sp=$(free_port)
target/release/examples/git_api_standin 127.0.0.1:$sp "$limit" "$window" > "$work/standin.log" 2>&1 & pids+=($!)
wait_up $sp

start() { # port datadir [extra env…]
  local port=$1 dir=$2; shift 2
  env FLUXTRAIL_LISTEN=127.0.0.1:$port FLUXTRAIL_DATA_DIR=$dir FLUXTRAIL_FLUX_HMAC_KEY=$key \
    FLUXTRAIL_GITHUB_SECRET=$secret RUST_LOG=warn "$@" "$bin" serve > "$dir.log" 2>&1 &
  pids+=($!); echo $!
}

seed() { # port: ITEMS commits no push described, reported by 100 objects following the branch
python3 - "$1" "$items" "$key" "$secret" <<'PY'
import hashlib, hmac, http.client, json, sys
port, n, key, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port)
def post(path, body, headers):
    c.request("POST", path, body, headers); r = c.getresponse(); r.read()
    assert r.status in (200, 202), (r.status, path)
first = hashlib.sha1(b"bench-first").hexdigest()
push = json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": first, "created": True, "deleted": False, "forced": False,
    "commits": [{"id": first, "message": "first", "timestamp": "2026-12-01T10:00:00Z", "author": {"name": "Dana", "email": "d@x"}}],
    "head_commit": {"id": first, "message": "first", "timestamp": "2026-12-01T10:00:00Z"},
    "repository": {"id": 1, "full_name": "bench/fleet", "html_url": "https://127.0.0.1/bench/fleet", "clone_url": "https://127.0.0.1/bench/fleet.git"},
    "pusher": {"name": "dana"}}).encode()
post("/api/hooks/git/github", push, {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": "bench-first",
     "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), push, hashlib.sha256).hexdigest()})
# 100 objects follow the branch (each reports the pushed commit first), then each reports
# its share of the commits no push described; 16 senders, each owning its objects (an
# object's events in order).
import threading
objects = 100
def sender(k):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for o in range(k, objects, 16):
        for i in range(n // objects + 1):
            sha = first if i == 0 else hashlib.sha1(f"lost-{o}-{i}".encode()).hexdigest()
            t = 1796000000 + i
            body = json.dumps({"involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": f"follower-{o}"},
                "severity": "info", "timestamp": f"2026-12-0{1 + (t // 86400) % 9}T{(t // 3600) % 24:02d}:{(t // 60) % 60:02d}:{t % 60:02d}Z",
                "message": "Reconciliation finished", "reason": "ReconciliationSucceeded", "metadata": {"revision": f"main@sha1:{sha}"},
                "reportingController": "kustomize-controller"}).encode()
            conn.request("POST", "/api/hooks/flux/seed", body, {"Content-Type": "application/json",
                "X-Signature": "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()})
            r = conn.getresponse(); r.read()
            assert r.status == 202, r.status
threads = [threading.Thread(target=sender, args=(k,)) for k in range(16)]
for t in threads: t.start()
for t in threads: t.join()
PY
}
start_b() { start "$1" "$2" FLUXTRAIL_GITHUB_API_TOKEN=bench-token FLUXTRAIL_GITHUB_API_URL=http://127.0.0.1:$sp FLUXTRAIL_BACKFILL_DELAY=0s; }
queue() { curl -s "http://127.0.0.1:$1/api/health" | python3 -c 'import json,sys; q=json.load(sys.stdin)["backfill"]["queue"]; print(q["queued"], q["done"], q["failed"])'; }

# 1. The drain: ITEMS queued through ingest, then timed to an empty queue.
pb=$(free_port); pid=$(start_b $pb "$work/drain"); wait_up $pb
echo "queueing $items items (100 objects following a branch report $items commits no push described)…"
t_seed=$(date +%s.%N)
seed $pb
t0=$(date +%s.%N)
while :; do read -r queued done failed < <(queue $pb); [ "$queued" = 0 ] && break; sleep 0.5; done
t1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
kill $pid; wait $pid 2>/dev/null || true
stats=$(curl -s "http://127.0.0.1:$sp/_standin/stats")

# 2. Ingest: A (fresh, no host API), B (seeded, draining), C (seeded, no host API).
runs=${RUNS:-4}
pairs=""
for r in $(seq 1 "$runs"); do
  pa=$(free_port); pid=$(start $pa "$work/a$r"); wait_up $pa
  a=$(load $pa); kill $pid; wait $pid 2>/dev/null || true
  pb=$(free_port); pid=$(start_b $pb "$work/b$r"); wait_up $pb
  seed $pb
  b=$(load $pb)
  read -r queued _ _ < <(queue $pb)
  kill $pid; wait $pid 2>/dev/null || true
  pc=$(free_port); pid=$(start $pc "$work/c$r"); wait_up $pc
  seed $pc
  cc=$(load $pc); kill $pid; wait $pid 2>/dev/null || true
  echo "run $r: A $a, B $b, C $cc events/s (B's queue still held $queued items at the end: it drained throughout)"
  pairs="$pairs $a:$b:$cc"
done
python3 - "$t_seed" "$t0" "$t1" "$items" "$limit" "$window" "$done" "$failed" "$stats" "$rss" $pairs <<'PY'
import json, statistics, sys
t_seed, t0, t1 = map(float, sys.argv[1:4])
items, limit, window, done, failed = map(int, sys.argv[4:9])
stats = json.loads(sys.argv[9]); rss = int(sys.argv[10])
runs = [tuple(map(float, p.split(":"))) for p in sys.argv[11:]]
print(f"backfill: {items} items queued in {t0 - t_seed:.1f} s (the worker already draining); {done} done, {failed} failed "
      f"{t1 - t_seed:.1f} s after the first was queued = {done / (t1 - t_seed):.1f} items/s "
      f"(stand-in limit {limit} requests per {window} s = {limit / window:.0f}/s); requests refused by the stand-in: {stats['refused']}")
med = lambda xs: statistics.median(list(xs))
print(f"ingest, {len(runs)} runs: A (fresh store, no host API) median {med(a for a, _, _ in runs):.0f} events/s; "
      f"B (the seeded store, {items} items draining) median {med(b for _, b, _ in runs):.0f}; "
      f"C (the same seeded store, no host API) median {med(c for _, _, c in runs):.0f}")
print("B/C per run (the cost of the drain itself): " + ", ".join(f"{b / c:.3f}" for _, b, c in runs)
      + f"; median {med(b / c for _, b, c in runs):.3f}")
print("B/A per run: " + ", ".join(f"{b / a:.3f}" for a, b, _ in runs) + f"; median {med(b / a for a, b, _ in runs):.3f}")
print(f"resident memory after the drain: {rss / 1024:.1f} MB")
PY
