"""The broker process: one `weir serve` incarnation at a time.

Starts it on fixed loopback ports (chosen once, so clients reconnect to the same
address after every restart) and one data dir, waits for its ready line, kill -9s it,
notices exits the campaign did not cause, reads its RSS and the tail of its log. Every
start, kill and exit is recorded in the history: the checker's down windows and crash
rule come from those events.
"""

import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

from .history import now


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port(rng):
    """A free loopback port below the ephemeral range, so that no outgoing connection of
    another process takes it while the broker is down between a kill and its restart."""
    for _ in range(200):
        port = rng.randint(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port in 20000..32000")


class Broker:
    """One `weir serve` at a time (an incarnation), on fixed ports and one data dir."""

    def __init__(self, ctx, binary, data_dir, log_path, env):
        self.ctx = ctx
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = env
        self.proc = None
        self.inc = -1
        self.lock = threading.RLock()
        self.up = threading.Event()
        self.expect_exit = False
        self.killed = set()  # incarnations the campaign killed
        self.log_offset = 0
        rng = random.Random()
        self.http_port = free_port(rng)
        self.amqp_port = free_port(rng)
        while self.amqp_port == self.http_port:
            self.amqp_port = free_port(rng)

    @property
    def http(self):
        return ("127.0.0.1", self.http_port)

    @property
    def amqp(self):
        return ("127.0.0.1", self.amqp_port)

    def pid(self):
        p = self.proc
        return p.pid if p is not None else None

    def start(self, timeout=60.0):
        """Starts a new incarnation and waits for its ready line. True when ready."""
        with self.lock:
            self.inc += 1
            hist = self.ctx.hist
            with open(self.log_path, "ab") as logf:
                self.log_offset = logf.tell()
                logf.write(f"\n===== soak: incarnation {self.inc} at t={now():.3f} =====\n".encode())
            logf = open(self.log_path, "ab")
            hist("inc_spawn", i=self.inc)
            cmd = [
                self.binary, "serve",
                "--data-dir", self.data_dir,
                "--http-listen", f"127.0.0.1:{self.http_port}",
                "--amqp-listen", f"127.0.0.1:{self.amqp_port}",
                "--log-level", "info",
            ]
            try:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=logf, env=self.env,
                    start_new_session=True,
                )
            finally:
                logf.close()
            self.proc = proc
            self.expect_exit = False
            ready = threading.Event()

            def pump():
                # Reads stdout to the end so the broker never blocks on a full pipe.
                with open(self.log_path, "ab") as out:
                    for line in proc.stdout:
                        if line.startswith(b"weir ready"):
                            ready.set()
                        out.write(b"[stdout] " + line)
                        out.flush()

            threading.Thread(target=pump, daemon=True, name=f"stdout-{self.inc}").start()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if ready.wait(0.02):
                    break
                if proc.poll() is not None:
                    break
            if ready.is_set():
                hist("inc_ready", i=self.inc, pid=proc.pid)
                self.up.set()
                return True
            # Not ready: kill what is left and report why.
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            hist("inc_start_failed", i=self.inc, rc=proc.returncode, log=self.log_tail())
            self.proc = None
            return False

    def kill9(self, why):
        """kill -9 the running incarnation (records the time first: acks after it are
        not counted as durable)."""
        with self.lock:
            proc = self.proc
            if proc is None:
                return False
            self.up.clear()
            self.expect_exit = True
            self.killed.add(self.inc)
            self.ctx.hist("inc_kill", i=self.inc, why=why)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            self.ctx.hist("inc_dead", i=self.inc, rc=proc.returncode)
            self.proc = None
            return True

    def poll_exit(self):
        """True when the running incarnation exited by itself (a crash)."""
        with self.lock:
            proc = self.proc
            if proc is None or self.expect_exit:
                return False
            rc = proc.poll()
            if rc is None:
                return False
            self.up.clear()
            time.sleep(0.2)  # let the stdout pump copy the last lines
            self.ctx.hist("inc_exit", i=self.inc, rc=rc, log=self.log_tail())
            self.proc = None
            return True

    def log_tail(self, n=6000):
        """The end of this incarnation's log, without colour codes."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                data = f.read()
            return ANSI.sub("", data.decode("utf-8", "replace"))[-n:]
        except OSError:
            return ""

    def rss_kib(self):
        pid = self.pid()
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def alive(self):
        p = self.proc
        return p is not None and p.poll() is None
