package gov.joinery.kstreams;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Joinery's processor loop for one stream task (one partition number of
 * both department topics), with Kafka Streams' RocksDB stores in place of
 * Joinery's own:
 *
 * <ol>
 *   <li>decode the record (a bad one is counted as a dead letter);</li>
 *   <li>apply the event to its citizen (a duplicate event_id changes nothing);</li>
 *   <li>advance the task's watermark (greatest occurred_at seen minus the
 *       allowed lateness) and fire the timers it passed;</li>
 *   <li>evaluate the changed citizens at the watermark, set each one's next
 *       timer, and forward each changed view to the output topic.</li>
 * </ol>
 *
 * Joinery does steps 2-4 per batch of up to 1000 records; this does them per
 * record. Deadlines resolve on event time only: the timers store is keyed by
 * (deadline, citizen) and scanned over (previous watermark, watermark].
 */
public final class OpportunityProcessor implements Processor<String, byte[], String, String> {
    public static final String CITIZENS = "opportunity-citizens";
    public static final String TIMERS = "opportunity-timers";
    public static final String WATERMARK = "opportunity-watermark";
    private static final String MAX_TIME = "max_time";

    private final Decoder decoder;
    private final Stats stats;
    private final long allowedLateness;

    private ProcessorContext<String, String> context;
    private KeyValueStore<String, byte[]> citizens;
    private KeyValueStore<Bytes, byte[]> timers;
    private KeyValueStore<String, Long> watermarkStore;
    /** Greatest occurred_at seen in this task (Long.MIN_VALUE: none). */
    private long maxTime;
    /** Timers at or before this have fired: the watermark they were fired at. */
    private long firedUpTo;
    /** A lower bound of every timer in the store (Long.MIN_VALUE: unknown, so scan). */
    private long timersLowerBound = Long.MIN_VALUE;

    public OpportunityProcessor(Decoder decoder, Stats stats, long allowedLateness) {
        this.decoder = decoder;
        this.stats = stats;
        this.allowedLateness = allowedLateness;
    }

    @Override
    public void init(ProcessorContext<String, String> context) {
        this.context = context;
        this.citizens = context.getStateStore(CITIZENS);
        this.timers = context.getStateStore(TIMERS);
        this.watermarkStore = context.getStateStore(WATERMARK);
        Long stored = watermarkStore.get(MAX_TIME);
        this.maxTime = stored == null ? Long.MIN_VALUE : stored;
        this.firedUpTo = watermark(maxTime);
        this.timersLowerBound = Long.MIN_VALUE;
    }

    private long watermark(long max) {
        long wm = max - allowedLateness;
        return wm > max ? Long.MIN_VALUE : wm; // saturating, as Joinery's saturating_sub
    }

    @Override
    public void process(Record<String, byte[]> record) {
        RecordMetadata meta = context.recordMetadata().orElseThrow();
        Event event;
        try {
            event = decoder.decode(meta.topic(), record.value());
        } catch (Decoder.Invalid e) {
            stats.deadLetters.incrementAndGet();
            if (stats.deadLetters.get() <= 10) {
                System.err.println("kstreams: dead letter " + meta.topic() + "/" + meta.partition() + "@"
                        + meta.offset() + ": " + e.getMessage());
            }
            stats.recordProcessed(meta.topic(), meta.partition(), meta.offset());
            return;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while fetching a schema", e);
        }

        // Changed citizens of this record, loaded once.
        Map<String, CitizenRecord> dirty = new LinkedHashMap<>(4);
        CitizenRecord rec = load(event.citizenKey, dirty);
        if (rec.insert(event)) {
            dirty.put(event.citizenKey, rec);
        } else {
            stats.duplicates.incrementAndGet();
            dirty.remove(event.citizenKey);
        }

        if (event.occurredAt > maxTime) {
            maxTime = event.occurredAt;
            watermarkStore.put(MAX_TIME, maxTime);
        }
        long wm = watermark(maxTime);
        if (wm > firedUpTo) {
            if (timersLowerBound <= wm) {
                fireTimers(firedUpTo, wm, dirty);
            }
            firedUpTo = wm;
        }

        for (Map.Entry<String, CitizenRecord> d : dirty.entrySet()) {
            evaluate(d.getKey(), d.getValue(), wm, record.timestamp());
        }
        stats.recordProcessed(meta.topic(), meta.partition(), meta.offset());
    }

    private CitizenRecord load(String citizen, Map<String, CitizenRecord> loaded) {
        CitizenRecord r = loaded.get(citizen);
        if (r != null) {
            return r;
        }
        byte[] bytes = citizens.get(citizen);
        r = bytes == null ? new CitizenRecord() : CitizenRecord.decode(citizen, bytes);
        loaded.put(citizen, r);
        return r;
    }

    /** Fires the timers in (from, to]: their citizens are re-evaluated at the watermark. */
    private void fireTimers(long from, long to, Map<String, CitizenRecord> dirty) {
        List<Bytes> due = new ArrayList<>();
        long next = Long.MAX_VALUE;
        try (KeyValueIterator<Bytes, byte[]> it = timers.range(timerPrefix(from + 1), null)) {
            while (it.hasNext()) {
                KeyValue<Bytes, byte[]> kv = it.next();
                long deadline = deadlineOf(kv.key);
                if (deadline > to) {
                    next = deadline;
                    break;
                }
                due.add(kv.key);
            }
        }
        timersLowerBound = next;
        for (Bytes k : due) {
            timers.delete(k);
            String citizen = citizenOf(k);
            CitizenRecord r = load(citizen, dirty);
            r.timer = Opportunity.NO_DEADLINE;
            dirty.put(citizen, r);
            stats.timersFired.incrementAndGet();
        }
    }

    private void evaluate(String citizen, CitizenRecord r, long wm, long timestamp) {
        Opportunity.Evaluation eval = Opportunity.evaluate(r.events, wm);
        String signature = eval.signature();
        boolean visibleChange = r.viewSignature == null ? eval.inCohort() : !r.viewSignature.equals(signature);
        if (visibleChange) {
            r.viewSignature = signature;
            context.forward(new Record<>(citizen, eval.toJson(citizen, wm), timestamp));
            stats.views.incrementAndGet();
        }
        r.status = eval.status;
        if (r.timer != eval.nextDeadline) {
            if (r.timer != Opportunity.NO_DEADLINE) {
                timers.delete(timerKey(r.timer, citizen));
            }
            if (eval.nextDeadline != Opportunity.NO_DEADLINE) {
                timers.put(timerKey(eval.nextDeadline, citizen), new byte[0]);
                timersLowerBound = Math.min(timersLowerBound, eval.nextDeadline);
            }
            r.timer = eval.nextDeadline;
        }
        citizens.put(citizen, r.encode());
    }

    /** Deadlines sort as unsigned big-endian bytes: flip the sign bit. */
    static Bytes timerPrefix(long deadline) {
        return Bytes.wrap(ByteBuffer.allocate(8).putLong(deadline ^ Long.MIN_VALUE).array());
    }

    static Bytes timerKey(long deadline, String citizen) {
        byte[] c = citizen.getBytes(StandardCharsets.UTF_8);
        return Bytes.wrap(ByteBuffer.allocate(8 + c.length).putLong(deadline ^ Long.MIN_VALUE).put(c).array());
    }

    static long deadlineOf(Bytes key) {
        return ByteBuffer.wrap(key.get(), 0, 8).getLong() ^ Long.MIN_VALUE;
    }

    static String citizenOf(Bytes key) {
        byte[] k = key.get();
        return new String(k, 8, k.length - 8, StandardCharsets.UTF_8);
    }
}
