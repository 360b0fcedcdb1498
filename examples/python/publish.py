#!/usr/bin/env python3
"""Publishing to ssegate from Python with the standard library only.

    python3 examples/python/publish.py [base-url] [topic]

Exercised by tests/examples.rs.
"""

import json
import os
import sys
import urllib.parse
import urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SSEGATE_URL", "http://127.0.0.1:8080")
TOPIC = sys.argv[2] if len(sys.argv) > 2 else "examples/python"
TOKEN = os.environ.get("SSEGATE_PUBLISH_TOKEN")  # when publish_token is set


def _post(path, body, content_type=None):
    request = urllib.request.Request(f"{BASE}{path}", data=body, method="POST")
    if content_type:
        request.add_header("Content-Type", content_type)
    if TOKEN:
        request.add_header("Authorization", f"Bearer {TOKEN}")
    # A refusal raises urllib.error.HTTPError; its body is a one-line reason.
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def publish(topic, data, event=None):
    """One event: the body is the data. Returns its id."""
    query = f"?event={urllib.parse.quote(event)}" if event else ""
    return _post(f"/publish/{topic}{query}", data.encode("utf-8"))["id"]


def publish_batch(topic, events):
    """Several events ({"data": ..., "event": ...}) in order, all or nothing."""
    body = "\n".join(json.dumps(event) for event in events).encode("utf-8")
    return _post(f"/publish/{topic}", body, "application/x-ndjson")["ids"]


if __name__ == "__main__":
    print("published", publish(TOPIC, json.dumps({"sensor": "t1", "celsius": 21.5}), event="reading"))
    ids = publish_batch(TOPIC, [{"data": "first"}, {"data": {"sensor": "t2"}, "event": "reading"}])
    print("published batch", " ".join(ids))
