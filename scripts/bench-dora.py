#!/usr/bin/env python3
"""Measures GET /api/dora (part 11) against a running fluxtrail over HTTP.

    scripts/bench-dora.py <base url> <server pid> [cluster]

Run by scripts/bench-dora.sh. Prints latency percentiles for one cluster and the whole
fleet over 30 and 90 days, the figures themselves once, and the server's resident memory
(VmRSS, sampled every 10 ms) during the fleet queries.
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


def rfc(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


now = datetime.now(timezone.utc)
to = now + timedelta(days=1)
windows = {"30 days": f"from={rfc(now - timedelta(days=30))}&to={rfc(to)}",
           "90 days": f"from={rfc(now - timedelta(days=91))}&to={rfc(to)}"}


def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(values, p):
    s = sorted(values)
    return s[max(0, min(len(s) - 1, -(-p * len(s) // 100) - 1))]


def timed(name, path, n):
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    body = None
    times = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, (path, r.status, body[:300])
        if i:  # the first warms
            times.append(time.perf_counter() - t0)
    print(f"{name}: n={n} p50={statistics.median(times) * 1000:.1f} ms "
          f"p99={pct(times, 99) * 1000:.1f} ms max={max(times) * 1000:.1f} ms")
    return json.loads(body)


peak = [0]
stop = threading.Event()


def sampler():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kb())
        time.sleep(0.01)


print(f"server RSS before: {rss_kb() / 1024:.1f} MB")
th = threading.Thread(target=sampler)
th.start()
for w, q in windows.items():
    v = timed(f"dora, one cluster ({cluster}), {w}", f"/api/dora?cluster={cluster}&{q}", 50)
    print(f"  {json.dumps(v['clusters'][0])}")
    v = timed(f"dora, whole fleet, {w}", f"/api/dora?{q}", 10)
    print(f"  clusters: {len(v['clusters'])}; fleet: {json.dumps(v['fleet'])}")
stop.set()
th.join()
print(f"server RSS peak during the queries: {peak[0] / 1024:.1f} MB, after: {rss_kb() / 1024:.1f} MB")
