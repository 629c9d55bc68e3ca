//! One citizen's event history, deduplicated by department and `event_id`
//! and kept in event time order, so that evaluation never depends on arrival
//! order. Adding an event and asking whether one is held cost O(log n), so
//! a citizen with many events cannot make a partition's work quadratic.

use std::borrow::Cow;
use std::collections::BTreeMap;

use joinery_domain::{Department, Event, EventId, EventType, Millis};
use serde::{Deserialize, Serialize};

/// What identifies an event: the department that sent it and the id it
/// chose. Two departments' events never collide, whatever ids they choose.
pub type EventIdentity = (Department, EventId);

/// A citizen's events, keyed by (event time, department, event id):
/// iteration is in event time, ties broken by department then id, whatever
/// order they arrived in.
///
/// A department corrects an event by sending it again (same department and
/// event id) with a later `recorded_at`, and retracts it by sending it with
/// `retracted: true` and a later `recorded_at`: for each identity the
/// version recorded last counts, whatever order versions arrive in, and a
/// retracted event counts in nothing. Every version is kept (serialised
/// with the live events), so that a late older version changes nothing and
/// a replay agrees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Event>", into = "Vec<Event>")]
pub struct CitizenEvents {
    /// The version that counts of every event not retracted.
    events: BTreeMap<(Millis, Department, EventId), Event>,
    /// The event time of each identity's version in `events`.
    live: BTreeMap<EventIdentity, Millis>,
    /// The other versions, by identity and `recorded_at`: superseded
    /// versions and retractions. Empty for almost every citizen, so that
    /// reading a record costs no more than before versions were kept.
    history: BTreeMap<(EventIdentity, Millis), Event>,
}

/// The identity of `e`.
pub fn identity(e: &Event) -> EventIdentity {
    (e.event_type.department(), e.event_id)
}

impl CitizenEvents {
    /// Adds a version of an event. Returns false (and changes nothing) when
    /// this version (same department, event id and `recorded_at`) is
    /// already held: a re-sent event is applied once. Versions are ordered
    /// by `recorded_at` alone, so that any arrival order gives the same
    /// history: a retry stamped later is a new (identical) version. A
    /// different version with a held version's `recorded_at` is not added
    /// either: [`CitizenEvents::conflicts`] tells the caller to refuse it.
    pub fn insert(&mut self, event: Event) -> bool {
        let id = identity(&event);
        if self.version(id, event.recorded_at).is_some() {
            return false;
        }
        let live = self.live_version(id).map(|e| e.recorded_at);
        let latest_other = self
            .history
            .range((id, Millis::MIN)..=(id, Millis::MAX))
            .next_back()
            .map(|((_, recorded), _)| *recorded);
        let current = live.max(latest_other);
        if current.is_some_and(|c| c > event.recorded_at) {
            // An older version arriving late: kept, counts in nothing.
            self.history.insert((id, event.recorded_at), event);
            return true;
        }
        if let Some(occurred) = self.live.remove(&id) {
            if let Some(old) = self.events.remove(&(occurred, id.0, id.1)) {
                self.history.insert((id, old.recorded_at), old);
            }
        }
        if event.is_retraction() {
            self.history.insert((id, event.recorded_at), event);
        } else {
            self.live.insert(id, event.occurred_at);
            self.events.insert((event.occurred_at, id.0, id.1), event);
        }
        true
    }

    /// The version of `id` that counts, if it is not retracted.
    fn live_version(&self, id: EventIdentity) -> Option<&Event> {
        let occurred = self.live.get(&id)?;
        self.events.get(&(*occurred, id.0, id.1))
    }

    /// When the version of `e`'s event that counts now happened, if one
    /// counts (a correction or retraction of it changes the past from
    /// then on).
    pub fn counted_at(&self, e: &Event) -> Option<Millis> {
        self.live_version(identity(e)).map(|held| held.occurred_at)
    }

    /// Whether any version of the event with this identity is held.
    pub fn contains(&self, id: EventIdentity) -> bool {
        self.live.contains_key(&id)
            || self
                .history
                .range((id, Millis::MIN)..=(id, Millis::MAX))
                .next()
                .is_some()
    }

    /// Every version held, to store: the events that count, then the
    /// superseded versions and retractions. Inserting them again, in any
    /// order, gives back the same history.
    pub fn every_version(&self) -> impl Iterator<Item = &Event> {
        self.events.values().chain(self.history.values())
    }

    /// The held version of `id` recorded at `recorded`.
    fn version(&self, id: EventIdentity, recorded: Millis) -> Option<&Event> {
        self.live_version(id)
            .filter(|e| e.recorded_at == recorded)
            .or_else(|| self.history.get(&(id, recorded)))
    }

    /// Whether a different version of `e` with the same `recorded_at` is
    /// held: two versions stamped alike cannot be ordered, so the later
    /// one to arrive must be refused (with its reason) rather than dropped.
    pub fn conflicts(&self, e: &Event) -> bool {
        self.version(identity(e), e.recorded_at)
            .is_some_and(|held| held != e)
    }

    /// Whether this version of `e` (identity and `recorded_at`) is held.
    pub fn holds_version(&self, e: &Event) -> bool {
        self.version(identity(e), e.recorded_at).is_some()
    }

    /// How many versions have been accepted: grows with every insert that
    /// returns true, so it versions what the citizen's views are built on.
    pub fn revisions(&self) -> usize {
        self.events.len() + self.history.len()
    }

    /// All events in event-time order.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.values()
    }

    /// Events of one type in event-time order.
    pub fn of_type(&self, t: EventType) -> impl Iterator<Item = &Event> {
        self.iter().filter(move |e| e.event_type == t)
    }

    /// Number of events that count (not retracted).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The history as it stood at event time `t`: the events that had
    /// happened by then (at or before `t`), and the time of the first event
    /// dated after it, if any (a future-dated event, kept but not yet
    /// counted). Borrows when nothing is dated after `t`.
    pub fn as_of(&self, t: Millis) -> (Cow<'_, CitizenEvents>, Option<Millis>) {
        let Some(after) = t.checked_add(1) else {
            return (Cow::Borrowed(self), None);
        };
        let bound = (after, Department::MIN, EventId::MIN);
        let Some(((next, _, _), _)) = self.events.range(bound..).next() else {
            return (Cow::Borrowed(self), None);
        };
        // Only for evaluation: the events that count, without their history.
        let happened = CitizenEvents {
            events: self
                .events
                .range(..bound)
                .map(|(k, e)| (*k, e.clone()))
                .collect(),
            ..CitizenEvents::default()
        };
        (Cow::Owned(happened), Some(*next))
    }
}

impl From<Vec<Event>> for CitizenEvents {
    fn from(events: Vec<Event>) -> Self {
        let mut c = CitizenEvents::default();
        for e in events {
            c.insert(e);
        }
        c
    }
}

impl From<CitizenEvents> for Vec<Event> {
    fn from(c: CitizenEvents) -> Self {
        c.events
            .into_values()
            .chain(c.history.into_values())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_a_json_round_trip() {
        let e = Event {
            event_id: EventId(uuid::Uuid::from_u128(1)),
            event_type: EventType::EducationExited,
            occurred_at: 5,
            recorded_at: 6,
            citizen_key: "ab".repeat(32).parse().expect("key"),
            area_code: None,
            birth_year_month: None,
            fields: Default::default(),
        };
        let mut c = CitizenEvents::default();
        assert!(c.insert(e.clone()));
        assert!(!c.insert(e));
        let json = serde_json::to_vec(&c).expect("serialises");
        let back: CitizenEvents = serde_json::from_slice(&json).expect("deserialises");
        assert_eq!(back, c);
    }

    #[test]
    fn events_are_identified_by_department_and_id() {
        let event = |t: EventType| Event {
            event_id: EventId(uuid::Uuid::from_u128(7)),
            event_type: t,
            occurred_at: 5,
            recorded_at: 5,
            citizen_key: "ab".repeat(32).parse().expect("key"),
            area_code: None,
            birth_year_month: None,
            fields: Default::default(),
        };
        let mut c = CitizenEvents::default();
        assert!(c.insert(event(EventType::EducationExited)));
        assert!(
            c.insert(event(EventType::EmploymentStarted)),
            "another department's event with the same id is another event"
        );
        assert!(
            !c.insert(event(EventType::EducationEnrolled)),
            "the same department's id is the same event"
        );
        assert_eq!(c.len(), 2);
        assert!(c.contains((Department::Hmrc, EventId(uuid::Uuid::from_u128(7)))));
    }

    #[test]
    fn as_of_keeps_what_had_happened_and_names_the_next_event() {
        let at = |n: u128, t: Millis| Event {
            event_id: EventId(uuid::Uuid::from_u128(n)),
            event_type: EventType::EducationExited,
            occurred_at: t,
            recorded_at: t,
            citizen_key: "ab".repeat(32).parse().expect("key"),
            area_code: None,
            birth_year_month: None,
            fields: Default::default(),
        };
        let c = CitizenEvents::from(vec![at(1, 10), at(2, 20), at(3, 20), at(4, 30)]);
        let (now, next) = c.as_of(20);
        assert_eq!(
            now.iter().map(|e| e.occurred_at).collect::<Vec<_>>(),
            [10, 20, 20]
        );
        assert_eq!(next, Some(30));
        assert!(matches!(c.as_of(30), (Cow::Borrowed(_), None)));
        assert!(matches!(c.as_of(Millis::MAX), (Cow::Borrowed(_), None)));
        let (none, next) = c.as_of(Millis::MIN);
        assert!(none.is_empty());
        assert_eq!(next, Some(10));
    }

    fn version(
        id: u128,
        t: EventType,
        occurred: Millis,
        recorded: Millis,
        retracted: bool,
    ) -> Event {
        let mut e = Event {
            event_id: EventId(uuid::Uuid::from_u128(id)),
            event_type: t,
            occurred_at: occurred,
            recorded_at: recorded,
            citizen_key: "ab".repeat(32).parse().expect("key"),
            area_code: None,
            birth_year_month: None,
            fields: Default::default(),
        };
        if retracted {
            e.fields.insert(
                joinery_domain::event::RETRACTED_FIELD.into(),
                joinery_domain::FieldValue::Bool(true),
            );
        }
        e
    }

    #[test]
    fn the_version_recorded_last_counts_in_any_arrival_order() {
        let first = version(1, EventType::EducationExited, 10, 11, false);
        let corrected = version(1, EventType::EducationExited, 20, 21, false);
        let retracted = version(1, EventType::EducationExited, 20, 31, true);
        let other = version(2, EventType::EducationExited, 15, 15, false);
        let all = [
            first.clone(),
            corrected.clone(),
            retracted.clone(),
            other.clone(),
        ];
        // Every order of arrival gives the same history.
        let mut seen = None;
        for perm in [
            [0, 1, 2, 3],
            [3, 2, 1, 0],
            [1, 0, 3, 2],
            [2, 0, 1, 3],
            [0, 2, 3, 1],
        ] {
            let mut c = CitizenEvents::default();
            for i in perm {
                assert!(c.insert(all[i].clone()));
            }
            assert!(
                !c.insert(corrected.clone()),
                "a re-sent version is a duplicate"
            );
            assert_eq!(c.revisions(), 4);
            assert_eq!(
                c.iter().map(|e| e.event_id).collect::<Vec<_>>(),
                [other.event_id]
            );
            if let Some(s) = &seen {
                assert_eq!(s, &c);
            }
            seen = Some(c);
        }
        // A different version stamped like a held one conflicts.
        let mut c = CitizenEvents::default();
        c.insert(corrected.clone());
        let clash = Event {
            occurred_at: 12,
            ..corrected.clone()
        };
        assert!(c.conflicts(&clash) && !c.conflicts(&corrected));
        // Without the retraction, the correction counts (at its own time).
        let mut c = CitizenEvents::default();
        c.insert(corrected.clone());
        c.insert(first.clone());
        assert_eq!(c.iter().map(|e| e.occurred_at).collect::<Vec<_>>(), [20]);
        // Stored and read back, the history (every version) is the same.
        let back: CitizenEvents =
            serde_json::from_slice(&serde_json::to_vec(&seen.clone().expect("ran")).expect("json"))
                .expect("reads");
        assert_eq!(Some(back), seen);
    }
}
