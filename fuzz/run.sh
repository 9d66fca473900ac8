#!/usr/bin/env bash
# Runs each fuzz target for the given number of seconds (default 60), starting from its seeds
# (the webhook fixtures, the shipped flows, fuzz/seeds/template_render), and prints one line per
# target: executions, corpus size, outcome. Exits 1 when a target crashed; the crashing input
# is then in fuzz/artifacts/<target>/ — turn it into a regression test.
#
#   fuzz/run.sh 300        # five minutes per target
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz (installed
# here when missing).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
targets=(webhook_parse flow_load template_render)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p corpus/webhook_parse corpus/flow_load corpus/template_render logs
cp -n ../tests/fixtures/whatsapp/*.json corpus/webhook_parse/
cp -n ../flows/*.yaml corpus/flow_load/
cp -n seeds/template_render/* corpus/template_render/

failed=0
summary=()
for target in "${targets[@]}"; do
  log="logs/$target.log"
  if cargo +nightly fuzz run "$target" "corpus/$target" -- \
      -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1; then
    outcome="no crash"
  else
    outcome="CRASH (see $log and artifacts/$target/)"
    failed=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  size=$(find "corpus/$target" -type f | wc -l)
  summary+=("$target: ${runs:-?} runs in ${secs}s, corpus $size inputs, $outcome")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
