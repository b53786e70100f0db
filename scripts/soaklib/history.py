"""The campaign's clock and its record of what the clients saw.

`now()` is the one monotonic clock every thread stamps events with; `History` writes
history.jsonl (one JSON object per client-side event, with `t` and `ev`), which the
checker (checker.py) reads back: the record and the rules that judge it share nothing
but that file. `Counters` are the live tallies behind the progress line.
"""

import collections
import json
import threading
import time


T0 = time.monotonic()


def now():
    """Seconds since the campaign started (one monotonic clock for every thread)."""
    return time.monotonic() - T0


class History:
    """The JSON-lines history: one object per event, with `t` (seconds) and `ev`."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "w", buffering=1 << 20)
        self.lock = threading.Lock()

    def __call__(self, ev, **kw):
        kw["ev"] = ev
        if "t" not in kw:
            kw["t"] = round(now(), 4)
        line = json.dumps(kw, separators=(",", ":"))
        with self.lock:
            if self.f is not None:
                self.f.write(line + "\n")

    def close(self):
        with self.lock:
            if self.f is not None:
                self.f.close()
                self.f = None


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()

    def add(self, key, n=1):
        with self.lock:
            self.c[key] += n
