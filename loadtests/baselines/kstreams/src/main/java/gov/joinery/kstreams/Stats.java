package gov.joinery.kstreams;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.TopicPartition;

/** Counters shared by the stream threads and the main thread that reports. */
public final class Stats {
    /** Input records handled: applied, duplicate or dead letter (as the bench counts Joinery's). */
    public final AtomicLong processed = new AtomicLong();
    public final AtomicLong duplicates = new AtomicLong();
    public final AtomicLong deadLetters = new AtomicLong();
    public final AtomicLong views = new AtomicLong();
    public final AtomicLong timersFired = new AtomicLong();
    public final AtomicLong firstNanos = new AtomicLong(Long.MIN_VALUE);
    public final AtomicLong lastNanos = new AtomicLong(Long.MIN_VALUE);
    /** The record count at which lastNanos is taken (the run's expected events). */
    public final long expect;
    /** Highest offset processed per input partition, to know when it is committed. */
    public final ConcurrentHashMap<TopicPartition, Long> lastOffsets = new ConcurrentHashMap<>();

    public Stats(long expect) {
        this.expect = expect;
    }

    void recordProcessed(String topic, int partition, long offset) {
        long now = System.nanoTime();
        firstNanos.compareAndSet(Long.MIN_VALUE, now);
        lastOffsets.merge(new TopicPartition(topic, partition), offset, Math::max);
        if (processed.incrementAndGet() == expect) {
            lastNanos.set(now);
        }
    }
}
