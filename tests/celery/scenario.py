"""The Celery framework check (issue 18): a real Celery worker (prefork pool, its
default names: `celery@HOST`, remote control on `celery@HOST.celery.pidbox`) against
a real weir, started here on a free loopback port with a temporary data directory.

    WEIR_BIN=target/debug/weir python tests/celery/scenario.py

Steps, each printed as it passes: tasks sent with apply_async return their results
through rpc://; a failing task is retried with a countdown; `celery inspect ping` and
`celery control rate_limit / add_consumer` are answered; weir is stopped and started
again on the same port and data directory, the worker reconnects and runs new tasks,
and tasks sent before the restart (one held by the worker for its countdown, one parked
in a durable queue that nobody consumed) are not lost. Every wait has a deadline, the
whole run too; the worker and weir die with this process (PR_SET_PDEATHSIG) and are
killed, with their process groups, when it ends. Exits 0 and prints OK when all passed.
"""

import ctypes
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # no __pycache__ in the clone (the worker: the variable)
DEADLINE = time.monotonic() + float(os.environ.get("WEIR_CELERY_DEADLINE", "200"))
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Runs in each child before exec: its own process group (so it is killed with
    its children), and SIGKILL when this script dies, however it dies."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def left(limit):
    """Seconds a wait may take: `limit`, cut to what is left of the whole run."""
    rest = DEADLINE - time.monotonic()
    if rest <= 0:
        raise TimeoutError("the whole run took longer than WEIR_CELERY_DEADLINE")
    return min(limit, rest)


def wait_for(what, check, limit):
    """Polls `check` until it returns something true, for at most `limit` seconds."""
    end = time.monotonic() + left(limit)
    last = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except (SystemExit, AssertionError):
            raise
        except Exception as e:  # the broker or worker may be coming up
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {limit} s (last error: {last!r})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Weir:
    def __init__(self, binary, work, port):
        self.binary, self.work, self.port = binary, work, port
        self.proc = None
        self.log = open(work / "weir.log", "ab")

    def start(self):
        out = open(self.work / "weir.out", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--data-dir", str(self.work / "data"),
             "--http-listen", "127.0.0.1:0", "--amqp-listen", f"127.0.0.1:{self.port}"],
            stdout=out, stderr=self.log, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
            # weir reads WEIR_* variables as configuration: not this test's.
            env={k: v for k, v in os.environ.items() if not k.startswith("WEIR_")})

        def ready():
            if self.proc.poll() is not None:
                raise SystemExit(f"weir exited with {self.proc.returncode}")
            return (self.work / "weir.out").read_text().startswith("weir ready")

        wait_for("weir ready", ready, 60)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=left(60))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def celery_cli(env, expect, *args, limit=30):
    """`celery -A tasks ARGS --timeout 3` until its output has `expect` (a reply can
    miss the window on a busy machine; these commands may be repeated); returns it."""
    def attempt():
        out = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "tasks", *args, "--timeout", "3"],
            cwd=HERE, env=env, capture_output=True, text=True, timeout=left(30),
            preexec_fn=die_with_parent)
        attempt.last = f"exit {out.returncode}:\n{out.stdout}\n{out.stderr}"
        return out.stdout if out.returncode == 0 and expect in out.stdout else None

    attempt.last = None
    try:
        return wait_for(f"celery {' '.join(args)} says {expect!r}", attempt, limit)
    except TimeoutError as e:
        raise TimeoutError(f"{e}; its last run: {attempt.last}") from None


def step(name):
    print(f"ok: {name} ({time.monotonic() - START:.1f} s)", flush=True)


START = time.monotonic()


def main():
    binary = os.environ["WEIR_BIN"]
    work = pathlib.Path(tempfile.mkdtemp(prefix="weir-celery-"))
    weir = None
    worker = None
    worker_log = open(work / "worker.log", "wb")
    try:
        for attempt in range(3):  # another process may take the free port first
            weir = Weir(binary, work, free_port())
            try:
                weir.start()
                break
            except SystemExit:
                if attempt == 2:
                    raise
        port = weir.port
        env = dict(os.environ, WEIR_AMQP_PORT=str(port), WEIR_CELERY_DIR=str(work),
                   PYTHONPATH=str(HERE), PYTHONDONTWRITEBYTECODE="1")
        os.environ.update(WEIR_AMQP_PORT=str(port), WEIR_CELERY_DIR=str(work))
        sys.path.insert(0, str(HERE))
        step(f"weir on 127.0.0.1:{port}")
        import tasks  # reads the port from the environment

        app = tasks.app
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--loglevel=INFO",
             "--concurrency=2"],
            cwd=HERE, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        host = f"celery@{socket.gethostname()}"

        def pong():
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}")
            replies = app.control.inspect(timeout=1).ping() or {}
            return replies.get(host) == {"ok": "pong"}

        wait_for("the worker answers inspect ping (app.control)", pong, 60)
        step(f"worker {host} up: its pidbox queue {host}.celery.pidbox answers")

        out = celery_cli(env, "pong", "inspect", "ping")
        assert host in out, out
        step("celery inspect ping")

        assert tasks.add.apply_async((2, 3)).get(timeout=left(30)) == 5
        results = [tasks.add.apply_async((i, i)) for i in range(20)]
        assert [r.get(timeout=left(30)) for r in results] == [2 * i for i in range(20)]
        step("apply_async: 21 tasks, results through rpc://")

        began = time.monotonic()
        result = tasks.flaky.apply_async(("flaky", 2))
        assert result.get(timeout=left(60)) == 3
        assert time.monotonic() - began >= 2, "two retries with countdown=1 took < 2 s"
        step("a failing task retried twice with countdown=1, then succeeded")

        celery_cli(env, "new rate limit set successfully", "control", "rate_limit", "tasks.add",
                   "600/m")
        assert tasks.add.apply_async((1, 1)).get(timeout=left(30)) == 2
        step("celery control rate_limit")

        celery_cli(env, "add consumer extra", "control", "add_consumer", "extra")
        r = tasks.add.apply_async((5, 5), queue="extra")
        assert r.get(timeout=left(30)) == 10
        step("celery control add_consumer; a task sent to the added queue ran")

        # Before the restart: one task the worker holds unacked for its countdown, one
        # in a durable queue that nobody consumes yet.
        sent = time.monotonic()
        tasks.touch.apply_async(("held",), countdown=8)
        with app.connection_for_write() as conn:
            from kombu import Queue

            Queue("parked", durable=True).bind(conn.default_channel).declare()
        tasks.touch.apply_async(("parked",), queue="parked")
        time.sleep(0.5)  # the held task reaches the worker before the broker goes
        weir.stop()
        step("weir stopped (SIGTERM) with a task held by the worker and one parked")
        assert not (work / "parked").exists()
        if time.monotonic() - sent < 7:  # else the stop was too slow to tell
            assert not (work / "held").exists(), "the held task ran before its countdown"
        time.sleep(1)  # the worker sees the broker gone
        weir.start()
        step("weir started again on the same port and data directory")

        app.close()  # this process's pooled connections died with the broker
        wait_for("the worker answers inspect ping after the restart", pong, 90)
        step("the worker reconnected")
        assert tasks.add.apply_async((20, 22)).get(timeout=left(30)) == 42
        step("a task sent after the restart ran, its result through rpc://")
        wait_for("the task held for its countdown ran after the restart",
                 (work / "held").exists, 30)
        step("the task held by the worker during the restart ran")
        celery_cli(env, "add consumer parked", "control", "add_consumer", "parked")
        wait_for("the task parked before the restart ran", (work / "parked").exists, 30)
        step("the task parked in a durable queue before the restart ran")
        print("OK", flush=True)
    except BaseException:
        sys.stdout.flush()
        for name in ("worker.log", "weir.log"):
            text = (work / name).read_text(errors="replace") if (work / name).exists() else ""
            print(f"---- {name} (last 150 lines) ----\n" + "\n".join(text.splitlines()[-150:]))
        raise
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        if weir is not None:
            weir.kill()
        if os.environ.get("WEIR_CELERY_KEEP"):
            print(f"kept {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
