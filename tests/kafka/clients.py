"""Kafka clients against weir's Kafka front end: confluent-kafka (librdkafka) and
kafka-python, unmodified. Run by crates/weir/tests/it/kafka.rs with WEIR_KAFKA set
to the broker's Kafka address; each scenario prints what it checked and exits
non-zero on the first failure."""

import os
import sys
import time

BOOTSTRAP = os.environ["WEIR_KAFKA"]


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def produce(topic, records, **config):
    """Produces (key, value, headers) records with confluent-kafka; returns the
    delivery reports as (key, partition, offset)."""
    from confluent_kafka import Producer

    settings = {"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 5}
    settings.update(config)
    producer = Producer(settings)
    delivered, failed = [], []

    def report(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            delivered.append((msg.key(), msg.partition(), msg.offset()))

    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=report)
        producer.poll(0)
    left = producer.flush(30)
    check(left == 0 and not failed, f"{len(records)} records delivered to {topic} ({config or 'defaults'}): {failed}")
    return delivered


def read_all(topic, partitions=None, expect=None):
    """Reads a topic from the beginning with kafka-python without a group; returns
    the records in partition then offset order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False, consumer_timeout_ms=3000)
    parts = partitions if partitions is not None else sorted(consumer.partitions_for_topic(topic) or [])
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out = []
    deadline = time.time() + 30
    while time.time() < deadline:
        batch = consumer.poll(timeout_ms=500)
        for _, records in batch.items():
            out.extend(records)
        if expect is not None and len(out) >= expect:
            break
        if expect is None and not batch:
            break
    consumer.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


def roundtrip():
    records = [(f"key-{i % 5}".encode(), f"value-{i}".encode(), [("n", str(i).encode()), ("source", b"librdkafka")]) for i in range(100)]
    delivered = produce("rt", records)
    offsets = sorted(o for _, _, o in delivered)
    check(offsets == list(range(100)), "offsets 0..99 in one partition")
    got = read_all("rt", expect=100)
    check(len(got) == 100, f"kafka-python read 100 records back (got {len(got)})")
    check([r.value for r in got] == [v for _, v, _ in records], "values in order")
    check([r.key for r in got] == [k for k, _, _ in records], "keys in order")
    check(got[7].headers == [("n", b"7"), ("source", b"librdkafka")], f"headers round trip: {got[7].headers}")
    check(got[0].timestamp_type == 1, "timestamps are LogAppendTime")
    check(abs(got[0].timestamp / 1000 - time.time()) < 600, "timestamp is the append time")


def compression():
    """weir stores a producer's compressed batches as they came and serves them so:
    the consumer inflates them (confluent-kafka has every codec; kafka-python needs
    optional packages for snappy, lz4 and zstd, so it reads the gzip topic)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        topic = f"c-{codec}"
        values = [f"{codec}-{i}-".encode() * 20 for i in range(500)]
        produce(topic, [(None, v, None) for v in values], **{"compression.type": codec, "linger.ms": 50})
        consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"read-{codec}", "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        deadline = time.time() + 30
        while len(got) < 500 and time.time() < deadline:
            for m in consumer.consume(500, timeout=1):
                check(m.error() is None, f"{codec}: no consume error: {m.error()}")
                got.append(m.value())
        consumer.close()
        check(got == values, f"{codec}: 500 compressed records read back")
    got = read_all("c-gzip", expect=500)
    check(len(got) == 500, "gzip: kafka-python reads the stored gzip batches too")


def admin():
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

    client = AdminClient({"bootstrap.servers": BOOTSTRAP})
    futures = client.create_topics([NewTopic("adm", num_partitions=3, replication_factor=1, config={"retention.ms": "3600000"})])
    futures["adm"].result(10)
    check(True, "created topic adm with 3 partitions")
    again = client.create_topics([NewTopic("adm", num_partitions=3, replication_factor=1)])
    try:
        again["adm"].result(10)
        check(False, "creating adm again fails")
    except Exception as e:  # KafkaException(TOPIC_ALREADY_EXISTS)
        check("TOPIC_ALREADY_EXISTS" in str(e) or "already exists" in str(e), f"creating adm again: {e}")
    bad = client.create_topics([NewTopic("bad", num_partitions=1, replication_factor=3)])
    try:
        bad["bad"].result(10)
        check(False, "replication factor 3 is refused")
    except Exception as e:
        check("REPLICATION" in str(e).upper(), f"replication factor 3 is refused: {e}")
    meta = client.list_topics(timeout=10)
    check(len(meta.topics["adm"].partitions) == 3, "metadata lists 3 partitions")
    resource = ConfigResource("topic", "adm")
    configs = client.describe_configs([resource])[resource].result(10)
    check(configs["retention.ms"].value == "3600000", f"retention.ms is 3600000: {configs['retention.ms'].value}")
    check(configs["cleanup.policy"].value == "delete", "cleanup.policy is delete")
    client.create_partitions([NewPartitions("adm", 5)])["adm"].result(10)
    meta = client.list_topics(timeout=10)
    check(len(meta.topics["adm"].partitions) == 5, "grown to 5 partitions")
    shrink = client.create_partitions([NewPartitions("adm", 2)])
    try:
        shrink["adm"].result(10)
        check(False, "shrinking is refused")
    except Exception as e:
        check("INVALID_PARTITIONS" in str(e) or "only grow" in str(e), f"shrinking is refused: {e}")
    client.delete_topics(["adm"])["adm"].result(10)
    meta = client.list_topics(timeout=10)
    check("adm" not in meta.topics, "adm is deleted")



def alter_configs():
    """kafka-configs --alter, through the admin clients: confluent-kafka's
    incremental alter (set, delete, an unknown config, a broker) and
    kafka-python's legacy AlterConfigs, which replaces the topic's whole set."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    client = AdminClient({"bootstrap.servers": BOOTSTRAP})
    client.create_topics([NewTopic("alt", num_partitions=1, config={"segment.bytes": "1024"})])["alt"].result(10)
    for n in range(20):  # 20 batches: the segments (1 KiB) hold whole batches
        produce("alt", [(None, f"{i:0>100}".encode(), None) for i in range(n * 10, n * 10 + 10)])

    def low():
        c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "alt-reader"})
        lo, _ = c.get_watermark_offsets(TopicPartition("alt", 0), timeout=10)
        c.close()
        return lo

    def configs():
        resource = ConfigResource("topic", "alt")
        return {k: v.value for k, v in client.describe_configs([resource])[resource].result(10).items()}

    def alter(*entries, resource=("topic", "alt")):
        r = ConfigResource(*resource, incremental_configs=list(entries))
        try:
            client.incremental_alter_configs([r])[r].result(10)
            return "altered"
        except Exception as e:  # KafkaException with the resource's error
            return str(e)

    check(low() == 0, "nothing removed before the change")
    set_bytes = ConfigEntry("retention.bytes", "4096", incremental_operation=AlterConfigOpType.SET)
    set_ms = ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)
    check(alter(set_bytes, set_ms) == "altered", "retention.bytes and retention.ms set")
    now = configs()
    check((now["retention.bytes"], now["retention.ms"]) == ("4096", "86400000"), f"described: {now}")
    check(low() > 0, f"the old segments went at once (first offset {low()})")
    unknown = alter(ConfigEntry("flush.messages.per.fortnight", "1", incremental_operation=AlterConfigOpType.SET))
    check("INVALID_CONFIG" in unknown or "not supported" in unknown, f"an unknown config is refused: {unknown}")
    broker = alter(set_bytes, resource=("broker", "0"))
    check(broker != "altered", f"broker configs are refused: {broker}")
    delete = ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE)
    check(alter(delete) == "altered", "retention.bytes deleted")
    now = configs()
    check((now["retention.bytes"], now["retention.ms"]) == ("-1", "86400000"), f"back to no limit, the other kept: {now}")

    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    legacy = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    result = legacy.alter_configs(
        [KConfigResource(ConfigResourceType.TOPIC, "alt", configs={"retention.bytes": "8192"})],
        incremental=False,
        raise_on_unknown=False,
    )
    legacy.close()
    now = configs()
    check(now["retention.bytes"] == "8192", f"kafka-python's AlterConfigs set retention.bytes: {result} {now}")
    # AlterConfigs replaces the whole set: kafka-python sends the topic's other
    # configs along (those DescribeConfigs shows as set on the topic).
    kept = (now["retention.ms"], now["segment.bytes"])
    check(kept == ("86400000", "1024"), f"and the configs it carried over are kept: {now}")


def log_dirs():
    """DescribeLogDirs through kafka-python's admin client (as kafka-log-dirs and
    the consoles that show topic sizes ask): each partition's bytes on disk."""
    from kafka.admin import KafkaAdminClient

    produce("ld", [(None, b"x" * 1000, None) for _ in range(50)])
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    answer = admin.describe_log_dirs()
    one = admin.describe_log_dirs(topic_partitions={"ld": [0, 7]})
    admin.close()
    dirs = answer[0]["log_dirs"]
    check(len(dirs) == 1 and dirs[0]["log_dir"].endswith("/streams"), f"one log directory, the data directory's streams: {answer}")
    check(dirs[0]["usable_bytes"] > 0, f"with its free space: {dirs[0]['usable_bytes']}")
    topics = one[0]["log_dirs"][0]["topics"]
    parts = [(t["name"], p["partition_index"], p["partition_size"]) for t in topics for p in t["partitions"]]
    check(len(parts) == 1 and parts[0][:2] == ("ld", 0) and parts[0][2] >= 50_000, f"partition 0 of ld holds its 50 KB (7 does not exist): {parts}")

def keyed():
    """A keyed producer over 4 partitions: each key stays in one partition, in order."""
    from confluent_kafka.admin import AdminClient, NewTopic

    client = AdminClient({"bootstrap.servers": BOOTSTRAP})
    client.create_topics([NewTopic("keyed", num_partitions=4)])["keyed"].result(10)
    records = [(f"k{i % 7}".encode(), str(i).encode(), None) for i in range(280)]
    delivered = produce("keyed", records, partitioner="murmur2_random")
    by_key = {}
    for key, partition, _ in delivered:
        by_key.setdefault(key, set()).add(partition)
    check(all(len(p) == 1 for p in by_key.values()), "each key in one partition")
    got = read_all("keyed", expect=280)
    check(len(got) == 280, "280 records over 4 partitions")
    for key in by_key:
        values = [int(r.value) for r in got if r.key == key]
        check(values == sorted(values), f"key {key.decode()} in order")


def offsets():
    """ListOffsets: earliest, latest and by timestamp."""
    from kafka import KafkaConsumer, TopicPartition

    produce("times", [(None, b"early", None)])
    time.sleep(0.05)
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    produce("times", [(None, b"late", None)])
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None)
    tp = TopicPartition("times", 0)
    check(consumer.beginning_offsets([tp])[tp] == 0, "earliest is 0")
    check(consumer.end_offsets([tp])[tp] == 2, "latest is 2")
    found = consumer.offsets_for_times({tp: middle})[tp]
    check(found is not None and found.offset == 1, f"the offset for a time between them is 1: {found}")
    check(consumer.offsets_for_times({tp: middle + 3_600_000})[tp] is None, "none after the last record")
    consumer.close()


def kcat_interop():
    """Records written over HTTP earlier (by the Rust test) are read here."""
    got = read_all("from-http", expect=3)
    check([r.value for r in got] == [b"one", b"two", b"three"], "records appended over HTTP are read over Kafka")
    check(got[1].key == b"k", "with their key")
    check(("h", b"v") in got[1].headers, f"and headers: {got[1].headers}")


def consumer(group, **config):
    from confluent_kafka import Consumer

    settings = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    settings.update(config)
    return Consumer(settings)


def drain(consumers, want, seconds=60):
    """Polls `consumers` in turn until `want` records arrived in all; returns
    them per consumer."""
    got = [[] for _ in consumers]
    deadline = time.time() + seconds
    while sum(len(g) for g in got) < want and time.time() < deadline:
        for i, c in enumerate(consumers):
            msg = c.poll(0.2)
            if msg is not None and msg.error() is None:
                got[i].append(msg)
    return got


def wait_assigned(consumers, total, seconds=60):
    """Polls until the consumers' assignments are disjoint and cover `total`
    partitions; returns them."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        for c in consumers:
            c.poll(0.1)
        parts = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
        flat = [p for ps in parts for p in ps]
        if all(parts) and sorted(flat) == list(range(total)):
            return parts
    return [sorted(tp.partition for tp in c.assignment()) for c in consumers]


def group_two():
    """Two members share a topic's partitions, commit, and the one left takes all
    partitions when the other leaves; it reads only what came after the commits."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic("grp", num_partitions=4)])["grp"].result(10)
    a = consumer("g1")
    a.subscribe(["grp"])
    check(wait_assigned([a], 4) == [[0, 1, 2, 3]], "the first member owns the 4 partitions")
    b = consumer("g1")
    b.subscribe(["grp"])
    parts = wait_assigned([a, b], 4)
    check(all(len(p) == 2 for p in parts), f"two members own 2 partitions each: {parts}")
    # Produced once both own their partitions: the waits above read nothing.
    produce("grp", [(f"k{i}".encode(), str(i).encode(), None) for i in range(400)])
    got = drain([a, b], 400)
    values = sorted(int(m.value()) for g in got for m in g)
    check(values == list(range(400)), f"the two read the 400 records once between them ({len(values)})")
    for c in (a, b):
        c.commit(asynchronous=False)
    b.close()
    check(wait_assigned([a], 4) == [[0, 1, 2, 3]], "after the other left, one member owns all 4 again")
    produce("grp", [(f"k{i}".encode(), str(i).encode(), None) for i in range(400, 450)])
    more = drain([a], 50)[0]
    check(sorted(int(m.value()) for m in more) == list(range(400, 450)), f"it reads the 50 new records only ({len(more)})")
    extra = drain([a], 1, seconds=3)[0]
    check(not extra, f"and nothing twice: {[(m.partition(), m.offset(), m.value()) for m in extra]}")
    a.commit(asynchronous=False)
    a.close()


def static_members():
    """Static membership (group.instance.id): a member whose process restarts
    takes its partitions back under its instance id without a rebalance (the
    other member is never revoked), and the two read what follows once."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic("st", num_partitions=4)])["st"].result(10)
    revoked = []
    a = consumer("st-g", **{"group.instance.id": "i-a"})
    a.subscribe(["st"], on_revoke=lambda _, ps: revoked.append(sorted(p.partition for p in ps)))
    b = consumer("st-g", **{"group.instance.id": "i-b"})
    b.subscribe(["st"])
    parts = wait_assigned([a, b], 4)
    check(all(len(p) == 2 for p in parts), f"two static members own 2 partitions each: {parts}")
    revoked.clear()
    b.close()
    b = consumer("st-g", **{"group.instance.id": "i-b"})
    b.subscribe(["st"])
    again = wait_assigned([a, b], 4)
    check(again == parts, f"the restarted member has its partitions back: {again}")
    produce("st", [(f"k{i}".encode(), str(i).encode(), None) for i in range(100)])
    got = drain([a, b], 100)
    values = sorted(int(m.value()) for g in got for m in g)
    check(values == list(range(100)), f"the two read the 100 records once between them ({len(values)})")
    check(revoked == [], f"the other member was never revoked: {revoked}")
    described = admin.describe_consumer_groups(["st-g"])["st-g"].result(10)
    instances = sorted(m.group_instance_id for m in described.members)
    check(instances == ["i-a", "i-b"], f"DescribeGroups shows the instance ids: {instances}")
    a.close()
    b.close()

def commit_first():
    """Before a broker restart: 50 records, 20 read and committed by group g2."""
    produce("resume", [(None, str(i).encode(), None) for i in range(50)])
    c = consumer("g2")
    c.subscribe(["resume"])
    got = drain([c], 20)[0][:20]
    check([int(m.value()) for m in got] == list(range(20)), "read 0..19")
    from confluent_kafka import TopicPartition

    c.commit(offsets=[TopicPartition("resume", 0, 20)], asynchronous=False)
    committed = c.committed([TopicPartition("resume", 0)], timeout=10)
    check(committed[0].offset == 20, f"committed 20: {committed[0].offset}")
    c.close()


def commit_then():
    """After the restart: group g2 resumes at 20."""
    c = consumer("g2")
    c.subscribe(["resume"])
    got = drain([c], 30)[0]
    check([int(m.value()) for m in got] == list(range(20, 50)), f"resumed at 20 and read 20..49 ({[int(m.value()) for m in got][:3]}...)")
    c.commit(asynchronous=False)
    c.close()


def kafka_python_group():
    """kafka-python's own group client: joins, reads, commits, and its committed
    offset is there afterwards."""
    from kafka import KafkaConsumer, TopicPartition

    produce("kp", [(None, str(i).encode(), None) for i in range(30)])
    c = KafkaConsumer("kp", bootstrap_servers=BOOTSTRAP, group_id="kp-group", auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=5000)
    got = [int(m.value) for m in c]
    check(got == list(range(30)), f"kafka-python read 30 records in a group ({len(got)})")
    c.commit()
    check(c.committed(TopicPartition("kp", 0)) == 30, "its commit is 30")
    c.close()
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    listed = [g[0] if isinstance(g, tuple) else getattr(g, "group", g) for g in admin.list_groups()]
    check("kp-group" in str(listed), f"ListGroups lists kp-group: {listed}")
    offsets = admin.list_group_offsets("kp-group")
    check("offset=30" in repr(offsets), f"OffsetFetch for all topics: {offsets}")
    described = admin.describe_groups(["kp-group", "nobody"])
    # {group: {"group_state": ...}} in kafka-python 3.
    states = [described[g]["group_state"] for g in ("kp-group", "nobody")]
    check(states == ["Empty", "Dead"], f"DescribeGroups: a group with offsets only is Empty, an unknown one Dead: {described}")
    admin.close()


def idempotent_through_restart():
    """An idempotent producer sends 3,000 numbered records while the test kills
    the broker (kill -9) and starts it again on the same port; every record is
    delivered, and each is stored once."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 2, "message.timeout.ms": 120000, "reconnect.backoff.max.ms": 500})
    failed = []

    def report(err, msg):
        if err is not None:
            failed.append(str(err))

    for i in range(3000):
        while True:
            try:
                producer.produce("idem", value=str(i).encode(), on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if i % 100 == 0:
            print(f"progress {i}", flush=True)
            time.sleep(0.02)
    left = producer.flush(120)
    check(left == 0 and not failed, f"every record delivered ({left} left, {failed[:3]})")
    got = read_all("idem", expect=3000)
    values = [int(r.value) for r in got]
    dupes = len(values) - len(set(values))
    check(dupes == 0, f"no record stored twice ({dupes} duplicates)")
    check(sorted(set(values)) == list(range(3000)), f"all 3000 stored ({len(set(values))})")
    print("ordered" if values == sorted(values) else "reordered", flush=True)


def sasl():
    """SASL PLAIN as a user of weir's: its write permission decides per topic; a
    wrong password is refused."""
    from confluent_kafka import Producer

    login = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
             "sasl.username": "alice", "sasl.password": "wonderland"}
    produce("sasl.ok", [(None, b"hello", None)], **login)
    refused = []
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "message.timeout.ms": 10000, **login})
    producer.produce("sasl.no", value=b"x", on_delivery=lambda err, msg: refused.append(err))
    producer.flush(20)
    check(refused and refused[0] is not None and "AUTHORIZATION" in refused[0].name(), f"no write permission: {refused}")
    errors = []
    bad = Producer({"bootstrap.servers": BOOTSTRAP, **login, "sasl.password": "wrong",
                    "error_cb": lambda e: errors.append(e), "message.timeout.ms": 5000})
    bad.produce("sasl.ok", value=b"never")
    bad.flush(10)
    check(any("AUTHENTICATION" in e.name() or "Authentication" in e.str() for e in errors), f"a wrong password is refused: {errors[:2]}")
    scram = {**login, "sasl.mechanism": "SCRAM-SHA-256"}
    produce("sasl.ok", [(None, b"scram", None)], **scram)
    errors = []
    bad = Producer({"bootstrap.servers": BOOTSTRAP, **scram, "sasl.password": "wrong",
                    "error_cb": lambda e: errors.append(e), "message.timeout.ms": 5000})
    bad.produce("sasl.ok", value=b"never")
    bad.flush(10)
    check(any("AUTHENTICATION" in e.name() or "Authentication" in e.str() for e in errors), f"SCRAM: a wrong password is refused: {errors[:2]}")
    got = read_all("sasl.ok", expect=2)
    check([r.value for r in got] == [b"hello", b"scram"], "only alice's records are stored (PLAIN and SCRAM)")


def tls():
    """Produce and consume over the TLS listener, the certificate checked against
    the test CA."""
    from confluent_kafka import Consumer, Producer

    ssl = {"security.protocol": "SSL", "ssl.ca.location": os.environ["WEIR_KAFKA_CA"]}
    produce("secure", [(b"k", b"over tls", [("h", b"1")])], **ssl)
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "tls-group", "auto.offset.reset": "earliest", **ssl})
    c.subscribe(["secure"])
    got = drain([c], 1)[0]
    c.close()
    check([m.value() for m in got] == [b"over tls"], f"read back over TLS: {got}")



def delete_groups():
    """DeleteGroups through the AdminClient: refused while a member is in the
    group, then its offsets are gone; an unknown group is not found."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    produce("dg", [(None, str(i).encode(), None) for i in range(10)])
    c = consumer("dg-g")
    c.subscribe(["dg"])
    got = drain([c], 10)[0]
    check(len(got) == 10, f"the group read 10 records ({len(got)})")
    c.commit(asynchronous=False)

    def delete(group):
        try:
            admin.delete_consumer_groups([group], request_timeout=10)[group].result(10)
            return "deleted"
        except Exception as e:  # KafkaException with the group's error
            return str(e)

    refused = delete("dg-g")
    check("NON_EMPTY_GROUP" in refused or "not empty" in refused, f"a group with a member is not deleted: {refused}")
    c.close()
    check(delete("dg-g") == "deleted", "the group without members is deleted")
    listed = [g.group_id for g in admin.list_consumer_groups().result(10).valid]
    check("dg-g" not in listed, f"and no longer listed: {listed}")
    again = consumer("dg-g")
    offsets = again.committed([TopicPartition("dg", 0)], timeout=10)
    check(offsets[0].offset < 0, f"its offsets are gone: {offsets}")
    again.close()
    unknown = delete("no-such-group")
    check("GROUP_ID_NOT_FOUND" in unknown or "does not exist" in unknown, f"an unknown group: {unknown}")

def forgotten_producers():
    """With [kafka] max_producer_ids = 2, three idempotent producers take turns
    writing to one partition: each comes back after weir forgot it, and its next
    batch (sequence > 0) is taken as a new producer's, as Kafka takes a producer
    whose state expired. Nothing fails and every record is stored once, in order."""
    from confluent_kafka import Producer

    failed = []

    def report(err, msg):
        if err is not None:
            failed.append(str(err))

    producers = [Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all",
                           "linger.ms": 5}) for _ in range(3)]
    for turn in range(3):
        for n, producer in enumerate(producers):
            for i in range(50):
                producer.produce("fp", value=f"{n}:{turn * 50 + i}".encode(), on_delivery=report)
            left = producer.flush(30)
            check(left == 0 and not failed, f"producer {n} delivered turn {turn} ({left} left, {failed[:3]})")
    got = read_all("fp", expect=450)
    values = [r.value.decode() for r in got]
    check(len(values) == 450 and len(set(values)) == 450, f"450 records stored once each ({len(values)}, {len(set(values))} distinct)")
    for n in range(3):
        mine = [int(v.split(":")[1]) for v in values if v.startswith(f"{n}:")]
        check(mine == list(range(150)), f"producer {n}'s 150 records are stored in its order")


def delete_records():
    """DeleteRecords through confluent-kafka's AdminClient (kafka-delete-records):
    the records below an offset go and readers start there; past the end is
    OFFSET_OUT_OF_RANGE; OFFSET_END (-1) trims every record so far. kafka-python's
    admin client trims too. DescribeCluster (librdkafka's describe_cluster)."""
    from confluent_kafka import OFFSET_END, TopicPartition
    from confluent_kafka.admin import AdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient

    produce("trim", [(None, str(i).encode(), None) for i in range(100)])
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})

    def trim(offset):
        futures = admin.delete_records([TopicPartition("trim", 0, offset)], request_timeout=10)
        try:
            return list(futures.values())[0].result(10).low_watermark
        except Exception as e:  # KafkaException with the partition's error
            return str(e)

    check(trim(40) == 40, "DeleteRecords answers the new low watermark 40")
    got = read_all("trim", expect=60)
    check([r.offset for r in got] == list(range(40, 100)), f"readers start at 40 ({[r.offset for r in got][:3]})")
    check([int(r.value) for r in got] == list(range(40, 100)), "with the records kept")
    refused = trim(1000)
    check("OFFSET_OUT_OF_RANGE" in refused or "out of range" in refused.lower(), f"past the end is refused: {refused}")
    check(trim(10) == 40, "a trim below the first changes nothing")
    kadmin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    answered = kadmin.delete_records({KTopicPartition("trim", 0): 70})
    check(trim(10) == 70, f"kafka-python's admin client trims to 70: {answered}")
    kadmin.close()
    check(trim(OFFSET_END) == 100, "OFFSET_END trims every record so far")
    produce("trim", [(None, b"after", None)])
    got = read_all("trim", expect=1)
    check([(r.offset, r.value) for r in got] == [(100, b"after")], f"the next record is read at 100: {got}")
    cluster = admin.describe_cluster(request_timeout=10).result(10)
    check(cluster.cluster_id == "weir" and len(cluster.nodes) == 1 and cluster.controller.id == 0,
          f"DescribeCluster: one node, the controller: {cluster}")


def offset_delete():
    """OffsetDelete through kafka-python's admin client (kafka-consumer-groups
    --delete-offsets): refused for a topic a live member subscribes to; once the
    group is empty, one partition's offset goes and the other stays; an unknown
    group is GROUP_ID_NOT_FOUND."""
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic

    kadmin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    kadmin.create_topics([NewTopic("od", 2, 1)])
    produce("od", [(str(i).encode(), str(i).encode(), None) for i in range(40)])
    c = consumer("od-g")
    c.subscribe(["od"])
    got = drain([c], 40)[0]
    check(len(got) == 40, f"the group read 40 records ({len(got)})")
    c.commit(asynchronous=False)
    parts = [KTopicPartition("od", 0)]

    def codes(answer):
        return sorted(type(e).__name__ if not isinstance(e, type) else e.__name__ for e in answer.values())

    busy = kadmin.delete_group_offsets("od-g", parts)
    check(codes(busy) == ["GroupSubscribedToTopicError"], f"refused while a member subscribes: {busy}")
    c.close()
    done = kadmin.delete_group_offsets("od-g", parts)
    check(codes(done) == ["NoError"], f"deleted once the group is empty: {done}")
    left = kadmin.list_group_offsets({"od-g": None})["od-g"]
    kept = {tp.partition: om.offset for tp, om in left.items() if om.offset >= 0}
    check(0 not in kept and kept.get(1, -1) > 0, f"partition 0's offset is gone, 1's kept: {left}")
    try:
        unknown = kadmin.delete_group_offsets("no-such-group", parts)
        outcome = str(unknown)
    except Exception as e:
        outcome = type(e).__name__ + str(e)
    check("GroupIdNotFound" in outcome or "GROUP_ID_NOT_FOUND" in outcome, f"an unknown group: {outcome}")
    kadmin.close()


if __name__ == "__main__":
    globals()[sys.argv[1]]()
