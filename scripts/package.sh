#!/usr/bin/env bash
# Builds the Azure Functions package: a static x86_64-unknown-linux-musl release binary named
# `handler`, host.json, and the rendered function folders, zipped with the executable bit kept
# (dist/fluxtrail-functions.zip). Installs the musl target and musl-tools when missing.
#
# Parameters (environment): AUTH_LEVEL (function), SWEEP_SCHEDULE ("0 */1 * * * *"),
# SWEEP_RETRIES (3), SWEEP_RETRY_DELAY (00:00:30), OUT (dist/fluxtrail-functions.zip).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
  # SQLite (bundled) and ring are C: they need a musl C compiler.
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq musl-tools >/dev/null; fi
fi
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$target" --bin fluxtrail

out=${OUT:-dist/fluxtrail-functions.zip}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp host.json "$stage/"
install -m 0755 "target/$target/release/fluxtrail" "$stage/handler"
for dir in function.json-templates/*/; do
  name=$(basename "$dir")
  mkdir -p "$stage/$name"
  sed -e "s/{{AUTH_LEVEL}}/${AUTH_LEVEL:-function}/" \
      -e "s/{{SWEEP_SCHEDULE}}/${SWEEP_SCHEDULE:-0 *\/1 * * * *}/" \
      -e "s/\"{{SWEEP_RETRIES}}\"/${SWEEP_RETRIES:-3}/" \
      -e "s/{{SWEEP_RETRY_DELAY}}/${SWEEP_RETRY_DELAY:-00:00:30}/" \
      "$dir/function.json" > "$stage/$name/function.json"
done
mkdir -p "$(dirname "$out")"
# Python's zipfile keeps the Unix mode in external_attr, so `handler` stays executable
# (ZipDeploy from some tools has dropped it before).
python3 - "$stage" "$out" <<'PY'
import os, sys, zipfile
stage, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for root, _, files in os.walk(stage):
        for f in sorted(files):
            path = os.path.join(root, f)
            name = os.path.relpath(path, stage)
            info = zipfile.ZipInfo.from_file(path, name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as fh:
                z.writestr(info, fh.read())
PY
echo "$out ($(du -h "$out" | cut -f1))"
