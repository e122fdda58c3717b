#!/usr/bin/env python3
"""Checks infra/flux/ against what the server expects: every overlay's Provider is a
generic-hmac Provider addressing the FluxHookCluster route (host.json routePrefix + the
function.json route) for the cluster its Alert names in eventMetadata, the Alert sends the
object kinds fluxtrail correlates at severity info, and the Secret carries the HMAC key and
the function key header."""
import json, os, re, sys

import yaml

root = os.path.join(os.path.dirname(__file__), "..")
passed = failed = 0

def check(ok, what):
    global passed, failed
    print(("ok     " if ok else "FAILED ") + what)
    passed, failed = passed + bool(ok), failed + (not ok)

host = json.load(open(os.path.join(root, "host.json")))
prefix = host["extensions"]["http"]["routePrefix"]
route = json.load(open(os.path.join(root, "function.json-templates/FluxHookCluster/function.json")))["bindings"][0]["route"]
pattern = re.compile("^https://[^/]+/" + re.escape(prefix) + "/" + re.escape(route).replace(re.escape("{cluster}"), "(?P<cluster>[a-z0-9-]+)") + "$")

base_dir = os.path.join(root, "infra/flux/base")
base = yaml.safe_load(open(os.path.join(base_dir, "kustomization.yaml")))
docs = {}
for r in base["resources"]:
    d = yaml.safe_load(open(os.path.join(base_dir, r)))
    docs[d["kind"]] = d
gen = base["secretGenerator"][0]
env = dict(line.split("=", 1) for line in open(os.path.join(base_dir, "fluxtrail.env.example")).read().splitlines() if "=" in line)
check(gen["name"] == docs["Provider"]["spec"]["secretRef"]["name"], "the Provider references the generated Secret")
check(set(env) == {"token", "headers"}, "the Secret has token (HMAC key) and headers")
check(env["headers"].split(":", 1)[0].strip().lower() == "x-functions-key", "the headers carry x-functions-key (the function key header)")
check(docs["Provider"]["spec"]["type"] == "generic-hmac", "the Provider is generic-hmac (X-Signature, checked by FLUXTRAIL_FLUX_HMAC_KEY)")
alert = docs["Alert"]["spec"]
check(alert["providerRef"]["name"] == docs["Provider"]["metadata"]["name"], "the Alert uses the Provider")
check(alert["eventSeverity"] == "info", "the Alert sends info events (successes close incidents)")
kinds = {s["kind"] for s in alert["eventSources"] if s.get("name") == "*"}
check({"Kustomization", "HelmRelease", "GitRepository", "OCIRepository"} <= kinds, f"the Alert covers every kind: {sorted(kinds)}")

overlays = os.path.join(root, "infra/flux/overlays")
for cluster in sorted(os.listdir(overlays)):
    k = yaml.safe_load(open(os.path.join(overlays, cluster, "kustomization.yaml")))
    check(k["resources"] == ["../../base"], f"{cluster}: builds on the base")
    rendered = json.loads(json.dumps(docs))
    for p in k["patches"]:
        target = rendered[p["target"]["kind"]]
        for op in yaml.safe_load(p["patch"]):
            assert op["op"] == "replace"
            keys = op["path"].strip("/").split("/")
            node = target
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = op["value"]
    m = pattern.match(rendered["Provider"]["spec"]["address"])
    check(m is not None, f"{cluster}: the address is the FluxHookCluster route ({rendered['Provider']['spec']['address']})")
    check(m is not None and m.group("cluster") == cluster, f"{cluster}: the address names the cluster")
    check(rendered["Alert"]["spec"]["eventMetadata"]["cluster"] == cluster, f"{cluster}: eventMetadata.cluster is the cluster")
    check("FUNCTION_APP" not in rendered["Provider"]["spec"]["address"], f"{cluster}: the Function App host is set")

print(f"flux: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
