package gov.joinery.kstreams;

/**
 * One department event, reduced to what the opportunity mission reads: the
 * envelope (id, event time, citizen, area, birth month) and the employment
 * id that pairs an EmploymentStarted with its EmploymentEnded.
 */
public final class Event {
    public final EventType type;
    /** occurred_at: event time, ms since the epoch, UTC. */
    public final long occurredAt;
    /** event_id as a UUID's two halves (ordered unsigned, like Rust's uuid::Uuid). */
    public final long idHi;
    public final long idLo;
    public final String citizenKey;
    public final String areaCode;
    public final String birthYearMonth;
    public final String employmentId;

    public Event(EventType type, long occurredAt, long idHi, long idLo, String citizenKey,
                 String areaCode, String birthYearMonth, String employmentId) {
        this.type = type;
        this.occurredAt = occurredAt;
        this.idHi = idHi;
        this.idLo = idLo;
        this.citizenKey = citizenKey;
        this.areaCode = areaCode;
        this.birthYearMonth = birthYearMonth;
        this.employmentId = employmentId;
    }

    public boolean sameId(Event o) {
        return idHi == o.idHi && idLo == o.idLo;
    }

    /** Joinery's order of a citizen's events: (occurred_at, event_id). */
    public static int compare(Event a, Event b) {
        int c = Long.compare(a.occurredAt, b.occurredAt);
        if (c != 0) {
            return c;
        }
        c = Long.compareUnsigned(a.idHi, b.idHi);
        return c != 0 ? c : Long.compareUnsigned(a.idLo, b.idLo);
    }
}
