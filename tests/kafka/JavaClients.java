// The Java client (Apache kafka-clients, unmodified) against weir's Kafka front end.
// Run by crates/weir/tests/it/kafka_java.rs with WEIR_KAFKA set to the broker's
// Kafka address and the scenario's name as the argument; it prints what it checked
// and exits non-zero on the first failure. The producers keep the client's defaults:
// idempotent, acks=all, its own batching and partitioner.

import java.time.Duration;
import java.util.*;
import java.util.concurrent.Future;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaClients {
  static final String BOOTSTRAP = System.getenv("WEIR_KAFKA");

  static void check(boolean condition, String what) {
    if (!condition) {
      System.out.println("FAILED: " + what);
      System.exit(1);
    }
    System.out.println("ok: " + what);
  }

  /** A check inside a loop: silent unless it fails. */
  static void require(boolean condition, String what) {
    if (!condition) check(false, what);
  }

  static Properties settings(Map<String, String> extra) {
    Properties p = new Properties();
    p.put("bootstrap.servers", BOOTSTRAP);
    String user = System.getenv("WEIR_KAFKA_USER");
    if (user != null) {
      p.put("security.protocol", "SASL_PLAINTEXT");
      p.put("sasl.mechanism", "SCRAM-SHA-256");
      p.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
          + user + "\" password=\"" + System.getenv("WEIR_KAFKA_PASSWORD") + "\";");
    }
    p.putAll(extra);
    return p;
  }

  static KafkaProducer<String, String> producer(Map<String, String> extra) {
    Properties p = settings(extra);
    p.put("key.serializer", StringSerializer.class.getName());
    p.put("value.serializer", StringSerializer.class.getName());
    return new KafkaProducer<>(p);
  }

  static KafkaConsumer<String, String> consumer(String group, Map<String, String> extra) {
    Properties p = settings(extra);
    p.put("key.deserializer", StringDeserializer.class.getName());
    p.put("value.deserializer", StringDeserializer.class.getName());
    p.put("auto.offset.reset", "earliest");
    p.put("enable.auto.commit", "false");
    if (group != null) p.put("group.id", group);
    return new KafkaConsumer<>(p);
  }

  /** Sends the records asynchronously (so the client batches them) and waits for all. */
  static List<RecordMetadata> produce(KafkaProducer<String, String> producer, List<ProducerRecord<String, String>> records)
      throws Exception {
    List<Future<RecordMetadata>> sent = new ArrayList<>();
    for (ProducerRecord<String, String> r : records) sent.add(producer.send(r));
    producer.flush();
    List<RecordMetadata> out = new ArrayList<>();
    for (Future<RecordMetadata> f : sent) out.add(f.get());
    return out;
  }

  /** Polls the consumers in turn until `want` records came in all; returns them per consumer. */
  static List<List<ConsumerRecord<String, String>>> drain(List<KafkaConsumer<String, String>> consumers, int want, long millis) {
    List<List<ConsumerRecord<String, String>>> got = new ArrayList<>();
    for (int i = 0; i < consumers.size(); i++) got.add(new ArrayList<>());
    long deadline = System.currentTimeMillis() + millis;
    while (got.stream().mapToInt(List::size).sum() < want && System.currentTimeMillis() < deadline) {
      for (int i = 0; i < consumers.size(); i++) {
        for (ConsumerRecord<String, String> r : consumers.get(i).poll(Duration.ofMillis(100))) got.get(i).add(r);
      }
    }
    return got;
  }

  /** Polls until the consumers' assignments are disjoint and cover `total` partitions. */
  static List<Set<Integer>> waitAssigned(List<KafkaConsumer<String, String>> consumers, int total) {
    long deadline = System.currentTimeMillis() + 60_000;
    List<Set<Integer>> parts = new ArrayList<>();
    while (System.currentTimeMillis() < deadline) {
      parts.clear();
      int sum = 0;
      Set<Integer> all = new TreeSet<>();
      boolean empty = false;
      for (KafkaConsumer<String, String> c : consumers) {
        require(c.poll(Duration.ofMillis(100)).isEmpty(), "nothing to read while the group forms");
        Set<Integer> mine = new TreeSet<>();
        for (TopicPartition tp : c.assignment()) mine.add(tp.partition());
        parts.add(mine);
        sum += mine.size();
        all.addAll(mine);
        empty |= mine.isEmpty();
      }
      if (!empty && sum == total && all.size() == total) return parts;
    }
    return parts;
  }

  static String header(ConsumerRecord<String, String> r, String name) {
    Header h = r.headers().lastHeader(name);
    return h == null ? null : new String(h.value());
  }

  /** Admin, every codec from the idempotent producer, a group read and its offsets. */
  static void roundTrip() throws Exception {
    try (Admin admin = Admin.create(settings(Map.of()))) {
      admin.createTopics(List.of(new NewTopic("jv", 3, (short) 1))).all().get();
      TopicDescription jv = admin.describeTopics(List.of("jv")).allTopicNames().get().get("jv");
      check(jv.partitions().size() == 3, "the admin client created jv with 3 partitions");
      ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, "jv");
      Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
      check(config.get("retention.ms") != null, "DescribeConfigs answers retention.ms: " + config.get("retention.ms"));
    }
    String[] codecs = {"none", "gzip", "snappy", "lz4", "zstd"};
    List<ProducerRecord<String, String>> records = new ArrayList<>();
    for (int i = 0; i < 500; i++) {
      ProducerRecord<String, String> r = new ProducerRecord<>("jv", "key-" + (i % 7), "value-" + i);
      r.headers().add("n", Integer.toString(i).getBytes());
      records.add(r);
    }
    Map<String, Integer> partitionOfKey = new HashMap<>();
    for (int c = 0; c < codecs.length; c++) {
      try (KafkaProducer<String, String> p = producer(Map.of("compression.type", codecs[c], "linger.ms", "20"))) {
        List<RecordMetadata> sent = produce(p, records.subList(c * 100, c * 100 + 100));
        for (int i = 0; i < sent.size(); i++) {
          String key = records.get(c * 100 + i).key();
          Integer before = partitionOfKey.putIfAbsent(key, sent.get(i).partition());
          require(before == null || before == sent.get(i).partition(), "one key, one partition");
        }
      }
    }
    check(true, "500 records delivered, 100 with each codec: " + String.join(",", codecs));
    // The partitions the client chose, for the Rust side to compare with weir's own.
    System.out.println("partitions " + new TreeMap<>(partitionOfKey));
    try (KafkaConsumer<String, String> c = consumer("jg", Map.of())) {
      c.subscribe(List.of("jv"));
      List<ConsumerRecord<String, String>> got = drain(List.of(c), 500, 60_000).get(0);
      check(got.size() == 500, "the group read the 500 records (" + got.size() + ")");
      Map<Integer, Long> last = new HashMap<>();
      Set<String> values = new HashSet<>();
      for (ConsumerRecord<String, String> r : got) {
        require(r.value().equals("value-" + header(r, "n")), "value and header agree");
        require(partitionOfKey.get(r.key()) == r.partition(), "a key is read from its partition");
        Long before = last.put(r.partition(), r.offset());
        require(before == null || before < r.offset(), "offsets rise within a partition");
        values.add(r.value());
      }
      check(values.size() == 500, "no record twice");
      c.commitSync();
      Set<TopicPartition> tps = c.assignment();
      Map<TopicPartition, OffsetAndMetadata> committed = c.committed(tps);
      Map<TopicPartition, Long> ends = c.endOffsets(tps);
      for (TopicPartition tp : tps) check(committed.get(tp).offset() == ends.get(tp), "committed the end of " + tp);
      TopicPartition first = new TopicPartition("jv", 0);
      c.commitSync(Map.of(first, new OffsetAndMetadata(ends.get(first), "java-meta")));
      check("java-meta".equals(c.committed(Set.of(first)).get(first).metadata()), "a commit's metadata string comes back");
      Map<TopicPartition, Long> starts = c.beginningOffsets(tps);
      check(starts.values().stream().allMatch(o -> o == 0), "the beginning is offset 0");
      Map<TopicPartition, Long> query = new HashMap<>();
      for (TopicPartition tp : tps) query.put(tp, 0L);
      Map<TopicPartition, OffsetAndTimestamp> byTime = c.offsetsForTimes(query);
      check(byTime.values().stream().allMatch(o -> o != null && o.offset() == 0), "the offset for time 0 is 0");
    }
    try (Admin admin = Admin.create(settings(Map.of()))) {
      Collection<GroupListing> groups = admin.listGroups().all().get();
      check(groups.stream().anyMatch(g -> g.groupId().equals("jg")), "ListGroups lists jg");
      ConsumerGroupDescription jg = admin.describeConsumerGroups(List.of("jg")).all().get().get("jg");
      check(jg.members().isEmpty(), "DescribeGroups: no member is left in jg: " + jg);
      Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets("jg").partitionsToOffsetAndMetadata().get();
      long sum = offsets.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
      check(sum == 500, "OffsetFetch for the group: its offsets add up to 500: " + offsets);
      check("java-meta".equals(offsets.get(new TopicPartition("jv", 0)).metadata()), "and the admin client sees the metadata");
    }
  }

  /** Two members with the client's default assignors share four partitions; the one left takes all. */
  static void groupOfTwo() throws Exception {
    try (Admin admin = Admin.create(settings(Map.of()))) {
      admin.createTopics(List.of(new NewTopic("jgrp", 4, (short) 1))).all().get();
    }
    Map<String, String> fast = Map.of("session.timeout.ms", "6000", "heartbeat.interval.ms", "500");
    KafkaConsumer<String, String> a = consumer("jg2", fast);
    KafkaConsumer<String, String> b = consumer("jg2", fast);
    a.subscribe(List.of("jgrp"));
    check(waitAssigned(List.of(a), 4).get(0).size() == 4, "the first member owns the 4 partitions");
    b.subscribe(List.of("jgrp"));
    List<Set<Integer>> parts = waitAssigned(List.of(a, b), 4);
    check(parts.get(0).size() == 2 && parts.get(1).size() == 2, "two members own 2 partitions each: " + parts);
    List<ProducerRecord<String, String>> records = new ArrayList<>();
    for (int i = 0; i < 400; i++) records.add(new ProducerRecord<>("jgrp", "k" + i, Integer.toString(i)));
    try (KafkaProducer<String, String> p = producer(Map.of())) {
      produce(p, records);
    }
    List<List<ConsumerRecord<String, String>>> got = drain(List.of(a, b), 400, 60_000);
    check(!got.get(0).isEmpty() && !got.get(1).isEmpty(), "both members read");
    Set<Integer> values = new TreeSet<>();
    for (List<ConsumerRecord<String, String>> g : got) for (ConsumerRecord<String, String> r : g) values.add(Integer.parseInt(r.value()));
    check(values.size() == 400 && got.get(0).size() + got.get(1).size() == 400, "the two read the 400 records once between them");
    a.commitSync();
    b.commitSync();
    b.close();
    check(waitAssigned(List.of(a), 4).get(0).size() == 4, "after the other left, one member owns all 4 again");
    records.clear();
    for (int i = 400; i < 450; i++) records.add(new ProducerRecord<>("jgrp", "k" + i, Integer.toString(i)));
    try (KafkaProducer<String, String> p = producer(Map.of())) {
      produce(p, records);
    }
    List<ConsumerRecord<String, String>> more = drain(List.of(a), 50, 60_000).get(0);
    Set<Integer> moreValues = new TreeSet<>();
    for (ConsumerRecord<String, String> r : more) moreValues.add(Integer.parseInt(r.value()));
    check(more.size() == 50 && moreValues.equals(new TreeSet<>(java.util.stream.IntStream.range(400, 450).boxed().toList())),
        "it reads the 50 new records only (" + more.size() + ")");
    check(drain(List.of(a), 1, 3_000).get(0).isEmpty(), "and nothing twice");
    a.commitSync();
    a.close();
  }

  /**
   * Static membership: the leader's process restarts under its group.instance.id and
   * takes its partitions back without a rebalance (JoinGroup v9's skip_assignment); the
   * other member is never revoked, and the two read what follows once.
   */
  static void staticMembers() throws Exception {
    try (Admin admin = Admin.create(settings(Map.of()))) {
      admin.createTopics(List.of(new NewTopic("jst", 4, (short) 1))).all().get();
    }
    Map<String, String> a1 = Map.of("group.instance.id", "i-a", "session.timeout.ms", "10000", "heartbeat.interval.ms", "500");
    Map<String, String> b1 = Map.of("group.instance.id", "i-b", "session.timeout.ms", "10000", "heartbeat.interval.ms", "500");
    List<Collection<TopicPartition>> revoked = new ArrayList<>();
    ConsumerRebalanceListener counting = new ConsumerRebalanceListener() {
      public void onPartitionsRevoked(Collection<TopicPartition> ps) {
        if (!ps.isEmpty()) revoked.add(ps);
      }
      public void onPartitionsAssigned(Collection<TopicPartition> ps) {}
    };
    KafkaConsumer<String, String> a = consumer("jst-g", a1);
    a.subscribe(List.of("jst"));
    check(waitAssigned(List.of(a), 4).get(0).size() == 4, "the first static member (the leader) owns the 4 partitions");
    KafkaConsumer<String, String> b = consumer("jst-g", b1);
    b.subscribe(List.of("jst"), counting);
    List<Set<Integer>> parts = waitAssigned(List.of(a, b), 4);
    check(parts.get(0).size() == 2 && parts.get(1).size() == 2, "two static members own 2 partitions each: " + parts);
    revoked.clear();
    a.close();
    a = consumer("jst-g", a1);
    a.subscribe(List.of("jst"));
    List<Set<Integer>> again = waitAssigned(List.of(a, b), 4);
    check(again.equals(parts), "the restarted leader has its partitions back: " + again);
    List<ProducerRecord<String, String>> records = new ArrayList<>();
    for (int i = 0; i < 100; i++) records.add(new ProducerRecord<>("jst", "k" + i, Integer.toString(i)));
    try (KafkaProducer<String, String> p = producer(Map.of())) {
      produce(p, records);
    }
    List<List<ConsumerRecord<String, String>>> got = drain(List.of(a, b), 100, 60_000);
    Set<Integer> values = new TreeSet<>();
    for (List<ConsumerRecord<String, String>> g : got) for (ConsumerRecord<String, String> r : g) values.add(Integer.parseInt(r.value()));
    check(values.size() == 100 && got.get(0).size() + got.get(1).size() == 100, "the two read the 100 records once between them");
    check(revoked.isEmpty(), "the other member was never revoked: " + revoked);
    try (Admin admin = Admin.create(settings(Map.of()))) {
      ConsumerGroupDescription d = admin.describeConsumerGroups(List.of("jst-g")).all().get().get("jst-g");
      Set<String> instances = new TreeSet<>();
      for (MemberDescription m : d.members()) instances.add(m.groupInstanceId().orElse("-"));
      check(instances.equals(Set.of("i-a", "i-b")), "the group's members are i-a and i-b: " + instances);
    }
    a.close();
    b.close();
  }

  /**
   * The admin client's deleteRecords (kafka-delete-records), describeCluster and
   * deleteConsumerGroupOffsets (kafka-consumer-groups --delete-offsets).
   */
  static void adminRecords() throws Exception {
    TopicPartition p0 = new TopicPartition("jadm", 0), p1 = new TopicPartition("jadm", 1);
    try (Admin admin = Admin.create(settings(Map.of()))) {
      admin.createTopics(List.of(new NewTopic("jadm", 2, (short) 1))).all().get();
      List<ProducerRecord<String, String>> records = new ArrayList<>();
      for (int i = 0; i < 60; i++) records.add(new ProducerRecord<>("jadm", i % 2, "k", Integer.toString(i)));
      try (KafkaProducer<String, String> p = producer(Map.of())) {
        produce(p, records);
      }
      long low = admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(20))).lowWatermarks().get(p0).get().lowWatermark();
      check(low == 20, "deleteRecords moves partition 0's low watermark to 20: " + low);
      try {
        admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(31))).all().get();
        check(false, "a deleteRecords past the end is refused");
      } catch (java.util.concurrent.ExecutionException e) {
        check(e.getCause() instanceof org.apache.kafka.common.errors.OffsetOutOfRangeException,
            "a deleteRecords past the end is refused: " + e.getCause());
      }
      DescribeClusterResult cluster = admin.describeCluster();
      check(cluster.clusterId().get().equals("weir") && cluster.nodes().get().size() == 1 && cluster.controller().get().id() == 0,
          "describeCluster: cluster weir, one node, the controller: " + cluster.nodes().get());
      KafkaConsumer<String, String> c = consumer("jadm-g", Map.of());
      c.subscribe(List.of("jadm"));
      List<ConsumerRecord<String, String>> got = drain(List.of(c), 40, 60_000).get(0);
      check(got.size() == 40 && got.stream().filter(r -> r.partition() == 0).allMatch(r -> r.offset() >= 20),
          "the group reads 40 records, partition 0 from 20 on");
      c.commitSync();
      try {
        admin.deleteConsumerGroupOffsets("jadm-g", Set.of(p0)).all().get();
        check(false, "deleteConsumerGroupOffsets is refused while a member subscribes");
      } catch (java.util.concurrent.ExecutionException e) {
        check(e.getCause() instanceof org.apache.kafka.common.errors.GroupSubscribedToTopicException,
            "deleteConsumerGroupOffsets is refused while a member subscribes: " + e.getCause());
      }
      c.close();
      admin.deleteConsumerGroupOffsets("jadm-g", Set.of(p0)).all().get();
      Map<TopicPartition, OffsetAndMetadata> left = admin.listConsumerGroupOffsets("jadm-g").partitionsToOffsetAndMetadata().get();
      check(!left.containsKey(p0) || left.get(p0) == null, "partition 0's committed offset is gone: " + left);
      check(left.get(p1) != null && left.get(p1).offset() == 30, "partition 1's stays at 30: " + left);
    }
  }

  /** SCRAM-SHA-256 as the user the test made: write and read allowed on java.ok only. */
  static void scram() throws Exception {
    try (KafkaProducer<String, String> p = producer(Map.of())) {
      produce(p, List.of(new ProducerRecord<>("java.ok", "k", "signed in")));
    }
    check(true, "produced to java.ok after a SCRAM-SHA-256 login");
    try (KafkaConsumer<String, String> c = consumer(null, Map.of())) {
      TopicPartition tp = new TopicPartition("java.ok", 0);
      c.assign(List.of(tp));
      c.seekToBeginning(List.of(tp));
      List<ConsumerRecord<String, String>> got = drain(List.of(c), 1, 30_000).get(0);
      check(got.size() == 1 && got.get(0).value().equals("signed in"), "read it back");
    }
    try (KafkaProducer<String, String> p = producer(Map.of("max.block.ms", "5000", "delivery.timeout.ms", "5000", "request.timeout.ms", "4000"))) {
      p.send(new ProducerRecord<>("java.denied", "k", "v")).get();
      check(false, "a write to java.denied is refused");
    } catch (java.util.concurrent.ExecutionException e) {
      check(e.getCause() instanceof org.apache.kafka.common.errors.TopicAuthorizationException,
          "a write to java.denied is refused: " + e.getCause());
    }
  }

  public static void main(String[] args) throws Exception {
    switch (args[0]) {
      case "round_trip" -> roundTrip();
      case "group_of_two" -> groupOfTwo();
      case "scram" -> scram();
      case "static_members" -> staticMembers();
      case "admin_records" -> adminRecords();
      default -> check(false, "a known scenario: " + args[0]);
    }
    System.exit(0);
  }
}
