package gov.joinery.kstreams;

import java.time.Instant;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.List;

/**
 * The opportunity mission's outcome, as Joinery's engine evaluates it
 * (crates/joinery-engine/src/evaluate.rs over missions/opportunity.toml and
 * missions/capabilities.toml), hand-written for this one mission:
 *
 * <ul>
 *   <li>anchor (capability left_education, kind first): the first
 *       EducationExited in (occurred_at, event_id) order;</li>
 *   <li>cohort: whole years of age at the anchor in 16..=24, from the
 *       birth_year_month of the citizen's first event (any type, same order)
 *       that carries one; unknown or unparsable is outside;</li>
 *   <li>outcome sustained_employment_180d (capability in_employment, an
 *       interval from EmploymentStarted to the first EmploymentEnded at or
 *       after it with the same employment_id): achieved by an interval
 *       starting in [anchor, anchor + 180 days] that ended at least 90 days
 *       after it started, or is still open with the watermark at least 90
 *       days after it started, reported once the watermark reaches its 90th
 *       day (before that it is pending); not achieved once the watermark is at or past
 *       the window's end with no such interval still open; pending
 *       otherwise, with the deadline at which the watermark alone could
 *       decide it.</li>
 * </ul>
 *
 * A pure function of the citizen's deduplicated events and the watermark.
 */
public final class Opportunity {
    public static final String MISSION = "opportunity";
    public static final String OUTCOME = "sustained_employment_180d";
    public static final long DAY_MS = 86_400_000L;
    public static final int AGE_MIN = 16;
    public static final int AGE_MAX = 24;
    public static final long WITHIN_DAYS = 180;
    public static final long SUSTAINED_DAYS = 90;

    public static final byte OUTSIDE = 1;
    public static final byte PENDING = 2;
    public static final byte ACHIEVED = 3;
    public static final byte NOT_ACHIEVED = 4;

    /** No deadline: every outcome is final (or the citizen is outside the cohort). */
    public static final long NO_DEADLINE = Long.MIN_VALUE;

    private Opportunity() {}

    /** One citizen's evaluation. */
    public static final class Evaluation {
        public final byte status;
        public final String areaCode;
        public final long anchorAt;
        /** Long.MIN_VALUE when not decided. */
        public final long decidedAt;
        /** -1 unless achieved. */
        public final long durationDays;
        public final long nextDeadline;

        Evaluation(byte status, String areaCode, long anchorAt, long decidedAt, long durationDays,
                   long nextDeadline) {
            this.status = status;
            this.areaCode = areaCode;
            this.anchorAt = anchorAt;
            this.decidedAt = decidedAt;
            this.durationDays = durationDays;
            this.nextDeadline = nextDeadline;
        }

        public boolean inCohort() {
            return status != OUTSIDE;
        }

        /**
         * What a view shows, without the watermark: Joinery publishes a view
         * when (in_cohort, area_code, cohort_month, outcomes) changes.
         */
        public String signature() {
            if (!inCohort()) {
                return "out";
            }
            return status + "|" + areaCode + "|" + anchorAt + "|" + decidedAt + "|" + durationDays;
        }

        /** The view as one line of JSON (the output topic's value). */
        public String toJson(String citizenKey, long watermark) {
            StringBuilder b = new StringBuilder(200);
            b.append("{\"mission\":\"").append(MISSION).append("\",\"citizen_key\":");
            Json.string(b, citizenKey);
            b.append(",\"watermark\":").append(watermark).append(",\"in_cohort\":").append(inCohort());
            if (inCohort()) {
                b.append(",\"area_code\":");
                Json.string(b, areaCode);
                b.append(",\"cohort_month\":\"").append(monthOf(anchorAt)).append('"');
                b.append(",\"outcomes\":[{\"name\":\"").append(OUTCOME).append("\",\"status\":\"")
                        .append(statusName(status)).append("\",\"anchor_at\":").append(anchorAt)
                        .append(",\"decided_at\":")
                        .append(decidedAt == Long.MIN_VALUE ? "null" : Long.toString(decidedAt))
                        .append(",\"duration_days\":")
                        .append(durationDays < 0 ? "null" : Long.toString(durationDays)).append("}]");
            }
            return b.append('}').toString();
        }
    }

    private static final Evaluation OUTSIDE_EVAL =
            new Evaluation(OUTSIDE, null, 0, Long.MIN_VALUE, -1, NO_DEADLINE);

    public static String statusName(byte status) {
        switch (status) {
            case PENDING: return "pending";
            case ACHIEVED: return "achieved";
            case NOT_ACHIEVED: return "not_achieved";
            default: return "outside";
        }
    }

    /**
     * Age in whole years at {@code at} from a YYYY-MM birth month, as the
     * engine's age_at: months between the birth month and at's month (UTC),
     * divided by 12; null when unparsable, the month is not 1..=12, or the
     * birth month is after at's month.
     */
    public static Long ageAt(String birthYearMonth, long at) {
        int dash = birthYearMonth.indexOf('-');
        if (dash < 0) {
            return null;
        }
        Long y = parseI64(birthYearMonth, 0, dash);
        Long m = parseI64(birthYearMonth, dash + 1, birthYearMonth.length());
        if (y == null || m == null || m < 1 || m > 12) {
            return null;
        }
        ZonedDateTime d = Instant.ofEpochMilli(at).atZone(ZoneOffset.UTC);
        long months = ((long) d.getYear() * 12 + d.getMonthValue()) - (y * 12 + m);
        return months >= 0 ? months / 12 : null;
    }

    /** Rust's i64::from_str: an optional sign, then ASCII digits only, no overflow. */
    static Long parseI64(String s, int from, int to) {
        int digitsFrom = from;
        if (digitsFrom < to && (s.charAt(digitsFrom) == '+' || s.charAt(digitsFrom) == '-')) {
            digitsFrom++;
        }
        if (digitsFrom >= to) {
            return null;
        }
        for (int i = digitsFrom; i < to; i++) {
            char c = s.charAt(i);
            if (c < '0' || c > '9') {
                return null;
            }
        }
        try {
            return Long.parseLong(s.substring(from, to));
        } catch (NumberFormatException e) {
            return null;
        }
    }

    static String monthOf(long t) {
        ZonedDateTime d = Instant.ofEpochMilli(t).atZone(ZoneOffset.UTC);
        return String.format("%04d-%02d", d.getYear(), d.getMonthValue());
    }

    /** Evaluates the mission over a citizen's events, sorted by (occurred_at, event_id), deduplicated. */
    public static Evaluation evaluate(List<Event> events, long watermark) {
        Event anchor = null;
        String birth = null;
        String firstArea = null;
        for (Event e : events) {
            if (anchor == null && e.type == EventType.EDUCATION_EXITED) {
                anchor = e;
            }
            if (birth == null && e.birthYearMonth != null) {
                birth = e.birthYearMonth;
            }
            if (firstArea == null && e.areaCode != null) {
                firstArea = e.areaCode;
            }
        }
        if (anchor == null) {
            return OUTSIDE_EVAL;
        }
        long anchorAt = anchor.occurredAt;
        Long age = birth == null ? null : ageAt(birth, anchorAt);
        if (age == null || age < AGE_MIN || age > AGE_MAX) {
            return OUTSIDE_EVAL;
        }
        String area = anchor.areaCode != null ? anchor.areaCode : firstArea;

        long windowStart = anchorAt;
        long windowEnd = windowStart + WITHIN_DAYS * DAY_MS;
        long achievedAt = Long.MIN_VALUE;
        long decidedAt = Long.MIN_VALUE;
        long minOpenDeadline = Long.MAX_VALUE;
        long latestShortEnd = windowEnd;
        for (Event s : events) {
            if (s.type != EventType.EMPLOYMENT_STARTED) {
                continue;
            }
            if (s.occurredAt < windowStart || s.occurredAt > windowEnd) {
                continue;
            }
            // The interval's end: the first EmploymentEnded at or after the
            // start with the same employment_id (events are in order).
            boolean ended = false;
            long end = 0;
            if (s.employmentId != null) {
                for (Event e : events) {
                    if (e.type == EventType.EMPLOYMENT_ENDED && e.occurredAt >= s.occurredAt
                            && s.employmentId.equals(e.employmentId)) {
                        ended = true;
                        end = e.occurredAt;
                        break;
                    }
                }
            }
            long sustainedAt = s.occurredAt + SUSTAINED_DAYS * DAY_MS;
            if (ended) {
                if (end >= sustainedAt) {
                    achievedAt = s.occurredAt;
                    decidedAt = sustainedAt;
                    break;
                }
                latestShortEnd = Math.max(latestShortEnd, end);
            } else if (watermark >= sustainedAt) {
                achievedAt = s.occurredAt;
                decidedAt = sustainedAt;
                break;
            } else {
                minOpenDeadline = Math.min(minOpenDeadline, sustainedAt);
            }
        }
        if (achievedAt != Long.MIN_VALUE && decidedAt > watermark) {
            // Achieved after the watermark: not final yet (Joinery reports a
            // status final only once the watermark reaches it). Decided when
            // the watermark gets there, or earlier if an earlier open job is
            // sustained first.
            return new Evaluation(PENDING, area, anchorAt, Long.MIN_VALUE, -1,
                    Math.min(decidedAt, minOpenDeadline));
        }
        if (achievedAt != Long.MIN_VALUE) {
            return new Evaluation(ACHIEVED, area, anchorAt, decidedAt,
                    (achievedAt - windowStart) / DAY_MS, NO_DEADLINE);
        }
        boolean anyOpen = minOpenDeadline != Long.MAX_VALUE;
        if (watermark >= windowEnd && !anyOpen) {
            return new Evaluation(NOT_ACHIEVED, area, anchorAt, latestShortEnd, -1, NO_DEADLINE);
        }
        long next = minOpenDeadline;
        if (watermark < windowEnd) {
            next = Math.min(next, windowEnd);
        }
        return new Evaluation(PENDING, area, anchorAt, Long.MIN_VALUE, -1, next);
    }
}
