#!/usr/bin/env bash
# Publishes one event every second to a topic (a demo feed for live-orders.html):
#   ./examples/publish-loop.sh [topic] [base-url] [count]
set -euo pipefail
topic="${1:-orders}"
base="${2:-http://127.0.0.1:8080}"
count="${3:-1000}"
for i in $(seq 1 "$count"); do
  curl -fsS -X POST --data-binary "order $i at $(date +%T)" "$base/publish/$topic?event=status"
  echo
  [ "$i" = "$count" ] || sleep 1
done
