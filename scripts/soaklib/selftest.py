"""The checker's self-test (`--self-test`, also run before every campaign).

Feeds check() a made-up history with one planted violation of each rule and a few
allowed look-alikes, and fails unless exactly those are reported.
"""

import json
import os

from .checker import check


def self_test():
    """Feeds the checker a made-up history with one planted violation of each rule, and
    a few look-alikes that are allowed, and checks that it reports exactly those."""
    import tempfile
    ev = []

    def e(name, t, **kw):
        kw.update(ev=name, t=t)
        ev.append(kw)

    e("campaign", 0, args={"amqp_ack_window": 0.1, "seed": 0}, dead_letter={"qd": "qd.dead"}, untracked=[],
      queues=["qa", "qd", "qd.dead", "qg"])
    e("inc_spawn", 0, i=0)
    e("inc_ready", 0.1, i=0)
    for n in range(1, 11):
        e("pub", 0.2, id=f"p-{n}", p="p", seq=n, q=["qa"], via="amqp")
        if n != 6:
            e("conf", 0.2, id=f"p-{n}")
    e("pub_refused", 0.2, id="p-6", status=507, code="storage_full")
    e("conn_open", 0.3, c="c", conn="c#1")
    # order: p-3 first-delivered before p-2 on one connection
    e("dlv", 1.0, q="qa", id="p-1", c="c#1", first=True, via="amqp")
    e("ack", 1.01, q="qa", id="p-1", c="c#1", via="amqp", out="sent")
    e("dlv", 1.1, q="qa", id="p-3", c="c#1", first=True, via="amqp")
    e("dlv", 1.2, q="qa", id="p-2", c="c#1", first=True, via="amqp")
    e("ack", 1.3, q="qa", id="p-2", c="c#1", via="amqp", out="sent")
    e("ack", 1.3, q="qa", id="p-3", c="c#1", via="amqp", out="sent")
    # p-4: confirmed, delivered, never acked nor drained: lost
    e("dlv", 1.4, q="qa", id="p-4", c="c#1", first=True, via="amqp")
    # p-5: HTTP ack answered 200, then delivered again
    e("dlv", 2.01, q="qa", id="p-5", c="h", first=True, via="http", ts=2.0, te=2.01)
    e("ack", 2.03, q="qa", id="p-5", c="h", via="http", out="ok", ts=2.02, te=2.03)
    e("dlv", 3.01, q="qa", id="p-5", c="h", first=False, via="http", ts=3.0, te=3.01)
    e("ack", 3.03, q="qa", id="p-5", c="h", via="http", out="ok", ts=3.02, te=3.03)
    # p-6: refused 507, delivered anyway
    e("dlv", 3.5, q="qa", id="p-6", c="c#1", first=True, via="amqp")
    e("ack", 3.5, q="qa", id="p-6", c="c#1", via="amqp", out="sent")
    # an id nobody published; a published id in a queue it was not routed to
    e("dlv", 4.0, q="qa", id="zz-1", c="c#1", first=True, via="amqp")
    e("dlv", 4.1, q="qg", id="p-1", c="c#1", first=True, via="amqp")
    # /healthz failing while the broker is up
    e("probe", 5.0, kind="http", ts=4.5, te=5.0, ok=False, err="TimeoutError", inc=0)
    e("probe", 5.2, kind="http", ts=5.1, te=5.2, ok=True, err=None, inc=0)
    # p-7: AMQP ack sent 1 s before a kill, delivered again after the restart
    e("dlv", 6.0, q="qa", id="p-7", c="c#1", first=True, via="amqp")
    e("ack", 6.0, q="qa", id="p-7", c="c#1", via="amqp", out="sent")
    # p-8: AMQP ack sent 50 ms before the kill: within the window, allowed
    e("dlv", 6.95, q="qa", id="p-8", c="c#1", first=True, via="amqp")
    e("ack", 6.95, q="qa", id="p-8", c="c#1", via="amqp", out="sent")
    e("inc_kill", 7.0, i=0, why="schedule")
    e("probe", 7.1, kind="http", ts=7.05, te=7.1, ok=False, err="ConnectionRefusedError", inc=0)
    e("inc_spawn", 7.1, i=1)
    e("inc_ready", 7.2, i=1)
    e("conn_open", 7.3, c="c", conn="c#2")
    e("dlv", 7.5, q="qa", id="p-7", c="c#2", first=False, via="amqp")
    e("ack", 7.5, q="qa", id="p-7", c="c#2", via="amqp", out="sent")
    e("dlv", 7.6, q="qa", id="p-8", c="c#2", first=False, via="amqp")
    e("ack", 7.6, q="qa", id="p-8", c="c#2", via="amqp", out="sent")
    # groups: g-2 handed out before g-1's ack was even sent
    for n in (1, 2):
        e("pub", 8.0, id=f"g-{n}", p="g", seq=n, q=["qg"], via="http", grp="g0")
        e("conf", 8.0, id=f"g-{n}")
    e("dlv", 8.1, q="qg", id="g-1", c="h", first=True, via="http", ts=8.0, te=8.1)
    e("dlv", 8.2, q="qg", id="g-2", c="h2", first=True, via="http", ts=8.1, te=8.2)
    e("ack", 9.0, q="qg", id="g-1", c="h", via="http", out="ok", ts=9.0, te=9.01)
    e("ack", 9.0, q="qg", id="g-2", c="h2", via="http", out="ok", ts=9.0, te=9.01)
    # dead-lettering: d-1 rejected in qd and acked in qd.dead (settled), d-2 acked in qd
    for n in (1, 2):
        e("pub", 9.5, id=f"d-{n}", p="d", seq=n, q=["qd"], via="amqp")
        e("conf", 9.5, id=f"d-{n}")
    e("dlv", 9.6, q="qd", id="d-1", c="c#2", first=True, via="amqp")
    e("reject", 9.6, q="qd", id="d-1", c="c#2")
    e("dlv", 9.7, q="qd.dead", id="d-1", c="h", first=True, via="http", ts=9.65, te=9.7)
    e("ack", 9.75, q="qd.dead", id="d-1", c="h", via="http", out="ok", ts=9.7, te=9.75)
    # d-1's rejection was not recorded in qd: it comes back there, is rejected again,
    # and a second copy reaches qd.dead after the first was acked (allowed)
    e("dlv", 9.76, q="qd", id="d-1", c="c#2", first=True, via="amqp")
    e("reject", 9.76, q="qd", id="d-1", c="c#2")
    e("dlv", 9.78, q="qd.dead", id="d-1", c="h", first=True, via="http", ts=9.77, te=9.78)
    e("ack", 9.79, q="qd.dead", id="d-1", c="h", via="http", out="ok", ts=9.78, te=9.79)
    e("dlv", 9.8, q="qd", id="d-2", c="c#2", first=True, via="amqp")
    e("ack", 9.8, q="qd", id="d-2", c="c#2", via="amqp", out="sent")
    # p-9: never delivered during the run, found by the drain (settled)
    e("dlv", 10.0, q="qa", id="p-9", c="drain", first=True, via="http", ts=9.9, te=10.0)
    e("ack", 10.1, q="qa", id="p-9", c="drain", via="http", out="ok", ts=10.0, te=10.1)
    # p-10: HTTP ack refused 507 while the disk is full; the broker keeps the ack and
    # writes it later, so it is never delivered again nor drained (settled, allowed)
    e("fault", 10.4, kind="disk_full", ts=10.2, te=10.5, outcome="filled and freed", expected=True)
    e("dlv", 10.3, q="qa", id="p-10", c="h", first=True, via="http", ts=10.25, te=10.3)
    e("ack", 10.35, q="qa", id="p-10", c="h", via="http", out="failed", code="storage_full", ts=10.31, te=10.35)
    # a crash the campaign did not cause
    e("inc_exit", 11.0, i=1, rc=-6, log="thread 'tokio-rt-worker' has overflowed its stack\nfatal runtime error: stack overflow, aborting")
    e("inc_spawn", 11.1, i=2)
    e("inc_ready", 11.2, i=2)
    e("final_queues", 12.0, names=["qa", "qd", "qd.dead"])
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for x in ev:
            f.write(json.dumps(x) + "\n")
        path = f.name
    try:
        rep = check(path)
    finally:
        os.unlink(path)
    V = rep["violations"]
    want = {
        "lost": {("qa", "p-4")},
        "order": {("qa", "p-2")},
        "delivered_after_durable_ack": {("qa", "p-5"), ("qa", "p-7")},
        "refused_but_present": {("qa", "p-6")},
        "unknown_id": {("qa", "zz-1")},
        "misrouted": {("qg", "p-1")},
        "group_order": {("qg", "g-2")},
        "unavailable": None,
        "crash": None,
        "queue_missing_at_end": None,
        "refused_while_healthy": None,
    }
    problems = []
    for kind, ids in want.items():
        got = V.get(kind, [])
        if not got:
            problems.append(f"{kind}: not reported")
        elif ids is not None:
            found = {(it.get("q"), it["id"] if "id" in it else f"{it['producer']}-{it['seq']}") for it in got}
            if found != ids:
                problems.append(f"{kind}: reported {sorted(found)}, planted {sorted(ids)}")
    extra = set(V) - set(want)
    if extra:
        problems.append(f"reported what was not planted: {sorted(extra)}")
    if len(V.get("unavailable", [])) != 1:
        problems.append(f"unavailable: {len(V.get('unavailable', []))} outages, planted 1 (the probe while down is allowed)")
    if rep["figures"].get("dead_lettered_again_after_ack") != 1:
        problems.append(f"dead_lettered_again_after_ack = {rep['figures'].get('dead_lettered_again_after_ack')}, planted 1 (d-1)")
    if rep["figures"].get("amqp_acks_lost_within_window") != 1:
        problems.append(f"amqp_acks_lost_within_window = {rep['figures'].get('amqp_acks_lost_within_window')}, planted 1 (p-8)")
    if not V.get("crash") or "known_open" not in V["crash"][0]:
        problems.append("the stack overflow crash is not labelled known open")
    for p in problems:
        print("self-test: " + p)
    print("self-test: " + ("FAILED" if problems else f"ok ({rep['violations_total']} planted violations found, nothing else)"))
    return 1 if problems else 0
