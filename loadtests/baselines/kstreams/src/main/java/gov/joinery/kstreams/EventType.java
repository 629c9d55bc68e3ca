package gov.joinery.kstreams;

/**
 * Every department event type, with its Avro full name and department code
 * (as in Joinery's catalog). The baseline reads all six department topics,
 * as Joinery's processor does: every event is decoded, kept with its
 * citizen and moves the watermark; the opportunity mission evaluates the
 * education and employment ones. Records of any other type are dead
 * letters (unknown record type, or a type on the wrong department's topic).
 */
public enum EventType {
    EDUCATION_ENROLLED("gov.joinery.dfe.EducationEnrolled", "dfe"),
    EDUCATION_EXITED("gov.joinery.dfe.EducationExited", "dfe"),
    EMPLOYMENT_STARTED("gov.joinery.hmrc.EmploymentStarted", "hmrc"),
    EMPLOYMENT_ENDED("gov.joinery.hmrc.EmploymentEnded", "hmrc"),
    BENEFIT_CLAIM_STARTED("gov.joinery.dwp.BenefitClaimStarted", "dwp"),
    BENEFIT_CLAIM_ENDED("gov.joinery.dwp.BenefitClaimEnded", "dwp"),
    REFERRAL_RECEIVED("gov.joinery.dhsc.ReferralReceived", "dhsc"),
    TREATMENT_STARTED("gov.joinery.dhsc.TreatmentStarted", "dhsc"),
    TREATMENT_COMPLETED("gov.joinery.dhsc.TreatmentCompleted", "dhsc"),
    RELEASED_FROM_CUSTODY("gov.joinery.moj.ReleasedFromCustody", "moj"),
    PROVEN_REOFFENCE("gov.joinery.moj.ProvenReoffence", "moj"),
    ACCOMMODATION_RECORDED("gov.joinery.mhclg.AccommodationRecorded", "mhclg");

    /** The six department codes, in Joinery's order. */
    public static final java.util.List<String> DEPARTMENTS = java.util.List.of("dfe", "dwp", "hmrc", "dhsc", "moj", "mhclg");

    private static final EventType[] ALL = values();

    public final String avroFullName;
    public final String department;

    EventType(String avroFullName, String department) {
        this.avroFullName = avroFullName;
        this.department = department;
    }

    public static EventType fromAvroFullName(String name) {
        for (EventType t : ALL) {
            if (t.avroFullName.equals(name)) {
                return t;
            }
        }
        return null;
    }

    public static EventType fromCode(int code) {
        return ALL[code];
    }
}
