// The Java client's consumer for `weir bench kafka --java-jars` (java.rs compiles
// and runs it): reads every partition of a topic from its first record until it
// has `expected` records, or until none came for 10 s, and prints one JSON line:
// records, bytes of values, seconds from the first record to the last, the
// process's CPU seconds over that time, and the check of the values' sequence
// numbers (each record once). Arguments: bootstrap servers, topic, expected count.

import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class WeirBenchRead {
  static long cpuNanos() {
    return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime();
  }

  public static void main(String[] args) {
    String topic = args[1];
    long expected = Long.parseLong(args[2]);
    Properties p = new Properties();
    p.put("bootstrap.servers", args[0]);
    p.put("key.deserializer", ByteArrayDeserializer.class.getName());
    p.put("value.deserializer", ByteArrayDeserializer.class.getName());
    p.put("enable.auto.commit", "false");
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
      List<TopicPartition> partitions = new ArrayList<>();
      for (PartitionInfo info : consumer.partitionsFor(topic)) partitions.add(new TopicPartition(topic, info.partition()));
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      BitSet seen = new BitSet();
      long records = 0, bytes = 0, duplicates = 0, unnumbered = 0;
      long first = 0, last = System.nanoTime(), cpuFirst = 0;
      while (records < expected && System.nanoTime() - last < 10_000_000_000L) {
        ConsumerRecords<byte[], byte[]> got = consumer.poll(Duration.ofMillis(100));
        if (got.isEmpty()) continue;
        last = System.nanoTime();
        if (first == 0) {
          first = last;
          cpuFirst = cpuNanos();
        }
        for (ConsumerRecord<byte[], byte[]> r : got) {
          records++;
          byte[] v = r.value();
          if (v == null || v.length < 8) {
            unnumbered++;
            continue;
          }
          bytes += v.length;
          long seq = 0;
          for (int i = 7; i >= 0; i--) seq = (seq << 8) | (v[i] & 0xff);
          if (seq < 0 || seq >= expected || seq > Integer.MAX_VALUE) {
            unnumbered++;
          } else if (seen.get((int) seq)) {
            duplicates++;
          } else {
            seen.set((int) seq);
          }
        }
      }
      double seconds = (last - first) / 1e9;
      double cpu = first == 0 ? 0 : (cpuNanos() - cpuFirst) / 1e9;
      System.out.printf("{\"records\":%d,\"bytes\":%d,\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"distinct\":%d,\"duplicates\":%d,\"unnumbered\":%d}%n",
          records, bytes, seconds, cpu, seen.cardinality(), duplicates, unnumbered);
    }
  }
}
