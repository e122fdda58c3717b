#!/usr/bin/env python3
"""Pre-signed, distinct deliveries for the load harness, one per line: `<path>\t<headers json>\t<body>`.

  events.py flux  N OBJECTS KEY       Flux events (generic-hmac), each object's timestamps increasing
  events.py badsig N                  Flux events with wrong signatures
  events.py github N SECRET           GitHub pushes of 20 commits (~10 KB), distinct shas and delivery ids
"""
import hashlib, hmac, json, sys

kind = sys.argv[1]
n = int(sys.argv[2])
out = sys.stdout

def sign(key, body):
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()

if kind in ("flux", "badsig"):
    objects = int(sys.argv[3]) if kind == "flux" else 1000
    key = sys.argv[4] if kind == "flux" else "wrong"
    # A realistic mix: every object succeeds every interval; one event in 20 is a health
    # check failure (an incident opens) and the next success closes it — so one event in ten
    # produces a message.
    for i in range(n):
        obj, seq = i % objects, i // objects
        reason = "HealthCheckFailed" if seq % 20 == 10 else ("Progressing" if seq % 2 else "ReconciliationSucceeded")
        t = 1786000000 + seq
        body = json.dumps({
            "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": f"app-{obj}", "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
            "severity": "error" if reason.endswith("Failed") else "info",
            "timestamp": f"2026-08-0{1 + (t // 86400) % 9}T{(t // 3600) % 24:02d}:{(t // 60) % 60:02d}:{t % 60:02d}Z",
            "message": {"HealthCheckFailed": "health check failed after 5m0s: timeout", "Progressing": "Health check passed in 1.1s"}.get(reason, "Reconciliation finished in 1.2s, next run in 10m0s"),
            "reason": reason,
            "metadata": {"revision": "main@sha1:" + hashlib.sha1(f"{seq // 10}".encode()).hexdigest()},
            "reportingController": "kustomize-controller",
        }, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Signature": "sha256=" + sign(key, body)}
        out.write(f"/api/hooks/flux/bench\t{json.dumps(headers)}\t{body.decode()}\n")
elif kind == "github":
    secret = sys.argv[3]
    for i in range(n):
        shas = [hashlib.sha1(f"{i}-{c}".encode()).hexdigest() for c in range(20)]
        commits = [{
            "id": s, "tree_id": hashlib.sha1(s.encode()).hexdigest(), "distinct": True,
            "message": f"apps: change {i}-{c}\n\nA longer description of the change, as commits have.",
            "timestamp": "2026-08-07T10:12:44+02:00", "url": f"https://github.com/acme/fleet-infra/commit/{s}",
            "author": {"name": "Dana Ops", "email": "dana@acme.example", "username": "dana-ops"},
            "committer": {"name": "Dana Ops", "email": "dana@acme.example", "username": "dana-ops"},
            "added": [], "removed": [], "modified": [f"apps/app-{c}/release.yaml"]} for c, s in enumerate(shas)]
        body = json.dumps({
            "ref": f"refs/heads/branch-{i % 50}", "before": hashlib.sha1(f"{i}-before".encode()).hexdigest(), "after": shas[-1],
            "created": False, "deleted": False, "forced": False, "commits": commits, "head_commit": commits[-1],
            "repository": {"id": 412345678, "full_name": "acme/fleet-infra", "clone_url": "https://github.com/acme/fleet-infra.git", "html_url": "https://github.com/acme/fleet-infra"},
            "pusher": {"name": "dana-ops", "email": "dana@acme.example"}, "sender": {"login": "dana-ops", "id": 5550101},
        }, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": f"bench-{i}",
                   "X-Hub-Signature-256": "sha256=" + sign(secret, body)}
        out.write(f"/api/hooks/git/github\t{json.dumps(headers)}\t{body.decode()}\n")
