package gov.joinery.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.sun.net.httpserver.HttpServer;
import java.io.ByteArrayOutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * End-to-end check of the baseline on a real broker with hand-made citizens
 * (achieved, achieved on the watermark, not achieved, pending, outside the
 * age range, duplicates, late data, dead letters): produces them in the
 * Confluent wire format, runs the application in-process, and compares
 * every citizen's final status, in the state stores and in the last view on
 * the output topic, with the expected one. Prints "N passed, M failed".
 *
 * <pre>
 * selftest --brokers HOST:PORT --schemas-dir DIR --state-dir DIR [--registry URL]
 * </pre>
 * Without --registry, a stub registry in this process serves the .avsc
 * files under ids 1-4; with it, the schemas are registered there first.
 */
public final class SelfTest {
    static final long T0 = 1_735_689_600_000L; // 2025-01-01
    static final long DAY = Opportunity.DAY_MS;
    static final int PARTITIONS = 6;
    static final String[] SCHEMAS = {
        "dfe/EducationEnrolled.avsc", "dfe/EducationExited.avsc",
        "hmrc/EmploymentStarted.avsc", "hmrc/EmploymentEnded.avsc",
    };

    private final Map<EventType, Schema> schemas = new HashMap<>();
    private final Map<EventType, Integer> ids = new HashMap<>();
    private final List<ProducerRecord<String, byte[]>> records = new ArrayList<>();
    private final List<ProducerRecord<String, byte[]>> lateRecords = new ArrayList<>();
    private final Map<String, String> expected = new LinkedHashMap<>();
    private final Map<String, String> names = new HashMap<>();
    private String ns;

    static String key(String name) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256")
                .digest(name.getBytes(StandardCharsets.UTF_8)));
    }

    static int partitionOf(String key) {
        return Utils.toPositive(Utils.murmur2(key.getBytes(StandardCharsets.UTF_8))) % PARTITIONS;
    }

    byte[] encode(EventType t, UUID id, String citizen, long day, String birth, String employmentId)
            throws Exception {
        Schema s = schemas.get(t);
        GenericRecord r = new GenericData.Record(s);
        r.put("event_id", id.toString());
        r.put("occurred_at", T0 + day * DAY);
        r.put("recorded_at", T0 + day * DAY + 3 * DAY);
        r.put("department", t.department);
        r.put("citizen_key", citizen);
        r.put("area_code", "E08000025");
        r.put("birth_year_month", birth);
        switch (t) {
            case EDUCATION_ENROLLED:
                r.put("provider_urn", "100001");
                r.put("level", new GenericData.EnumSymbol(s.getField("level").schema(), "LEVEL_3"));
                r.put("mode", new GenericData.EnumSymbol(s.getField("mode").schema(), "FULL_TIME"));
                break;
            case EDUCATION_EXITED:
                r.put("provider_urn", "100001");
                r.put("level", new GenericData.EnumSymbol(s.getField("level").schema(), "LEVEL_3"));
                r.put("reason", new GenericData.EnumSymbol(s.getField("reason").schema(), "COMPLETED"));
                break;
            case EMPLOYMENT_STARTED:
                r.put("employment_id", employmentId);
                r.put("weekly_hours_band",
                        new GenericData.EnumSymbol(s.getField("weekly_hours_band").schema(), "FROM_30"));
                break;
            default:
                r.put("employment_id", employmentId);
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        int sid = ids.get(t);
        out.write(new byte[] {0, (byte) (sid >>> 24), (byte) (sid >>> 16), (byte) (sid >>> 8), (byte) sid});
        BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
        new GenericDatumWriter<GenericRecord>(s).write(r, enc);
        enc.flush();
        return out.toByteArray();
    }

    /** A hand-made citizen: its events and the status expected at the final watermark. */
    final class Citizen {
        final String key;
        String birth = "2005-06";

        Citizen(String name, String expect) throws Exception {
            this.key = key("selftest-" + name);
            expected.put(key, expect);
            names.put(key, name);
        }

        Citizen birth(String b) {
            this.birth = b;
            return this;
        }

        UUID send(List<ProducerRecord<String, byte[]>> to, EventType t, long day, String emp, UUID id)
                throws Exception {
            String topic = ns + "joinery.events." + t.department;
            to.add(new ProducerRecord<>(topic, key, encode(t, id, key, day, birth, emp)));
            return id;
        }

        UUID exit(long day) throws Exception {
            return send(records, EventType.EDUCATION_EXITED, day, null, UUID.randomUUID());
        }

        UUID enrolled(long day) throws Exception {
            return send(records, EventType.EDUCATION_ENROLLED, day, null, UUID.randomUUID());
        }

        UUID start(long day, String emp) throws Exception {
            return send(records, EventType.EMPLOYMENT_STARTED, day, emp, UUID.randomUUID());
        }

        UUID end(long day, String emp) throws Exception {
            return send(records, EventType.EMPLOYMENT_ENDED, day, emp, UUID.randomUUID());
        }
    }

    void scenario() throws Exception {
        // The final watermark of every partition: a clock event at day 407 (minus 7 days' lateness).
        Citizen a = new Citizen("achieved", "achieved");
        a.exit(0);
        a.start(30, "E1");
        a.end(150, "E1");
        Citizen b = new Citizen("achieved-on-watermark", "achieved");
        b.exit(0);
        b.start(30, "E1");
        Citizen c = new Citizen("no-job", "not_achieved");
        c.exit(0);
        Citizen d = new Citizen("short-job", "not_achieved");
        d.exit(0);
        d.start(10, "E1");
        d.end(50, "E1");
        Citizen e = new Citizen("job-after-window", "not_achieved");
        e.exit(0);
        e.start(181, "E1");
        Citizen f = new Citizen("window-open", "pending");
        f.exit(350);
        Citizen g = new Citizen("job-not-yet-sustained", "pending");
        g.exit(300);
        g.start(320, "E1");
        Citizen h = new Citizen("too-old", "outside").birth("1990-01");
        h.exit(0);
        h.start(30, "E1");
        Citizen i = new Citizen("too-young", "outside").birth("2010-02");
        i.exit(0);
        Citizen j = new Citizen("unknown-birth", "outside").birth(null);
        j.exit(0);
        Citizen k = new Citizen("duplicates", "not_achieved");
        UUID kx = k.exit(0);
        k.send(records, EventType.EDUCATION_EXITED, 0, null, kx);
        UUID ks = k.start(30, "E1");
        k.send(records, EventType.EMPLOYMENT_STARTED, 30, "E1", ks);
        k.end(60, "E1");
        Citizen l = new Citizen("late-employment", "achieved");
        l.exit(0);
        l.send(lateRecords, EventType.EMPLOYMENT_STARTED, 100, "E1", UUID.randomUUID());
        Citizen m = new Citizen("first-exit-anchors", "not_achieved");
        m.exit(0);
        m.exit(250);
        m.start(260, "E1");
        Citizen n1 = new Citizen("aged-24", "achieved").birth("2000-12");
        n1.exit(0);
        n1.start(30, "E1");
        n1.end(150, "E1");
        Citizen n2 = new Citizen("aged-25", "outside").birth("2000-01");
        n2.exit(0);
        Citizen p = new Citizen("end-of-other-employment", "achieved");
        p.exit(0);
        p.start(30, "E1");
        p.end(60, "E2");
        Citizen q = new Citizen("end-before-start", "achieved");
        q.exit(0);
        q.start(30, "E1");
        q.end(20, "E1");
        Citizen r = new Citizen("earlier-birth-month-decides", "outside").birth("1980-01");
        r.enrolled(-100);
        r.birth("2005-01");
        r.exit(0);
        Citizen s = new Citizen("exit-arrives-after-job", "achieved");
        s.start(40, "E1");
        s.end(200, "E1");
        s.exit(10);
        // Dead letters: a schema id the registry does not know, and a bad magic byte.
        String any = key("selftest-garbage");
        records.add(new ProducerRecord<>(ns + "joinery.events.dfe", any, new byte[] {0, 0x7f, 0, 0, 1, 2, 3}));
        records.add(new ProducerRecord<>(ns + "joinery.events.hmrc", any, new byte[] {1, 0, 0, 0, 1}));
        // Clocks: one citizen outside the cohort per partition, at day 407.
        Map<Integer, String> clocks = new HashMap<>();
        for (int x = 0; clocks.size() < PARTITIONS; x++) {
            String ck = key("selftest-clock-" + x);
            clocks.putIfAbsent(partitionOf(ck), ck);
        }
        for (String ck : clocks.values()) {
            records.add(new ProducerRecord<>(ns + "joinery.events.dfe", ck,
                    encode(EventType.EDUCATION_ENROLLED, UUID.randomUUID(), ck, 407, null, null)));
        }
    }

    static void registerStub(HttpServer server, Map<Integer, String> byId) {
        ObjectMapper json = new ObjectMapper();
        server.createContext("/schemas/ids/", ex -> {
            String path = ex.getRequestURI().getPath();
            String text;
            int code;
            try {
                int id = Integer.parseInt(path.substring("/schemas/ids/".length()));
                text = byId.get(id);
                code = text == null ? 404 : 200;
            } catch (NumberFormatException e) {
                text = null;
                code = 404;
            }
            byte[] body = (code == 200
                    ? json.writeValueAsString(Map.of("schema", text))
                    : "{\"error_code\":40403,\"message\":\"Schema not found\"}").getBytes(StandardCharsets.UTF_8);
            ex.getResponseHeaders().add("Content-Type", "application/vnd.schemaregistry.v1+json");
            ex.sendResponseHeaders(code, body.length);
            ex.getResponseBody().write(body);
            ex.close();
        });
    }

    static int register(String registry, String subject, String schema) throws Exception {
        ObjectMapper json = new ObjectMapper();
        HttpClient http = HttpClient.newHttpClient();
        HttpResponse<String> resp = http.send(HttpRequest.newBuilder(URI.create(registry + "/subjects/" + subject + "/versions"))
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .timeout(Duration.ofSeconds(10))
                .POST(HttpRequest.BodyPublishers.ofString(json.writeValueAsString(Map.of("schema", schema))))
                .build(), HttpResponse.BodyHandlers.ofString());
        if (resp.statusCode() != 200) {
            throw new IllegalStateException("registering " + subject + ": " + resp.statusCode() + " " + resp.body());
        }
        return json.readTree(resp.body()).get("id").asInt();
    }

    public static void main(String[] args) throws Exception {
        Main.quietLogging();
        String brokers = "127.0.0.1:9092";
        String schemasDir = "schemas";
        String stateDir = null;
        String registry = null;
        for (int x = 0; x + 1 < args.length; x += 2) {
            switch (args[x]) {
                case "--brokers": brokers = args[x + 1]; break;
                case "--schemas-dir": schemasDir = args[x + 1]; break;
                case "--state-dir": stateDir = args[x + 1]; break;
                case "--registry": registry = args[x + 1]; break;
                default: throw new IllegalArgumentException("unknown option " + args[x]);
            }
        }
        if (stateDir == null) {
            throw new IllegalArgumentException("--state-dir is required");
        }
        SelfTest t = new SelfTest();
        t.ns = "kstreams-selftest-" + System.currentTimeMillis() + ".";
        HttpServer stub = null;
        Map<Integer, String> byId = new HashMap<>();
        for (String file : SCHEMAS) {
            String text = Files.readString(Path.of(schemasDir, file));
            Schema s = new Schema.Parser().parse(text);
            EventType type = EventType.fromAvroFullName(s.getFullName());
            t.schemas.put(type, s);
            int id;
            if (registry == null) {
                id = byId.size() + 1;
                byId.put(id, text);
            } else {
                id = register(registry, t.ns + "joinery.events." + type.department + "-" + s.getFullName(), text);
            }
            t.ids.put(type, id);
        }
        if (registry == null) {
            stub = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
            registerStub(stub, byId);
            stub.start();
            registry = "http://127.0.0.1:" + stub.getAddress().getPort();
        }
        t.scenario();

        Properties common = new Properties();
        common.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        try (Admin admin = Admin.create(common)) {
            admin.createTopics(EventType.DEPARTMENTS.stream()
                    .map(d -> new NewTopic(t.ns + "joinery.events." + d, PARTITIONS, (short) 1)).toList())
                    .all().get(30, TimeUnit.SECONDS);
        }
        Properties pp = new Properties();
        pp.putAll(common);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.PARTITIONER_IGNORE_KEYS_CONFIG, false);
        try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(pp)) {
            for (ProducerRecord<String, byte[]> r : t.records) {
                producer.send(r).get();
            }
            // Late data: reported after the clocks moved the watermark past its window.
            Thread.sleep(50);
            for (ProducerRecord<String, byte[]> r : t.lateRecords) {
                producer.send(r).get();
            }
        }
        long total = t.records.size() + t.lateRecords.size();

        Main.Options o = new Main.Options();
        o.brokers = brokers;
        o.registry = registry;
        o.namespace = t.ns;
        o.expectEvents = total;
        o.stateDir = stateDir;
        o.applicationId = t.ns + "kstreams";
        o.timeoutSeconds = 300;
        Main.Result result = Main.run(o, true);
        System.out.println(result.toJson());

        // The last view of each citizen on the output topic (read committed).
        Map<String, String> lastView = new HashMap<>();
        Map<String, List<String>> viewHistory = new HashMap<>();
        Properties cp = new Properties();
        cp.putAll(common);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        ObjectMapper json = new ObjectMapper();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int x = 0; x < PARTITIONS; x++) {
                tps.add(new TopicPartition(t.ns + "kstreams.opportunity", x));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (tps.stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp))) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("could not read the output topic to its end");
                }
                for (ConsumerRecord<String, String> rec : consumer.poll(Duration.ofMillis(200))) {
                    JsonNode v = json.readTree(rec.value());
                    String status = v.get("in_cohort").asBoolean()
                            ? v.get("outcomes").get(0).get("status").asText() : "outside";
                    lastView.put(rec.key(), status);
                    viewHistory.computeIfAbsent(rec.key(), x -> new ArrayList<>()).add(status);
                }
            }
        }

        int passed = 0;
        int failed = 0;
        for (Map.Entry<String, String> e : t.expected.entrySet()) {
            String name = t.names.get(e.getKey());
            Byte s = result.statuses.get(e.getKey());
            String state = s == null ? "outside" : Opportunity.statusName(s);
            String view = lastView.getOrDefault(e.getKey(), "outside");
            boolean ok = state.equals(e.getValue()) && view.equals(e.getValue());
            System.err.printf("%s %-28s expected %-13s state %-13s views %s%n", ok ? "ok  " : "FAIL", name,
                    e.getValue(), state, viewHistory.getOrDefault(e.getKey(), List.of()));
            if (ok) {
                passed++;
            } else {
                failed++;
            }
        }
        long cohort = t.expected.values().stream().filter(v -> !v.equals("outside")).count();
        long achieved = t.expected.values().stream().filter(v -> v.equals("achieved")).count();
        long notAchieved = t.expected.values().stream().filter(v -> v.equals("not_achieved")).count();
        long pending = t.expected.values().stream().filter(v -> v.equals("pending")).count();
        boolean countsOk = result.events == total && result.cohort == cohort && result.achieved == achieved
                && result.notAchieved == notAchieved && result.pending == pending && result.duplicates == 2
                && result.deadLetters == 2;
        System.err.printf("%s counts: events %d/%d cohort %d/%d achieved %d/%d not_achieved %d/%d pending %d/%d"
                        + " duplicates %d/2 dead_letters %d/2%n", countsOk ? "ok  " : "FAIL", result.events, total,
                result.cohort, cohort, result.achieved, achieved, result.notAchieved, notAchieved, result.pending,
                pending, result.duplicates, result.deadLetters);
        if (countsOk) {
            passed++;
        } else {
            failed++;
        }
        if (stub != null) {
            stub.stop(0);
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
