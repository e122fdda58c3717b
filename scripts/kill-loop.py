#!/usr/bin/env python3
"""SIGKILL in a loop under load, then the ledger is checked against what was acknowledged.

    scripts/kill-loop.py [--kills 30] [--binary target/release/fluxtrail] [--workers 6]

Starts fluxtrail on a fresh data directory and drives it with signed, distinct deliveries
from several threads: Flux failures (each on its own object, so each must produce exactly one
`apply.failed`; up to eight share each failing commit, so they share a group), recoveries of
acknowledged failures, Flux successes, and GitHub pushes (each with its own commits). Meanwhile the
server is killed with SIGKILL at random moments (0.1-0.8 s apart) and restarted at once on
the same directory and port. Clients see refused connections while it is down and retry
nothing: an unanswered delivery simply counts as not acknowledged (Flux and the Git hosts
would retry it).

Afterwards, with the server up once more and its outbox drained, it checks:
  - every delivery answered 2xx is in the ledger (object or commit evidence);
  - every acknowledged failure has its message; no message id appears twice in the sink;
  - groups (contract §9): every `apply.failed`/`apply.recovered` names a group, a recovery
    the group of its incident's failure; every group named has exactly one `group.opened`;
    every resolved group (GET /api/groups) exactly one `group.resolved`, with all its
    members, and no open group has one;
  - SQLite's integrity_check is ok.
Prints a report and exits non-zero on any violation.
"""
import argparse
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLUX_KEY = "kill-loop-flux-key"
GITHUB_SECRET = "kill-loop-github-secret"
TOKEN = "kill-loop-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, data, port):
        self.binary, self.data, self.port = binary, data, port
        self.proc = None
        self.log = open(os.path.join(data, "server.log"), "ab")

    def start(self):
        env = {
            "PATH": os.environ.get("PATH", ""),
            "FLUXTRAIL_LISTEN": f"127.0.0.1:{self.port}",
            "FLUXTRAIL_DATA_DIR": os.path.join(self.data, "store"),
            "FLUXTRAIL_FLUX_HMAC_KEY": FLUX_KEY,
            "FLUXTRAIL_GITHUB_SECRET": GITHUB_SECRET,
            "FLUXTRAIL_API_TOKEN": TOKEN,
            "FLUXTRAIL_PUBLISH_RETRY_BASE": "100ms",
            "RUST_LOG": "warn",
        }
        self.proc = subprocess.Popen([self.binary, "serve"], env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1):
                    return
            except Exception:
                if self.proc.poll() is not None:
                    raise SystemExit(f"server exited with {self.proc.returncode}; see {self.log.name}")
                time.sleep(0.01)
        raise SystemExit("server did not become ready")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def post(port, path, body, headers):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None  # refused or cut off: the server was down


def get(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def revision(n, kind):
    # Up to eight failures share each failing commit (one cause, one group).
    seed = f"cause-{n // 30}" if kind == "fail" else str(n)
    return f"main@sha1:{hashlib.sha1(seed.encode()).hexdigest()}"


def flux_event(n, kind, name=None, rev=None, timestamp="2026-11-27T10:00:00Z"):
    failing = kind == "fail"
    return json.dumps({
        "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": name or f"{kind}-{n:06d}"},
        "severity": "error" if failing else "info",
        "timestamp": timestamp,
        "message": f"event {n}: " + ("dry-run failed" if failing else "Reconciliation finished"),
        "reason": "ReconciliationFailed" if failing else "ReconciliationSucceeded",
        "metadata": {"revision": rev or revision(n, kind)},
        "reportingController": "kustomize-controller",
    }).encode()


def all_groups(port, state):
    out, cursor = [], None
    while True:
        path = f"/api/groups?state={state}&limit=500" + (f"&cursor={cursor}" if cursor else "")
        status, page = get(port, path)
        if status != 200:
            raise SystemExit(f"GET {path}: {status}")
        out += page["groups"]
        cursor = page["next"]
        if not cursor:
            return out


def github_push(n):
    shas = [hashlib.sha1(f"push-{n}-{i}".encode()).hexdigest() for i in range(3)]
    commits = [{
        "id": s, "message": f"change {n}.{i}", "timestamp": "2026-11-27T10:00:00+00:00",
        "author": {"name": "Dev", "email": "dev@example.com"}, "url": f"https://github.com/acme/fleet/commit/{s}",
    } for i, s in enumerate(shas)]
    body = json.dumps({
        "ref": "refs/heads/main", "before": hashlib.sha1(f"before-{n}".encode()).hexdigest(), "after": shas[-1],
        "created": False, "deleted": False, "forced": False, "commits": commits, "head_commit": commits[-1],
        "repository": {"full_name": "acme/fleet", "clone_url": "https://github.com/acme/fleet.git",
                       "html_url": "https://github.com/acme/fleet"},
        "pusher": {"name": "dev", "email": "dev@example.com"}, "sender": {"login": "dev"},
    }).encode()
    return body, shas


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fluxtrail"))
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="fluxtrail-kill-loop-")
    port = free_port()
    server = Server(args.binary, data, port)
    server.start()

    lock = threading.Lock()
    counter = [0]
    results = []  # (kind, n, status, extra)
    failed_acked = []  # (object name, revision) of acknowledged failures not yet recovered
    stop = threading.Event()

    def worker():
        rng = random.Random(threading.get_ident())
        while not stop.is_set():
            with lock:
                n = counter[0]
                counter[0] += 1
                kind = ("fail", "ok", "push", "recover")[n % 4]
                target = None
                if kind == "recover":
                    if failed_acked:
                        target = failed_acked.pop(rng.randrange(len(failed_acked)))
                    else:
                        kind = "ok"
            if kind == "recover":
                name, rev = target
                body = flux_event(n, "ok", name=name, rev=rev, timestamp="2026-11-27T10:05:00Z")
                sig = hmac.new(FLUX_KEY.encode(), body, hashlib.sha256).hexdigest()
                status = post(port, "/api/hooks/flux/prod-eu", body, {"X-Signature": f"sha256={sig}"})
                extra = name
            elif kind == "push":
                body, shas = github_push(n)
                sig = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
                status = post(port, "/api/hooks/git/github", body, {
                    "X-GitHub-Event": "push", "X-GitHub-Delivery": f"kill-loop-{n}",
                    "X-Hub-Signature-256": f"sha256={sig}"})
                extra = shas
            else:
                body = flux_event(n, kind)
                sig = hmac.new(FLUX_KEY.encode(), body, hashlib.sha256).hexdigest()
                status = post(port, "/api/hooks/flux/prod-eu", body, {"X-Signature": f"sha256={sig}"})
                extra = f"{kind}-{n:06d}"
            with lock:
                results.append((kind, n, status, extra))
                if kind == "fail" and status in (200, 202):
                    failed_acked.append((extra, revision(n, kind)))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
    for t in threads:
        t.start()
    rng = random.Random(7)
    for _ in range(args.kills):
        time.sleep(rng.uniform(0.1, 0.8))
        server.kill()
        server.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()

    # Drain: the outbox delivers what was committed but not yet sent.
    deadline = time.time() + 60
    while True:
        status, health = get(port, "/api/health")
        if health and health.get("outbox") and health["outbox"]["pending"] == 0:
            break
        if time.time() > deadline:
            raise SystemExit(f"outbox did not drain: {health}")
        time.sleep(0.2)

    status, objects = get(port, "/api/objects")
    names = {o["name"] for o in objects["objects"]}
    sink = os.path.join(data, "store", "messages.jsonl")
    ids, torn, failed_objects, messages = [], 0, set(), []
    with open(sink, "rb") as f:
        for line in f.read().splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                torn += 1  # cut by a SIGKILL mid-write; its message was re-sent whole
                continue
            ids.append(m["id"])
            messages.append(m)
            if m["type"] == "io.fluxtrail.apply.failed":
                failed_objects.add(m["data"]["name"])
    duplicates = len(ids) - len(set(ids))

    # Groups: exactly once, and consistent with what the incidents say.
    group_errors = []
    by_type = {}
    for m in messages:
        by_type.setdefault(m["type"].rsplit(".", 2)[-2] + "." + m["type"].rsplit(".", 1)[-1], []).append(m)
    incident_group = {}
    for m in by_type.get("apply.failed", []):
        g = m["data"].get("groupId")
        if not g:
            group_errors.append(f"apply.failed without groupId: {m['id']}")
        incident_group.setdefault(m["data"]["incidentId"], g)
        if incident_group[m["data"]["incidentId"]] != g:
            group_errors.append(f"an incident in two groups: {m['data']['incidentId']}")
    for m in by_type.get("apply.recovered", []):
        if m["data"].get("groupId") != incident_group.get(m["data"]["incidentId"]):
            group_errors.append(f"recovery in another group than its failure: {m['id']}")
    opened, resolved = {}, {}
    for m in by_type.get("group.opened", []):
        opened[m["data"]["groupId"]] = opened.get(m["data"]["groupId"], 0) + 1
    for m in by_type.get("group.resolved", []):
        g = m["data"]["groupId"]
        resolved[g] = resolved.get(g, 0) + 1
    named = set(incident_group.values())
    for g in named:
        if opened.get(g) != 1:
            group_errors.append(f"group {g}: {opened.get(g, 0)} group.opened")
    resolved_groups = all_groups(port, "resolved")
    open_groups = all_groups(port, "open")
    for g in resolved_groups:
        if resolved.get(g["groupId"]) != 1:
            group_errors.append(f"resolved group {g['groupId']}: {resolved.get(g['groupId'], 0)} group.resolved")
    for g in open_groups:
        if g["groupId"] in resolved:
            group_errors.append(f"open group {g['groupId']} has a group.resolved")
    for g in resolved_groups + open_groups:
        if g["groupId"] not in named:
            group_errors.append(f"group {g['groupId']} listed, never named by an apply.failed")
    if len(resolved) != len(resolved_groups):
        group_errors.append(f"{len(resolved)} group.resolved, {len(resolved_groups)} resolved groups")

    acked = [r for r in results if r[2] in (200, 202)]
    refused_5xx = [r for r in results if r[2] is not None and r[2] >= 500]
    unanswered = [r for r in results if r[2] is None]
    other = [r for r in results if r[2] is not None and r[2] not in (200, 202) and r[2] < 500]
    missing = []
    for kind, n, _, extra in acked:
        if kind == "push":
            if any(get(port, f"/api/commits/{s}")[0] != 200 for s in extra):
                missing.append((kind, n))
        elif extra not in names:
            missing.append((kind, n))
    acked_failures = {extra for kind, _, _, extra in acked if kind == "fail"}
    without_message = sorted(acked_failures - failed_objects)
    server.stop()
    integrity = sqlite3.connect(os.path.join(data, "store", "ledger.db")).execute("PRAGMA integrity_check").fetchone()[0]

    report = {
        "kills": args.kills,
        "deliveries sent": len(results),
        "answered 2xx": len(acked),
        "answered 5xx": len(refused_5xx),
        "answered other": len(other),
        "unanswered (server down)": len(unanswered),
        "2xx found in the ledger": len(acked) - len(missing),
        "2xx missing from the ledger": len(missing),
        "messages in the sink": len(ids),
        "duplicate message ids": duplicates,
        "torn lines (killed mid-write)": torn,
        "acknowledged failures without their message": len(without_message),
        "groups opened (group.opened)": sum(opened.values()),
        "groups resolved (group.resolved)": sum(resolved.values()),
        "groups open / resolved (GET /api/groups)": f"{len(open_groups)} / {len(resolved_groups)}",
        "group inconsistencies": len(group_errors),
        "integrity_check": integrity,
    }
    width = max(len(k) for k in report)
    for k, v in report.items():
        print(f"{k:<{width}}  {v}")
    ok = (not missing and duplicates == 0 and not without_message and integrity == "ok" and not other
          and not group_errors)
    if not ok:
        print(f"FAILED; data kept in {data}", file=sys.stderr)
        print("missing:", missing[:10], "without message:", without_message[:10], "other:", other[:10],
              "groups:", group_errors[:10], file=sys.stderr)
        sys.exit(1)
    subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
