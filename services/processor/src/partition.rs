//! Between the pure [`crate::step`] and the state store: what a partition
//! step reads, in what order, and how its output becomes writes.
//!
//! [`work`] plans event time from the stored greatest event time, reads
//! the timers that fall due and every citizen the batch or those timers name
//! (one sorted multi-get), and runs the step. It reads through
//! [`PartitionReader`], which [`StorePartition`] implements over RocksDB and
//! the step's tests implement in memory, so that both run the same sequence.
//! [`write_ops`] turns the output into the key/value writes the processor
//! puts in the batch's one RocksDB write (with offsets and outbox).

use joinery_domain::{CitizenKey, Millis};
use joinery_store::Store;

use crate::state::{self, CitizenRecord};
use crate::step::{self, Arrival, Loaded, Rules, StepOutput};

/// What a partition step reads from the state of one partition.
pub(crate) trait PartitionReader {
    /// The greatest event time stored for the partition (`None` before its
    /// first batch).
    fn max_time(&self) -> anyhow::Result<Option<Millis>>;
    /// The event time every timer has fired up to, when an earlier step
    /// left due timers for later (`None`: up to the stored event time).
    fn fired_upto(&self) -> anyhow::Result<Option<Millis>>;
    /// The first `limit` timers due in `(after, upto]` (event time), by
    /// time then citizen.
    fn due_timers(
        &self,
        after: Millis,
        upto: Millis,
        limit: usize,
    ) -> anyhow::Result<Vec<(Millis, CitizenKey)>>;
    /// The stored records of `citizens` (sorted, distinct), in that order.
    fn records(&self, citizens: &[&CitizenKey]) -> anyhow::Result<Vec<Option<CitizenRecord>>>;
}

/// Reads what the step needs and runs it; see the module docs.
pub(crate) fn work(
    reader: &impl PartitionReader,
    rules: &Rules<'_>,
    arrivals: Vec<Arrival>,
) -> anyhow::Result<StepOutput> {
    let plan = rules.plan(reader.max_time()?, reader.fired_upto()?, &arrivals);
    let limit = rules.max_timers.max(1);
    let mut due_timers = if plan.fires_timers() {
        reader.due_timers(plan.fired_upto, plan.max_time, limit + 1)?
    } else {
        Vec::new()
    };
    let more_timers = due_timers.len() > limit;
    due_timers.truncate(limit);
    let mut wanted: Vec<&CitizenKey> = arrivals
        .iter()
        .map(|a| &a.event.citizen_key)
        .chain(due_timers.iter().map(|(_, c)| c))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut loaded = Loaded::default();
    for (c, record) in wanted.iter().zip(reader.records(&wanted)?) {
        if let Some(r) = record {
            loaded.citizens.insert((*c).clone(), r);
        }
    }
    loaded.due_timers = due_timers;
    loaded.more_timers = more_timers;
    Ok(step::step(rules, &plan, loaded, arrivals))
}

/// One partition of the processor's RocksDB state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StorePartition<'a> {
    /// The processor's store.
    pub(crate) store: &'a Store,
    /// The source partition.
    pub(crate) partition: i32,
}

impl StorePartition<'_> {
    /// A time stored under `key` (`what` names it in an error).
    fn time(&self, key: Vec<u8>, what: &str) -> anyhow::Result<Option<Millis>> {
        self.store
            .get(key)?
            .map(|b| {
                b.as_slice()
                    .try_into()
                    .map(Millis::from_be_bytes)
                    .map_err(|_| anyhow::anyhow!("corrupt {what} of partition {}", self.partition))
            })
            .transpose()
    }
}

impl PartitionReader for StorePartition<'_> {
    fn max_time(&self) -> anyhow::Result<Option<Millis>> {
        self.time(state::max_time_key(self.partition), "event time")
    }

    fn fired_upto(&self) -> anyhow::Result<Option<Millis>> {
        self.time(state::fired_upto_key(self.partition), "timer position")
    }

    fn due_timers(
        &self,
        after: Millis,
        upto: Millis,
        limit: usize,
    ) -> anyhow::Result<Vec<(Millis, CitizenKey)>> {
        // Timers at or before `after` have fired and every new timer lies
        // after the event time it was set at, so only (after, upto] can
        // hold due timers; starting there also skips the tombstones of
        // timers already fired.
        let p = self.partition;
        let due = self.store.scan_range_limit(
            &state::timer_end(p, after),
            &state::timer_end(p, upto),
            limit,
        )?;
        // A key that does not parse cannot name a citizen to wake: it is
        // logged and passed over (the range moves on with event time, so
        // it is met once), never allowed to stop the partition.
        Ok(due
            .iter()
            .filter_map(|(k, _)| {
                let timer = state::timer_of(k, p);
                if timer.is_none() {
                    tracing::error!(partition = p, key = ?k, "unreadable timer key passed over");
                }
                timer
            })
            .collect())
    }

    fn records(&self, citizens: &[&CitizenKey]) -> anyhow::Result<Vec<Option<CitizenRecord>>> {
        let keys: Vec<Vec<u8>> = citizens
            .iter()
            .map(|c| state::citizen_key(self.partition, c))
            .collect();
        citizens
            .iter()
            .zip(self.store.multi_get(&keys, true)?)
            .map(|(c, v)| v.map(|b| state::decode_record(&b, c)).transpose())
            .collect()
    }
}

/// A write of the state: `None` deletes the key.
pub(crate) type Op = (Vec<u8>, Option<Vec<u8>>);

/// The writes of a step's output for partition `p`, in an order whose
/// result does not depend on how a write batch applies them: the
/// event time, the timers cleared, then those set (a timer cleared and set
/// again stays set), then the records.
pub(crate) fn write_ops(p: i32, out: &StepOutput) -> anyhow::Result<Vec<Op>> {
    let mut ops = Vec::with_capacity(1 + out.timers_cleared.len() + 2 * out.records.len());
    ops.push((
        state::max_time_key(p),
        Some(out.max_time.to_be_bytes().to_vec()),
    ));
    ops.push((
        state::fired_upto_key(p),
        out.backlog().then(|| out.fired_upto.to_be_bytes().to_vec()),
    ));
    for (deadline, c) in &out.timers_cleared {
        ops.push((state::timer_key(p, *deadline, c), None));
    }
    for (deadline, c) in &out.timers_set {
        ops.push((state::timer_key(p, *deadline, c), Some(Vec::new())));
    }
    for (c, record) in &out.records {
        ops.push((
            state::citizen_key(p, c),
            Some(state::encode_record(record)?),
        ));
    }
    Ok(ops)
}
