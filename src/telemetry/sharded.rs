//! Counting on the hit path without sharing cache lines between cores. A counter every server
//! worker adds to on every request makes the cores pass its cache line back and forth, which
//! cost more than the addition itself in the hit path's profile. Here each thread adds to its
//! own shard, and a scrape sums the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec};

/// Shards per counter: more than the server's workers on the machines we run on, so each
/// worker thread usually has a shard of its own (a shared one is still correct, just slower).
pub const SHARDS: usize = 8;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, given out in turn on first use.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// The calling thread's shard index.
pub fn shard() -> usize {
    SHARD.with(|s| *s)
}

/// One value per cache line pair (adjacent-line prefetching pulls lines in twos).
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A monotonic counter each thread adds to in its own shard.
#[derive(Default)]
pub struct ShardedCounter {
    shards: [Padded; SHARDS],
}

impl ShardedCounter {
    pub fn inc(&self) {
        self.shards[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one to this thread's shard and returns the shard's count before it: a per-thread
    /// sequence, for sampling one request in n without a shared counter.
    pub fn next_in_shard(&self) -> u64 {
        self.shards[shard()].0.fetch_add(1, Ordering::Relaxed)
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// An `IntCounterVec` whose hottest children are counted in [`ShardedCounter`]s and caught up
/// at every scrape, so `/metrics` reads exactly what was counted.
pub struct CaughtUp {
    vec: IntCounterVec,
    hot: Mutex<Vec<Hot>>,
}

struct Hot {
    labels: Vec<String>,
    child: IntCounter,
    counter: Arc<ShardedCounter>,
}

impl CaughtUp {
    pub fn new(vec: IntCounterVec) -> Self {
        Self {
            vec,
            hot: Mutex::new(Vec::new()),
        }
    }

    /// The sharded counter behind the child with these label values (the same one for
    /// every caller asking for them).
    pub fn sharded(&self, labels: &[&str]) -> Arc<ShardedCounter> {
        let Ok(mut hot) = self.hot.lock() else {
            return Arc::new(ShardedCounter::default());
        };
        if let Some(h) = hot.iter().find(|h| h.labels.iter().eq(labels.iter())) {
            return h.counter.clone();
        }
        let counter = Arc::new(ShardedCounter::default());
        hot.push(Hot {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            child: self.vec.with_label_values(labels),
            counter: counter.clone(),
        });
        counter
    }

    pub fn vec(&self) -> &IntCounterVec {
        &self.vec
    }
}

impl Collector for CaughtUp {
    fn desc(&self) -> Vec<&Desc> {
        self.vec.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Ok(hot) = self.hot.lock() {
            for h in hot.iter() {
                h.child
                    .inc_by(h.counter.get().saturating_sub(h.child.get()));
            }
        }
        self.vec.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_from_many_threads_add_up() {
        let counter = Arc::new(ShardedCounter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.get(), 12_000);
    }

    #[test]
    fn a_scrape_reads_what_the_shards_counted() {
        let vec = IntCounterVec::new(prometheus::Opts::new("t_total", "t"), &["event"]).unwrap();
        let caught = CaughtUp::new(vec);
        let hits = caught.sharded(&["hit"]);
        (0..5).for_each(|_| hits.inc());
        let families = caught.collect();
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 5.0);
        hits.inc();
        let families = caught.collect();
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 6.0);
    }
}
