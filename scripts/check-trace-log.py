#!/usr/bin/env python3
"""Searches a log of the whole integration suite, run at RUST_LOG=trace, for secrets.

    FLUXTRAIL_TEST_LOG=trace.log RUST_LOG=trace cargo test --test it
    scripts/check-trace-log.py trace.log

Looks for: every secret the suite configures (the constants of tests/it/helpers.rs, read from
the file so the two cannot drift), signature header values (`sha256=<hex>` and the other
algorithms), Basic and Bearer credentials, and the function keys the suite sends
(`code=` query values, `x-functions-key`). Exits 1 listing what it found.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
log = pathlib.Path(sys.argv[1]).read_text(errors="replace")
helpers = (root / "tests" / "it" / "helpers.rs").read_text()

needles = []
for name, value in re.findall(r'pub const (\w+): &str = "(.*?)";', helpers):
    if not any(w in name for w in ("SECRET", "TOKEN", "KEY", "BASIC")) or name == "SB_KEY_NAME":
        continue
    plain = re.split(r"\\", value)[0]  # the text before the first escape sequence
    if len(plain) >= 6:
        needles.append((name, plain))
patterns = [
    ("signature value", re.compile(r"sha(?:1|256|384|512)=[0-9a-fA-F]{16,}")),
    ("Basic credential", re.compile(r"Basic [A-Za-z0-9+/=]{8,}")),
    ("Bearer credential", re.compile(r"Bearer [^\s\"']{6,}")),
    ("function key", re.compile(r"(?i)(code=[^&\s\"]+|x-functions-key)")),
]

found = []
for name, text in needles:
    if text in log:
        found.append(f"{name} ({text!r})")
for what, rx in patterns:
    m = rx.search(log)
    if m:
        found.append(f"{what}: {m.group(0)[:40]!r}")
lines = log.count("\n")
if found:
    print(f"{lines} log lines; secrets found:\n  " + "\n  ".join(found))
    sys.exit(1)
if lines < 1000:
    print(f"only {lines} log lines: was the suite run with FLUXTRAIL_TEST_LOG and RUST_LOG=trace?")
    sys.exit(1)
print(f"{lines} log lines at trace level, {len(needles)} secrets and {len(patterns)} credential patterns searched: none found")
