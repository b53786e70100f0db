"""One campaign from start to end: `run(args)`.

Self-tests the checker, mounts the tmpfs, copies the binary, starts the broker,
declares the topology, starts the load (`start_load`: who publishes and consumes
what) and the fault threads, stops them, restarts the broker once more, drains every
queue over HTTP, then runs the checker and writes the summary. The exit code is
decided here.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

from .history import History, now
from .broker import Broker
from .http_helpers import http_request
from .topology import BINDINGS, DEAD_LETTER, EXCHANGES, FAN_QUEUES, QUEUES, UNTRACKED
from .context import Ctx, id_of
from .publishers import amqp_publisher, http_sender
from .consumers import (
    amqp_consumer, http_consumer, http_settle, raw_crash_consumer, raw_stall_consumer,
)
from .faults import Disk, disk_faults, probes, restart, rss_sampler, supervisor
from .hostile import hostile
from .checker import check
from .report import render
from .selftest import self_test


def setup_topology(ctx):
    addr = ctx.broker.http
    for q, opts in QUEUES.items():
        status, answer, _ = http_request(addr, "PUT", f"/api/queues/{q}", opts)
        if status not in (200, 201):
            raise RuntimeError(f"declare {q}: {status} {answer}")
    for x, kind in EXCHANGES.items():
        status, answer, _ = http_request(addr, "PUT", f"/api/exchanges/{x}", {"type": kind})
        if status not in (200, 201):
            raise RuntimeError(f"declare {x}: {status} {answer}")
    for src, dst, key in BINDINGS:
        status, answer, _ = http_request(addr, "POST", "/api/bindings", {"source": src, "destination": dst, "routing_key": key})
        if status not in (200, 201):
            raise RuntimeError(f"bind {src}->{dst}: {status} {answer}")


def drain(ctx, deadline_s=180):
    """Receives and acks everything left in every queue (after a final restart, so no
    lease is left). Records each delivery as consumer 'drain'."""
    hist = ctx.hist
    addr = ctx.broker.http
    deadline = time.monotonic() + deadline_s
    status, listing, _ = http_request(addr, "GET", "/api/queues", timeout=30)
    names = sorted(q["name"] for q in (listing or {}).get("queues", []))
    hist("final_queues", names=names)
    for q in UNTRACKED:
        if q in names:
            http_request(addr, "POST", f"/api/queues/{q}/purge", timeout=30)
    for q in names:
        if q in UNTRACKED:
            continue
        empty_rounds = 0
        while time.monotonic() < deadline:
            ts = round(now(), 4)
            status, answer, _ = http_request(addr, "POST", f"/api/queues/{q}/receive?max=1000&visibility_timeout_ms=600000", timeout=30)
            te = round(now(), 4)
            if status != 200:
                hist("drain_error", q=q, status=status)
                time.sleep(0.5)
                continue
            deliveries = answer.get("messages", [])
            pairs = []
            for d in deliveries:
                body = d.get("body")
                msg_id = id_of(body) if body is not None else d.get("id", "?")
                hist("dlv", q=q, id=msg_id, c="drain", first=d.get("delivery_count") == 1, via="http", ts=ts, te=te)
                pairs.append((d["receipt"], msg_id))
            if pairs:
                http_settle(ctx, q, "ack", pairs, c="drain", timeout=60)
                empty_rounds = 0
                continue
            status, info, _ = http_request(addr, "GET", f"/api/queues/{q}", timeout=30)
            st = (info or {}).get("stats", {})
            left = sum(st.get(k, 0) for k in ("ready", "leased", "delayed", "in_transit"))
            if left == 0:
                break
            empty_rounds += 1
            time.sleep(0.2)
        else:
            hist("drain_incomplete", q=q)
    hist("drain_done")


def routes():
    """Each producer: (kind, name, target, route function, rate, extra)."""
    def to(q):
        return lambda seq: (q, [q])

    def topic(seq):
        return ("k.even", ["soak.top.all", "soak.top.even"]) if seq % 2 == 0 else ("k.odd", ["soak.top.all"])

    def fan(seq):
        return ("", list(FAN_QUEUES))

    def http_to(q):
        return lambda seq: (None, [q])

    def http_fan(seq):
        return ("", list(FAN_QUEUES))

    return to, topic, fan, http_to, http_fan


def start_load(ctx):
    a = ctx.args
    r = a.rate
    to, topic, fan, http_to, http_fan = routes()
    s = ctx.spawn
    # publishers
    s("ap1", amqp_publisher, "ap1", "", to("soak.work"), 25 * r)
    s("ap3", amqp_publisher, "ap3", "soak.fanout", fan, 15 * r)
    s("ap4", amqp_publisher, "ap4", "soak.topic", topic, 15 * r)
    s("ap5", amqp_publisher, "ap5", "", to("soak.dl"), 10 * r)
    s("hs1", http_sender, "hs1", "/api/queues/soak.work/messages", 5, 5 * r, http_to("soak.work"))
    s("hs2", http_sender, "hs2", "/api/exchanges/soak.fanout/publish", 3, 3 * r, http_fan)
    s("hs3", http_sender, "hs3", "/api/queues/soak.group/messages", 4, 4 * r, http_to("soak.group"), 4)
    if not a.quick:
        s("ap2", amqp_publisher, "ap2", "", to("soak.work"), 25 * r)
    # consumers
    s("ac-work-ack", amqp_consumer, "ac-work-ack", "soak.work", "ack", 20)
    s("ac-work-nack", amqp_consumer, "ac-work-nack", "soak.work", "nack", 10)
    s("rc-work-crash", raw_crash_consumer, "rc-work-crash", "soak.work")
    s("rc-work-stall", raw_stall_consumer, "rc-work-stall", "soak.work")
    s("hc-work-ack", http_consumer, "hc-work-ack", "soak.work", "ack", 10000)
    s("ac-fan-a", amqp_consumer, "ac-fan-a", "soak.fan.a", "ack", 20)
    s("hc-fan-b", http_consumer, "hc-fan-b", "soak.fan.b", "ack", 10000)
    s("ac-fan-c", amqp_consumer, "ac-fan-c", "soak.fan.c", "nack", 5)
    s("ac-top-all", amqp_consumer, "ac-top-all", "soak.top.all", "ack", 20)
    s("hc-top-even", http_consumer, "hc-top-even", "soak.top.even", "nack", 10000)
    s("ac-dl", amqp_consumer, "ac-dl", "soak.dl", "reject", 10)
    s("hc-dl-dead", http_consumer, "hc-dl-dead", "soak.dl.dead", "ack", 10000)
    s("hc-group-1", http_consumer, "hc-group-1", "soak.group", "ack", 10000)
    s("hc-group-2", http_consumer, "hc-group-2", "soak.group", "ack", 10000)
    s("hc-group-drop", http_consumer, "hc-group-drop", "soak.group", "drop", 2000)


def binary_identity(binary):
    """What was tested: the binary's hash and the checkout's commit and changed files."""
    import hashlib
    h = hashlib.sha256()
    with open(binary, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*a):
        r = subprocess.run(["git", "-C", root, *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    return {"sha256": h.hexdigest()[:16], "built": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(binary))),
            "commit": git("rev-parse", "--short", "HEAD"),
            "changed_files": (git("status", "--short", "--untracked-files=no") or "").count("\n") + bool(git("status", "--short", "--untracked-files=no"))}


def try_mount(ctx, mount_dir, mib):
    if os.geteuid() != 0:
        return "not root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", mount_dir],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return (r.stderr or r.stdout).strip() or f"mount exited {r.returncode}"
    return None


def run(args):
    if self_test() != 0:
        return 2
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    hist = History(os.path.join(out, "history.jsonl"))
    ctx = Ctx(args, hist)
    logging.getLogger("pika").setLevel(logging.CRITICAL + 1)
    if args.data_dir:
        mount_dir = os.path.abspath(args.data_dir)
        if os.path.exists(mount_dir) and os.listdir(mount_dir):
            print(f"soak: --data-dir {mount_dir} is not empty", file=sys.stderr)
            return 2
        made_mount_dir = not os.path.exists(mount_dir)
    else:
        mount_dir = os.path.join(out, "disk")
        made_mount_dir = not os.path.exists(mount_dir)
    os.makedirs(mount_dir, exist_ok=True)
    mounted = False
    if not args.no_disk_fault:
        why = try_mount(ctx, mount_dir, args.disk_mib)
        if why is None:
            mounted = True
        else:
            print(f"soak: cannot mount a tmpfs on {mount_dir} ({why}); running WITHOUT the "
                  f"disk-full fault (the data dir is on the host file system)", file=sys.stderr)
            args.no_disk_fault = True
    data_dir = os.path.join(mount_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    # Others may rebuild the shared target dir during the run: run a copy.
    binary = os.path.join(out, "weir")
    shutil.copy2(args.binary, binary)
    args.binary = binary
    build = binary_identity(binary)
    env = dict(os.environ)
    env["WEIR_LOG_SEGMENT_BYTES"] = str(args.segment_bytes)
    # A short body-read timeout, when the broker has one, so a half-sent body can be
    # held past it without holding the kill schedule off for a minute.
    shown = subprocess.run([binary, "config"], capture_output=True, text=True, env=env).stdout
    if "body_read_timeout_ms" in shown:
        env["WEIR_HTTP_BODY_READ_TIMEOUT_MS"] = str(args.body_timeout_ms)
        args.half_body_hold = max(3.0, 2 * args.body_timeout_ms / 1000)
    else:
        args.half_body_hold = 10.0
    broker_env = {k: v for k, v in env.items() if k.startswith("WEIR_")}
    env.setdefault("RUST_BACKTRACE", "1")
    broker = Broker(ctx, args.binary, data_dir, os.path.join(out, "broker.log"), env)
    ctx.broker = broker
    if mounted:
        ctx.disk = Disk(ctx, mount_dir)
    hist("campaign", args={k: v for k, v in vars(args).items()}, http=broker.http_port, amqp=broker.amqp_port, build=build,
         disk=mounted, broker_env=broker_env, dead_letter=DEAD_LETTER, untracked=sorted(UNTRACKED), queues=sorted(QUEUES))

    def cleanup():
        ctx.stop_load.set()
        ctx.stop_faults.set()
        if broker.proc is not None:
            broker.kill9("cleanup")
        if mounted and not args.keep:
            subprocess.run(["umount", "-l", mount_dir], capture_output=True)
        if not args.keep:
            shutil.rmtree(mount_dir if made_mount_dir else data_dir, ignore_errors=True)

    def on_signal(signum, frame):
        cleanup()
        hist.close()
        os._exit(130)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    status = 2
    try:
        print(f"soak: output in {out}; broker http=127.0.0.1:{broker.http_port} amqp=127.0.0.1:{broker.amqp_port}; "
              f"disk fault {'on (tmpfs ' + str(args.disk_mib) + ' MiB)' if mounted else 'off'}; "
              f"{args.duration:.0f} s", flush=True)
        if not broker.start():
            print("soak: the broker did not start:\n" + broker.log_tail(), file=sys.stderr)
            return 2
        setup_topology(ctx)
        start_load(ctx)
        ctx.spawn("probes", probes)
        ctx.spawn("rss", rss_sampler)
        ctx.spawn("supervisor", supervisor)
        if not args.no_hostile:
            ctx.spawn("hostile", hostile)
        if ctx.disk is not None:
            ctx.spawn("disk", disk_faults)
        end = time.monotonic() + args.duration
        last_report = time.monotonic()
        while time.monotonic() < end and not ctx.abort.is_set():
            time.sleep(0.5)
            if time.monotonic() - last_report >= args.report_every:
                last_report = time.monotonic()
                c = ctx.counters.c
                faults = sum(v for k, v in c.items() if k.startswith("fault:"))
                print(f"soak: t={now():.0f}s incarnation {broker.inc}, {faults} faults injected "
                      f"({c.get('fault:kill9', 0)} kill -9), rss {(broker.rss_kib() or 0) // 1024} MiB", flush=True)
        hist("phase", name="stop_faults")
        ctx.stop_faults.set()
        for th in ctx.threads:
            if th.name in ("supervisor", "hostile", "disk", "probes", "rss"):
                th.join(60)
        if ctx.disk is not None:
            ctx.disk.free("campaign end")
        if broker.proc is None or not broker.alive():
            broker.poll_exit()
            if not restart(ctx, "before the load stops"):
                raise RuntimeError(ctx.abort_reason)
        hist("phase", name="stop_load")
        ctx.stop_load.set()
        stuck = []
        join_deadline = time.monotonic() + 30
        for th in ctx.threads:
            th.join(max(0.1, join_deadline - time.monotonic()))
            if th.is_alive():
                stuck.append(th.name)
        if stuck:
            hist("threads_stuck", names=stuck)
        # Leases die with the process: after this restart everything is ready again.
        broker.kill9("final")
        if not restart(ctx, "final restart"):
            raise RuntimeError(ctx.abort_reason)
        hist("phase", name="drain")
        drain(ctx)
        broker.poll_exit()
        hist("phase", name="end")
        broker.kill9("end")
        status = 0
    except Exception:
        hist("campaign_error", err=traceback.format_exc()[-3000:])
        traceback.print_exc()
        status = 2
    finally:
        cleanup()
        hist.close()
    if ctx.abort.is_set():
        print(f"soak: campaign aborted: {ctx.abort_reason}", file=sys.stderr)
    report = check(os.path.join(out, "history.jsonl"))
    text = render(report)
    print(text)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(f"soak: history {os.path.join(out, 'history.jsonl')}, broker log {os.path.join(out, 'broker.log')}, "
          f"summary {os.path.join(out, 'summary.txt')}")
    if status != 0 or report.get("campaign_error"):
        return 2
    return 1 if report["violations_total"] else 0
