"""Dead-lettering as RabbitMQ 3.x does it, with the real pika client, one scenario
per run:

    python dead_letters.py SCENARIO

against the broker on 127.0.0.1:$WEIR_AMQP_PORT (weir, or RabbitMQ to compare:
every check here holds against RabbitMQ 3.10). Prints OK and exits 0, or prints
what failed and exits 1. Driven by crates/weir/tests/it/dead_letters.rs.
"""
import datetime
import os
import sys
import time

import pika

PORT = int(os.environ["WEIR_AMQP_PORT"])


def connect():
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", PORT))


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def fresh(ch, queues=(), exchanges=()):
    """Deletes what an earlier run against the same broker left."""
    for q in queues:
        ch.queue_delete(queue=q)
    for x in exchanges:
        ch.exchange_delete(exchange=x)


def get(ch, queue, timeout=10):
    """One (method, properties, body) from queue by polling basic.get, or Nones."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue)
        if method is not None:
            return method, props, body
        ch.connection.sleep(0.05)
    return None, None, None


def summary(props):
    """x-death as (queue, reason, count, exchange, routing keys) tuples, in order."""
    return [
        (d["queue"], d["reason"], d["count"], d["exchange"], list(d["routing-keys"]))
        for d in props.headers["x-death"]
    ]


def first_death(props):
    h = props.headers
    return (h["x-first-death-queue"], h["x-first-death-reason"], h["x-first-death-exchange"])


def retry_loop():
    """work --rejected--> retry.x --> work.retry --expired--> work.x --> work, twice:
    the deliveries come with the dead-letter exchange and key, x-death has one entry
    per (queue, reason), the latest first, with merged counts."""
    ch = connect().channel()
    fresh(ch, ["work", "work.retry"], ["work.x", "retry.x"])
    ch.exchange_declare(exchange="work.x", exchange_type="direct")
    ch.exchange_declare(exchange="retry.x", exchange_type="direct")
    ch.queue_declare(
        queue="work",
        arguments={"x-dead-letter-exchange": "retry.x", "x-dead-letter-routing-key": "retry"},
    )
    ch.queue_bind(exchange="work.x", queue="work", routing_key="task")
    ch.queue_declare(
        queue="work.retry",
        arguments={
            "x-message-ttl": 100,
            "x-dead-letter-exchange": "work.x",
            "x-dead-letter-routing-key": "task",
        },
    )
    ch.queue_bind(exchange="retry.x", queue="work.retry", routing_key="retry")
    ch.basic_publish("work.x", "task", b"job", pika.BasicProperties(headers={"app": "a"}))

    method, props, body = get(ch, "work")
    check(body == b"job" and props.headers == {"app": "a"}, f"published: {body} {props.headers}")
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get(ch, "work")
    check(body == b"job", "the rejected job came back after its retry delay")
    check(
        (method.exchange, method.routing_key) == ("work.x", "task"),
        f"delivered with the last dead-letter exchange and key: {method.exchange} {method.routing_key}",
    )
    check(
        summary(props)
        == [
            ("work.retry", "expired", 1, "retry.x", ["retry"]),
            ("work", "rejected", 1, "work.x", ["task"]),
        ],
        f"x-death after one round: {summary(props)}",
    )
    check(first_death(props) == ("work", "rejected", "work.x"), f"first death: {first_death(props)}")
    check(props.headers["app"] == "a", "the application's headers stay")
    times = [d["time"] for d in props.headers["x-death"]]
    check(all(isinstance(t, datetime.datetime) for t in times), f"times are timestamps: {times}")
    check(set(props.headers["x-death"][0].keys()) == {"count", "reason", "queue", "time", "exchange", "routing-keys"}, f"fields: {props.headers['x-death'][0]}")

    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get(ch, "work")
    check(body == b"job", "the job came back a second time")
    check(
        summary(props)
        == [
            ("work.retry", "expired", 2, "retry.x", ["retry"]),
            ("work", "rejected", 2, "work.x", ["task"]),
        ],
        f"x-death after two rounds: {summary(props)}",
    )
    check([d["time"] for d in props.headers["x-death"]] == times, "a merged entry keeps its first time")
    check(first_death(props) == ("work", "rejected", "work.x"), f"first death kept: {first_death(props)}")
    # A nack dies as a rejection too.
    ch.basic_nack(method.delivery_tag, requeue=False)
    method, props, body = get(ch, "work")
    check([c for _, _, c, _, _ in summary(props)] == [3, 3], f"third round: {summary(props)}")
    ch.basic_ack(method.delivery_tag)


def chain():
    """A message dead-lettered through three queues in a row: RabbitMQ 3.10 regroups
    x-death at each death, which reverses the entries behind the newest one, so
    c1, c2, c3 read c3, c1, c2."""
    ch = connect().channel()
    fresh(ch, ["c1", "c2", "c3", "c4"])
    ch.queue_declare(queue="c4")
    for q, to in [("c3", "c4"), ("c2", "c3")]:
        ch.queue_declare(
            queue=q,
            arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": to},
        )
    ch.queue_declare(queue="c1", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "c2"})
    ch.basic_publish("", "c1", b"x")
    method, _, _ = get(ch, "c1")
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get(ch, "c4")
    check(body == b"x", "the message went down the chain")
    check(
        summary(props)
        == [
            ("c3", "expired", 1, "", ["c3"]),
            ("c1", "rejected", 1, "", ["c1"]),
            ("c2", "expired", 1, "", ["c2"]),
        ],
        f"x-death: {summary(props)}",
    )
    check(first_death(props) == ("c1", "rejected", ""), f"first death: {first_death(props)}")
    ch.basic_ack(method.delivery_tag)


def cycles():
    """A message that would go back to a queue it died in, with no rejection on the
    way, is dropped; a rejection breaks the cycle."""
    ch = connect().channel()
    fresh(ch, ["loop", "ping", "pong"])
    ch.queue_declare(
        queue="loop",
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "loop"},
    )
    # Rejected into itself: not a cycle, it comes back each time.
    ch.basic_publish("", "loop", b"rejected")
    method, _, _ = get(ch, "loop")
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get(ch, "loop")
    check(body == b"rejected", "a rejected message comes back to its own queue")
    check(summary(props) == [("loop", "rejected", 1, "", ["loop"])], f"x-death: {summary(props)}")
    check((method.exchange, method.routing_key) == ("", "loop"), "through the default exchange")
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get(ch, "loop")
    check(summary(props) == [("loop", "rejected", 2, "", ["loop"])], f"x-death: {summary(props)}")
    ch.basic_ack(method.delivery_tag)
    # Expired into itself: dropped.
    ch.basic_publish("", "loop", b"expired", pika.BasicProperties(expiration="50"))
    # Expired ping -> pong -> ping: dropped on its way back to ping.
    ch.queue_declare(
        queue="ping",
        arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "pong"},
    )
    ch.queue_declare(
        queue="pong",
        arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "ping"},
    )
    ch.basic_publish("", "ping", b"round")
    # Polling would take the messages before they expire.
    ch.connection.sleep(1.5)
    method, _, body = ch.basic_get("loop")
    check(method is None, f"the expired message did not come back: {body}")
    for q in ["ping", "pong"]:
        count = ch.queue_declare(queue=q, passive=True).method.message_count
        check(count == 0, f"{q} holds {count} messages: the cycle was not broken")


def maxlen():
    """drop-head dead-letters the head, reject-publish-dlx nacks the publish and
    dead-letters the refused message, both with reason maxlen."""
    ch = connect().channel()
    fresh(ch, ["capped", "strict_capped", "overflowed"])
    ch.queue_declare(queue="overflowed")
    ch.queue_declare(
        queue="capped",
        arguments={
            "x-max-length": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "overflowed",
        },
    )
    ch.confirm_delivery()
    ch.basic_publish("", "capped", b"m1")
    ch.basic_publish("", "capped", b"m2")
    method, props, body = get(ch, "overflowed")
    check(body == b"m1", f"the head was dead-lettered: {body}")
    check(summary(props) == [("capped", "maxlen", 1, "", ["capped"])], f"x-death: {summary(props)}")
    ch.basic_ack(method.delivery_tag)
    ch.queue_declare(
        queue="strict_capped",
        arguments={
            "x-max-length": 1,
            "x-overflow": "reject-publish-dlx",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "overflowed",
        },
    )
    ch.basic_publish("", "strict_capped", b"s1")
    try:
        ch.basic_publish("", "strict_capped", b"s2")
        check(False, "the publish over the limit was confirmed")
    except pika.exceptions.NackError:
        pass
    method, props, body = get(ch, "overflowed")
    check(body == b"s2", f"the refused message was dead-lettered: {body}")
    check(
        summary(props) == [("strict_capped", "maxlen", 1, "", ["strict_capped"])],
        f"x-death: {summary(props)}",
    )
    check(first_death(props) == ("strict_capped", "maxlen", ""), f"first death: {first_death(props)}")
    ch.basic_ack(method.delivery_tag)
    method, _, body = get(ch, "strict_capped")
    check(body == b"s1", f"the queue kept the first: {body}")


def original_expiration():
    """A per-message TTL is kept as original-expiration; the dead letter has none."""
    ch = connect().channel()
    fresh(ch, ["ttl_src", "ttl_dead"])
    ch.queue_declare(queue="ttl_dead")
    ch.queue_declare(
        queue="ttl_src",
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "ttl_dead"},
    )
    ch.basic_publish("", "ttl_src", b"short", pika.BasicProperties(expiration="100"))
    method, props, body = get(ch, "ttl_dead")
    check(body == b"short", "the expired message was dead-lettered")
    death = props.headers["x-death"][0]
    check(death.get("original-expiration") == "100", f"x-death: {death}")
    check(props.expiration is None, f"no expiration on the dead letter: {props.expiration}")
    check(summary(props) == [("ttl_src", "expired", 1, "", ["ttl_src"])], f"x-death: {summary(props)}")
    ch.basic_ack(method.delivery_tag)


def delivery_limit():
    """A quorum queue's x-delivery-limit: the message returned once more than the
    limit is dead-lettered with reason delivery_limit."""
    ch = connect().channel()
    fresh(ch, ["limited", "limited_dead"])
    ch.queue_declare(queue="limited_dead")
    ch.queue_declare(
        queue="limited",
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "limited_dead",
        },
    )
    ch.basic_publish("", "limited", b"poison")
    for _ in range(2):
        method, _, body = get(ch, "limited")
        check(body == b"poison", f"delivered again: {body}")
        ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = get(ch, "limited_dead")
    check(body == b"poison", f"dead-lettered after the limit: {body}")
    check(
        summary(props) == [("limited", "delivery_limit", 1, "", ["limited"])],
        f"x-death: {summary(props)}",
    )
    ch.basic_ack(method.delivery_tag)
    method, _, _ = ch.basic_get("limited")
    check(method is None, "nothing is left in the limited queue")


if __name__ == "__main__":
    globals()[sys.argv[1]]()
    print("OK", flush=True)
