#!/usr/bin/env bash
# Load test of POST /webhook: throughput and acknowledgement latency of Tandem on the
# embedded store and on Redis, next to a bare axum handler that only answers 200, all in the
# same run on the same machine. Needs wrk (apt-get install wrk), python3 and a Redis at
# REDIS_URL (default redis://127.0.0.1:6379).
#
#   bench/webhook.sh                 # full run: ~2 minutes
#   DURATION=5s bench/webhook.sh     # shorter
#   BASELINE=/path/to/older/tandem bench/webhook.sh   # adds that binary's embedded and Redis
#                                    # runs to the same sitting, for a before/after ratio
#   SHAPES=max TARGETS="embedded embedded-baseline" bench/webhook.sh   # a subset
#
# Each run starts a fresh server with a fresh store and sends unique, correctly signed
# deliveries (no retry duplicates), one customer message each, over 1,000 conversations.
# Two load shapes per target:
#   max   — CONNS connections as fast as they go: throughput and its latency;
#   1k    — 10 connections each paced at one request per 10 ms (about 1,000 requests/s).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
N=${N:-600000}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SECRET=bench-secret

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin tandem
cargo build --release --quiet -p tandem-server --example bare_ack

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "generating $N signed deliveries..." >&2
python3 bench/gen_requests.py "$N" "$SECRET" "$work/requests.tsv"

# start NAME COMMAND...: starts a server, waits for its "listening on" line, sets $url.
start() {
  local name=$1; shift
  # From the scratch directory: no ./flows there, so the bot stays off and only the
  # acknowledgement path is measured (examples/reply_latency.rs measures replies).
  (cd "$work" && exec "$@") >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 200); do
    url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$work/$name.out" | head -n1)
    [ -n "$url" ] && return 0
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$work/$name.err" >&2; exit 1
}

stop() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

# load SHAPE: runs wrk against $url, prints the RESULT line.
load() {
  if [ "$1" = max ]; then
    REQUESTS_FILE=$work/requests.tsv WRK_THREADS=$THREADS DELAY_MS=0 \
      wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 5s -s bench/webhook.lua "$url/webhook"
  else
    REQUESTS_FILE=$work/requests.tsv WRK_THREADS=1 DELAY_MS=10 \
      wrk -t1 -c10 -d"$DURATION" --timeout 5s -s bench/webhook.lua "$url/webhook"
  fi | grep '^RESULT'
}

# drained: seconds until the server's inbox is empty (every stored event applied).
drained() {
  local t0=$SECONDS
  for _ in $(seq 1 1200); do
    depth=$(curl -s "$url/metrics" | awk '/^tandem_inbox_depth /{print $2}')
    [ "${depth:-1}" = 0 ] && { echo $((SECONDS - t0)); return; }
    sleep 0.1
  done
  echo "timeout"
}

BASELINE=${BASELINE:-}
TARGETS=${TARGETS:-bare embedded redis${BASELINE:+ embedded-baseline redis-baseline}}

run() {
  local target=$1 shape=$2 prefix bin=$root/target/release/tandem
  case $target in *-baseline) bin=$BASELINE ;; esac
  case $target in
    bare) start bare "$root/target/release/examples/bare_ack" 127.0.0.1:0 ;;
    embedded*) start "$target" env TANDEM_APP_SECRET=$SECRET TANDEM_VERIFY_TOKEN=v TANDEM_API_TOKEN=a RUST_LOG=warn \
                "$bin" serve --listen 127.0.0.1:0 --store "$work/store-$target-$shape.redb" ;;
    redis*) prefix="tandem-bench:$$:$target:$shape"
           start "$target" env TANDEM_APP_SECRET=$SECRET TANDEM_VERIFY_TOKEN=v TANDEM_API_TOKEN=a RUST_LOG=warn \
                TANDEM_REDIS_PREFIX=$prefix "$bin" serve --listen 127.0.0.1:0 --store "$REDIS_URL" ;;
  esac
  local result; result=$(load "$shape")
  local drain="-"
  [ "$target" != bare ] && drain=$(drained)
  stop
  if [[ "$target" == redis* ]]; then
    redis-cli -u "$REDIS_URL" --scan --pattern "$prefix*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
  fi
  echo "$target $shape $result drain_s=$drain"
}

SHAPES=${SHAPES:-max 1k}
results=()
for shape in $SHAPES; do
  for target in $TARGETS; do
    line=$(run "$target" "$shape")
    echo "$line" >&2
    results+=("$line")
  done
done

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
echo
echo "| target | load | requests/s | vs bare | p50 ms | p99 ms | max ms | non-200 | drain s |"
echo "|---|---|---|---|---|---|---|---|---|"
for shape in $SHAPES; do
  base=""
  for line in "${results[@]}"; do
    read -r target s _ <<<"$line"
    if [ "$s" = "$shape" ] && [ "$target" = bare ]; then base=$(field rps "$line"); fi
  done
  for line in "${results[@]}"; do
    read -r target s _ <<<"$line"
    [ "$s" = "$shape" ] || continue
    rps=$(field rps "$line")
    ratio=$(python3 -c "print(f'{$rps/$base:.2f}' if '$base' else '-')")
    echo "| $target | $shape | $rps | $ratio | $(field p50_ms "$line") | $(field p99_ms "$line") | $(field max_ms "$line") | $(field non200 "$line") | $(field drain_s "$line") |"
  done
done
