#!/usr/bin/env python3
"""Save one weir message into SQLite; meant to be run by `weir worker`.

    weir worker --queue messages -- python3 examples/sqlite-worker/save_message.py

`weir worker` runs this once per message with the body on stdin and the message's
fields in WEIR_* environment variables. Exit 0 acks the message; any other exit
makes the broker retry it (and dead-letter it after the queue's max_deliveries).

The body is JSON `{"content": "..."}` or plain text. Rows are keyed by the message id,
so a redelivery (say the ack was lost) does not store the message twice. A message
whose content contains the word "poison" is refused, to show retries and the
dead-letter queue. Python 3 standard library only.
"""

import contextlib
import json
import os
import re
import sqlite3
import sys
from datetime import datetime, timezone

POISON = re.compile(r"\bpoison\b", re.IGNORECASE)


def content_of(body: bytes) -> str:
    """The message's content: the "content" field of a JSON object, else the body
    (without a trailing newline, as `echo` adds one)."""
    text = body.decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if isinstance(document, dict) and "content" in document:
        content = document["content"]
        return content if isinstance(content, str) else json.dumps(content)
    return text


def main() -> int:
    message_id = os.environ.get("WEIR_MESSAGE_ID")
    if not message_id:
        print("save_message.py: WEIR_MESSAGE_ID is not set; run me under `weir worker`",
              file=sys.stderr)
        return 2
    delivery_count = int(os.environ.get("WEIR_DELIVERY_COUNT", "1"))
    content = content_of(sys.stdin.buffer.read())

    if POISON.search(content):
        print(f"save_message.py: refusing {message_id} (delivery {delivery_count}): "
              "it contains the word 'poison'", file=sys.stderr)
        return 1

    path = os.environ.get("MESSAGES_DB", "messages.db")
    # timeout: several workers (or --concurrency) may write at once; SQLite locks the
    # file and the others wait instead of failing.
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db, db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS messages ("
            " id TEXT PRIMARY KEY,"
            " content TEXT NOT NULL,"
            " delivery_count INTEGER NOT NULL,"
            " saved_at TEXT NOT NULL)"
        )
        # OR IGNORE: a redelivered message that was saved before keeps its first row.
        db.execute(
            "INSERT OR IGNORE INTO messages (id, content, delivery_count, saved_at)"
            " VALUES (?, ?, ?, ?)",
            (message_id, content, delivery_count,
             datetime.now(timezone.utc).isoformat(timespec="milliseconds")),
        )
    print(f"saved {message_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
