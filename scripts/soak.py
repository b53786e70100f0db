#!/usr/bin/env python3
"""The fault campaign of docs/reliability.md: weir under a mixed load while it is killed,
starved of disk and fed hostile input, then a history checker.

Run it through `scripts/soak` (which builds the release binary and the venv with pika).
Everything is on loopback. Every loop is bounded in time and count, every process it
starts is killed at the end, and the data directory is removed unless --keep is given.

What it does, in one process:

* starts `weir serve` on a data directory (a tmpfs of --disk-mib when it can mount one,
  so the disk can be filled) with fixed loopback ports, reading its ready line;
* runs the load: AMQP publishers with confirms (pika), HTTP senders, AMQP and HTTP
  consumers that ack, nack, reject (dead-letter), crash and stall, fan-out through a
  fanout and a topic exchange, a queue with message groups;
* injects faults: kill -9 and restart every --kill-min..--kill-max seconds, disk full
  and disk alarm (a filler file on the tmpfs, then freed), malformed AMQP and HTTP
  input (bad frames, 25,000-deep field tables, slowloris, half bodies, huge bodies,
  bad JSON), a consumer that never reads its socket;
* probes /healthz every 250 ms and the AMQP listener every second, samples the
  broker's RSS every second;
* at the end restarts the broker once more, drains every queue over HTTP and checks
  the history (history.jsonl: one JSON object per client-side event).

The checks (see check() in soaklib/checker.py for the exact rules): no confirmed
message lost; no message delivered again after its ack was answered as durable (HTTP:
the 200 of /ack; AMQP: the ack sent, plus the documented unsynced window, on a
connection that outlived it); no unknown or misrouted ids; every confirmed fan-out
copy present; per-producer order where docs/http-api.md promises it (enqueue order,
message groups); the broker answering except while it is down; no exit the campaign
did not cause; every restart succeeding; the memory of a non-reading consumer
bounded. `--check-only HISTORY` re-runs the checker on a saved history.

Exit code: 0 no violation, 1 violations, 2 the campaign itself failed.

This file is the entry point (the options and main); the campaign itself is the
package soaklib/ beside it, one module per part (its __init__.py lists them).
"""

import argparse
import os
import random
import sys
import time

# soaklib/ sits beside this file; found from any working directory. No __pycache__ is
# left in the checkout.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True

from soaklib.campaign import run  # noqa: E402
from soaklib.checker import check  # noqa: E402
from soaklib.report import render  # noqa: E402
from soaklib.selftest import self_test  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="weir fault campaign (docs/reliability.md)")
    ap.add_argument("--binary", default=os.path.expanduser("~/.cache/weir-target/release/weir"))
    ap.add_argument("--duration", type=float, default=600, help="seconds of faults and load (default 600)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke mode: lighter load, small hostile inputs")
    ap.add_argument("--data-dir", help="mount point for the broker's disk (created; must be empty)")
    ap.add_argument("--out", help="where history, broker log and summary go (default /tmp/weir-soak-<time>)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (and its tmpfs mounted)")
    ap.add_argument("--disk-mib", type=int, default=None, help="tmpfs size (default 1024, quick 256)")
    ap.add_argument("--no-disk-fault", action="store_true")
    ap.add_argument("--no-hostile", action="store_true", help="no malformed or hostile input")
    ap.add_argument("--skip-fault", action="append", help="a heavy hostile kind not to inject (repeatable)")
    ap.add_argument("--kill-min", type=float, default=2.0)
    ap.add_argument("--kill-max", type=float, default=8.0, help="0 disables kill -9")
    ap.add_argument("--disk-every", type=float, nargs=2, dest="disk_every_s", default=None, metavar=("MIN", "MAX"))
    ap.add_argument("--disk-hold", type=float, nargs=2, dest="disk_hold_s", default=(3.0, 8.0), metavar=("MIN", "MAX"))
    ap.add_argument("--stall", type=float, nargs=2, dest="stall_s", default=(5.0, 15.0), metavar=("MIN", "MAX"))
    ap.add_argument("--rate", type=float, default=1.0, help="load multiplier")
    ap.add_argument("--segment-bytes", type=int, default=1 << 20, help="[log] segment_bytes (small: more rolls and trims)")
    ap.add_argument("--slow-backlog", type=int, default=100000, help="1 KiB messages behind the non-reading consumer")
    ap.add_argument("--rss-limit-mib", type=int, default=200, help="most RSS while a consumer does not read")
    ap.add_argument("--amqp-ack-window", type=float, default=0.1,
                    help="seconds after an AMQP ack is sent until it counts as durable (docs/architecture.md: 100 ms)")
    ap.add_argument("--probe-timeout", type=float, default=6.0,
                    help="seconds a probe may take and still count as an answer")
    ap.add_argument("--body-timeout-ms", type=int, default=3000,
                    help="[http] body_read_timeout_ms given to the broker (when it has the key)")
    ap.add_argument("--report-every", type=float, default=30)
    ap.add_argument("--check-only", metavar="HISTORY", help="only run the checker on a saved history")
    ap.add_argument("--self-test", action="store_true", help="check the checker on a made-up history")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if args.check_only:
        rep = check(args.check_only)
        print(render(rep))
        return 1 if rep["violations_total"] else 0
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if args.quick:
        args.disk_mib = args.disk_mib or 256
        args.disk_every_s = args.disk_every_s or (4.0, 8.0)
        args.stall_s = (1.0, 3.0)
        args.disk_hold_s = (1.0, 3.0)
        args.report_every = min(args.report_every, 10)
    args.disk_mib = args.disk_mib or 1024
    args.disk_every_s = args.disk_every_s or (15.0, 35.0)
    if not args.out:
        args.out = os.path.join(os.environ.get("TMPDIR", "/tmp"), time.strftime("weir-soak-%Y%m%d-%H%M%S"))
    if not os.path.exists(args.binary):
        print(f"soak: no broker binary at {args.binary}", file=sys.stderr)
        return 2
    random.seed(args.seed)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
