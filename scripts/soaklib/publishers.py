"""Load: publishers. AMQP with confirms (pika) and HTTP senders.

Each publish is recorded before it is sent (`pub`, with the queues it must reach) and
its answer after (`conf`, refused, nacked or unknown), which is what the checker's
"no confirmed message lost" and order rules start from.
"""

import random
import time

from .http_helpers import http_request
from .context import body_for


def pika_params(ctx, heartbeat=30, blocked_timeout=None):
    import pika
    host, port = ctx.broker.amqp
    return pika.ConnectionParameters(
        host=host, port=port, heartbeat=heartbeat, connection_attempts=1,
        socket_timeout=3, stack_timeout=8, blocked_connection_timeout=blocked_timeout,
    )


def pace(ctx, rate, started):
    if rate <= 0:
        return
    delay = 1.0 / rate - (time.monotonic() - started)
    if delay > 0:
        ctx.stop_load.wait(delay * random.uniform(0.7, 1.3))


def amqp_publisher(ctx, name, exchange, route, rate):
    """Publishes with confirms, one message at a time (pika waits for each confirm).
    `route(seq)` gives (routing key, queues the message must reach)."""
    import pika
    rng = random.Random(hash(name) ^ ctx.args.seed)
    hist = ctx.hist
    seq = 0
    conn = ch = None
    while not ctx.stop_load.is_set():
        if conn is None:
            if not ctx.wait_up(0.5):
                continue
            try:
                conn = pika.BlockingConnection(pika_params(ctx, blocked_timeout=30))
                ch = conn.channel()
                ch.confirm_delivery()
                hist("conn_open", c=name, conn=ctx.conn_id(name))
            except Exception as e:
                conn = None
                ctx.counters.add(f"connect_failed:{name}")
                ctx.stop_load.wait(0.3)
                continue
        started = time.monotonic()
        seq += 1
        msg_id = f"{name}-{seq}"
        rk, queues = route(seq)
        hist("pub", id=msg_id, p=name, seq=seq, q=queues, via="amqp")
        try:
            ch.basic_publish(
                exchange, rk, body_for(msg_id, rng, rng.choice((40, 200, 1000))),
                properties=pika.BasicProperties(delivery_mode=2, message_id=msg_id),
            )
            hist("conf", id=msg_id)
        except pika.exceptions.NackError:
            hist("pub_nack", id=msg_id)
        except pika.exceptions.UnroutableError:
            hist("pub_unroutable", id=msg_id)
        except Exception as e:
            hist("pub_unknown", id=msg_id, err=type(e).__name__)
            try:
                conn.close()
            except Exception:
                pass
            conn = None
        pace(ctx, rate, started)
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


def http_sender(ctx, name, path, batch, rate, route, groups=0):
    """Sends batches over HTTP. `path` is a queue's /messages or an exchange's /publish;
    `route(seq)` gives (routing key or None, queues). With `groups`, message seq goes to
    group g{seq % groups}."""
    rng = random.Random(hash(name) ^ ctx.args.seed)
    hist = ctx.hist
    seq = 0
    conn = None
    while not ctx.stop_load.is_set():
        if not ctx.wait_up(0.5):
            continue
        started = time.monotonic()
        msgs = []
        for _ in range(batch):
            seq += 1
            msg_id = f"{name}-{seq}"
            rk, queues = route(seq)
            m = {"id": msg_id, "body": body_for(msg_id, rng, rng.choice((40, 200, 1000))).decode()}
            ev = {"id": msg_id, "p": name, "seq": seq, "q": queues, "via": "http"}
            if rk is not None:
                m["routing_key"] = rk
            if groups:
                m["group"] = f"g{seq % groups}"
                ev["grp"] = m["group"]
            msgs.append(m)
            hist("pub", **ev)
        body = {"messages": msgs}
        try:
            status, answer, conn = http_request(ctx.broker.http, "POST", path, body, timeout=10, conn=conn)
        except Exception as e:
            conn = None
            for m in msgs:
                hist("pub_unknown", id=m["id"], err=type(e).__name__)
            ctx.stop_load.wait(0.2)
            continue
        if status == 201:
            per = (answer or {}).get("messages", [])
            for i, m in enumerate(msgs):
                info = per[i] if i < len(per) else {}
                extra = {}
                if "routed" in info:
                    extra["routed"] = info["routed"]
                hist("conf", id=m["id"], **extra)
        else:
            code = (answer or {}).get("error")
            for m in msgs:
                hist("pub_refused", id=m["id"], status=status, code=code)
            if status >= 500 or status == 429:
                ctx.stop_load.wait(0.2)
        pace(ctx, rate, started)
