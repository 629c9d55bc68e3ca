package gov.joinery.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Compares, citizen by citizen, the last opportunity view Joinery's
 * processor published ({@code <ns>joinery.views.opportunity}, Avro
 * MissionView, newest version per citizen) with the last one this baseline
 * published ({@code <ns>kstreams.opportunity}, JSON): in_cohort, area_code,
 * cohort_month and the outcome's status, anchor_at, decided_at and
 * duration_days. Prints one JSON line with the counts on each side and the
 * number of citizens that differ; the first differences go to stderr.
 *
 * <pre>compare --brokers HOST:PORT --registry URL --namespace NS</pre>
 */
public final class Compare {
    static String viewKey(boolean inCohort, String area, String month, String status, Long anchor, Long decided,
                          Long duration) {
        if (!inCohort) {
            return "outside";
        }
        return String.join("|", area, month, status, String.valueOf(anchor), String.valueOf(decided),
                String.valueOf(duration));
    }

    static Map<String, List<byte[]>> readAll(String brokers, String topic) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 5000);
        Map<String, List<byte[]>> byKey = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo info : c.partitionsFor(topic, Duration.ofSeconds(30))) {
                tps.add(new TopicPartition(topic, info.partition()));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = c.endOffsets(tps);
            long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(10);
            while (tps.stream().anyMatch(tp -> c.position(tp) < ends.get(tp))) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("could not read " + topic + " to its end in 10 minutes");
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    byKey.computeIfAbsent(new String(r.key(), java.nio.charset.StandardCharsets.UTF_8),
                            k -> new ArrayList<>(2)).add(r.value());
                }
            }
        }
        return byKey;
    }

    static String str(Object o) {
        return o == null ? null : o.toString();
    }

    public static void main(String[] args) throws Exception {
        Main.quietLogging();
        String brokers = null;
        String registryUrl = null;
        String ns = "";
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--brokers": brokers = args[i + 1]; break;
                case "--registry": registryUrl = args[i + 1]; break;
                case "--namespace": ns = args[i + 1]; break;
                default: throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (brokers == null || registryUrl == null) {
            throw new IllegalArgumentException("usage: compare --brokers HOST:PORT --registry URL --namespace NS");
        }
        Registry registry = new Registry(registryUrl);

        // Joinery: the newest version per citizen.
        Map<String, String> joinery = new HashMap<>();
        Map<Integer, GenericDatumReader<GenericRecord>> readers = new HashMap<>();
        BinaryDecoder dec = null;
        for (Map.Entry<String, List<byte[]>> e : readAll(brokers, ns + "joinery.views.opportunity").entrySet()) {
            long best = Long.MIN_VALUE;
            String view = null;
            for (byte[] v : e.getValue()) {
                int id = ((v[1] & 0xff) << 24) | ((v[2] & 0xff) << 16) | ((v[3] & 0xff) << 8) | (v[4] & 0xff);
                GenericDatumReader<GenericRecord> reader = readers.get(id);
                if (reader == null) {
                    Schema s = registry.schema(id);
                    reader = new GenericDatumReader<>(s);
                    readers.put(id, reader);
                }
                dec = DecoderFactory.get().binaryDecoder(v, 5, v.length - 5, dec);
                GenericRecord r = reader.read(null, dec);
                long version = (Long) r.get("version");
                if (version <= best) {
                    continue;
                }
                best = version;
                boolean in = (Boolean) r.get("in_cohort");
                String status = null;
                Long anchor = null;
                Long decided = null;
                Long duration = null;
                for (Object o : (List<?>) r.get("outcomes")) {
                    GenericRecord out = (GenericRecord) o;
                    if (str(out.get("name")).equals(Opportunity.OUTCOME)) {
                        status = str(out.get("status")).toLowerCase(java.util.Locale.ROOT);
                        anchor = (Long) out.get("anchor_at");
                        decided = (Long) out.get("decided_at");
                        duration = (Long) out.get("duration_days");
                    }
                }
                view = viewKey(in, str(r.get("area_code")), str(r.get("cohort_month")), status, anchor, decided,
                        duration);
            }
            joinery.put(e.getKey(), view);
        }

        // This baseline: the last record per citizen.
        ObjectMapper json = new ObjectMapper();
        Map<String, String> kstreams = new HashMap<>();
        for (Map.Entry<String, List<byte[]>> e : readAll(brokers, ns + "kstreams.opportunity").entrySet()) {
            List<byte[]> vs = e.getValue();
            JsonNode v = json.readTree(vs.get(vs.size() - 1));
            boolean in = v.get("in_cohort").asBoolean();
            String view = "outside";
            if (in) {
                JsonNode o = v.get("outcomes").get(0);
                view = viewKey(true, v.get("area_code").isNull() ? null : v.get("area_code").asText(),
                        v.get("cohort_month").asText(), o.get("status").asText(), o.get("anchor_at").asLong(),
                        o.get("decided_at").isNull() ? null : o.get("decided_at").asLong(),
                        o.get("duration_days").isNull() ? null : o.get("duration_days").asLong());
            }
            kstreams.put(e.getKey(), view);
        }

        Set<String> all = new HashSet<>(joinery.keySet());
        all.addAll(kstreams.keySet());
        long differ = 0;
        long same = 0;
        for (String k : all) {
            String a = joinery.getOrDefault(k, "outside");
            String b = kstreams.getOrDefault(k, "outside");
            if (a.equals(b)) {
                same++;
            } else {
                differ++;
                if (differ <= 10) {
                    System.err.println("differs " + k + ": joinery " + a + " | kstreams " + b);
                }
            }
        }
        Map<String, Long> jc = tally(joinery);
        Map<String, Long> kc = tally(kstreams);
        System.out.printf("{\"citizens_with_views\":%d,\"same\":%d,\"differ\":%d,"
                        + "\"joinery\":{\"cohort\":%d,\"achieved\":%d,\"not_achieved\":%d,\"pending\":%d},"
                        + "\"kstreams\":{\"cohort\":%d,\"achieved\":%d,\"not_achieved\":%d,\"pending\":%d}}%n",
                all.size(), same, differ, jc.get("cohort"), jc.get("achieved"), jc.get("not_achieved"),
                jc.get("pending"), kc.get("cohort"), kc.get("achieved"), kc.get("not_achieved"), kc.get("pending"));
        System.exit(differ == 0 ? 0 : 1);
    }

    static Map<String, Long> tally(Map<String, String> views) {
        Map<String, Long> t = new HashMap<>(Map.of("cohort", 0L, "achieved", 0L, "not_achieved", 0L, "pending", 0L));
        for (String v : views.values()) {
            if (v.equals("outside")) {
                continue;
            }
            t.merge("cohort", 1L, Long::sum);
            t.merge(v.split("\\|")[2], 1L, Long::sum);
        }
        return t;
    }
}
