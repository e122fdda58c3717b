#!/usr/bin/env python3
"""Seeds the fuzz corpora from tests/fixtures (one file per input, in fuzz/corpus/<target>/).

The input layouts are those of fuzz/src/lib.rs: a selector byte in front of a body.
"""
import json
import os
import pathlib
import random
import re
import sys
import urllib.parse

root = pathlib.Path(__file__).resolve().parent.parent
fixtures = root / "tests" / "fixtures"
out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "fuzz" / "corpus"

HOST_TARGETS = {
    "github": ("git_github", 4, True),
    "gitlab": ("git_gitlab", 4, False),
    "azuredevops": ("git_azuredevops", 1, False),
    "bitbucket": ("git_bitbucket", 3, False),
    "bitbucket-server": ("git_bitbucket_server", 4, False),
    "gitea": ("git_gitea", 4, True),
    "forgejo": ("git_gitea", 4, True),
}


def put(target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


strings = set()


def collect(v):
    if isinstance(v, dict):
        for x in v.values():
            collect(x)
    elif isinstance(v, list):
        for x in v:
            collect(x)
    elif isinstance(v, str):
        strings.add(v)


for host, (target, sets, form) in HOST_TARGETS.items():
    for f in sorted((fixtures / "git" / host).glob("*.json")):
        if f.name.endswith(".expected.json"):
            continue
        body = f.read_bytes()
        collect(json.loads(body))
        for sel in range(sets):
            put(target, f"{host}-{f.stem}-{sel}", bytes([sel]) + body)
        if form:
            enc = urllib.parse.urlencode({"payload": body.decode()}).encode()
            put(target, f"{host}-{f.stem}-form", bytes([0x80]) + enc)
            put("form_payload", f"{host}-{f.stem}", enc)
        put("form_payload", f"{host}-{f.stem}-json", body)

for f in sorted((fixtures / "flux").glob("*.json")):
    body = f.read_bytes()
    collect(json.loads(body))
    for sel in range(3):
        put("flux_event", f"{f.stem}-{sel}", bytes([sel]) + body)

urls = sorted(s for s in strings if "://" in s or re.match(r"^[\w.-]+@[\w.-]+:", s))
for i, u in enumerate(urls):
    put("repo_url", f"fixture-{i}", u.encode())
for i, u in enumerate(
    [
        "git@ssh.dev.azure.com:v3/org/project/repo",
        "https://user@dev.azure.com/org/project/_git/repo",
        "ssh://git@bitbucket.example.com:7999/proj/repo.git",
        "https://gitlab.com/group/sub/repo/-/tree/main",
        "https://bitbucket.example.com/scm/proj/repo.git",
        "github.com/acme/fleet",
    ]
):
    put("repo_url", f"hand-{i}", u.encode())

revs = [s for s in strings if re.search(r"sha(1|256):|@|^v?\d+\.\d+", s) and len(s) < 200]
revs += [
    "main@sha1:" + "ab" * 20,
    "refs/heads/main@sha1:" + "cd" * 20,
    "sha1:" + "ef" * 20,
    "latest@sha256:" + "01" * 32,
    "main/" + "ab" * 20,
    "1.0.3+abc",
    "v1.2.3@sha256:" + "02" * 32,
]
for i, r in enumerate(sorted(set(revs))):
    put("revision", f"rev-{i}", r.encode())

# signature: [source selector][value length][value][body]
for sel in range(9):
    for i, value in enumerate([b"sha256=00", b"Bearer x", b"Basic eDp5", b"fuzz-secret", b""]):
        put("signature", f"sig-{sel}-{i}", bytes([sel, len(value)]) + value + b'{"a":1}')

rng = random.Random(7)
for i in range(16):
    put("core_sequence", f"seq-{i}", bytes(rng.randrange(256) for _ in range(4 * rng.randrange(4, 48))))

print(f"seeded {sum(1 for _ in out.rglob('*') if _.is_file())} inputs under {out}")
