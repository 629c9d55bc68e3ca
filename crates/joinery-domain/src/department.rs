//! Departments and their event types: the closed code lists of DESIGN.md's
//! domain. Each department publishes to one Kafka topic,
//! `joinery.events.<department>`; all department topics share one partition
//! count so that one citizen's events meet in one partition.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Prefix of every department topic.
pub const EVENTS_TOPIC_PREFIX: &str = "joinery.events.";

/// A government department that publishes citizen-outcome events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Department {
    /// Department for Education.
    Dfe,
    /// Department for Work and Pensions.
    Dwp,
    /// HM Revenue and Customs (payroll real-time information).
    Hmrc,
    /// Department of Health and Social Care.
    Dhsc,
    /// Ministry of Justice.
    Moj,
    /// Ministry of Housing, Communities and Local Government.
    Mhclg,
}

impl Department {
    /// Every department, in a stable order.
    pub const ALL: [Department; 6] = [
        Department::Dfe,
        Department::Dwp,
        Department::Hmrc,
        Department::Dhsc,
        Department::Moj,
        Department::Mhclg,
    ];

    /// The least department in `Ord` order (the first declared), as a bound
    /// for ranges keyed by department.
    pub const MIN: Department = Department::Dfe;

    /// The short lowercase code used in topics, tokens and schema namespaces.
    pub fn code(self) -> &'static str {
        match self {
            Department::Dfe => "dfe",
            Department::Dwp => "dwp",
            Department::Hmrc => "hmrc",
            Department::Dhsc => "dhsc",
            Department::Moj => "moj",
            Department::Mhclg => "mhclg",
        }
    }

    /// The Kafka topic this department's events are published to.
    pub fn topic(self) -> String {
        format!("{EVENTS_TOPIC_PREFIX}{}", self.code())
    }

    /// The department whose topic this is, if it is a department topic.
    pub fn from_topic(topic: &str) -> Option<Department> {
        topic.strip_prefix(EVENTS_TOPIC_PREFIX)?.parse().ok()
    }

    /// The event types this department may publish.
    pub fn event_types(self) -> impl Iterator<Item = EventType> {
        EventType::ALL
            .into_iter()
            .filter(move |t| t.department() == self)
    }
}

impl fmt::Display for Department {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The input named no known department.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown department `{0}`; expected one of dfe, dwp, hmrc, dhsc, moj, mhclg")]
pub struct UnknownDepartment(pub String);

impl FromStr for Department {
    type Err = UnknownDepartment;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Department::ALL
            .into_iter()
            .find(|d| d.code() == s)
            .ok_or_else(|| UnknownDepartment(s.to_owned()))
    }
}

/// A kind of citizen-outcome event, owned by one department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// A learner enrolled in education or training (DfE).
    EducationEnrolled,
    /// A learner left education or training (DfE).
    EducationExited,
    /// A benefit claim started (DWP).
    BenefitClaimStarted,
    /// A benefit claim ended (DWP).
    BenefitClaimEnded,
    /// An employment started, from payroll RTI (HMRC).
    EmploymentStarted,
    /// An employment ended, from payroll RTI (HMRC).
    EmploymentEnded,
    /// A referral for treatment was received (DHSC).
    ReferralReceived,
    /// A course of treatment started (DHSC).
    TreatmentStarted,
    /// A course of treatment completed or stopped (DHSC).
    TreatmentCompleted,
    /// A person was released from custody (MoJ).
    ReleasedFromCustody,
    /// A proven reoffence was recorded (MoJ).
    ProvenReoffence,
    /// A person's accommodation status was recorded (MHCLG).
    AccommodationRecorded,
}

impl EventType {
    /// The reviewed Avro schema of the event type (`schemas/` in the
    /// repository), as its text: the reader schema services decode with,
    /// and what definitions are checked against.
    pub fn schema_source(self) -> &'static str {
        use EventType::*;
        match self {
            EducationEnrolled => include_str!("../../../schemas/dfe/EducationEnrolled.avsc"),
            EducationExited => include_str!("../../../schemas/dfe/EducationExited.avsc"),
            BenefitClaimStarted => include_str!("../../../schemas/dwp/BenefitClaimStarted.avsc"),
            BenefitClaimEnded => include_str!("../../../schemas/dwp/BenefitClaimEnded.avsc"),
            EmploymentStarted => include_str!("../../../schemas/hmrc/EmploymentStarted.avsc"),
            EmploymentEnded => include_str!("../../../schemas/hmrc/EmploymentEnded.avsc"),
            ReferralReceived => include_str!("../../../schemas/dhsc/ReferralReceived.avsc"),
            TreatmentStarted => include_str!("../../../schemas/dhsc/TreatmentStarted.avsc"),
            TreatmentCompleted => include_str!("../../../schemas/dhsc/TreatmentCompleted.avsc"),
            ReleasedFromCustody => include_str!("../../../schemas/moj/ReleasedFromCustody.avsc"),
            ProvenReoffence => include_str!("../../../schemas/moj/ProvenReoffence.avsc"),
            AccommodationRecorded => {
                include_str!("../../../schemas/mhclg/AccommodationRecorded.avsc")
            }
        }
    }

    /// Every event type, in a stable order.
    pub const ALL: [EventType; 12] = [
        EventType::EducationEnrolled,
        EventType::EducationExited,
        EventType::BenefitClaimStarted,
        EventType::BenefitClaimEnded,
        EventType::EmploymentStarted,
        EventType::EmploymentEnded,
        EventType::ReferralReceived,
        EventType::TreatmentStarted,
        EventType::TreatmentCompleted,
        EventType::ReleasedFromCustody,
        EventType::ProvenReoffence,
        EventType::AccommodationRecorded,
    ];

    /// The department that owns (and alone may publish) this event type.
    pub fn department(self) -> Department {
        use EventType::*;
        match self {
            EducationEnrolled | EducationExited => Department::Dfe,
            BenefitClaimStarted | BenefitClaimEnded => Department::Dwp,
            EmploymentStarted | EmploymentEnded => Department::Hmrc,
            ReferralReceived | TreatmentStarted | TreatmentCompleted => Department::Dhsc,
            ReleasedFromCustody | ProvenReoffence => Department::Moj,
            AccommodationRecorded => Department::Mhclg,
        }
    }

    /// The record name, e.g. `EducationExited`.
    pub fn name(self) -> &'static str {
        use EventType::*;
        match self {
            EducationEnrolled => "EducationEnrolled",
            EducationExited => "EducationExited",
            BenefitClaimStarted => "BenefitClaimStarted",
            BenefitClaimEnded => "BenefitClaimEnded",
            EmploymentStarted => "EmploymentStarted",
            EmploymentEnded => "EmploymentEnded",
            ReferralReceived => "ReferralReceived",
            TreatmentStarted => "TreatmentStarted",
            TreatmentCompleted => "TreatmentCompleted",
            ReleasedFromCustody => "ReleasedFromCustody",
            ProvenReoffence => "ProvenReoffence",
            AccommodationRecorded => "AccommodationRecorded",
        }
    }

    /// The name departments use in the gateway API, e.g. `dfe.EducationExited`.
    pub fn qualified_name(self) -> String {
        format!("{}.{}", self.department().code(), self.name())
    }

    /// The Avro record full name, e.g. `gov.joinery.dfe.EducationExited`.
    pub fn avro_full_name(self) -> String {
        format!("gov.joinery.{}.{}", self.department().code(), self.name())
    }

    /// Parses an Avro record full name back into an event type.
    pub fn from_avro_full_name(name: &str) -> Option<EventType> {
        let rest = name.strip_prefix("gov.joinery.")?;
        rest.parse().ok()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.department().code(), self.name())
    }
}

/// The input named no known event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event type `{0}`; expected `<department>.<EventName>`, e.g. `dfe.EducationExited`"
)]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    /// Parses `dfe.EducationExited`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| {
                s.split_once('.')
                    .is_some_and(|(d, n)| d == t.department().code() && n == t.name())
            })
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_is_the_least_department() {
        assert_eq!(Department::ALL.iter().min(), Some(&Department::MIN));
    }

    #[test]
    fn every_event_type_round_trips_through_its_names() {
        for t in EventType::ALL {
            assert_eq!(t.qualified_name().parse::<EventType>(), Ok(t));
            assert_eq!(EventType::from_avro_full_name(&t.avro_full_name()), Some(t));
        }
    }

    #[test]
    fn topics_name_their_department() {
        for d in Department::ALL {
            assert_eq!(Department::from_topic(&d.topic()), Some(d));
            assert!(d.event_types().count() >= 1);
        }
        assert_eq!(Department::from_topic("joinery.views.opportunity"), None);
    }

    #[test]
    fn an_event_type_of_another_department_is_not_confused() {
        assert!("hmrc.EducationExited".parse::<EventType>().is_err());
    }
}
