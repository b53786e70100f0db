"""The usual RabbitMQ patterns with the real pika client, one scenario per run:

    python patterns.py SCENARIO

against the broker on 127.0.0.1:$WEIR_AMQP_PORT. Prints OK and exits 0, or prints
what failed and exits 1. Driven by crates/weir/tests/it/pika.rs.
"""
import os
import sys
import threading
import time
import uuid

import pika

PORT = int(os.environ["WEIR_AMQP_PORT"])


def connect():
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", PORT))


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def next_message(channel, queue, timeout=10):
    """One (method, properties, body) from queue, or (None, None, None)."""
    for item in channel.consume(queue, inactivity_timeout=timeout):
        return item
    return (None, None, None)


def work_queue_fair_dispatch():
    ch = connect().channel()
    ch.queue_declare(queue="tasks", durable=True)
    for i in range(4):
        ch.basic_publish("", "tasks", f"t{i}", pika.BasicProperties(delivery_mode=2))
    w1 = connect().channel()
    w1.basic_qos(prefetch_count=1)
    w2 = connect().channel()
    w2.basic_qos(prefetch_count=1)
    m1, _, b1 = next_message(w1, "tasks")
    m2, _, b2 = next_message(w2, "tasks")
    check(m1 is not None and m2 is not None, "both workers got a task")
    check({b1, b2} == {b"t0", b"t1"}, f"the first two tasks went one to each worker: {b1} {b2}")
    # prefetch 1: no second task for a worker that has not acked.
    extra, _, _ = next_message(w1, "tasks", timeout=1)
    check(extra is None, "a worker with an unacked task gets no other")
    w1.basic_ack(m1.delivery_tag)
    m3, _, b3 = next_message(w1, "tasks")
    check(b3 == b"t2", f"after its ack the worker gets the next task: {b3}")
    w1.basic_ack(m3.delivery_tag)
    w2.basic_ack(m2.delivery_tag)


def fanout():
    ch = connect().channel()
    ch.exchange_declare(exchange="logs", exchange_type="fanout")
    queues = []
    for _ in range(2):
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(exchange="logs", queue=q)
        queues.append(q)
    ch.basic_publish(exchange="logs", routing_key="", body=b"hello all")
    for q in queues:
        _, _, body = next_message(ch, q)
        check(body == b"hello all", f"{q} got the broadcast: {body}")
        ch.cancel()


def direct():
    ch = connect().channel()
    ch.exchange_declare(exchange="direct_logs", exchange_type="direct")
    errors = ch.queue_declare(queue="", exclusive=True).method.queue
    everything = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange="direct_logs", queue=errors, routing_key="error")
    for severity in ["info", "warning", "error"]:
        ch.queue_bind(exchange="direct_logs", queue=everything, routing_key=severity)
    for severity in ["info", "error"]:
        ch.basic_publish(exchange="direct_logs", routing_key=severity, body=severity.encode())
    got = [next_message(ch, errors, 2)[2]]
    ch.cancel()
    got.append(next_message(ch, errors, 1)[2])
    ch.cancel()
    check(got == [b"error", None], f"the error queue got only errors: {got}")
    check(ch.queue_declare(queue=everything, passive=True).method.message_count == 2, "the other got both")


def topic():
    ch = connect().channel()
    ch.exchange_declare(exchange="topic_logs", exchange_type="topic")
    critical = ch.queue_declare(queue="", exclusive=True).method.queue
    kernel = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange="topic_logs", queue=critical, routing_key="*.critical")
    ch.queue_bind(exchange="topic_logs", queue=kernel, routing_key="kern.#")
    for key in ["kern.critical", "app.critical", "kern.info.disk", "app.info"]:
        ch.basic_publish(exchange="topic_logs", routing_key=key, body=key.encode())
    counts = [ch.queue_declare(queue=q, passive=True).method.message_count for q in (critical, kernel)]
    check(counts == [2, 2], f"*.critical and kern.# each matched two keys: {counts}")


def headers():
    ch = connect().channel()
    ch.exchange_declare(exchange="hdr", exchange_type="headers")
    all_q = ch.queue_declare(queue="", exclusive=True).method.queue
    any_q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange="hdr", queue=all_q, arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(exchange="hdr", queue=any_q, arguments={"x-match": "any", "format": "pdf", "type": "log"})
    ch.basic_publish("hdr", "", b"1", pika.BasicProperties(headers={"format": "pdf", "type": "report"}))
    ch.basic_publish("hdr", "", b"2", pika.BasicProperties(headers={"format": "zip", "type": "log"}))
    counts = [ch.queue_declare(queue=q, passive=True).method.message_count for q in (all_q, any_q)]
    check(counts == [1, 2], f"x-match all got one, any got both: {counts}")


def rpc():
    server = connect().channel()
    server.queue_declare(queue="rpc_queue")

    def serve():
        method, props, body = next_message(server, "rpc_queue")
        reply = str(int(body) * 2).encode()
        server.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=reply,
        )
        server.basic_ack(delivery_tag=method.delivery_tag)

    thread = threading.Thread(target=serve)
    thread.start()
    client = connect().channel()
    callback = client.queue_declare(queue="", exclusive=True).method.queue
    corr = str(uuid.uuid4())
    client.basic_publish(
        exchange="",
        routing_key="rpc_queue",
        properties=pika.BasicProperties(reply_to=callback, correlation_id=corr),
        body=b"21",
    )
    _, props, body = next_message(client, callback)
    thread.join()
    check(props is not None and props.correlation_id == corr, "the reply carries the correlation id")
    check(body == b"42", f"the server answered: {body}")


def confirms():
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare(queue="confirmed", durable=True)
    for i in range(50):
        ch.basic_publish("", "confirmed", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    check(ch.queue_declare(queue="confirmed", passive=True).method.message_count == 50, "50 confirmed messages")
    try:
        ch.basic_publish("", "no-such-queue", b"x", mandatory=True)
        check(False, "an unroutable mandatory publish raises")
    except pika.exceptions.UnroutableError:
        pass


def durable_publish():
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare(queue="durable_q", durable=True)
    for i in range(10):
        ch.basic_publish("", "durable_q", f"d{i}".encode(), pika.BasicProperties(delivery_mode=2))


def durable_consume():
    ch = connect().channel()
    ch.queue_declare(queue="durable_q", durable=True)
    bodies = []
    for method, _, body in ch.consume("durable_q", inactivity_timeout=5):
        if method is None:
            break
        bodies.append(body)
        ch.basic_ack(method.delivery_tag)
    check(bodies == [f"d{i}".encode() for i in range(10)], f"every message survived the restart: {bodies}")


def priorities():
    ch = connect().channel()
    ch.queue_declare(queue="prio", arguments={"x-max-priority": 10})
    for p in [1, 5, 9, 5]:
        ch.basic_publish("", "prio", f"p{p}".encode(), pika.BasicProperties(priority=p))
    got = []
    for _ in range(4):
        method, _, body = ch.basic_get("prio")
        got.append(body)
        ch.basic_ack(method.delivery_tag)
    check(got == [b"p9", b"p5", b"p5", b"p1"], f"highest priority first: {got}")


def dead_letters():
    ch = connect().channel()
    ch.exchange_declare(exchange="dlx", exchange_type="direct")
    ch.queue_declare(queue="dead_letters")
    ch.queue_bind(exchange="dlx", queue="dead_letters", routing_key="dead")
    # Expired: a 200 ms TTL, dead-lettered through an exchange with a new key.
    ch.queue_declare(
        queue="short_lived",
        arguments={"x-message-ttl": 200, "x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"},
    )
    ch.basic_publish("", "short_lived", b"too late")
    method, props, body = next_message(ch, "dead_letters", timeout=10)
    check(body == b"too late", f"the expired message was dead-lettered: {body}")
    death = props.headers["x-death"][0]
    check(death["reason"] == "expired" and death["queue"] == "short_lived", f"x-death: {death}")
    ch.basic_ack(method.delivery_tag)
    ch.cancel()
    # Rejected: through the default exchange to the queue named by the key.
    ch.queue_declare(
        queue="strict",
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead_letters"},
    )
    ch.basic_publish("", "strict", b"bad input")
    method, _, _ = ch.basic_get("strict")
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = next_message(ch, "dead_letters", timeout=10)
    check(body == b"bad input", f"the rejected message was dead-lettered: {body}")
    check(props.headers["x-first-death-reason"] == "rejected", f"headers: {props.headers}")
    ch.basic_ack(method.delivery_tag)


def rpc_direct_reply_to():
    server = connect().channel()
    server.queue_declare(queue="rpc_direct")

    def serve():
        method, props, body = next_message(server, "rpc_direct")
        check(props.reply_to.startswith("amq.rabbitmq.reply-to."), f"reply-to was rewritten: {props.reply_to}")
        server.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(int(body) * 2).encode(),
        )
        server.basic_ack(delivery_tag=method.delivery_tag)

    thread = threading.Thread(target=serve)
    thread.start()
    connection = connect()
    client = connection.channel()
    responses = []
    client.basic_consume(
        queue="amq.rabbitmq.reply-to",
        on_message_callback=lambda ch, method, props, body: responses.append((props.correlation_id, body)),
        auto_ack=True,
    )
    client.basic_publish(
        exchange="",
        routing_key="rpc_direct",
        properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c-9"),
        body=b"21",
    )
    for _ in range(40):
        if responses:
            break
        connection.process_data_events(time_limit=0.25)
    thread.join()
    check(responses == [("c-9", b"42")], f"the reply came straight back: {responses}")


def vhosts():
    """Run with a vhost "staging" where guest has every permission: the same names
    in two vhosts are two queues, and dead letters stay in their vhost."""
    def get(channel, queue):
        for _ in range(100):
            method, properties, body = channel.basic_get(queue)
            if method is not None:
                return method, properties, body
            time.sleep(0.05)
        return None, None, None

    credentials = pika.PlainCredentials("guest", "guest")
    staging = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", PORT, "staging", credentials)
    ).channel()
    root = connect().channel()
    for ch, body in ((staging, b"to staging"), (root, b"to root")):
        ch.queue_declare("jobs", durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", "jobs", body)
    _, _, body = get(staging, "jobs")
    check(body == b"to staging", f"staging's queue holds its own message, got {body!r}")
    _, _, body = get(root, "jobs")
    check(body == b"to root", f"/'s queue holds its own message, got {body!r}")
    staging.queue_declare("failed", durable=True)
    staging.queue_declare(
        "work",
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "failed"},
    )
    staging.basic_publish("", "work", b"job")
    method, _, _ = get(staging, "work")
    staging.basic_nack(method.delivery_tag, requeue=False)
    _, properties, body = get(staging, "failed")
    check(body == b"job", f"the dead letter reached staging's 'failed', got {body!r}")
    death = properties.headers["x-death"][0]
    check(death["queue"] == "work", f"x-death names the queue as the client does: {death}")
    print("OK", flush=True)


def streams():
    """Run with a stream "events" holding one record appended over HTTP (body
    "from http", header source=http): RabbitMQ's stream queues from pika."""
    ch = connect().channel()
    ch.queue_declare(
        "events",
        durable=True,
        arguments={"x-queue-type": "stream", "x-max-age": "7D"},
    )
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish(
            "", "events", f"m{i}".encode(), pika.BasicProperties(headers={"n": i})
        )
    ch.exchange_declare("fan", "fanout")
    ch.queue_bind("events", "fan")
    ch.basic_publish("fan", "", b"via exchange")
    ch.basic_qos(prefetch_count=5)
    got = []
    for method, properties, body in ch.consume(
        "events", arguments={"x-stream-offset": "first"}, inactivity_timeout=5
    ):
        if method is None:
            break
        got.append((properties.headers, body))
        ch.basic_ack(method.delivery_tag)
        if len(got) == 12:
            break
    ch.cancel()
    check(len(got) == 12, f"12 records from first, got {len(got)}")
    offsets = [h["x-stream-offset"] for h, _ in got]
    check(offsets == list(range(12)), f"x-stream-offset 0..11, got {offsets}")
    check(got[0][1] == b"from http", f"the HTTP record first, got {got[0][1]!r}")
    check(got[0][0].get("source") == b"http" or got[0][0].get("source") == "http",
          f"its header, got {got[0][0]}")
    check(got[1][0]["n"] == 0 and got[1][1] == b"m0", f"AMQP headers kept: {got[1]}")
    check(got[11][1] == b"via exchange", "a bound exchange appends")
    for method, properties, body in ch.consume(
        "events", arguments={"x-stream-offset": 5}, inactivity_timeout=5
    ):
        check(properties.headers["x-stream-offset"] == 5, "offset 5 first")
        ch.basic_ack(method.delivery_tag)
        break
    ch.cancel()
    refusals = [
        ("consume without prefetch", 406,
         lambda c: c.basic_consume("events", lambda *a: None)),
        ("consume with no_ack", 540,
         lambda c: (c.basic_qos(prefetch_count=1),
                    c.basic_consume("events", lambda *a: None, auto_ack=True))),
        ("basic.get", 540, lambda c: c.basic_get("events")),
        ("purge", 540, lambda c: c.queue_purge("events")),
        ("exclusive stream", 406, lambda c: c.queue_declare(
            "other", durable=True, exclusive=True, arguments={"x-queue-type": "stream"})),
        ("bad offset", 406, lambda c: (c.basic_qos(prefetch_count=1), c.basic_consume(
            "events", lambda *a: None, arguments={"x-stream-offset": "soon"}))),
    ]
    conn = connect()
    for what, code, act in refusals:
        c = conn.channel()
        try:
            act(c)
            c.connection.process_data_events(time_limit=1)
            check(False, f"{what} was not refused")
        except pika.exceptions.ChannelClosedByBroker as e:
            check(e.reply_code == code, f"{what}: {e.reply_code} {e.reply_text}")
    print("OK", flush=True)


def super_streams():
    """Run with a stream "orders" of 3 partitions made over HTTP: RabbitMQ's
    super-stream convention from pika (a direct exchange "orders" whose key "N"
    routes to the stream queue "orders-N", partition N)."""
    ch = connect().channel()
    ch.exchange_declare("orders", "direct", passive=True)
    for n in range(3):
        ch.queue_declare(f"orders-{n}", passive=True)
        ch.queue_declare(f"orders-{n}", durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    for n in range(3):
        for i in range(n + 1):
            ch.basic_publish("orders", str(n), f"p{n}-{i}".encode(),
                             pika.BasicProperties(headers={"i": i}))
    try:
        ch.basic_publish("orders", "9", b"lost", mandatory=True)
        check(False, "key 9 routes to no partition")
    except pika.exceptions.UnroutableError:
        pass
    ch.basic_qos(prefetch_count=10)
    for n in range(3):
        got = []
        for method, properties, body in ch.consume(
            f"orders-{n}", arguments={"x-stream-offset": "first"}, inactivity_timeout=5
        ):
            if method is None:
                break
            got.append((properties.headers["x-stream-offset"], body))
            ch.basic_ack(method.delivery_tag)
            if len(got) == n + 1:
                break
        ch.cancel()
        want = [(i, f"p{n}-{i}".encode()) for i in range(n + 1)]
        check(got == want, f"partition {n} holds {want}, got {got}")
    refusals = [
        ("consume the partitioned stream itself", 406,
         lambda c: (c.basic_qos(prefetch_count=1), c.basic_consume(
             "orders", lambda *a: None, arguments={"x-stream-offset": "first"}))),
        ("delete one partition", 406, lambda c: c.queue_delete("orders-1")),
        ("a classic queue named as a partition", 406,
         lambda c: c.queue_declare("orders-2", durable=True)),
        ("other retention on a partition", 406, lambda c: c.queue_declare(
            "orders-0", durable=True,
            arguments={"x-queue-type": "stream", "x-max-age": "1D"})),
    ]
    conn = connect()
    for what, code, act in refusals:
        c = conn.channel()
        try:
            act(c)
            c.connection.process_data_events(time_limit=1)
            check(False, f"{what} was not refused")
        except pika.exceptions.ChannelClosedByBroker as e:
            check(e.reply_code == code, f"{what}: {e.reply_code} {e.reply_text}")


def blocked():
    """Run against a broker whose disk alarm is raised: a publisher is told it is
    blocked; a connection that only reads goes on."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", PORT))
    reasons = []
    connection.add_on_connection_blocked_callback(lambda _c, frame: reasons.append(frame.method.reason))
    ch = connection.channel()
    ch.queue_declare(queue="held", durable=True)
    ch.basic_publish("", "held", b"first", pika.BasicProperties(delivery_mode=2))
    for _ in range(40):
        if reasons:
            break
        connection.process_data_events(time_limit=0.25)
    check(reasons == ["low on disk"], f"connection.blocked arrived with its reason: {reasons}")
    reader = connect().channel()
    body = None
    for _ in range(40):
        _, _, body = reader.basic_get("held", auto_ack=True)
        if body is not None:
            break
        reader.connection.sleep(0.25)
    check(body == b"first", f"the publish read before the block went in: {body}")


if __name__ == "__main__":
    globals()[sys.argv[1]]()
    print("OK", flush=True)
