// End-to-end latency under a fixed load, measured with the Apache Kafka Java client.
//
// A producer sends records of --record-size bytes at --rate records/s to every partition of
// --topic (which must exist), each record carrying its *intended* send time (System.nanoTime):
// a record sent late because the producer was blocked still counts its wait, so a stalled
// broker cannot hide behind a slowed producer (no coordinated omission). A consumer in the same
// JVM, assigned to every partition from the end, receives them and records
// receive time - intended send time in an HdrHistogram, in microseconds. Records of the first
// --warmup-s seconds are not counted, and the measured schedule starts once the consumer has
// caught up with them. At the end it checks every record arrived exactly once
// and prints one line to stdout:
//
//   RESULT sent=N received=N ... p50_ms=.. p99_ms=.. p999_ms=.. max_ms=.. mean_ms=..
//          send_lag_p99_ms=.. ack_p50_ms=.. ack_p99_ms=.. ack_p999_ms=..
//
// send_lag is how late the producer thread sent records (the client itself stalled), ack the
// time from send to the broker's acknowledgement. --timeline true prints, per second, the
// worst of each to stderr, to tell broker stalls from client stalls.
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
        boolean timeline = Boolean.parseBoolean(opts.getOrDefault("timeline", "false"));
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
        // Where a slow record lost its time: before the producer sent it (the client was
        // stalled: send lag), or between send and the broker's acknowledgement (ack latency).
        Histogram sendLag = new Histogram(60_000_000L, 3);
        Histogram ackLatency = new Histogram(60_000_000L, 3);
        int seconds = (int) Math.ceil(warmupS + durationS) + 1;
        long[] maxE2ePerSecond = new long[seconds];
        long[] maxLagPerSecond = new long[seconds];
        long[] maxAckPerSecond = new long[seconds];
        AtomicLong received = new AtomicLong();
        AtomicLong receivedCounted = new AtomicLong();
        AtomicLong duplicates = new AtomicLong();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        long warmupCount = (long) (rate * warmupS);
        long total = warmupCount + (long) (rate * durationS);
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
                            long e2eUs = Math.max(0, (now - intended) / 1000);
                            if (seq >= warmupCount) {
                                histogram.recordValue(e2eUs);
                                receivedCounted.incrementAndGet();
                            }
                            int second = Math.min(seconds - 1, seq / rate);
                            maxE2ePerSecond[second] = Math.max(maxE2ePerSecond[second], e2eUs);
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
            long start = System.nanoTime();
            long phaseStart = start;
            long phaseFirst = 0;
            for (long i = 0; i < total && failure.get() == null; i++) {
                if (i == warmupCount && i > 0) {
                    // A cold client (JIT) falls behind during the warm-up; let the consumer catch
                    // up and restart the schedule, so that backlog does not spill into the
                    // measured window.
                    producer.flush();
                    long deadline = System.nanoTime() + drainMs * 1_000_000L;
                    while (received.get() < warmupCount && failure.get() == null
                        && System.nanoTime() < deadline) {
                        Thread.sleep(1);
                    }
                    phaseStart = System.nanoTime();
                    phaseFirst = i;
                }
                long intended = phaseStart + (i - phaseFirst) * periodNs;
                long wait = intended - System.nanoTime();
                while (wait > 0) {
                    LockSupport.parkNanos(wait);
                    wait = intended - System.nanoTime();
                }
                byte[] value = filler.clone();
                ByteBuffer.wrap(value).putLong(0, intended).putLong(8, i);
                long sentAt = System.nanoTime();
                long lagUs = Math.max(0, (sentAt - intended) / 1000);
                int second = (int) Math.min(seconds - 1, i / rate);
                boolean counted = i >= warmupCount;
                if (counted) {
                    sendLag.recordValue(lagUs);
                }
                maxLagPerSecond[second] = Math.max(maxLagPerSecond[second], lagUs);
                producer.send(new ProducerRecord<>(topic, value), (md, e) -> {
                    if (e != null) {
                        failure.compareAndSet(null, e);
                        return;
                    }
                    long ackUs = Math.max(0, (System.nanoTime() - sentAt) / 1000);
                    // Callbacks run on the producer's I/O thread, one at a time.
                    if (counted) {
                        ackLatency.recordValue(ackUs);
                    }
                    maxAckPerSecond[second] = Math.max(maxAckPerSecond[second], ackUs);
                });
                sent++;
            }
            // Rate of the measured phase: the schedule's, unless the client fell behind.
            double achievedRate = (sent - phaseFirst) / Math.max(1e-9, (System.nanoTime() - phaseStart) / 1e9);
            producer.flush();
            consumerThread.join(drainMs + 5_000);
            if (consumerThread.isAlive()) {
                consumer.wakeup();
                consumerThread.join();
            }
            if (timeline) {
                System.err.println("second  max_e2e_ms  max_send_lag_ms  max_ack_ms");
                for (int sec = 0; sec < seconds; sec++) {
                    System.err.printf("%6d  %10.1f  %15.1f  %10.1f%n", sec, maxE2ePerSecond[sec] / 1000.0,
                        maxLagPerSecond[sec] / 1000.0, maxAckPerSecond[sec] / 1000.0);
                }
            }
            if (failure.get() != null) {
                System.err.println("E2eLatency: " + failure.get());
            }
            System.out.printf(
                "RESULT sent=%d received=%d counted=%d duplicates=%d achieved_rate=%.0f "
                    + "p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f mean_ms=%.3f "
                    + "send_lag_p99_ms=%.3f ack_p50_ms=%.3f ack_p99_ms=%.3f ack_p999_ms=%.3f%n",
                sent, received.get(), receivedCounted.get(), duplicates.get(), achievedRate,
                histogram.getValueAtPercentile(50) / 1000.0,
                histogram.getValueAtPercentile(99) / 1000.0,
                histogram.getValueAtPercentile(99.9) / 1000.0,
                histogram.getMaxValue() / 1000.0,
                histogram.getMean() / 1000.0,
                sendLag.getValueAtPercentile(99) / 1000.0,
                ackLatency.getValueAtPercentile(50) / 1000.0,
                ackLatency.getValueAtPercentile(99) / 1000.0,
                ackLatency.getValueAtPercentile(99.9) / 1000.0);
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
            + " [--rate 5000] [--duration-s 20] [--warmup-s 5] [--drain-ms 30000] [--timeline false]"
            + " [--producer-prop K=V]...");
        System.exit(2);
    }
}
