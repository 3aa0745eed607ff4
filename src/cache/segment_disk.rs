//! The segments' disk tier, so a restart (a deploy, a crash, `kill -9`) costs the appliance
//! nothing it already answered: settled segments in one redb file, in the compact encoding
//! the Redis tier uses, each behind a CRC-32 of its bytes and its expiry.
//!
//! redb, not fjall: one file with ACID, copy-on-write commits (a killed process leaves the
//! last committed state, never a torn one), no background compaction thread, and a small
//! pure-Rust build on two cores; segments are written once and read often, where a B-tree's
//! write amplification costs little.
//!
//! A disk that fails never takes the gateway down: a file that will not open is set aside
//! (renamed `*.corrupt-<time>`) and a new one started; a directory that cannot be written
//! leaves the gateway on memory alone; a failed write is logged and counted; an entry whose
//! checksum is wrong is dropped, counted and fetched again.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable, TableDefinition};

use super::segment::Segment;
use super::segment_codec::{decode, encode};
use super::segment_store::{Question, SegmentStore};
use super::store::StoreReport;
use crate::query::{MetricQuery, PurgeFilter};

/// Segment name (`<question id>:<start>`) → checksum, expiry, question, segment.
const SEGMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("segments");
const FILE: &str = "segments.redb";
/// Only segments fresh for at least this long go to disk: settled ones (a day by default),
/// not the live tail that changes every minute.
const SETTLED_MS: i64 = 10 * 60_000;
/// How long an archived segment is kept: until evicted.
const ARCHIVE_MS: i64 = 100 * 365 * 86_400_000;

/// What the disk tier did, for `/metrics` and `/internal/cache`.
#[derive(Debug, Default)]
pub struct DiskCounters {
    pub hits: AtomicU64,
    pub writes: AtomicU64,
    pub errors: AtomicU64,
    pub corrupt: AtomicU64,
    pub evicted: AtomicU64,
}

/// Expiry and size of every entry, kept in memory: what to evict first, and the bytes held.
#[derive(Default)]
struct Index {
    entries: HashMap<String, (i64, u64)>,
    by_expiry: BTreeSet<(i64, String)>,
    bytes: u64,
    /// Whether the file's entries are all in: until then a lookup cannot trust a miss here,
    /// and nothing is evicted.
    loaded: bool,
}

impl Index {
    fn insert(&mut self, key: String, expires: i64, size: u64) {
        self.remove(&key);
        self.bytes += size;
        self.by_expiry.insert((expires, key.clone()));
        self.entries.insert(key, (expires, size));
    }

    fn remove(&mut self, key: &str) {
        if let Some((expires, size)) = self.entries.remove(key) {
            self.bytes = self.bytes.saturating_sub(size);
            self.by_expiry.remove(&(expires, key.to_owned()));
        }
    }
}

#[derive(Clone)]
pub(super) struct DiskSegments {
    db: Arc<Database>,
    path: PathBuf,
    max_bytes: u64,
    /// Kept past their expiry (the archive): ordered for eviction by when they were stored.
    archive: bool,
    index: Arc<Mutex<Index>>,
    pub(super) counters: Arc<DiskCounters>,
}

/// Why the disk tier is off.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot create the cache directory {path} (cache.dir): {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the cache file {path} (cache.dir): {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::Error>,
    },
}

/// What a purge filter asks of an entry: the question's metrics and devices,
/// `metric,metric\ndid,did`.
fn tag(query: &MetricQuery) -> Vec<u8> {
    let devices: Vec<String> = query.devices().iter().map(u64::to_string).collect();
    format!("{}\n{}", query.metrics().join(","), devices.join(",")).into_bytes()
}

/// Whether `filter` names the entry tagged `tag` (an unreadable tag is named: better purged).
fn tagged(filter: &PurgeFilter, tag: &[u8]) -> bool {
    let text = String::from_utf8_lossy(tag);
    let (metrics, devices) = text.split_once('\n').unwrap_or((&text, ""));
    filter
        .metric
        .as_ref()
        .is_none_or(|m| metrics.split(',').any(|x| x == m))
        && filter
            .did
            .is_none_or(|d| devices.split(',').any(|x| x == d.to_string()))
}

/// redb's error, boxed: it is large, and travels back from every blocking task.
#[derive(Debug)]
struct DbError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        Self(Box::new(e.into()))
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `<crc32 of the rest: 4><expiry ms: 8><tag length: 4><tag><segment>`.
fn frame(expires: i64, question: &[u8], segment: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + question.len() + segment.len());
    body.extend_from_slice(&expires.to_le_bytes());
    body.extend_from_slice(&u32::try_from(question.len()).unwrap_or(0).to_le_bytes());
    body.extend_from_slice(question);
    body.extend_from_slice(segment);
    let mut out = crc32fast::hash(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// The expiry, question JSON and segment bytes of a frame whose checksum holds.
fn unframe(bytes: &[u8]) -> Option<(i64, &[u8], &[u8])> {
    let (crc, body) = bytes.split_at_checked(4)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let (expires, rest) = body.split_at_checked(8)?;
    let (length, rest) = rest.split_at_checked(4)?;
    let length = usize::try_from(u32::from_le_bytes(length.try_into().ok()?)).ok()?;
    let (question, segment) = rest.split_at_checked(length)?;
    Some((
        i64::from_le_bytes(expires.try_into().ok()?),
        question,
        segment,
    ))
}

/// For `check-config`: whether the disk tier can keep its file in `dir` (made if missing),
/// by writing and removing a probe file there.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let why =
        |what: &str, e: std::io::Error| format!("cache.dir: cannot {what} {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| why("create the directory", e))?;
    let probe = dir.join(".metricgate-probe");
    std::fs::write(&probe, b"probe").map_err(|e| why("write in", e))?;
    std::fs::remove_file(&probe).map_err(|e| why("remove a file in", e))
}

/// Whether opening failed on the file's content (not on a lock or a permission).
fn unreadable(e: &redb::DatabaseError) -> bool {
    use std::io::ErrorKind;
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => true,
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            matches!(io.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData)
        }
        redb::DatabaseError::UpgradeRequired(_) => true,
        _ => false,
    }
}

fn name(question: &Question, start: i64) -> String {
    format!("{}:{start}", question.stable_id())
}

impl DiskSegments {
    /// Opens (or starts) the tier in `dir`, reading every entry's expiry and size; a file
    /// that is not a database is set aside and a new one started.
    pub(super) fn open(
        dir: &Path,
        max_bytes: u64,
        archive: bool,
        now: i64,
    ) -> Result<Self, DiskError> {
        std::fs::create_dir_all(dir).map_err(|source| DiskError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE);
        let db = match Database::create(&path) {
            Ok(db) => db,
            // Garbage or a truncated file: set aside (for a post-mortem), start anew.
            Err(first) if unreadable(&first) => {
                let aside = path.with_extension(format!("redb.corrupt-{}", now / 1000));
                tracing::error!(path = %path.display(), error = %first, aside = %aside.display(),
                    "the disk cache file is not a readable database: set aside, starting a new one");
                std::fs::rename(&path, &aside).map_err(|source| DiskError::Directory {
                    path: path.clone(),
                    source,
                })?;
                Database::create(&path).map_err(|e| DiskError::Open {
                    path: path.clone(),
                    source: Box::new(e.into()),
                })?
            }
            // Another process holds it, or it cannot be read: left alone.
            Err(e) => {
                return Err(DiskError::Open {
                    path,
                    source: Box::new(e.into()),
                });
            }
        };
        let disk = Self {
            db: Arc::new(db),
            path,
            max_bytes,
            archive,
            index: Arc::default(),
            counters: Arc::default(),
        };
        // The table exists before the first lookup; the index fills in the background, so a
        // gigabyte of segments does not hold back readiness.
        let create = || -> Result<(), DbError> {
            let write = disk.db.begin_write()?;
            write.open_table(SEGMENTS)?;
            write.commit()?;
            Ok(())
        };
        create().map_err(|e| DiskError::Open {
            path: disk.path.clone(),
            source: e.0,
        })?;
        let loader = disk.clone();
        let spawned = std::thread::Builder::new()
            .name("disk-cache-index".into())
            .spawn(move || {
                if let Err(e) = loader.load(now) {
                    loader.failed("read its index", &e);
                }
            });
        if let Err(e) = spawned {
            disk.failed("start reading its index", &e);
        }
        Ok(disk)
    }

    /// Whether every entry of the file is indexed (see [`Index::loaded`]).
    pub(super) fn loaded(&self) -> bool {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).loaded
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn archive(&self) -> bool {
        self.archive
    }

    /// Reads every entry's expiry and size, then drops the expired and the corrupt. Entries
    /// published meanwhile keep what their publishing indexed.
    fn load(&self, now: i64) -> Result<(), DbError> {
        let mut found = Index::default();
        let mut drop = Vec::new();
        {
            let read = self.db.begin_read()?;
            let table = read.open_table(SEGMENTS)?;
            for item in table.iter()? {
                let (key, value) = item?;
                let (key, value) = (key.value().to_owned(), value.value());
                match unframe(value) {
                    Some((expires, _, _)) if expires > now => {
                        found.insert(key, expires, value.len() as u64);
                    }
                    Some(_) => drop.push(key),
                    None => {
                        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                        drop.push(key);
                    }
                }
            }
        }
        {
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            for (key, (expires, size)) in found.entries {
                if !index.entries.contains_key(&key) {
                    index.insert(key, expires, size);
                }
            }
            index.loaded = true;
        }
        if !drop.is_empty() {
            self.remove_blocking(&drop)?;
        }
        Ok(())
    }

    fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %self.path.display(), error = %error,
            "the disk cache could not {what}; carrying on from memory");
    }

    fn lookup_blocking(&self, names: &[String]) -> Result<Vec<Option<Segment>>, DbError> {
        let read = self.db.begin_read()?;
        let table = match read.open_table(SEGMENTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(names.iter().map(|_| None).collect());
            }
            Err(e) => return Err(DbError::from(e)),
        };
        let mut out = Vec::with_capacity(names.len());
        let mut corrupt = Vec::new();
        for name in names {
            let Some(value) = table.get(name.as_str())? else {
                out.push(None);
                continue;
            };
            match unframe(value.value()).and_then(|(_, _, segment)| decode(segment)) {
                Some(segment) => out.push(Some(segment)),
                None => {
                    corrupt.push(name.clone());
                    out.push(None);
                }
            }
        }
        drop(table);
        drop(read);
        if !corrupt.is_empty() {
            self.counters
                .corrupt
                .fetch_add(corrupt.len() as u64, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), entries = corrupt.len(),
                "disk cache entries failed their checksum: dropped, to be fetched again");
            self.remove_blocking(&corrupt)?;
        }
        Ok(out)
    }

    fn remove_blocking(&self, names: &[String]) -> Result<u64, DbError> {
        let write = self.db.begin_write()?;
        let mut removed = 0;
        {
            let mut table = write.open_table(SEGMENTS)?;
            for name in names {
                if table.remove(name.as_str())?.is_some() {
                    removed += 1;
                }
            }
        }
        write.commit()?;
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        for name in names {
            index.remove(name);
        }
        Ok(removed)
    }

    fn publish_blocking(&self, entries: Vec<(String, i64, Vec<u8>)>) -> Result<(), DbError> {
        let write = self.db.begin_write()?;
        {
            let mut table = write.open_table(SEGMENTS)?;
            for (name, _, value) in &entries {
                table.insert(name.as_str(), value.as_slice())?;
            }
        }
        write.commit()?;
        self.counters
            .writes
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let over = {
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            for (name, expires, value) in entries {
                index.insert(name, expires, value.len() as u64);
            }
            // The first to expire go first until the tier fits its bound (once its size is
            // known).
            if !index.loaded {
                return Ok(());
            }
            let mut over = Vec::new();
            let mut bytes = index.bytes;
            for (_, key) in &index.by_expiry {
                if bytes <= self.max_bytes {
                    break;
                }
                bytes = bytes.saturating_sub(index.entries.get(key).map_or(0, |e| e.1));
                over.push(key.clone());
            }
            over
        };
        if !over.is_empty() {
            let removed = self.remove_blocking(&over)?;
            self.counters.evicted.fetch_add(removed, Ordering::Relaxed);
        }
        Ok(())
    }

    fn purge_blocking(&self, filter: &PurgeFilter) -> Result<u64, DbError> {
        let names: Vec<String> = {
            let read = self.db.begin_read()?;
            let table = match read.open_table(SEGMENTS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(DbError::from(e)),
            };
            let mut names = Vec::new();
            for item in table.iter()? {
                let (key, value) = item?;
                let named = filter.is_everything()
                    || unframe(value.value()).is_none_or(|(_, tag, _)| tagged(filter, tag));
                if named {
                    names.push(key.value().to_owned());
                }
            }
            names
        };
        self.remove_blocking(&names)
    }
}

impl SegmentStore for DiskSegments {
    async fn lookup_many(&self, question: &Question, starts: &[i64]) -> Vec<Option<Arc<Segment>>> {
        let names: Vec<String> = starts.iter().map(|s| name(question, *s)).collect();
        let wanted = {
            let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            !index.loaded || names.iter().any(|n| index.entries.contains_key(n))
        };
        if !wanted {
            return vec![None; starts.len()];
        }
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || this.lookup_blocking(&names)).await;
        match found {
            Ok(Ok(segments)) => {
                let hits = segments.iter().filter(|s| s.is_some()).count();
                self.counters.hits.fetch_add(hits as u64, Ordering::Relaxed);
                segments.into_iter().map(|s| s.map(Arc::new)).collect()
            }
            Ok(Err(e)) => {
                self.failed("read", &e);
                vec![None; starts.len()]
            }
            Err(e) => {
                self.failed("read", &e);
                vec![None; starts.len()]
            }
        }
    }

    /// Settled segments only: the live tail would be rewritten every minute for nothing.
    async fn publish(&self, question: &Question, segments: &[(i64, Arc<Segment>)]) {
        let settled: Vec<&(i64, Arc<Segment>)> = segments
            .iter()
            .filter(|(_, s)| s.deadlines.fresh_until - s.deadlines.stored_at >= SETTLED_MS)
            .collect();
        if settled.is_empty() {
            return;
        }
        let query = tag(&question.query);
        let entries: Vec<(String, i64, Vec<u8>)> = settled
            .into_iter()
            .map(|(start, segment)| {
                let d = &segment.deadlines;
                let expires = if self.archive {
                    // A century on from when it was stored: never expired, the oldest
                    // evicted first.
                    d.stored_at.saturating_add(ARCHIVE_MS)
                } else {
                    d.stale_while_revalidate_until.max(d.stale_if_error_until)
                };
                (
                    name(question, *start),
                    expires,
                    frame(expires, &query, &encode(segment)),
                )
            })
            .collect();
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.publish_blocking(entries)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.failed("write", &e),
            Err(e) => self.failed("write", &e),
        }
    }

    async fn purge(&self, filter: &PurgeFilter) -> u64 {
        let (this, filter) = (self.clone(), filter.clone());
        match tokio::task::spawn_blocking(move || this.purge_blocking(&filter)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.failed("purge", &e);
                0
            }
            Err(e) => {
                self.failed("purge", &e);
                0
            }
        }
    }

    async fn report(&self) -> StoreReport {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        StoreReport {
            entries: index.entries.len() as u64,
            bytes: index.bytes,
            max_bytes: self.max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::freshness::Deadlines;

    fn question() -> Question {
        let query = MetricQuery::builder()
            .metrics(["connections".to_owned()])
            .interval_seconds(60)
            .build(
                &crate::settings::Settings::defaults().query,
                &crate::query::AnyMetric,
                0,
            )
            .unwrap();
        Question::new(Arc::from("appliance"), Arc::new(query), 360_000)
    }

    fn segment(stored_at: i64) -> Arc<Segment> {
        let deadlines = Deadlines {
            stored_at,
            fresh_until: stored_at + 86_400_000,
            stale_while_revalidate_until: stored_at + 86_430_000,
            stale_if_error_until: stored_at + 87_000_000,
        };
        Arc::new(Segment::new(Vec::new(), Vec::new(), deadlines, 5, None))
    }

    #[tokio::test]
    async fn segments_outlive_the_process_and_bad_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let q = question();
        {
            let disk = DiskSegments::open(dir.path(), 1 << 20, false, 0).unwrap();
            disk.publish(&q, &[(0, segment(0)), (360_000, segment(0))])
                .await;
            assert_eq!(disk.report().await.entries, 2);
        }
        let disk = DiskSegments::open(dir.path(), 1 << 20, false, 1_000).unwrap();
        for _ in 0..500 {
            if disk.loaded() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(disk.loaded());
        assert_eq!(disk.report().await.entries, 2, "both read back");
        let found = disk.lookup_many(&q, &[0, 360_000, 720_000]).await;
        assert!(found[0].is_some() && found[1].is_some() && found[2].is_none());
        // A flipped byte in a stored entry: dropped, counted, a miss.
        {
            let write = disk.db.begin_write().unwrap();
            {
                let mut table = write.open_table(SEGMENTS).unwrap();
                let key = name(&q, 0);
                let mut bytes = table.get(key.as_str()).unwrap().unwrap().value().to_vec();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                table.insert(key.as_str(), bytes.as_slice()).unwrap();
            }
            write.commit().unwrap();
        }
        let found = disk.lookup_many(&q, &[0, 360_000]).await;
        assert!(found[0].is_none() && found[1].is_some());
        assert_eq!(disk.counters.corrupt.load(Ordering::Relaxed), 1);
        assert_eq!(disk.report().await.entries, 1);
        // Past its bound, the first to expire go.
        let small = DiskSegments::open(&dir.path().join("small"), 1, false, 0).unwrap();
        while !small.loaded() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        small
            .publish(&q, &[(0, segment(0)), (360_000, segment(5))])
            .await;
        assert_eq!(small.report().await.entries, 0);
        assert_eq!(small.counters.evicted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn frames_hold_their_checksum() {
        let framed = frame(42, b"{}", b"segment");
        assert_eq!(unframe(&framed), Some((42, &b"{}"[..], &b"segment"[..])));
        for i in 0..framed.len() {
            let mut bad = framed.clone();
            bad[i] ^= 0x40;
            assert_eq!(unframe(&bad), None, "a flipped bit at {i} is caught");
        }
        assert_eq!(unframe(&framed[..10]), None);
    }
}
