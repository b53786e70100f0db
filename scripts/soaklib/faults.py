"""Faults: kill -9 and restart, disk full and disk alarm, probes and RSS samples.

`Fault` records one injected fault and its outcome; `supervisor` kills and restarts the
broker on a random schedule (and after crashes); `Disk` fills and frees the tmpfs
under the data dir; `probes` and `rss_sampler` give the checker its availability and
memory evidence. The hostile inputs are in hostile.py.
"""

import os
import random
import socket
import threading
import time

from .history import now
from .http_helpers import http_request
from .rawamqp import PROTOCOL_HEADER
from .context import sleep_until


class Fault:
    """Records one injected fault: its kind, start, end and outcome."""

    def __init__(self, ctx, kind):
        self.ctx = ctx
        self.kind = kind
        self.ts = round(now(), 4)
        self.inc = ctx.broker.inc

    def done(self, outcome, expected=True, **detail):
        if detail.get("survived", True) is None:
            # A scheduled kill -9 hit the broker during the injection: whatever the
            # client saw is the kill's doing.
            outcome = "interrupted by the scheduled kill -9"
            expected = True
        self.ctx.counters.add(f"fault:{self.kind}")
        self.ctx.hist("fault", kind=self.kind, ts=self.ts, te=round(now(), 4), inc=self.inc,
                      outcome=outcome, expected=expected, **detail)


def supervisor(ctx):
    """kill -9 on a random schedule; restarts after kills and after crashes."""
    args = ctx.args
    rng = random.Random(args.seed)
    broker = ctx.broker
    next_kill = now() + rng.uniform(args.kill_min, args.kill_max)
    while not ctx.stop_faults.is_set():
        if broker.poll_exit():
            restart(ctx, "after an exit the campaign did not cause")
            next_kill = now() + rng.uniform(args.kill_min, args.kill_max)
        elif args.kill_max > 0 and now() >= next_kill and ctx.kill_holds == 0:
            broker.kill9("schedule")
            ctx.counters.add("fault:kill9")
            restart(ctx, "after kill -9")
            next_kill = now() + rng.uniform(args.kill_min, args.kill_max)
        ctx.stop_faults.wait(0.05)


def restart(ctx, why):
    broker = ctx.broker
    for attempt in range(1, 6):
        if broker.start():
            return True
        ctx.counters.add("restart_failed")
        ctx.hist("restart_failed", attempt=attempt, why=why)
        # A full disk may be why: free it before the next attempt (recorded).
        if ctx.disk is not None:
            ctx.disk.free("restart failed")
        time.sleep(1.0)
    ctx.abort_reason = "the broker could not be restarted 5 times in a row"
    ctx.abort.set()
    return False


class Disk:
    """A tmpfs under the data dir, filled by a filler file and freed."""

    def __init__(self, ctx, mount_dir):
        self.ctx = ctx
        self.mount_dir = mount_dir
        self.filler = os.path.join(mount_dir, "soak-filler")
        self.lock = threading.Lock()
        self.fault = None

    def free_bytes(self):
        st = os.statvfs(self.mount_dir)
        return st.f_bavail * st.f_frsize

    def fill(self, kind, keep):
        with self.lock:
            self.fault = Fault(self.ctx, kind)
            before = self.free_bytes()
            # tmpfs undoes a fallocate that fails, so leave a margin and then, for a
            # full disk, write the rest until ENOSPC.
            size = max(0, before - keep - (4 << 20))
            try:
                fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    if size:
                        os.posix_fallocate(fd, 0, size)
                except OSError as e:
                    self.ctx.hist("disk_error", err=f"fallocate: {e}")
                try:
                    if kind == "disk_full":
                        chunk = b"\0" * 65536
                        for _ in range(4096):
                            os.write(fd, chunk)
                    else:
                        os.write(fd, b"\0" * (4 << 20))
                except OSError:
                    pass
                finally:
                    os.close(fd)
            except OSError as e:
                self.ctx.hist("disk_error", err=str(e))
            self.fault_free_after = self.free_bytes()
            self.ctx.hist("disk", phase="fill", kind=kind, free_before=before, free_after=self.fault_free_after)

    def free(self, why="schedule"):
        with self.lock:
            existed = os.path.exists(self.filler)
            try:
                os.unlink(self.filler)
            except FileNotFoundError:
                pass
            if self.fault is not None:
                self.fault.done("filled and freed", free_while_filled=self.fault_free_after, why=why)
                self.fault = None
            if existed:
                self.ctx.hist("disk", phase="free", free=self.free_bytes(), why=why)


def disk_faults(ctx):
    args = ctx.args
    rng = random.Random(args.seed + 1)
    disk = ctx.disk
    kinds = ["disk_full", "disk_alarm"]
    n = 0
    while not ctx.stop_faults.is_set():
        if sleep_until(ctx.stop_faults, rng.uniform(*args.disk_every_s)):
            break
        kind = kinds[n % 2]
        n += 1
        # disk_alarm leaves less than the broker's alarm threshold (50 MB) free but
        # more than zero; disk_full leaves nothing.
        disk.fill(kind, keep=(20 << 20) if kind == "disk_alarm" else 0)
        sleep_until(ctx.stop_faults, rng.uniform(*args.disk_hold_s))
        disk.free()
    disk.free("campaign end")


def probes(ctx):
    """/healthz every 250 ms, the AMQP listener every fourth time (--probe-timeout each)."""
    hist = ctx.hist
    n = 0
    while not ctx.stop_faults.is_set():
        started = time.monotonic()
        ts = round(now(), 4)
        ok, err = False, None
        try:
            status, _, _ = http_request(ctx.broker.http, "GET", "/healthz", timeout=ctx.args.probe_timeout)
            ok = status == 200
            err = None if ok else f"status {status}"
        except Exception as e:
            err = type(e).__name__
        hist("probe", kind="http", ts=ts, te=round(now(), 4), ok=ok, err=err, inc=ctx.broker.inc)
        if n % 4 == 0:
            ts = round(now(), 4)
            ok, err = False, None
            try:
                s = socket.create_connection(ctx.broker.amqp, timeout=ctx.args.probe_timeout)
                try:
                    s.settimeout(ctx.args.probe_timeout)
                    s.sendall(PROTOCOL_HEADER)
                    data = s.recv(16)
                    ok = len(data) >= 7 and data[0] == 1
                    err = None if ok else f"answer {data[:8]!r}"
                finally:
                    s.close()
            except Exception as e:
                err = type(e).__name__
            hist("probe", kind="amqp", ts=ts, te=round(now(), 4), ok=ok, err=err, inc=ctx.broker.inc)
        n += 1
        ctx.stop_faults.wait(max(0.0, 0.25 - (time.monotonic() - started)))


def rss_sampler(ctx):
    while not ctx.stop_faults.is_set():
        kib = ctx.broker.rss_kib()
        if kib is not None:
            ctx.hist("rss", i=ctx.broker.inc, kib=kib)
        ctx.stop_faults.wait(1.0)
