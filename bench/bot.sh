# The bot end to end for the real-server scripts (sourced, not run): `tandem serve` with the
# shipped flows behind the Graph API stand-in (bench/graph_standin.py), and waiting for its
# answers. Uses the caller's $root, $WORK, $bin and `pids` array (its EXIT trap kills them);
# the server also gets whatever TANDEM_* the caller exported.

# start_bot PORT [MEDIA_DIR]: the Graph stand-in on PORT+1 (serving MEDIA_DIR's voice notes)
# and the server on PORT+2 with a fresh store; returns once the server listens.
start_bot() {
  local port=$1
  python3 "$root/bench/graph_standin.py" $((port + 1)) ${2:+"$2"} >"$WORK/graph.out" 2>&1 &
  pids+=($!)
  rm -f "$WORK/store.redb"
  TANDEM_GRAPH_URL=http://127.0.0.1:$((port + 1))/v23.0 TANDEM_ACCESS_TOKEN=t TANDEM_API_TOKEN=a \
    RUST_LOG=warn "$bin" serve --dev --listen 127.0.0.1:$((port + 2)) --store "$WORK/store.redb" \
    >"$WORK/tandem.out" 2>"$WORK/tandem.err" &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q "listening on" "$WORK/tandem.out" 2>/dev/null && break; sleep 0.1; done
}

# wait_answered PORT CUSTOMERS SECONDS: until the server's inbox is empty and CUSTOMERS
# customers were sent something, or SECONDS passed.
wait_answered() {
  local depth answered
  for _ in $(seq 1 $(($3 * 10))); do
    depth=$(curl -s "http://127.0.0.1:$(($1 + 2))/metrics" | awk '/^tandem_inbox_depth /{print $2}')
    answered=$(python3 -c 'import json,sys; print(len({json.loads(l).get("to") for l in open(sys.argv[1])}))' "$WORK/graph.out")
    [ "${depth:-1}" = 0 ] && [ "$answered" -ge "$2" ] && return 0
    sleep 0.1
  done
}

# show_transcript PORT WA_ID: each line of the customer's conversation with what the cascade
# made of it.
show_transcript() {
  curl -s -H "authorization: Bearer a" "http://127.0.0.1:$(($1 + 2))/v1/conversations/106540000000001:$2" |
    python3 -c 'import json,sys; c=json.load(sys.stdin); [print(l["role"], "|", l.get("understood"), "|", l["text"][:100]) for l in c["transcript"]]'
}
