package gov.joinery.kstreams;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * One citizen's state in the RocksDB store, as in Joinery's processor: the
 * deduplicated events in (occurred_at, event_id) order, the last published
 * view (its signature and status), and the pending timer. Stored in a
 * compact binary form.
 */
public final class CitizenRecord {
    private static final byte FORMAT = 1;

    /** Events in (occurred_at, event_id) order, one per event_id. */
    public final List<Event> events;
    /** Status of the last evaluation; 0 when never evaluated into a view. */
    public byte status;
    /** Signature of the last published view; null when none was published. */
    public String viewSignature;
    /** The deadline this citizen's timer is set at, or Opportunity.NO_DEADLINE. */
    public long timer = Opportunity.NO_DEADLINE;

    public CitizenRecord() {
        this.events = new ArrayList<>(4);
    }

    private CitizenRecord(List<Event> events) {
        this.events = events;
    }

    /** Adds an event; false (and no change) when one with the same event_id is present. */
    public boolean insert(Event e) {
        int at = events.size();
        for (int i = events.size() - 1; i >= 0; i--) {
            Event o = events.get(i);
            if (o.sameId(e)) {
                return false;
            }
            if (Event.compare(o, e) > 0) {
                at = i;
            }
        }
        events.add(at, e);
        return true;
    }

    public byte[] encode() {
        int size = 1 + 1 + 8 + strSize(viewSignature) + 4;
        for (Event e : events) {
            size += 1 + 8 + 16 + strSize(e.areaCode) + strSize(e.birthYearMonth) + strSize(e.employmentId);
        }
        ByteBuffer b = ByteBuffer.allocate(size);
        b.put(FORMAT).put(status).putLong(timer);
        putStr(b, viewSignature);
        b.putInt(events.size());
        for (Event e : events) {
            b.put((byte) e.type.ordinal()).putLong(e.occurredAt).putLong(e.idHi).putLong(e.idLo);
            putStr(b, e.areaCode);
            putStr(b, e.birthYearMonth);
            putStr(b, e.employmentId);
        }
        return java.util.Arrays.copyOf(b.array(), b.position());
    }

    public static CitizenRecord decode(String citizenKey, byte[] bytes) {
        ByteBuffer b = ByteBuffer.wrap(bytes);
        if (b.get() != FORMAT) {
            throw new IllegalStateException("unknown citizen record format");
        }
        byte status = b.get();
        long timer = b.getLong();
        String signature = getStr(b);
        int n = b.getInt();
        List<Event> events = new ArrayList<>(n + 2);
        for (int i = 0; i < n; i++) {
            EventType type = EventType.fromCode(b.get());
            long t = b.getLong();
            long hi = b.getLong();
            long lo = b.getLong();
            String area = getStr(b);
            String birth = getStr(b);
            String emp = getStr(b);
            events.add(new Event(type, t, hi, lo, citizenKey, area, birth, emp));
        }
        CitizenRecord r = new CitizenRecord(events);
        r.status = status;
        r.timer = timer;
        r.viewSignature = signature;
        return r;
    }

    /** Only the status, without decoding the events (for the final tally). */
    public static byte statusOf(byte[] bytes) {
        return bytes[1];
    }

    /** An upper bound: UTF-8 takes at most 3 bytes per UTF-16 char. */
    private static int strSize(String s) {
        return 4 + (s == null ? 0 : 3 * s.length());
    }

    private static void putStr(ByteBuffer b, String s) {
        if (s == null) {
            b.putInt(-1);
            return;
        }
        byte[] u = s.getBytes(StandardCharsets.UTF_8);
        b.putInt(u.length).put(u);
    }

    private static String getStr(ByteBuffer b) {
        int n = b.getInt();
        if (n < 0) {
            return null;
        }
        String s = new String(b.array(), b.position(), n, StandardCharsets.UTF_8);
        b.position(b.position() + n);
        return s;
    }
}
