#!/usr/bin/env python3
"""Measures the audit queries (part 10) against a running fluxtrail over HTTP.

    scripts/bench-audit.py <base url> <server pid> [cluster]

Run by scripts/bench-audit.sh, which generates the history and starts the server. Prints one
line per figure, and the resident memory of the server (VmRSS, sampled every 10 ms) during
the fleet-wide CSV export.
"""
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

base, pid = sys.argv[1], int(sys.argv[2])
cluster = sys.argv[3] if len(sys.argv) > 3 else "prod-07"
url = urllib.parse.urlparse(base)


def conn():
    return http.client.HTTPConnection(url.hostname, url.port, timeout=600)


def rfc(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


now = datetime.now(timezone.utc)
to = now + timedelta(days=1)
last30 = f"from={rfc(now - timedelta(days=30))}&to={rfc(to)}"
last90 = f"from={rfc(now - timedelta(days=91))}&to={rfc(to)}"


def get(c, path, headers=None):
    t0 = time.perf_counter()
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    dt = time.perf_counter() - t0
    assert r.status == 200, (path, r.status, body[:300])
    return dt, body


def pct(values, p):
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


def timed(name, path, n):
    c = conn()
    get(c, path)  # warm
    times = [get(c, path)[0] for _ in range(n)]
    _, body = get(c, path)
    print(
        f"{name}: n={n} p50={statistics.median(times) * 1000:.1f} ms "
        f"p99={pct(times, 99) * 1000:.1f} ms max={max(times) * 1000:.1f} ms"
    )
    return json.loads(body)


def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


page = timed("changes, first page, one cluster, 30 days", f"/api/changes?cluster={cluster}&{last30}", 200)
print(f"  (rows on the page: {len(page['changes'])}, next: {'yes' if page['next'] else 'no'})")
page = timed("changes, first page, whole fleet, 30 days", f"/api/changes?{last30}", 100)
summary = timed("summary, one cluster, 90 days", f"/api/changes/summary?cluster={cluster}&{last90}", 20)
print(f"  ({json.dumps(summary)})")
timed("summary, whole fleet, 30 days", f"/api/changes/summary?{last30}", 3)
hist = timed("branch history, first page (50 commits as evidence)",
             "/api/commits?repository=github.com/acme/fleet&ref=main&limit=50", 10)
print(f"  (server RSS right after: {rss_kb() / 1024:.1f} MB; 50 evidences held at once)")
# The allocator returns freed pages after a moment: the exports start from an idle server.
time.sleep(2)


def export(name, path, sample):
    c = conn()
    peak = [0]
    stop = threading.Event()

    timeline = []

    def sampler():
        while not stop.is_set():
            kb = rss_kb()
            timeline.append(kb)
            peak[0] = max(peak[0], kb)
            time.sleep(0.01)

    before = rss_kb()
    th = threading.Thread(target=sampler)
    if sample:
        th.start()
    t0 = time.perf_counter()
    c.request("GET", path, headers={"Accept": "text/csv"})
    r = c.getresponse()
    assert r.status == 200, r.status
    rows, size = -1, 0  # the header line is not a row
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            break
        size += len(chunk)
        rows += chunk.count(b"\r\n")
    dt = time.perf_counter() - t0
    stop.set()
    if sample:
        th.join()
    mem = f", server RSS before {before / 1024:.1f} MB, peak during {peak[0] / 1024:.1f} MB" if sample else ""
    print(f"{name}: {rows} rows, {size / 1e6:.0f} MB in {dt:.2f} s = {rows / dt:,.0f} rows/s{mem}")
    if sample:
        print(f"  (RSS every second: {' '.join(str(round(kb / 1024)) for kb in timeline[::100])})")


export("CSV, one cluster, 90 days", f"/api/changes?cluster={cluster}&{last90}", True)
# Three times: the first reads the store from disk as much as from the page cache.
for run in (1, 2, 3):
    export(f"CSV, whole fleet, 90 days (run {run})", f"/api/changes?{last90}", True)
