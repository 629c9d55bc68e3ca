package gov.joinery.kstreams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The engine's own opportunity tests (crates/joinery-engine/src/evaluate.rs),
 * ported, and its property against a naive reference.
 */
class OpportunityTest {
    static final long T0 = 1_767_225_600_000L; // 2026-01-01
    static final long DAY = Opportunity.DAY_MS;
    static final String KEY = "cd".repeat(32);

    static Event ev(long n, EventType t, long day, String employmentId) {
        return new Event(t, T0 + day * DAY, 0, n, KEY, "E08000025", "2008-03", employmentId);
    }

    static Event exit(long n, long day) {
        return ev(n, EventType.EDUCATION_EXITED, day, null);
    }

    static Event job(long n, long day, String id) {
        return ev(n, EventType.EMPLOYMENT_STARTED, day, id);
    }

    static Event jobEnd(long n, long day, String id) {
        return ev(n, EventType.EMPLOYMENT_ENDED, day, id);
    }

    static CitizenRecord citizen(Event... events) {
        CitizenRecord c = new CitizenRecord();
        for (Event e : events) {
            c.insert(e);
        }
        return c;
    }

    static byte status(long watermarkDay, Event... events) {
        return Opportunity.evaluate(citizen(events).events, T0 + watermarkDay * DAY).status;
    }

    @Test
    void employmentKeptNinetyDaysIsAchievedOnceTheWatermarkReachesDayNinety() {
        assertEquals(Opportunity.PENDING, status(10, exit(1, 0), job(2, 30, "E1"), jobEnd(3, 130, "E1")));
        assertEquals(Opportunity.ACHIEVED, status(120, exit(1, 0), job(2, 30, "E1"), jobEnd(3, 130, "E1")));
    }

    @Test
    void openEmploymentWaitsForTheWatermark() {
        assertEquals(Opportunity.PENDING, status(100, exit(1, 0), job(2, 30, "E1")));
        assertEquals(Opportunity.ACHIEVED, status(120, exit(1, 0), job(2, 30, "E1")));
    }

    @Test
    void noEmploymentByTheDeadlineIsNotAchieved() {
        assertEquals(Opportunity.PENDING, status(179, exit(1, 0)));
        assertEquals(Opportunity.NOT_ACHIEVED, status(180, exit(1, 0)));
    }

    @Test
    void lateEmploymentEventRevisesOutcome() {
        assertEquals(Opportunity.NOT_ACHIEVED, status(300, exit(1, 0)));
        assertEquals(Opportunity.ACHIEVED, status(300, exit(1, 0), job(2, 170, "E1")));
    }

    @Test
    void shortEmploymentDoesNotCount() {
        assertEquals(Opportunity.NOT_ACHIEVED, status(400, exit(1, 0), job(2, 10, "E1"), jobEnd(3, 50, "E1")));
    }

    @Test
    void cohortIsSixteenToTwentyFourAtLeaving() {
        Event old = new Event(EventType.EDUCATION_EXITED, T0, 0, 1, KEY, null, "1990-01", null);
        assertEquals(Opportunity.OUTSIDE, Opportunity.evaluate(citizen(old).events, T0).status);
        Event unknown = new Event(EventType.EDUCATION_EXITED, T0, 0, 2, KEY, null, null, null);
        assertEquals(Opportunity.OUTSIDE, Opportunity.evaluate(citizen(unknown).events, T0).status);
        assertEquals(17L, Opportunity.ageAt("2008-03", T0));
        assertEquals(18L, Opportunity.ageAt("2008-01", T0));
        assertNull(Opportunity.ageAt("2008-13", T0));
        assertNull(Opportunity.ageAt("2030-01", T0));
        assertNull(Opportunity.ageAt("2008-03-01", T0));
        assertNull(Opportunity.ageAt("2008", T0));
        assertNull(Opportunity.ageAt("２００８-03", T0));
        assertEquals(17L, Opportunity.ageAt("+2008-03", T0));
    }

    @Test
    void birthMonthIsTakenFromTheFirstEventThatHasOne() {
        // First event (any type) with a birth month decides, even if the anchor says otherwise.
        Event enrolled = new Event(EventType.EDUCATION_ENROLLED, T0 - 10 * DAY, 0, 1, KEY, null, "1990-01", null);
        Event exit = new Event(EventType.EDUCATION_EXITED, T0, 0, 2, KEY, null, "2008-03", null);
        assertEquals(Opportunity.OUTSIDE, Opportunity.evaluate(citizen(enrolled, exit).events, T0).status);
        Event enrolledNoBirth = new Event(EventType.EDUCATION_ENROLLED, T0 - 10 * DAY, 0, 1, KEY, null, null, null);
        assertEquals(Opportunity.PENDING, Opportunity.evaluate(citizen(enrolledNoBirth, exit).events, T0).status);
        // An unparsable first birth month puts the citizen outside, even when a later one parses.
        Event bad = new Event(EventType.EDUCATION_ENROLLED, T0 - 10 * DAY, 0, 1, KEY, null, "March 2008", null);
        assertEquals(Opportunity.OUTSIDE, Opportunity.evaluate(citizen(bad, exit).events, T0).status);
    }

    @Test
    void pendingEvaluationNamesItsNextDeadline() {
        Opportunity.Evaluation e = Opportunity.evaluate(citizen(exit(1, 0)).events, T0);
        assertEquals(T0 + 180 * DAY, e.nextDeadline);
        assertTrue(e.toJson(KEY, T0).contains("\"cohort_month\":\"2026-01\""));
        Opportunity.Evaluation open = Opportunity.evaluate(citizen(exit(1, 0), job(2, 100, "E1")).events,
                T0 + 185 * DAY);
        assertEquals(Opportunity.PENDING, open.status);
        assertEquals(T0 + 190 * DAY, open.nextDeadline);
    }

    @Test
    void duplicatesCountOnceAndOrderIsEventTimeThenId() {
        CitizenRecord c = citizen(job(5, 30, "E1"), exit(1, 0), exit(1, 0), exit(3, 0), exit(2, 0));
        assertEquals(4, c.events.size());
        assertEquals(Arrays.asList(1L, 2L, 3L, 5L), c.events.stream().map(e -> e.idLo).toList());
        assertFalse(c.insert(exit(2, 99)), "same event_id, other content: the first one stays");
        // Unsigned UUID order: 0x8000... sorts after 0x0000...
        CitizenRecord u = new CitizenRecord();
        u.insert(new Event(EventType.EDUCATION_EXITED, T0, Long.MIN_VALUE, 0, KEY, null, null, null));
        u.insert(new Event(EventType.EDUCATION_EXITED, T0, 1, 0, KEY, null, null, null));
        assertEquals(1, u.events.get(0).idHi);
    }

    @Test
    void recordsSurviveARoundTrip() {
        CitizenRecord c = citizen(exit(1, 0), job(2, 30, "E1"), jobEnd(3, 130, "E1"));
        c.status = Opportunity.ACHIEVED;
        c.timer = 12345;
        c.viewSignature = "3|é|x";
        CitizenRecord back = CitizenRecord.decode(KEY, c.encode());
        assertEquals(c.status, back.status);
        assertEquals(c.timer, back.timer);
        assertEquals(c.viewSignature, back.viewSignature);
        assertEquals(Opportunity.ACHIEVED, CitizenRecord.statusOf(c.encode()));
        assertEquals(3, back.events.size());
        for (int i = 0; i < 3; i++) {
            Event a = c.events.get(i);
            Event b = back.events.get(i);
            assertEquals(a.type, b.type);
            assertEquals(a.occurredAt, b.occurredAt);
            assertTrue(a.sameId(b));
            assertEquals(a.areaCode, b.areaCode);
            assertEquals(a.birthYearMonth, b.birthYearMonth);
            assertEquals(a.employmentId, b.employmentId);
        }
    }

    @Test
    void uuidsParseLikeRustsUuidCrate() {
        long[] u = Uuids.parse("00000000-0000-0000-0000-000000000001");
        assertNotNull(u);
        assertEquals(0, u[0]);
        assertEquals(1, u[1]);
        assertNotNull(Uuids.parse("ffffffffFFFFFFFFffffffffffffffff"));
        assertNotNull(Uuids.parse("{00000000-0000-0000-0000-000000000001}"));
        assertNotNull(Uuids.parse("urn:uuid:00000000-0000-0000-0000-000000000001"));
        assertNull(Uuids.parse("0-0-0-0-1"));
        assertNull(Uuids.parse("00000000-0000-0000-0000-00000000000g"));
        assertNull(Uuids.parse("000000000000-0000-0000-0000-00000001"));
    }

    @Test
    void timerKeysSortByDeadline() {
        assertTrue(OpportunityProcessor.timerKey(-5, KEY).compareTo(OpportunityProcessor.timerKey(3, KEY)) < 0);
        assertTrue(OpportunityProcessor.timerKey(T0, KEY).compareTo(OpportunityProcessor.timerKey(T0 + 1, "a")) < 0);
        assertTrue(OpportunityProcessor.timerPrefix(T0).compareTo(OpportunityProcessor.timerKey(T0, KEY)) < 0);
        assertEquals(T0, OpportunityProcessor.deadlineOf(OpportunityProcessor.timerKey(T0, KEY)));
        assertEquals(KEY, OpportunityProcessor.citizenOf(OpportunityProcessor.timerKey(T0, KEY)));
    }

    /** The engine's naive reference (reference_opportunity in evaluate.rs), without the age rule. */
    static Byte reference(List<Event> events, long watermark) {
        Long anchor = null;
        for (Event e : events) {
            if (e.type == EventType.EDUCATION_EXITED && (anchor == null || e.occurredAt < anchor)) {
                anchor = e.occurredAt;
            }
        }
        if (anchor == null) {
            return null;
        }
        long ws = anchor;
        long we = anchor + 180 * DAY;
        boolean anyOpen = false;
        long achievedAt = Long.MAX_VALUE;
        for (Event s : events) {
            if (s.type != EventType.EMPLOYMENT_STARTED || s.occurredAt < ws || s.occurredAt > we) {
                continue;
            }
            Long end = null;
            for (Event e : events) {
                if (e.type == EventType.EMPLOYMENT_ENDED && e.employmentId.equals(s.employmentId)
                        && e.occurredAt >= s.occurredAt && (end == null || e.occurredAt < end)) {
                    end = e.occurredAt;
                }
            }
            long need = s.occurredAt + 90 * DAY;
            if ((end != null && end >= need) || (end == null && watermark >= need)) {
                achievedAt = Math.min(achievedAt, need);
            } else if (end == null) {
                anyOpen = true;
            }
        }
        if (achievedAt != Long.MAX_VALUE) {
            // Final only once the watermark has reached it.
            return achievedAt <= watermark ? Opportunity.ACHIEVED : Opportunity.PENDING;
        }
        return watermark >= we && !anyOpen ? Opportunity.NOT_ACHIEVED : Opportunity.PENDING;
    }

    @Test
    void agreesWithTheNaiveReferenceAndIgnoresArrivalOrder() {
        Random rnd = new Random(7);
        for (int round = 0; round < 20_000; round++) {
            List<Event> events = new ArrayList<>();
            int n = rnd.nextInt(14);
            for (int i = 0; i < n; i++) {
                int kind = rnd.nextInt(4);
                long day = rnd.nextInt(400);
                String id = "E" + rnd.nextInt(3);
                EventType t = kind == 0 ? EventType.EDUCATION_EXITED
                        : kind == 1 ? EventType.EMPLOYMENT_STARTED
                        : kind == 2 ? EventType.EMPLOYMENT_ENDED : EventType.EDUCATION_ENROLLED;
                events.add(ev(i, t, day, kind == 1 || kind == 2 ? id : null));
            }
            long wm = T0 + rnd.nextInt(600) * DAY;
            CitizenRecord forward = citizen(events.toArray(new Event[0]));
            List<Event> shuffled = new ArrayList<>(events);
            Collections.shuffle(shuffled, rnd);
            shuffled.addAll(events); // every event sent twice
            CitizenRecord other = citizen(shuffled.toArray(new Event[0]));
            Opportunity.Evaluation a = Opportunity.evaluate(forward.events, wm);
            Opportunity.Evaluation b = Opportunity.evaluate(other.events, wm);
            assertEquals(a.signature(), b.signature());
            assertEquals(a.nextDeadline, b.nextDeadline);
            Byte ref = reference(events, wm);
            assertEquals(ref == null ? Opportunity.OUTSIDE : ref, a.status, "round " + round);
            // The watermark never un-decides an outcome.
            long later = wm + rnd.nextInt(300) * DAY;
            byte s = Opportunity.evaluate(forward.events, later).status;
            if (a.status != Opportunity.PENDING) {
                assertEquals(a.status, s);
            }
            // A pending evaluation's deadline is after the watermark, and nothing changes before it.
            if (a.status == Opportunity.PENDING) {
                assertTrue(a.nextDeadline > wm);
                assertEquals(a.signature(), Opportunity.evaluate(forward.events, a.nextDeadline - 1).signature());
            }
        }
    }
}
