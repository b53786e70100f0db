"""The campaign context every thread gets, and the message body format.

`Ctx` holds the arguments, the history, the broker, the stop and abort events and the
kill hold (hostile injections hold kill -9 off while they run); `spawn` starts a
thread that records its crash in the history instead of dying silently. Bodies are
"<id>|padding": `body_for` makes one, `id_of` reads the id back.
"""

import threading
import traceback

from .history import Counters


class Ctx:
    def __init__(self, args, hist):
        self.args = args
        self.hist = hist
        self.counters = Counters()
        self.stop_load = threading.Event()
        self.stop_faults = threading.Event()
        self.abort = threading.Event()
        self.abort_reason = None
        self.broker = None
        self.disk = None
        self.conn_seq = 0
        self.conn_lock = threading.Lock()
        self.threads = []
        # Hostile injections hold the kill schedule off while they run (each is bounded
        # in time), so that a slowloris or a non-reading consumer meets a broker that
        # lives long enough to show what it does; kills resume right after.
        self.kill_holds = 0
        self.kill_hold_lock = threading.Lock()

    def hold_kills(self):
        ctx = self

        class Hold:
            def __enter__(self):
                with ctx.kill_hold_lock:
                    ctx.kill_holds += 1

            def __exit__(self, *exc):
                with ctx.kill_hold_lock:
                    ctx.kill_holds -= 1
        return Hold()

    def conn_id(self, name):
        with self.conn_lock:
            self.conn_seq += 1
            return f"{name}#{self.conn_seq}"

    def spawn(self, name, fn, *a):
        def run():
            try:
                fn(self, *a)
            except Exception:
                self.hist("thread_error", name=name, err=traceback.format_exc()[-2000:])
        th = threading.Thread(target=run, name=name, daemon=True)
        th.start()
        self.threads.append(th)
        return th

    def wait_up(self, timeout=1.0):
        return self.broker.up.wait(timeout)


def sleep_until(ev, seconds):
    """Sleeps, waking early when `ev` is set. True when it was set."""
    return ev.wait(max(0.0, seconds))


def body_for(msg_id, rng, size):
    pad = max(0, size - len(msg_id) - 1)
    return (msg_id + "|" + "x" * pad).encode()


def id_of(body):
    if isinstance(body, str):
        body = body.encode()
    return body.split(b"|", 1)[0].decode("ascii", "replace")
