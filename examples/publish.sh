#!/usr/bin/env bash
# Publishes one event every second to a topic: ./examples/publish.sh [topic] [base-url]
set -euo pipefail
topic="${1:-orders}"
base="${2:-http://127.0.0.1:8080}"
for i in $(seq 1 1000); do
  curl -fsS -X POST --data-binary "order $i at $(date +%T)" "$base/publish/$topic?event=status"
  echo
  sleep 1
done
