#!/usr/bin/env bash
# The whole round trip with curl: publish, a batch, subscribe, resume.
#   ./examples/curl.sh [base-url]          (default http://127.0.0.1:8080)
# Needs a running gateway (cargo run --release). Exercised by tests/examples.rs.
set -euo pipefail
base="${1:-http://127.0.0.1:8080}"
topic="examples/curl"
received="$(mktemp)"
subscriber=""
cleanup() {
  [ -n "$subscriber" ] && kill "$subscriber" 2>/dev/null
  rm -f "$received"
}
trap cleanup EXIT

# Subscribe in the background (-N: print events as they arrive) and wait
# until the stream is open: it starts with a `retry:` line.
curl -sN "$base/subscribe/$topic" > "$received" &
subscriber=$!
for _ in $(seq 1 100); do
  grep -q '^retry:' "$received" && break
  sleep 0.1
done

# One event: the body is the data, ?event= its type.
reply=$(curl -fsS -X POST --data-binary 'shipped' "$base/publish/$topic?event=status")
echo "published: $reply"
first_id=$(printf '%s' "$reply" | sed -E 's/.*"id":"([^"]+)".*/\1/')

# A batch: one JSON object per line, published in order, all or nothing.
printf '%s\n' '{"data":"packed"}' '{"data":{"carrier":"DHL"},"event":"status"}' |
  curl -fsS -H 'Content-Type: application/x-ndjson' --data-binary @- "$base/publish/$topic"
echo

# Wait for the three events (each ends with a blank line), then stop curl.
for _ in $(seq 1 100); do
  [ "$(grep -c '^data:' "$received")" -ge 3 ] && break
  sleep 0.1
done
echo "--- the subscriber saw:"
cat "$received"

# Resume after the first event, as EventSource does on reconnect.
echo "--- resumed after $first_id:"
curl -sN --max-time 1 -H "Last-Event-ID: $first_id" "$base/subscribe/$topic" || true
