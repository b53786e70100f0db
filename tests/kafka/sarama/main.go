// Sarama (Shopify/sarama, the Go client, Debian's golang-github-shopify-sarama-dev,
// unmodified) against weir's Kafka front end. Run by
// crates/weir/tests/it/kafka_sarama.rs with WEIR_KAFKA set to the broker's Kafka
// address and the scenario's name as the argument; it prints what it checked and
// exits non-zero on the first failure.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

func check(ok bool, format string, args ...interface{}) {
	what := fmt.Sprintf(format, args...)
	if !ok {
		fmt.Println("FAILED: " + what)
		os.Exit(1)
	}
	fmt.Println("ok: " + what)
}

func must(err error, what string) {
	check(err == nil, "%s (%v)", what, err)
}

// config is the client's settings at protocol `version`, as a Sarama user sets
// them (Sarama's default, 0.8.2, predates record batches).
func config(version sarama.KafkaVersion) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = version
	c.ClientID = "weir-sarama-test"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Sarama 1.22 commits with OffsetCommit v1 unless a retention is set, and
	// Kafka 4 and weir serve v2 and up (KIP-896): Sarama's users set one.
	c.Consumer.Offsets.Retention = 24 * time.Hour
	return c
}

type handler struct {
	mu    sync.Mutex
	got   []*sarama.ConsumerMessage
	want  int
	done  chan struct{}
	once  sync.Once
	setup chan struct{}
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		s.MarkMessage(m, "")
		h.mu.Lock()
		h.got = append(h.got, m)
		if len(h.got) >= h.want {
			h.once.Do(func() { close(h.done) })
		}
		h.mu.Unlock()
	}
	return nil
}

// roundTrip: the admin client makes a topic, the idempotent producer sends keyed
// records with headers in zstd batches, a group reads them all and commits.
func roundTrip() {
	brokers := []string{os.Getenv("WEIR_KAFKA")}
	c := config(sarama.V2_1_0_0)
	admin, err := sarama.NewClusterAdmin(brokers, c)
	must(err, "the cluster admin connects")
	must(admin.CreateTopic("go", &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false), "CreateTopic go with 3 partitions")
	// (ListTopics also sends DescribeConfigs v0, which Kafka 4 and weir no longer serve.)
	described, err := admin.DescribeTopics([]string{"go"})
	must(err, "DescribeTopics")
	check(len(described) == 1 && len(described[0].Partitions) == 3, "the topic has 3 partitions: %+v", described[0])
	admin.Close()

	pc := config(sarama.V2_1_0_0)
	pc.Producer.Idempotent = true
	pc.Net.MaxOpenRequests = 1
	pc.Producer.Retry.Max = 5
	pc.Producer.Compression = sarama.CompressionZSTD
	producer, err := sarama.NewSyncProducer(brokers, pc)
	must(err, "the idempotent producer connects")
	var msgs []*sarama.ProducerMessage
	for i := 0; i < 300; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{
			Topic:   "go",
			Key:     sarama.StringEncoder("key-" + strconv.Itoa(i%5)),
			Value:   sarama.StringEncoder("value-" + strconv.Itoa(i)),
			Headers: []sarama.RecordHeader{{Key: []byte("n"), Value: []byte(strconv.Itoa(i))}},
		})
	}
	must(producer.SendMessages(msgs), "300 records delivered in zstd batches")
	partitionOf := map[string]int32{}
	for _, m := range msgs {
		k, _ := m.Key.Encode()
		if p, seen := partitionOf[string(k)]; seen {
			check(p == m.Partition, "one key, one partition")
		}
		partitionOf[string(k)] = m.Partition
	}
	producer.Close()

	group, err := sarama.NewConsumerGroup(brokers, "gog", config(sarama.V2_1_0_0))
	must(err, "the consumer group connects")
	h := &handler{want: 300, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := group.Consume(ctx, []string{"go"}, h); err != nil {
				finished <- err
				return
			}
		}
		finished <- nil
	}()
	select {
	case <-h.done:
	case <-time.After(60 * time.Second):
	}
	cancel()
	must(<-finished, "the group consumed")
	must(group.Close(), "the group closed (committing its offsets)")
	h.mu.Lock()
	values := map[string]bool{}
	offsets := map[int32]int64{}
	for _, m := range h.got {
		values[string(m.Value)] = true
		check(string(m.Value) == "value-"+string(m.Headers[0].Value), "value and header agree")
		check(partitionOf[string(m.Key)] == m.Partition, "a key is read from its partition")
		if last, seen := offsets[m.Partition]; seen {
			check(m.Offset > last, "offsets rise within a partition")
		}
		offsets[m.Partition] = m.Offset
	}
	check(len(h.got) == 300 && len(values) == 300, "the group read the 300 records once (%d)", len(h.got))
	h.mu.Unlock()

	client, err := sarama.NewClient(brokers, config(sarama.V2_1_0_0))
	must(err, "a client connects")
	manager, err := sarama.NewOffsetManagerFromClient("gog", client)
	must(err, "the offset manager")
	var committed []int64
	for p := int32(0); p < 3; p++ {
		pom, err := manager.ManagePartition("go", p)
		must(err, "OffsetFetch for a partition")
		next, _ := pom.NextOffset()
		newest, err := client.GetOffset("go", p, sarama.OffsetNewest)
		must(err, "ListOffsets newest")
		check(next == newest, "partition %d committed at its end (%d, %d)", p, next, newest)
		committed = append(committed, next)
		pom.Close()
	}
	manager.Close()
	sort.Slice(committed, func(i, j int) bool { return committed[i] < committed[j] })
	fmt.Printf("committed %v\n", committed)
	client.Close()
}

// oldVersions: a client pinned at Kafka 1.0's versions (Produce v5, Fetch v6 and
// their peers) produces gzip batches and reads them back by partition.
func oldVersions() {
	brokers := []string{os.Getenv("WEIR_KAFKA")}
	c := config(sarama.V1_0_0_0)
	c.Producer.Compression = sarama.CompressionGZIP
	producer, err := sarama.NewSyncProducer(brokers, c)
	must(err, "a producer at 1.0's versions connects")
	var msgs []*sarama.ProducerMessage
	for i := 0; i < 50; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: "old", Value: sarama.StringEncoder(strconv.Itoa(i))})
	}
	must(producer.SendMessages(msgs), "50 records delivered (topic made on first use)")
	producer.Close()
	consumer, err := sarama.NewConsumer(brokers, config(sarama.V1_0_0_0))
	must(err, "a consumer connects")
	pc, err := consumer.ConsumePartition("old", 0, sarama.OffsetOldest)
	must(err, "ConsumePartition from the oldest")
	var got []string
	timeout := time.After(30 * time.Second)
	for len(got) < 50 {
		select {
		case m := <-pc.Messages():
			got = append(got, string(m.Value))
		case <-timeout:
			check(false, "50 records read in time (%d)", len(got))
		}
	}
	check(got[0] == "0" && got[49] == "49", "read back in order")
	pc.Close()
	consumer.Close()
}

func main() {
	switch os.Args[1] {
	case "round_trip":
		roundTrip()
	case "old_versions":
		oldVersions()
	default:
		check(false, "a known scenario: %s", os.Args[1])
	}
}
