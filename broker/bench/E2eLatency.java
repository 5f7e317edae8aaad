// End-to-end latency under a fixed load, measured with the Apache Kafka Java client.
//
// A producer sends records of --record-size bytes at --rate records/s to every partition of
// --topic (which must exist), each record carrying its *intended* send time (System.nanoTime):
// a record sent late because the producer was blocked still counts its wait, so a stalled
// broker cannot hide behind a slowed producer (no coordinated omission). A consumer in the same
// JVM, assigned to every partition from the end, receives them and records
// receive time - intended send time in an HdrHistogram, in microseconds. Records of the first
// --warmup-s seconds are not counted. At the end it checks every record arrived exactly once
// and prints one line to stdout:
//
//   RESULT sent=N received=N rate=R p50_ms=.. p99_ms=.. p999_ms=.. max_ms=.. mean_ms=..
//
// Exit status 1 when records are missing or duplicated, or a send fails.
//
// Run: java -cp "<kafka libs>/*" E2eLatency.java --bootstrap H:P --topic T --acks 1 ...

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;

import org.HdrHistogram.Histogram;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class E2eLatency {
    public static void main(String[] args) throws Exception {
        Map<String, String> opts = new HashMap<>();
        List<String> producerProps = new ArrayList<>();
        for (int i = 0; i < args.length; i += 2) {
            if (i + 1 >= args.length || !args[i].startsWith("--")) {
                usage("bad argument " + args[i]);
            }
            if (args[i].equals("--producer-prop")) {
                producerProps.add(args[i + 1]);
            } else {
                opts.put(args[i].substring(2), args[i + 1]);
            }
        }
        String bootstrap = required(opts, "bootstrap");
        String topic = required(opts, "topic");
        String acks = opts.getOrDefault("acks", "1");
        int recordSize = Integer.parseInt(opts.getOrDefault("record-size", "1024"));
        int rate = Integer.parseInt(opts.getOrDefault("rate", "5000"));
        double durationS = Double.parseDouble(opts.getOrDefault("duration-s", "20"));
        double warmupS = Double.parseDouble(opts.getOrDefault("warmup-s", "5"));
        long drainMs = Long.parseLong(opts.getOrDefault("drain-ms", "30000"));
        if (recordSize < 16 || rate < 1) {
            usage("record-size must be >= 16 and rate >= 1");
        }

        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, acks);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        for (String kv : producerProps) {
            int eq = kv.indexOf('=');
            if (eq < 1) {
                usage("--producer-prop needs KEY=VALUE: " + kv);
            }
            pp.put(kv.substring(0, eq), kv.substring(eq + 1));
        }

        Histogram histogram = new Histogram(60_000_000L, 3);
        AtomicLong received = new AtomicLong();
        AtomicLong receivedCounted = new AtomicLong();
        AtomicLong duplicates = new AtomicLong();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        long start = System.nanoTime();
        long warmupEndNs = start + (long) (warmupS * 1e9);
        long total = (long) (rate * (warmupS + durationS));
        boolean[] seen = new boolean[(int) total];

        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp);
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            List<TopicPartition> partitions = new ArrayList<>();
            for (PartitionInfo p : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
                partitions.add(new TopicPartition(p.topic(), p.partition()));
            }
            consumer.assign(partitions);
            consumer.seekToEnd(partitions);
            for (TopicPartition tp : partitions) {
                consumer.position(tp, Duration.ofSeconds(30));
            }
            // Connect and fetch metadata before the clock starts.
            producer.partitionsFor(topic);

            Thread consumerThread = new Thread(() -> {
                try {
                    long lastProgress = System.nanoTime();
                    while (received.get() < total) {
                        var records = consumer.poll(Duration.ofMillis(100));
                        long now = System.nanoTime();
                        if (!records.isEmpty()) {
                            lastProgress = now;
                        } else if (now - lastProgress > drainMs * 1_000_000L) {
                            return;
                        }
                        for (ConsumerRecord<byte[], byte[]> r : records) {
                            ByteBuffer v = ByteBuffer.wrap(r.value());
                            long intended = v.getLong(0);
                            int seq = (int) v.getLong(8);
                            if (seq < 0 || seq >= total || seen[seq]) {
                                duplicates.incrementAndGet();
                                continue;
                            }
                            seen[seq] = true;
                            received.incrementAndGet();
                            if (intended >= warmupEndNs) {
                                histogram.recordValue(Math.max(0, (now - intended) / 1000));
                                receivedCounted.incrementAndGet();
                            }
                        }
                    }
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                }
            }, "e2e-consumer");
            consumerThread.start();

            byte[] filler = new byte[recordSize];
            for (int i = 0; i < filler.length; i++) {
                filler[i] = (byte) ('a' + i % 26);
            }
            long periodNs = 1_000_000_000L / rate;
            long sent = 0;
            for (long i = 0; i < total && failure.get() == null; i++) {
                long intended = start + i * periodNs;
                long wait = intended - System.nanoTime();
                while (wait > 0) {
                    LockSupport.parkNanos(wait);
                    wait = intended - System.nanoTime();
                }
                byte[] value = filler.clone();
                ByteBuffer.wrap(value).putLong(0, intended).putLong(8, i);
                producer.send(new ProducerRecord<>(topic, value), (md, e) -> {
                    if (e != null) {
                        failure.compareAndSet(null, e);
                    }
                });
                sent++;
            }
            producer.flush();
            consumerThread.join(drainMs + 5_000);
            if (consumerThread.isAlive()) {
                consumer.wakeup();
                consumerThread.join();
            }
            double elapsedS = (System.nanoTime() - start) / 1e9;
            if (failure.get() != null) {
                System.err.println("E2eLatency: " + failure.get());
            }
            System.out.printf(
                "RESULT sent=%d received=%d counted=%d duplicates=%d achieved_rate=%.0f "
                    + "p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f mean_ms=%.3f%n",
                sent, received.get(), receivedCounted.get(), duplicates.get(), sent / elapsedS,
                histogram.getValueAtPercentile(50) / 1000.0,
                histogram.getValueAtPercentile(99) / 1000.0,
                histogram.getValueAtPercentile(99.9) / 1000.0,
                histogram.getMaxValue() / 1000.0,
                histogram.getMean() / 1000.0);
            boolean ok = failure.get() == null && received.get() == sent && duplicates.get() == 0;
            System.exit(ok ? 0 : 1);
        }
    }

    private static String required(Map<String, String> opts, String key) {
        String v = opts.get(key);
        if (v == null) {
            usage("--" + key + " is required");
        }
        return v;
    }

    private static void usage(String why) {
        System.err.println("E2eLatency: " + why);
        System.err.println("usage: E2eLatency --bootstrap H:P --topic T [--acks 1|all] [--record-size 1024]"
            + " [--rate 5000] [--duration-s 20] [--warmup-s 5] [--drain-ms 30000] [--producer-prop K=V]...");
        System.exit(2);
    }
}
