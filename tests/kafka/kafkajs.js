// KafkaJS (a third implementation of Kafka's protocol, in JavaScript, from npm)
// against weir's Kafka front end. Run by crates/weir/tests/it/kafka.rs as
// `node kafkajs.js SCENARIO` with WEIR_KAFKA=host:port and NODE_PATH holding the
// kafkajs package that ./scripts/test installs. Exits non-zero with the reason
// when a check fails.
'use strict';

const { Kafka, logLevel, CompressionTypes } = require('kafkajs');

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

const kafka = new Kafka({
  clientId: 'weir-kafkajs-test',
  brokers: [process.env.WEIR_KAFKA],
  logLevel: logLevel.NOTHING,
  retry: { retries: 5 },
});

function check(ok, what) {
  if (!ok) {
    throw new Error(`check failed: ${what}`);
  }
}

// Resolves once `count` messages have come to `consumer` (run from the first
// record), calling `each` with each; rejects after `ms`.
function consumeN(consumer, count, each, ms = 30000) {
  return new Promise((resolve, reject) => {
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${count} messages`)), ms);
    consumer
      .run({
        eachMessage: async (payload) => {
          try {
            each(payload);
          } catch (e) {
            clearTimeout(timer);
            reject(e);
            return;
          }
          got += 1;
          if (got === count) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
}

// The admin client makes a topic of 3 partitions; the idempotent producer sends
// 300 keyed records with headers in gzip batches; a group consumer reads them
// all from the first record, each key in one partition and in order; its
// committed offsets add up to 300; the group is listed and described; the topic
// is deleted.
async function roundTrip() {
  const admin = kafka.admin();
  await admin.connect();
  check(await admin.createTopics({ topics: [{ topic: 'kjs', numPartitions: 3 }] }), 'created');
  check((await admin.listTopics()).includes('kjs'), 'listed');
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 300; i += 1) {
    messages.push({ key: `k${i % 7}`, value: `v${i}`, headers: { h: `x${i}` } });
  }
  const sent = await producer.send({
    topic: 'kjs',
    messages,
    acks: -1,
    compression: CompressionTypes.GZIP,
  });
  check(sent.every((r) => r.errorCode === 0), `produce answers ${JSON.stringify(sent)}`);
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: 'kjs-group' });
  await consumer.connect();
  await consumer.subscribe({ topic: 'kjs', fromBeginning: true });
  const partitionOfKey = new Map();
  const lastOfKey = new Map();
  const seen = new Set();
  await consumeN(consumer, 300, ({ partition, message }) => {
    const value = message.value.toString();
    const i = Number(value.slice(1));
    const key = message.key.toString();
    check(message.headers.h.toString() === `x${i}`, `header of ${value}`);
    check(key === `k${i % 7}`, `key of ${value}`);
    check(!partitionOfKey.has(key) || partitionOfKey.get(key) === partition, `${key} in one partition`);
    partitionOfKey.set(key, partition);
    check(!lastOfKey.has(key) || lastOfKey.get(key) < i, `${key} in order`);
    lastOfKey.set(key, i);
    seen.add(i);
  });
  check(seen.size === 300, `each record once: ${seen.size}`);
  await consumer.disconnect(); // commits what was read (KafkaJS's autoCommit)

  const offsets = await admin.fetchOffsets({ groupId: 'kjs-group', topics: ['kjs'] });
  const committed = offsets[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0);
  check(committed === 300, `committed offsets add up to 300: ${JSON.stringify(offsets)}`);
  const groups = (await admin.listGroups()).groups.map((g) => g.groupId);
  check(groups.includes('kjs-group'), `group listed: ${groups}`);
  const described = await admin.describeGroups(['kjs-group']);
  check(described.groups[0].state === 'Empty', `group state ${described.groups[0].state}`);
  await admin.deleteTopics({ topics: ['kjs'] });
  check(!(await admin.listTopics()).includes('kjs'), 'deleted');
  await admin.disconnect();
  console.log('round trip: 300 records, 3 partitions, committed 300');
}

// Two consumers of one group share a topic of 4 partitions (KafkaJS's round-robin
// assignor); when one leaves, the other is given every partition and reads what
// is produced after.
async function groupOfTwo() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'kjs2', numPartitions: 4 }] });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const send = (from, n) =>
    producer.send({
      topic: 'kjs2',
      acks: -1,
      messages: Array.from({ length: n }, (_, k) => ({ key: `k${from + k}`, value: `${from + k}` })),
    });

  const a = kafka.consumer({ groupId: 'kjs-pair', sessionTimeout: 10000, heartbeatInterval: 500 });
  const b = kafka.consumer({ groupId: 'kjs-pair', sessionTimeout: 10000, heartbeatInterval: 500 });
  const byA = new Set();
  const byB = new Set();
  await a.connect();
  await b.connect();
  await a.subscribe({ topic: 'kjs2', fromBeginning: true });
  await b.subscribe({ topic: 'kjs2', fromBeginning: true });
  // Both are members before anything is produced.
  let joined = 0;
  const bothJoined = new Promise((resolve) => {
    for (const c of [a, b]) {
      c.on(c.events.GROUP_JOIN, (e) => {
        if (e.payload.memberAssignment.kjs2 && e.payload.memberAssignment.kjs2.length === 2) {
          joined += 1;
        }
        if (joined >= 2) {
          resolve();
        }
      });
    }
  });
  const total = new Set();
  let resolveAll;
  const all = new Promise((resolve) => {
    resolveAll = resolve;
  });
  const take = (mine) => async ({ message }) => {
    const v = Number(message.value.toString());
    mine.add(v);
    total.add(v);
    if (total.size === 400) {
      resolveAll();
    }
  };
  a.run({ eachMessage: take(byA) });
  b.run({ eachMessage: take(byB) });
  await Promise.race([bothJoined, timeout(30000, 'both members assigned two partitions each')]);
  await send(0, 400);
  await Promise.race([all, timeout(30000, `400 records read: ${total.size}`)]);
  check(byA.size > 0 && byB.size > 0, `both read: ${byA.size} and ${byB.size}`);
  check(byA.size + byB.size === 400, `each once: ${byA.size} + ${byB.size}`);

  await b.disconnect(); // LeaveGroup: A is given all four partitions
  const before = byA.size;
  const takeover = new Promise((resolve) => {
    a.on(a.events.GROUP_JOIN, (e) => {
      if (e.payload.memberAssignment.kjs2 && e.payload.memberAssignment.kjs2.length === 4) {
        resolve();
      }
    });
  });
  await Promise.race([takeover, timeout(30000, 'the one left takes all four partitions')]);
  await send(1000, 100);
  const deadline = Date.now() + 30000;
  while (byA.size < before + 100 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  check(byA.size === before + 100, `the one left reads what came after: ${byA.size - before}`);
  await a.disconnect();
  await producer.disconnect();
  console.log(`group of two: ${before} and ${byB.size}, then 100 by one`);
}

function timeout(ms, what) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms));
}

const scenarios = { round_trip: roundTrip, group_of_two: groupOfTwo };
const scenario = scenarios[process.argv[2]];
if (!scenario) {
  console.error(`usage: kafkajs.js ${Object.keys(scenarios).join('|')}`);
  process.exit(2);
}
scenario()
  .then(() => process.exit(0))
  .catch((e) => {
    console.error(`FAILED: ${e.stack || e}`);
    process.exit(1);
  });
