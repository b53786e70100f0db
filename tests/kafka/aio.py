"""aiokafka (asyncio, its own protocol code) against weir's Kafka front end,
unmodified. Run by crates/weir/tests/it/kafka_aio.rs with WEIR_KAFKA set to the
broker's Kafka address; each scenario prints what it checked and exits non-zero on
the first failure."""

import asyncio
import os
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

BOOTSTRAP = os.environ["WEIR_KAFKA"]


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


async def admin_client():
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    return admin


async def produce(topic, count, **config):
    """`count` records keyed by `i % 7` with a header, each `i` its value."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **config)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, key=str(i % 7).encode(), value=str(i).encode(), headers=[("n", str(i).encode())])
            for i in range(count)
        ]
        return [await s for s in sent]
    finally:
        await producer.stop()


async def drain(consumers, want, seconds=30):
    """Polls `consumers` in turn until `want` records arrived in all, or `seconds`;
    the records of each."""
    got = [[] for _ in consumers]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while sum(map(len, got)) < want and loop.time() < deadline:
        for i, c in enumerate(consumers):
            for records in (await c.getmany(timeout_ms=200)).values():
                got[i].extend(records)
    return got


async def until_assigned(consumers, total, seconds=60):
    """Polls until the consumers own disjoint, non-empty shares of `total`
    partitions; their records meanwhile."""
    got = [[] for _ in consumers]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        for i, c in enumerate(consumers):
            for records in (await c.getmany(timeout_ms=200)).values():
                got[i].extend(records)
        parts = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
        flat = sorted(p for ps in parts for p in ps)
        if flat == list(range(total)) and all(parts):
            return parts, got
    check(False, f"assignments settle over {total} partitions: {parts}")


async def produce_and_read():
    """Admin, an idempotent producer in each codec, a group that reads each record
    once and commits, offsets by time, and the group seen by the admin client."""
    admin = await admin_client()
    await admin.create_topics([NewTopic("aio", num_partitions=3, replication_factor=1)])
    described = await admin.describe_topics(["aio"])
    check(len(described[0]["partitions"]) == 3, "the admin client creates and describes a topic of 3 partitions")
    where = {}
    for n, codec in enumerate([None, "gzip", "snappy", "lz4", "zstd"]):
        sent = await produce("aio", 100, enable_idempotence=True, acks="all", compression_type=codec)
        for i, md in enumerate(sent):
            where.setdefault(str(i % 7), set()).add(md.partition)
        check(len(sent) == 100, f"100 records sent idempotently, compression {codec}")
    check(all(len(p) == 1 for p in where.values()), f"each key goes to one partition: {where}")
    c = AIOKafkaConsumer("aio", bootstrap_servers=BOOTSTRAP, group_id="aio-g", auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    got = (await drain([c], 500))[0]
    check(len(got) == 500, f"the group reads the 500 records ({len(got)})")
    lost = [r.headers for r in got if list(r.headers) != [("n", r.value)]]
    check(not lost, f"each record's header came back: {lost[:3]}")
    by_key = {}
    for r in got:
        by_key.setdefault(r.key, []).append(int(r.value))
    sent_order = {str(k).encode(): [i for i in range(100) if i % 7 == k] * 5 for k in range(7)}
    check(by_key == sent_order, "each key's records in the order sent, once a codec")
    await c.commit()
    tp0 = TopicPartition("aio", 0)
    ends = await c.end_offsets([TopicPartition("aio", p) for p in range(3)])
    committed = [await c.committed(TopicPartition("aio", p)) for p in range(3)]
    check(committed == [ends[TopicPartition("aio", p)] for p in range(3)], f"committed to the end: {committed}")
    by_time = await c.offsets_for_times({tp0: 0})
    check(by_time[tp0].offset == 0, f"the first offset at or after time 0 is 0: {by_time}")
    await c.stop()
    groups = await admin.list_consumer_groups()
    check(("aio-g", "consumer") in groups, f"the admin client lists the group: {groups}")
    offsets = await admin.list_consumer_group_offsets("aio-g")
    check(sum(o.offset for o in offsets.values()) == 500, f"and its offsets: {offsets}")
    await admin.delete_topics(["aio"])
    await admin.close()


async def commit_on_rebalance():
    """A member that auto-commits commits what it read when a second member joins
    (aiokafka does so before rejoining, while the group prepares the rebalance):
    the newcomer reads nothing twice."""
    admin = await admin_client()
    await admin.create_topics([NewTopic("arb", num_partitions=4, replication_factor=1)])
    await produce("arb", 400)
    config = dict(
        bootstrap_servers=BOOTSTRAP,
        group_id="arb-g",
        auto_offset_reset="earliest",
        auto_commit_interval_ms=3_600_000,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=300,
    )
    a = AIOKafkaConsumer("arb", **config)
    await a.start()
    got = (await drain([a], 400))[0]
    check(len(got) == 400, f"the first member reads the 400 records ({len(got)})")
    b = AIOKafkaConsumer("arb", **config)
    await b.start()
    parts, again = await until_assigned([a, b], 4)
    check(all(len(p) == 2 for p in parts), f"two members own 2 partitions each: {parts}")
    more = await drain([a, b], 1, seconds=3)
    twice = [(r.partition, r.offset) for g in again + more for r in g]
    check(not twice, f"nothing read twice after the rebalance: {twice}")
    await b.stop()
    await a.stop()
    offsets = await admin.list_consumer_group_offsets("arb-g")
    check(sum(o.offset for o in offsets.values()) == 400, f"the group committed the 400: {offsets}")
    await admin.close()



async def alter_configs_replaces_the_set():
    """aiokafka's admin sends the legacy AlterConfigs as it is: the topic's config
    set becomes the one sent, so retention.ms, left out, is back to no limit."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = await admin_client()
    await admin.create_topics([NewTopic("aio-alt", 1, 1, topic_configs={"retention.ms": "3600000"})])
    resource = ConfigResource(ConfigResourceType.TOPIC, "aio-alt", configs={"retention.bytes": "8192"})
    answers = await admin.alter_configs([resource])
    codes = [r[0] for a in answers for r in a.resources]
    check(codes == [0], f"AlterConfigs answered without error: {answers}")
    await admin.close()

async def transactions_refused():
    """A transactional producer fails to start with an error, instead of hanging."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id="tx")
    try:
        await asyncio.wait_for(producer.start(), 30)
        check(False, "a transactional producer is refused")
    except KafkaError as e:
        check(True, f"a transactional producer is refused: {type(e).__name__}")
    finally:
        await asyncio.wait_for(producer.stop(), 30)


if __name__ == "__main__":
    asyncio.run(globals()[sys.argv[1]]())
