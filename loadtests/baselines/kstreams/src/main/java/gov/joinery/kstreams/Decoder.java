package gov.joinery.kstreams;

import java.io.IOException;
import java.util.HashMap;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

/**
 * Decodes a department record's value: Confluent wire format (magic byte 0,
 * 4-byte big-endian schema id, Avro binary), the writer schema from the
 * registry, the whole record decoded with Avro's GenericDatumReader, then
 * checked as Joinery's codec checks it (known type on its department's
 * topic, UUID event_id, 64-hex citizen_key, department field, no trailing
 * bytes). Not thread-safe: one per stream task.
 */
public final class Decoder {
    /** Why a record is a dead letter. */
    public static final class Invalid extends Exception {
        public final String reason;

        Invalid(String reason, String detail) {
            super(reason + ": " + detail);
            this.reason = reason;
        }
    }

    private static final class Writer {
        final EventType type;
        final GenericDatumReader<GenericRecord> reader;
        final int eventId;
        final int occurredAt;
        final int recordedAt;
        final int department;
        final int citizenKey;
        final int areaCode;
        final int birthYearMonth;
        final int employmentId;
        GenericRecord reuse;

        Writer(EventType type, Schema schema) {
            this.type = type;
            this.reader = new GenericDatumReader<>(schema);
            this.eventId = pos(schema, "event_id");
            this.occurredAt = pos(schema, "occurred_at");
            this.recordedAt = pos(schema, "recorded_at");
            this.department = pos(schema, "department");
            this.citizenKey = pos(schema, "citizen_key");
            this.areaCode = pos(schema, "area_code");
            this.birthYearMonth = pos(schema, "birth_year_month");
            this.employmentId = pos(schema, "employment_id");
        }

        private static int pos(Schema s, String name) {
            Schema.Field f = s.getField(name);
            return f == null ? -1 : f.pos();
        }
    }

    private final Registry registry;
    private final String topicPrefix;
    private final Map<Integer, Writer> writers = new HashMap<>();
    private BinaryDecoder decoder;

    /** A decoder for the department topics named {@code <topicPrefix><department>}. */
    public Decoder(Registry registry, String topicPrefix) {
        this.registry = registry;
        this.topicPrefix = topicPrefix;
    }

    public Event decode(String topic, byte[] value) throws Invalid, InterruptedException {
        if (value == null || value.length < 5) {
            throw new Invalid("bad_framing", "value shorter than the 5-byte Confluent header");
        }
        if (value[0] != 0) {
            throw new Invalid("bad_framing", "magic byte " + value[0] + ", expected 0");
        }
        int id = ((value[1] & 0xff) << 24) | ((value[2] & 0xff) << 16) | ((value[3] & 0xff) << 8) | (value[4] & 0xff);
        Writer w = writers.get(id);
        if (w == null) {
            Schema schema;
            try {
                schema = registry.schema(id);
            } catch (Registry.UnknownSchemaId e) {
                throw new Invalid("unknown_schema_id", e.getMessage());
            }
            EventType type = schema.getType() == Schema.Type.RECORD
                    ? EventType.fromAvroFullName(schema.getFullName()) : null;
            w = new Writer(type, schema);
            writers.put(id, w);
        }
        if (w.type == null) {
            throw new Invalid("unknown_record_type", "schema id " + id);
        }
        String expectedTopic = topicPrefix + w.type.department;
        if (!expectedTopic.equals(topic)) {
            throw new Invalid("wrong_topic", w.type.avroFullName + " on " + topic);
        }
        GenericRecord r;
        try {
            decoder = DecoderFactory.get().binaryDecoder(value, 5, value.length - 5, decoder);
            r = w.reader.read(w.reuse, decoder);
            if (!decoder.isEnd()) {
                throw new Invalid("corrupt_avro", "trailing bytes after the record");
            }
        } catch (IOException | RuntimeException e) {
            throw new Invalid("corrupt_avro", e.toString());
        }
        w.reuse = r;

        CharSequence idText = text(r, w.eventId);
        if (idText == null) {
            throw new Invalid("invalid_field", "event_id missing");
        }
        long[] uuid = Uuids.parse(idText);
        if (uuid == null) {
            throw new Invalid("invalid_field", "event_id is not a UUID");
        }
        String citizen = str(r, w.citizenKey);
        if (citizen == null || !isCitizenKey(citizen)) {
            throw new Invalid("invalid_field", "citizen_key must be 64 lowercase hex characters");
        }
        Long occurredAt = millis(r, w.occurredAt);
        if (occurredAt == null) {
            throw new Invalid("invalid_field", "occurred_at missing");
        }
        if (millis(r, w.recordedAt) == null) {
            throw new Invalid("invalid_field", "recorded_at missing");
        }
        if (!w.type.department.equals(str(r, w.department))) {
            throw new Invalid("invalid_field", "department must be " + w.type.department);
        }
        return new Event(w.type, occurredAt, uuid[0], uuid[1], citizen, str(r, w.areaCode),
                str(r, w.birthYearMonth), str(r, w.employmentId));
    }

    static boolean isCitizenKey(String s) {
        if (s.length() != 64) {
            return false;
        }
        for (int i = 0; i < 64; i++) {
            char c = s.charAt(i);
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
                return false;
            }
        }
        return true;
    }

    private static CharSequence text(GenericRecord r, int pos) {
        if (pos < 0) {
            return null;
        }
        Object v = r.get(pos);
        return v instanceof CharSequence ? (CharSequence) v
                : v instanceof org.apache.avro.generic.GenericEnumSymbol ? v.toString() : null;
    }

    private static String str(GenericRecord r, int pos) {
        CharSequence s = text(r, pos);
        return s == null ? null : s.toString();
    }

    private static Long millis(GenericRecord r, int pos) {
        if (pos < 0) {
            return null;
        }
        Object v = r.get(pos);
        return v instanceof Long || v instanceof Integer ? ((Number) v).longValue() : null;
    }
}
