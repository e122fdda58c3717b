#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after the other, on corpora
# seeded from tests/fixtures, and prints executions and findings per target.
#
#   scripts/fuzz.sh            # 600 s per target (what RELIABILITY.md reports)
#   SECONDS_PER_TARGET=30 scripts/fuzz.sh revision repo_url
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags) and cargo-fuzz, installed here from
# crates.io if missing. Findings land in fuzz/artifacts/<target>/; turn each into a regression
# test before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
per=${SECONDS_PER_TARGET:-600}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
all=(git_github git_gitlab git_azuredevops git_bitbucket git_bitbucket_server git_gitea
     flux_event revision signature repo_url form_payload core_sequence)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
python3 scripts/fuzz-seed.py fuzz/corpus >/dev/null
(cd fuzz && cargo +nightly fuzz build -O >/dev/null)
report=${FUZZ_REPORT:-fuzz/report.txt}
printf '%-22s %10s %12s %8s %9s\n' target seconds executions exec/s crashes | tee "$report"
status=0
for t in "${targets[@]}"; do
  log=fuzz/$t.log
  set +e
  (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
      -max_total_time="$per" -print_final_stats=1 -rss_limit_mb=2048 -max_len=65536 -timeout=10) >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
  [ "$rc" -ne 0 ] && status=1
  printf '%-22s %10s %12s %8s %9s\n' "$t" "$per" "${execs:-?}" "${rate:-?}" "$crashes" | tee -a "$report"
done
exit $status
