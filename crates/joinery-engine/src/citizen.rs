//! One citizen's event history, deduplicated by department and `event_id`
//! and kept in event time order, so that evaluation never depends on arrival
//! order. Adding an event and asking whether one is held cost O(log n), so
//! a citizen with many events cannot make a partition's work quadratic.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use joinery_domain::{Department, Event, EventId, EventType, Millis};
use serde::{Deserialize, Serialize};

/// What identifies an event: the department that sent it and the id it
/// chose. Two departments' events never collide, whatever ids they choose.
pub type EventIdentity = (Department, EventId);

/// A citizen's events, keyed by (event time, department, event id):
/// iteration is in event time, ties broken by department then id, whatever
/// order they arrived in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Event>", into = "Vec<Event>")]
pub struct CitizenEvents {
    events: BTreeMap<(Millis, Department, EventId), Event>,
    /// Every held event's identity (derived from `events`, never stored).
    held: BTreeSet<EventIdentity>,
}

/// The identity of `e`.
pub fn identity(e: &Event) -> EventIdentity {
    (e.event_type.department(), e.event_id)
}

impl CitizenEvents {
    /// Adds an event. Returns false (and changes nothing) when the same
    /// department's event with the same id is already present: a re-sent
    /// event is applied once.
    pub fn insert(&mut self, event: Event) -> bool {
        if !self.held.insert(identity(&event)) {
            return false;
        }
        let (department, id) = identity(&event);
        self.events
            .insert((event.occurred_at, department, id), event);
        true
    }

    /// Whether the event with this identity is present.
    pub fn contains(&self, id: EventIdentity) -> bool {
        self.held.contains(&id)
    }

    /// All events in event-time order.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.values()
    }

    /// Events of one type in event-time order.
    pub fn of_type(&self, t: EventType) -> impl Iterator<Item = &Event> {
        self.iter().filter(move |e| e.event_type == t)
    }

    /// Number of distinct events.
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
        let mut happened = CitizenEvents::default();
        for e in self.events.range(..bound).map(|(_, e)| e) {
            happened.insert(e.clone());
        }
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
        c.events.into_values().collect()
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
}
