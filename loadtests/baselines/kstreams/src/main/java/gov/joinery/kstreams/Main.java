package gov.joinery.kstreams;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.InvalidStateStoreException;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams baseline: runs the opportunity topology over
 * the six department topics {@code <ns>joinery.events.<department>} until
 * it has handled the expected number of input records, waits until their
 * offsets are committed (exactly-once: the state and the views are then
 * committed too), and prints one JSON line with the rate and the outcome
 * counts.
 */
public final class Main {
    static final class Options {
        String brokers = "127.0.0.1:9092";
        String registry = "http://127.0.0.1:8081";
        String namespace = "";
        long expectEvents = -1;
        String stateDir;
        int threads = 2;
        String applicationId;
        long allowedLatenessDays = 7;
        long timeoutSeconds = 1800;
        String guarantee = StreamsConfig.EXACTLY_ONCE_V2;
    }

    static final String USAGE = "usage: kstreams --brokers HOST:PORT --registry URL --namespace NS --expect-events N"
            + " --state-dir DIR [--threads 2] [--application-id ID (default NS + \"kstreams\")]"
            + " [--allowed-lateness-days 7] [--timeout-s 1800]"
            + " [--processing-guarantee exactly_once_v2 (for comparison only: at_least_once)]";

    static Options parse(String[] args) {
        Options o = new Options();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-h") || a.equals("--help")) {
                System.err.println(USAGE);
                System.exit(0);
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException(a + " needs a value\n" + USAGE);
            }
            String v = args[++i];
            switch (a) {
                case "--brokers": o.brokers = v; break;
                case "--registry": o.registry = v; break;
                case "--namespace": o.namespace = v; break;
                case "--expect-events": o.expectEvents = Long.parseLong(v); break;
                case "--state-dir": o.stateDir = v; break;
                case "--threads": o.threads = Integer.parseInt(v); break;
                case "--application-id": o.applicationId = v; break;
                case "--allowed-lateness-days": o.allowedLatenessDays = Long.parseLong(v); break;
                case "--timeout-s": o.timeoutSeconds = Long.parseLong(v); break;
                case "--processing-guarantee": o.guarantee = v; break;
                default: throw new IllegalArgumentException("unknown option " + a + "\n" + USAGE);
            }
        }
        if (o.expectEvents <= 0 || o.stateDir == null) {
            throw new IllegalArgumentException("--expect-events (> 0) and --state-dir are required\n" + USAGE);
        }
        if (o.applicationId == null) {
            o.applicationId = o.namespace + "kstreams";
        }
        return o;
    }

    /** The result of one run. */
    public static final class Result {
        public long events;
        public double seconds;
        public long cohort;
        public long achieved;
        public long notAchieved;
        public long pending;
        public long duplicates;
        public long deadLetters;
        public long views;
        public long timersFired;
        public double commitWaitSeconds;
        public double peakRssMib;
        public Map<String, Byte> statuses;

        String toJson() {
            return String.format(java.util.Locale.ROOT,
                    "{\"events\":%d,\"seconds\":%.3f,\"events_per_s\":%.0f,\"cohort\":%d,\"achieved\":%d,"
                            + "\"not_achieved\":%d,\"pending\":%d,\"duplicates\":%d,\"dead_letters\":%d,"
                            + "\"views\":%d,\"timers_fired\":%d,\"commit_wait_seconds\":%.3f,\"peak_rss_mib\":%.0f}",
                    events, seconds, events / Math.max(seconds, 1e-9), cohort, achieved, notAchieved, pending,
                    duplicates, deadLetters, views, timersFired, commitWaitSeconds, peakRssMib);
        }
    }

    /** Warnings to stderr; stdout carries only the result line. */
    static void quietLogging() {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel",
                System.getProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn"));
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        // A start-up notice about global stores, which this topology has none of.
        System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.streams.StreamsConfig", "error");
    }

    public static void main(String[] args) throws Exception {
        quietLogging();
        Options o;
        try {
            o = parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("kstreams: " + e.getMessage());
            System.exit(2);
            return;
        }
        try {
            Result r = run(o, false);
            System.out.println(r.toJson());
            System.out.flush();
            System.exit(0);
        } catch (IllegalStateException e) {
            System.err.println("kstreams: " + e.getMessage());
            System.exit(1);
        } catch (Exception e) {
            System.err.println("kstreams: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    static String topic(Options o, String name) {
        return o.namespace + name;
    }

    /** The six department topics. */
    static List<String> inputTopics(Options o) {
        return EventType.DEPARTMENTS.stream().map(d -> topic(o, "joinery.events." + d)).toList();
    }

    static Topology topology(Options o, Registry registry, Stats stats) {
        String[] departments = inputTopics(o).toArray(new String[0]);
        String prefix = topic(o, "joinery.events.");
        long lateness = o.allowedLatenessDays * Opportunity.DAY_MS;
        Topology t = new Topology();
        t.addSource("departments", Serdes.String().deserializer(), Serdes.ByteArray().deserializer(), departments);
        t.addProcessor("opportunity",
                () -> new OpportunityProcessor(new Decoder(registry, prefix), stats, lateness), "departments");
        t.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(OpportunityProcessor.CITIZENS),
                Serdes.String(), Serdes.ByteArray()), "opportunity");
        t.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(OpportunityProcessor.TIMERS),
                Serdes.Bytes(), Serdes.ByteArray()), "opportunity");
        t.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(OpportunityProcessor.WATERMARK),
                Serdes.String(), Serdes.Long()), "opportunity");
        t.addSink("views", topic(o, "kstreams.opportunity"), Serdes.String().serializer(),
                Serdes.String().serializer(), "opportunity");
        return t;
    }

    /** Waits for the input topics, then creates the output topic like them (compacted). */
    static void prepareTopics(Admin admin, Options o, long deadline) throws Exception {
        List<String> inputs = inputTopics(o);
        Map<String, TopicDescription> described;
        while (true) {
            try {
                described = admin.describeTopics(inputs).allTopicNames().get(30, TimeUnit.SECONDS);
                break;
            } catch (java.util.concurrent.ExecutionException e) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("input topics " + inputs + " not found: " + e.getCause());
                }
                Thread.sleep(500);
            }
        }
        int partitions = described.get(inputs.get(0)).partitions().size();
        for (String t : inputs) {
            int other = described.get(t).partitions().size();
            if (partitions != other) {
                throw new IllegalStateException("the department topics are not co-partitioned: " + partitions
                        + " and " + other + " (" + t + ") partitions");
            }
        }
        NewTopic out = new NewTopic(topic(o, "kstreams.opportunity"), Optional.of(partitions), Optional.empty())
                .configs(Map.of("cleanup.policy", "compact"));
        try {
            admin.createTopics(List.of(out)).all().get(30, TimeUnit.SECONDS);
        } catch (java.util.concurrent.ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw e;
            }
        }
    }

    static Properties streamsConfig(Options o) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, o.applicationId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, o.brokers);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, o.guarantee);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, o.threads);
        p.put(StreamsConfig.STATE_DIR_CONFIG, o.stateDir);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        return p;
    }

    static Result run(Options o, boolean keepStatuses) throws Exception {
        long started = System.nanoTime();
        long deadline = started + TimeUnit.SECONDS.toNanos(o.timeoutSeconds);
        Files.createDirectories(Path.of(o.stateDir));
        Properties adminProps = new Properties();
        adminProps.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, o.brokers);
        Stats stats = new Stats(o.expectEvents);
        Registry registry = new Registry(o.registry);
        try (Admin admin = Admin.create(adminProps)) {
            prepareTopics(admin, o, deadline);
            if (!admin.listConsumerGroupOffsets(o.applicationId).partitionsToOffsetAndMetadata()
                    .get(30, TimeUnit.SECONDS).isEmpty()) {
                throw new IllegalStateException("application id " + o.applicationId + " has committed offsets"
                        + " from an earlier run, so it would not see the records again: pass a fresh"
                        + " --application-id (and --state-dir)");
            }
            AtomicReference<Throwable> failure = new AtomicReference<>();
            KafkaStreams streams = new KafkaStreams(topology(o, registry, stats), streamsConfig(o));
            streams.setUncaughtExceptionHandler(e -> {
                failure.compareAndSet(null, e);
                return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            try {
                streams.start();
                // 1. Until the expected records are handled.
                while (stats.processed.get() < o.expectEvents) {
                    check(failure, streams, deadline, "handled " + stats.processed.get() + " of "
                            + o.expectEvents + " records");
                    Thread.sleep(20);
                }
                long lastNanos = stats.lastNanos.get();
                // 2. Until their offsets are committed (with them, the state and the views).
                long commitStart = System.nanoTime();
                waitForCommit(admin, o, stats, failure, streams, deadline);
                double commitWait = (System.nanoTime() - commitStart) / 1e9;
                // 3. The outcome counts, from the state stores.
                Result r = tally(streams, failure, deadline, keepStatuses);
                r.events = stats.processed.get();
                r.seconds = (lastNanos - stats.firstNanos.get()) / 1e9;
                r.duplicates = stats.duplicates.get();
                r.deadLetters = stats.deadLetters.get();
                r.views = stats.views.get();
                r.timersFired = stats.timersFired.get();
                r.commitWaitSeconds = commitWait;
                r.peakRssMib = peakRssMib();
                if (r.events != o.expectEvents) {
                    System.err.println("kstreams: warning: handled " + r.events + " records, expected "
                            + o.expectEvents + " (the topics hold more, or records were reprocessed)");
                }
                return r;
            } finally {
                streams.close(Duration.ofSeconds(60));
            }
        }
    }

    private static void check(AtomicReference<Throwable> failure, KafkaStreams streams, long deadline, String what) {
        Throwable f = failure.get();
        if (f != null) {
            throw new IllegalStateException("stream thread failed: " + f, f);
        }
        KafkaStreams.State s = streams.state();
        if (s == KafkaStreams.State.ERROR || s == KafkaStreams.State.NOT_RUNNING
                || s == KafkaStreams.State.PENDING_SHUTDOWN || s == KafkaStreams.State.PENDING_ERROR) {
            throw new IllegalStateException("Kafka Streams stopped (" + s + "); " + what);
        }
        if (System.nanoTime() > deadline) {
            throw new IllegalStateException("timed out: " + what);
        }
    }

    private static void waitForCommit(Admin admin, Options o, Stats stats, AtomicReference<Throwable> failure,
                                      KafkaStreams streams, long deadline) throws Exception {
        Map<TopicPartition, Long> need = new HashMap<>(stats.lastOffsets);
        while (true) {
            check(failure, streams, deadline, "waiting for the final commit");
            Map<TopicPartition, OffsetAndMetadata> committed = admin
                    .listConsumerGroupOffsets(o.applicationId).partitionsToOffsetAndMetadata()
                    .get(30, TimeUnit.SECONDS);
            boolean done = true;
            for (Map.Entry<TopicPartition, Long> e : need.entrySet()) {
                OffsetAndMetadata c = committed.get(e.getKey());
                if (c == null || c.offset() <= e.getValue()) {
                    done = false;
                    break;
                }
            }
            if (done) {
                return;
            }
            Thread.sleep(20);
        }
    }

    private static Result tally(KafkaStreams streams, AtomicReference<Throwable> failure, long deadline,
                                boolean keepStatuses) throws Exception {
        while (true) {
            check(failure, streams, deadline, "querying the state stores");
            try {
                ReadOnlyKeyValueStore<String, byte[]> store = streams.store(StoreQueryParameters.fromNameAndType(
                        OpportunityProcessor.CITIZENS, QueryableStoreTypes.keyValueStore()));
                Result r = new Result();
                Map<String, Byte> statuses = keepStatuses ? new HashMap<>() : null;
                try (KeyValueIterator<String, byte[]> it = store.all()) {
                    while (it.hasNext()) {
                        KeyValue<String, byte[]> kv = it.next();
                        byte s = CitizenRecord.statusOf(kv.value);
                        if (statuses != null) {
                            statuses.put(kv.key, s);
                        }
                        switch (s) {
                            case Opportunity.PENDING: r.cohort++; r.pending++; break;
                            case Opportunity.ACHIEVED: r.cohort++; r.achieved++; break;
                            case Opportunity.NOT_ACHIEVED: r.cohort++; r.notAchieved++; break;
                            default: break;
                        }
                    }
                }
                r.statuses = statuses;
                return r;
            } catch (InvalidStateStoreException e) {
                Thread.sleep(100); // rebalancing: try again
            }
        }
    }

    static double peakRssMib() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Double.parseDouble(line.split("\\s+")[1]) / 1024.0;
                }
            }
        } catch (Exception e) {
            // not Linux: no figure
        }
        return 0;
    }
}
