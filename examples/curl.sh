#!/usr/bin/env bash
# The whole round trip with curl: publish, a batch, subscribe, resume.
#   ./examples/curl.sh [base-url]          (default http://127.0.0.1:8080)
# Needs a running gateway (cargo run --release). Exercised by tests/examples.rs.
set -euo pipefail
base="${1:-http://127.0.0.1:8080}"
topic="examples/curl"

# Subscribe in the background for 3 seconds (-N: print events as they arrive).
curl -sN --max-time 3 "$base/subscribe/$topic" > /tmp/ssegate-curl-example.$$ || true &
subscriber=$!
sleep 0.5

# One event: the body is the data, ?event= its type.
reply=$(curl -fsS -X POST --data-binary 'shipped' "$base/publish/$topic?event=status")
echo "published: $reply"
first_id=$(printf '%s' "$reply" | sed -E 's/.*"id":"([^"]+)".*/\1/')

# A batch: one JSON object per line, published in order, all or nothing.
printf '%s\n' '{"data":"packed"}' '{"data":{"carrier":"DHL"},"event":"status"}' |
  curl -fsS -H 'Content-Type: application/x-ndjson' --data-binary @- "$base/publish/$topic"
echo

wait "$subscriber"
echo "--- the subscriber saw:"
cat /tmp/ssegate-curl-example.$$
rm -f /tmp/ssegate-curl-example.$$

# Resume after the first event, as EventSource does on reconnect.
echo "--- resumed after $first_id:"
curl -sN --max-time 1 -H "Last-Event-ID: $first_id" "$base/subscribe/$topic" || true
