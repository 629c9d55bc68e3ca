//! The transactional outbox: records to publish (views, dead letters) are
//! written into the state store in the same batch as the state and offsets
//! that produced them, then produced, then deleted. A crash between the
//! write and the produce republishes them at start-up with the same
//! versions, which projections recognise; nothing is lost, nothing counted twice.

/// Key prefix of outbox entries: `x/<seq as u64 big-endian>`.
pub(crate) const PREFIX: &[u8] = b"x/";

/// Key prefix of quarantined entries, which Kafka refused for good (too
/// large, an invalid record): `q/<seq as u64 big-endian>`, the entry then
/// the reason. Kept for an operator, never produced again, never blocking
/// the partition behind them.
pub(crate) const QUARANTINE_PREFIX: &[u8] = b"q/";

/// The key of quarantined entry `seq`.
pub(crate) fn quarantine_key(seq: u64) -> Vec<u8> {
    let mut k = QUARANTINE_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// One record waiting to be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) topic: String,
    pub(crate) key: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: Vec<(String, String)>,
    /// The partition to produce to; `None`: the key's (the partitioner's).
    pub(crate) partition: Option<i32>,
}

/// A pseudo-header in an encoded entry carrying its partition (entries
/// written before partitions were kept have none); never produced.
const PARTITION_PSEUDO_HEADER: &str = "\u{0}partition";

pub(crate) fn key(seq: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.strip_prefix(PREFIX)?.try_into().ok()?,
    ))
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn get<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(input.get(..4)?.try_into().ok()?) as usize;
    let bytes = input.get(4..4 + len)?;
    *input = &input[4 + len..];
    Some(bytes)
}

impl Entry {
    /// Length-prefixed fields: topic, key, payload, then header pairs.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + self.key.len() + 64);
        put(&mut out, self.topic.as_bytes());
        put(&mut out, &self.key);
        put(&mut out, &self.payload);
        for (k, v) in &self.headers {
            put(&mut out, k.as_bytes());
            put(&mut out, v.as_bytes());
        }
        if let Some(p) = self.partition {
            put(&mut out, PARTITION_PSEUDO_HEADER.as_bytes());
            put(&mut out, p.to_string().as_bytes());
        }
        out
    }

    pub(crate) fn decode(mut input: &[u8]) -> Option<Entry> {
        let topic = String::from_utf8(get(&mut input)?.to_vec()).ok()?;
        let key = get(&mut input)?.to_vec();
        let payload = get(&mut input)?.to_vec();
        let mut headers = Vec::new();
        let mut partition = None;
        while !input.is_empty() {
            let k = String::from_utf8(get(&mut input)?.to_vec()).ok()?;
            let v = String::from_utf8(get(&mut input)?.to_vec()).ok()?;
            if k == PARTITION_PSEUDO_HEADER {
                partition = Some(v.parse().ok()?);
            } else {
                headers.push((k, v));
            }
        }
        Some(Entry {
            topic,
            key,
            payload,
            headers,
            partition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let e = Entry {
            topic: "joinery.deadletter".into(),
            key: b"k".to_vec(),
            payload: vec![0, 1, 2],
            headers: vec![("joinery.reason".into(), "corrupt_avro".into())],
            partition: None,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        let placed = Entry {
            partition: Some(4),
            ..e.clone()
        };
        assert_eq!(Entry::decode(&placed.encode()), Some(placed));
        // An entry written before partitions were kept reads with none.
        assert_eq!(Entry::decode(&e.encode()).map(|d| d.partition), Some(None));
        assert_eq!(seq_of(&key(7)), Some(7));
        assert_eq!(Entry::decode(&[0, 0, 0, 9]), None);
    }
}
