"""Load: consumers. pika, raw AMQP (crashing and stalling) and HTTP.

Every delivery and every ack, nack or reject is recorded with the connection it came
on and, for HTTP, the request's start and end time: the checker's durability, order
and group rules are judged per consumer stream from these events.
"""

import random
import time

from .history import now
from .http_helpers import http_request
from .rawamqp import RawAmqp
from .context import id_of
from .publishers import pika_params


def amqp_consumer(ctx, name, queue, mode, prefetch):
    """pika consumer. mode: 'ack' acks each delivery; 'nack' nacks a quarter of first
    deliveries with requeue and acks the rest; 'reject' rejects (dead-letters) every
    third first delivery and acks the rest."""
    import pika
    rng = random.Random(hash(name) ^ ctx.args.seed)
    hist = ctx.hist
    while not ctx.stop_load.is_set():
        if not ctx.wait_up(0.5):
            continue
        try:
            conn = pika.BlockingConnection(pika_params(ctx))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=prefetch)
        except Exception:
            ctx.stop_load.wait(0.3)
            continue
        cid = ctx.conn_id(name)
        hist("conn_open", c=name, conn=cid)

        def on_message(ch, method, props, body, cid=cid):
            msg_id = id_of(body)
            first = not method.redelivered
            hist("dlv", q=queue, id=msg_id, c=cid, first=first, via="amqp")
            if mode == "nack" and first and rng.random() < 0.25:
                ch.basic_nack(method.delivery_tag, requeue=True)
                hist("nack", q=queue, id=msg_id, c=cid, requeue=True)
            elif mode == "reject" and first and rng.random() < 0.34:
                ch.basic_reject(method.delivery_tag, requeue=False)
                hist("reject", q=queue, id=msg_id, c=cid)
            else:
                ch.basic_ack(method.delivery_tag)
                hist("ack", q=queue, id=msg_id, c=cid, via="amqp", out="sent")

        try:
            ch.basic_consume(queue, on_message)
            while not ctx.stop_load.is_set():
                conn.process_data_events(time_limit=0.25)
            # Let the last acks reach the log (the documented unsynced window) before a
            # clean close, so none of them is counted as lost.
            conn.process_data_events(time_limit=ctx.args.amqp_ack_window + 0.2)
            hist("conn_close", conn=cid)
            conn.close()
        except Exception as e:
            hist("conn_lost", conn=cid, err=type(e).__name__)
            try:
                conn.close()
            except Exception:
                pass
            ctx.stop_load.wait(0.2)


def raw_crash_consumer(ctx, name, queue):
    """Takes a few deliveries and drops the connection without acking: they must come
    back (redelivered) to someone."""
    rng = random.Random(hash(name) ^ ctx.args.seed)
    hist = ctx.hist
    while not ctx.stop_load.is_set():
        if not ctx.wait_up(0.5):
            continue
        try:
            c = RawAmqp(ctx.broker.amqp)
            c.handshake()
            c.channel_open()
            c.qos(10)
            c.consume(queue, no_ack=False)
        except Exception:
            ctx.stop_load.wait(0.3)
            continue
        cid = ctx.conn_id(name)
        hist("conn_open", c=name, conn=cid)
        want = rng.randint(1, 10)
        held = []
        deadline = time.monotonic() + 3
        try:
            while len(held) < want and time.monotonic() < deadline:
                d = c.read_delivery(0.5)
                if d is None:
                    continue
                tag, redelivered, body = d
                msg_id = id_of(body)
                held.append(msg_id)
                hist("dlv", q=queue, id=msg_id, c=cid, first=not redelivered, via="amqp")
        except Exception:
            pass
        c.abort()
        hist("crash", conn=cid, q=queue, held=held)
        ctx.counters.add("consumer_crash")
        ctx.stop_load.wait(rng.uniform(0.5, 2.0))


def raw_stall_consumer(ctx, name, queue):
    """Fills its prefetch, stops reading its socket for a while with everything
    unacked, then drops the connection: the deliveries must come back."""
    rng = random.Random(hash(name) ^ ctx.args.seed)
    hist = ctx.hist
    while not ctx.stop_load.is_set():
        if not ctx.wait_up(0.5):
            continue
        try:
            c = RawAmqp(ctx.broker.amqp)
            c.handshake(heartbeat=0)
            c.channel_open()
            c.qos(50)
            c.consume(queue, no_ack=False)
        except Exception:
            ctx.stop_load.wait(0.3)
            continue
        cid = ctx.conn_id(name)
        hist("conn_open", c=name, conn=cid)
        held = []
        deadline = time.monotonic() + 5
        try:
            while len(held) < 50 and time.monotonic() < deadline:
                d = c.read_delivery(0.5)
                if d is None:
                    continue
                tag, redelivered, body = d
                msg_id = id_of(body)
                held.append(msg_id)
                hist("dlv", q=queue, id=msg_id, c=cid, first=not redelivered, via="amqp")
        except Exception:
            pass
        stall = rng.uniform(*ctx.args.stall_s)
        hist("stall", conn=cid, q=queue, held=len(held), seconds=round(stall, 2))
        ctx.counters.add("consumer_stall")
        ctx.stop_load.wait(stall)
        c.abort()
        hist("crash", conn=cid, q=queue, held=held)
        ctx.stop_load.wait(rng.uniform(0.5, 2.0))


def http_consumer(ctx, name, queue, mode, vt_ms):
    """HTTP receive with long polls. mode 'ack' acks each batch; 'nack' requeues a
    quarter of first deliveries; 'drop' never settles (the leases run out after vt_ms)."""
    rng = random.Random(hash(name) ^ ctx.args.seed)
    hist = ctx.hist
    conn = None
    path = f"/api/queues/{queue}/receive?max=10&wait_ms=500&visibility_timeout_ms={vt_ms}"
    while not ctx.stop_load.is_set():
        if not ctx.wait_up(0.5):
            continue
        ts = round(now(), 4)
        try:
            status, answer, conn = http_request(ctx.broker.http, "POST", path, timeout=10, conn=conn)
        except Exception:
            conn = None
            ctx.stop_load.wait(0.2)
            continue
        te = round(now(), 4)
        if status != 200:
            ctx.stop_load.wait(0.2)
            continue
        deliveries = (answer or {}).get("messages", [])
        acks, nacks = [], []
        for d in deliveries:
            body = d.get("body")
            msg_id = id_of(body) if body is not None else d.get("id", "?")
            hist("dlv", q=queue, id=msg_id, c=name, first=d.get("delivery_count") == 1,
                 via="http", ts=ts, te=te)
            if mode == "drop":
                continue
            if mode == "nack" and d.get("delivery_count") == 1 and rng.random() < 0.25:
                nacks.append((d["receipt"], msg_id))
            else:
                acks.append((d["receipt"], msg_id))
        if mode == "drop" and deliveries:
            hist("drop", c=name, q=queue, n=len(deliveries))
        if nacks:
            try:
                http_settle(ctx, queue, "nack", nacks, c=name)
            except Exception:
                conn = None
        if acks:
            try:
                http_settle(ctx, queue, "ack", acks, c=name)
            except Exception:
                conn = None
        if mode == "drop":
            ctx.stop_load.wait(rng.uniform(0.5, 1.5))


def http_settle(ctx, queue, op, pairs, c, timeout=10):
    """POST ack/nack for (receipt, id) pairs; records each id's outcome: 'ok' (durable,
    answered), 'failed' (refused), 'unknown' (no answer)."""
    hist = ctx.hist
    ts = round(now(), 4)
    body = {"receipts": [r for r, _ in pairs]}
    if op == "nack":
        body["requeue"] = True
    try:
        status, answer, _ = http_request(ctx.broker.http, "POST", f"/api/queues/{queue}/{op}", body, timeout=timeout)
    except Exception as e:
        te = round(now(), 4)
        for _, msg_id in pairs:
            hist(op, q=queue, id=msg_id, c=c, via="http", out="unknown", ts=ts, te=te, err=type(e).__name__)
        return
    te = round(now(), 4)
    failed = {}
    if status != 200:
        answer = answer or {}
        if "failed" in answer and status in (400, 409):
            for f in answer["failed"]:
                failed[f.get("receipt")] = f.get("error")
        else:
            failed = {r: (answer.get("error") or str(status)) for r, _ in pairs}
    for r, msg_id in pairs:
        if r in failed:
            hist(op, q=queue, id=msg_id, c=c, via="http", out="failed", code=failed[r], ts=ts, te=te)
        else:
            hist(op, q=queue, id=msg_id, c=c, via="http", out="ok", ts=ts, te=te)
