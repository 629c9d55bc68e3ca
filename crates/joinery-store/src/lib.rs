//! # joinery-store
//!
//! The RocksDB state store under the processor and the projections. Its one
//! promise: state and the Kafka offsets that produced it are written in the
//! same atomic write batch, so that after any crash a service resumes exactly
//! where its state ends (effectively once).
//!
//! Memory is bounded: one LRU block cache and one write-buffer manager are
//! shared by everything the database holds.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let store = joinery_store::Store::open(dir.path(), &Default::default()).unwrap();
//! let mut batch = store.batch();
//! batch.put(b"citizen/1", b"state");
//! batch.set_offset("joinery.events.dfe", 0, 42);
//! store.write(batch).unwrap();
//! assert_eq!(store.offset("joinery.events.dfe", 0).unwrap(), Some(42));
//! ```

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, Direction, IteratorMode, Options, WriteBatch, WriteBufferManager,
    WriteOptions, DB,
};

/// A key and its value, as returned by [`Store::scan`].
pub type Entry = (Vec<u8>, Vec<u8>);

/// Key prefix of stored offsets: `o/<topic>/<partition>`.
const OFFSET_PREFIX: &[u8] = b"\x00o/";

/// Why a store operation failed. Always internal to the service: the caller
/// stops the task and lets the supervisor restart from the last commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused an operation.
    #[error("RocksDB error in {path}: {source}")]
    Rocks {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// A stored value is not what this version of the code wrote.
    #[error("corrupt value under key {key}: {reason}")]
    Corrupt {
        /// The key, escaped.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Tuning of the store. Defaults suit the local stack.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Shared LRU block cache, in bytes.
    pub block_cache_bytes: usize,
    /// Total memtable budget across the database, in bytes.
    pub write_buffer_bytes: usize,
    /// fsync the WAL on every batch (survives power loss, not just process death).
    pub sync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            sync: false,
        }
    }
}

/// A RocksDB database with offsets kept beside the state.
pub struct Store {
    /// The database.
    db: DB,
    /// Where it lives, for error messages.
    path: PathBuf,
    /// Options for every batch write.
    write_opts: WriteOptions,
    /// The shared block cache, kept for its usage gauge.
    cache: Cache,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// An atomic group of writes: state and offsets together.
#[derive(Default)]
pub struct Batch {
    inner: WriteBatch,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.inner.len())
            .finish()
    }
}

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = OFFSET_PREFIX.to_vec();
    k.extend_from_slice(topic.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

impl Batch {
    /// Writes `value` under `key`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.put(key, value);
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.inner.delete(key);
    }

    /// Records that everything before `next_offset` of `topic`/`partition`
    /// is reflected in this batch's state.
    pub fn set_offset(&mut self, topic: &str, partition: i32, next_offset: i64) {
        self.inner
            .put(offset_key(topic, partition), next_offset.to_be_bytes());
    }

    /// Number of writes in the batch.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StoreError> {
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            opts.write_buffer_bytes,
            false,
            cache.clone(),
        );
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_block_based_table_factory(&table);
        o.set_write_buffer_manager(&wbm);
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        o.increase_parallelism(2);
        // Opened with the default column family named, so that batched
        // multi-gets can address it.
        let db =
            DB::open_cf(&o, path, [rocksdb::DEFAULT_COLUMN_FAMILY_NAME]).map_err(|source| {
                StoreError::Rocks {
                    path: path.to_owned(),
                    source,
                }
            })?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(opts.sync);
        Ok(Store {
            db,
            path: path.to_owned(),
            write_opts,
            cache,
        })
    }

    fn err(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Rocks {
            path: self.path.clone(),
            source,
        }
    }

    /// A new, empty batch.
    pub fn batch(&self) -> Batch {
        Batch::default()
    }

    /// Applies a batch atomically: all of it or none of it survives a crash.
    pub fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.db
            .write_opt(batch.inner, &self.write_opts)
            .map_err(|e| self.err(e))
    }

    /// The value under `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(key).map_err(|e| self.err(e))
    }

    /// The values of many keys at once (RocksDB's batched MultiGet: one
    /// pass through the memtables and each file for the whole set), in the
    /// order of `keys`; `sorted` says the keys are already in order.
    pub fn multi_get(
        &self,
        keys: &[Vec<u8>],
        sorted: bool,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let cf = self
            .db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .ok_or_else(|| StoreError::Corrupt {
                key: rocksdb::DEFAULT_COLUMN_FAMILY_NAME.into(),
                reason: "the default column family is missing".into(),
            })?;
        self.db
            .batched_multi_get_cf(&cf, keys, sorted)
            .into_iter()
            .map(|r| r.map(|v| v.map(|v| v.to_vec())).map_err(|e| self.err(e)))
            .collect()
    }

    /// The next offset to consume of `topic`/`partition`, if any was stored.
    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let key = offset_key(topic, partition);
        match self.get(&key)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: format!("offset of {} bytes, expected 8", v.len()),
                })?;
                Ok(Some(i64::from_be_bytes(bytes)))
            }
        }
    }

    /// Every (key, value) whose key starts with `prefix`, in key order, up to
    /// (excluding) `end` when given.
    pub fn scan(&self, prefix: &[u8], end: Option<&[u8]>) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(prefix) || end.is_some_and(|end| k.as_ref() >= end) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Every (key, value) with `from <= key < to`, in key order. The upper
    /// bound is given to RocksDB, so deleted keys past it are never visited.
    pub fn scan_range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.scan_range_limit(from, to, usize::MAX)
    }

    /// The first `limit` (key, value) with `from <= key < to`, in key order.
    pub fn scan_range_limit(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_lower_bound(from.to_vec());
        opts.set_iterate_upper_bound(to.to_vec());
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_opt(IteratorMode::From(from, Direction::Forward), opts)
            .take(limit)
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Bytes of the shared block cache in use.
    pub fn block_cache_usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// Approximate size of the live data on disk, in bytes.
    pub fn live_data_bytes(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-live-data-size")
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_offsets_survive_reopening_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            let mut b = s.batch();
            b.put(b"k", b"v1");
            b.set_offset("t", 3, 10);
            s.write(b).expect("write");
        }
        let s = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        assert_eq!(s.get(b"k").expect("get"), Some(b"v1".to_vec()));
        assert_eq!(s.offset("t", 3).expect("offset"), Some(10));
        assert_eq!(s.offset("t", 4).expect("offset"), None);
    }

    #[test]
    fn multi_get_answers_in_the_order_asked_with_missing_keys_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let mut b = s.batch();
        b.put(b"c/2", b"two");
        b.put(b"c/1", b"one");
        s.write(b).expect("write");
        let keys = vec![b"c/1".to_vec(), b"c/15".to_vec(), b"c/2".to_vec()];
        assert_eq!(
            s.multi_get(&keys, true).expect("multi_get"),
            vec![Some(b"one".to_vec()), None, Some(b"two".to_vec())]
        );
    }

    #[test]
    fn scan_stops_at_the_prefix_and_the_end_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let mut b = s.batch();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            b.put(k, k);
        }
        s.write(b).expect("write");
        let keys: Vec<_> = s
            .scan(b"a/", None)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![b"a/1".to_vec(), b"a/2".to_vec(), b"a/3".to_vec()]
        );
        assert_eq!(s.scan(b"a/", Some(b"a/3")).expect("scan").len(), 2);
        let range: Vec<_> = s
            .scan_range(b"a/2", b"b/")
            .expect("range")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(range, vec![b"a/2".to_vec(), b"a/3".to_vec()]);
        let first = s.scan_range_limit(b"a/", b"b/", 2).expect("range");
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].0, b"a/1".to_vec());
    }
}
