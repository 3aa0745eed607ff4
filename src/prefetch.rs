//! Prefetch of hot rolling windows: windows that move with now and are asked again and again
//! (per question without its times, and window length; whoever asks) get their live tail
//! refreshed in the background shortly before their next refresh is expected, so that refresh
//! is answered from segments without waiting for the appliance.
//!
//! - **When.** A window's refresh period is learnt from its asks (a moving average of the time
//!   between them). The next expected refresh is prefetched `lead` before it; when a bucket
//!   boundary falls in between, just after the boundary instead (a tail fetched before a
//!   bucket begins cannot answer for it).
//! - **Budget.** Prefetch requests go only when the appliance's guard gives leave at once
//!   (`ApplianceGuard::admit_prefetch`): within `segments.prefetch_budget_percent` of the
//!   callers' budget, never while a caller's request waits. A refused prefetch is tried again
//!   a second later, until its refresh is due.
//! - **Quiet windows.** Expected refreshes are prefetched for at most
//!   `segments.prefetch_idle_periods` periods after the last ask; then the window is dropped.
//! - **Replicas.** The segment cache takes a run's cross-replica lock without waiting: another
//!   replica holding it (or its segments already in Redis) means the work is done once.
//! - Everything runs on the gateway's clock, so tests drive it with the manual clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use prometheus::IntCounter;

use crate::cache::segments::{PrefetchMark, PrefetchOutcome, SegmentCache};
use crate::clock::{Clock, Wake, Worker};
use crate::fetch::{FetchError, MetricSource, Priority};
use crate::query::MetricQuery;
use crate::settings::Settings;
use crate::telemetry::GatewayMetrics;
use crate::upstream::UpstreamError;

/// Asks closer together than this are one refresh (a dashboard's panels, several callers).
const SAME_REFRESH_MS: i64 = 1_000;
/// How soon a prefetch refused by the guard is tried again.
const RETRY_MS: i64 = 1_000;
/// Most windows tracked; beyond, new ones are not (a bound on memory, whatever callers send).
const MAX_WINDOWS: usize = 10_000;
/// Prefetches running at once.
const CONCURRENCY: usize = 4;
/// Windows refreshed less often than this are not hot: their period is not learnt.
const MAX_PERIOD_MS: i64 = 15 * 60_000;

/// A rolling window: the question without its times, and its length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WindowKey {
    base: Arc<MetricQuery>,
    length: i64,
}

#[derive(Debug)]
struct Window {
    last_asked: i64,
    /// Moving average of the time between refreshes; `None` until the second.
    period: Option<i64>,
    /// The expected refresh the last prefetch was for.
    prefetched_for: i64,
    /// Not before this (a prefetch the guard refused).
    retry_at: i64,
    /// The last prefetch's segments, to count it wasted if no caller used them.
    last_mark: Option<Arc<PrefetchMark>>,
}

/// The prefetcher's series, resolved once.
struct Counters {
    fetched: IntCounter,
    fresh: IntCounter,
    skipped: IntCounter,
    deferred: IntCounter,
    failed: IntCounter,
    hits: IntCounter,
    wasted: IntCounter,
}

pub struct Prefetcher {
    segments: Arc<SegmentCache<FetchError>>,
    source: MetricSource,
    clock: Clock,
    windows: Mutex<HashMap<WindowKey, Window>>,
    /// The loop's worker on the gateway's clock, until [`Prefetcher::run`] takes it.
    worker: Mutex<Option<Worker>>,
    /// Wakes the loop: a window became hot, or the clock moved.
    wake: Wake,
    lead_ms: i64,
    live_ttl_ms: i64,
    idle_periods: i64,
    counters: Counters,
    /// The clock's reading when the loop last found nothing due (it sleeps after).
    settled_at: AtomicI64,
}

impl Prefetcher {
    /// Gives prefetching its share of the appliance's budget.
    pub fn new(
        settings: &Settings,
        segments: Arc<SegmentCache<FetchError>>,
        source: MetricSource,
        metrics: &GatewayMetrics,
        clock: Clock,
    ) -> Self {
        let share = source
            .client()
            .guard()
            .share_with_prefetch(settings.segments.prefetch_budget_percent);
        metrics.prefetch_budget.set(i64::from(share));
        let outcome = |name: &str| metrics.prefetches.with_label_values(&[name]);
        let worker = clock.worker();
        Self {
            wake: worker.wake_handle(),
            worker: Mutex::new(Some(worker)),
            segments,
            source,
            clock,
            windows: Mutex::default(),
            lead_ms: (settings.segments.prefetch_lead_secs as i64).saturating_mul(1000),
            live_ttl_ms: (settings.cache.live_ttl_secs.get() as i64).saturating_mul(1000),
            idle_periods: i64::from(settings.segments.prefetch_idle_periods.get()),
            counters: Counters {
                fetched: outcome("fetched"),
                fresh: outcome("fresh"),
                skipped: outcome("skipped"),
                deferred: outcome("deferred"),
                failed: outcome("failed"),
                hits: metrics.prefetch_hits.clone(),
                wasted: metrics.prefetch_wasted.clone(),
            },
            settled_at: AtomicI64::new(i64::MIN),
        }
    }

    /// Notes a caller's ranged question asked at `now`: a window that moves with now (its end
    /// within an interval, at least a minute, of now) is tracked.
    pub fn note(&self, query: &MetricQuery, now: i64) {
        let Some(start) = query.starttime() else {
            return;
        };
        let end = query.endtime().unwrap_or(now);
        let interval = query.interval_ms();
        if end < now - interval.max(60_000) || end > now + interval || end <= start {
            return;
        }
        let key = WindowKey {
            base: Arc::new(query.without_range()),
            length: end - start,
        };
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        if windows.len() >= MAX_WINDOWS && !windows.contains_key(&key) {
            let idle = self.idle_periods;
            windows.retain(|_, w| {
                now - w.last_asked <= (idle + 1) * w.period.unwrap_or(MAX_PERIOD_MS)
            });
        }
        let full = windows.len() >= MAX_WINDOWS;
        let became_hot = match windows.get_mut(&key) {
            Some(w) => {
                let gap = now - w.last_asked;
                if gap < SAME_REFRESH_MS {
                    false
                } else if gap > MAX_PERIOD_MS {
                    // Not refreshed like a dashboard: start learning again.
                    w.period = None;
                    w.last_asked = now;
                    false
                } else {
                    let hot = w.period.is_none();
                    w.period = Some(w.period.map_or(gap, |p| (3 * p + gap) / 4));
                    w.last_asked = now;
                    hot
                }
            }
            None if full => false,
            None => {
                windows.insert(
                    key,
                    Window {
                        last_asked: now,
                        period: None,
                        prefetched_for: now,
                        retry_at: i64::MIN,
                        last_mark: None,
                    },
                );
                false
            }
        };
        drop(windows);
        if became_hot {
            self.wake.wake();
        }
    }

    /// The clock's reading when the prefetcher last had nothing left to do: every prefetch due
    /// by then is done (for benchmarks on a manual clock).
    pub fn settled_at(&self) -> i64 {
        self.settled_at.load(Ordering::Acquire)
    }

    /// Wakes the loop to look at the clock again (after a manual clock moved).
    pub fn nudge(&self) {
        self.wake.wake();
    }

    /// Counts a caller's answer assembled with prefetched segments.
    pub fn count_hit(&self) {
        self.counters.hits.inc();
    }

    /// Runs until the gateway stops: sleeps (on the gateway's clock) until the next prefetch is
    /// due or a window becomes hot, and prefetches what is due.
    pub async fn run(self: Arc<Self>) {
        // Taken once: a second run has nothing to do.
        let Some(worker) = self.worker.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        loop {
            let now = self.clock.now_ms();
            let (due, next) = self.plan(now);
            if !due.is_empty() {
                futures::stream::iter(due)
                    .for_each_concurrent(CONCURRENCY, |(key, target)| {
                        self.prefetch(key, now, target)
                    })
                    .await;
                continue;
            }
            self.settled_at.store(now, Ordering::Release);
            // A window that became hot since `plan` ends this park at once.
            worker.park(next).await;
        }
    }

    /// The prefetches due at `now` (each window's target refresh, taken as done), and when
    /// the next one is. Drops the windows gone quiet.
    fn plan(&self, now: i64) -> (Vec<(WindowKey, i64)>, Option<i64>) {
        let Ok(mut windows) = self.windows.lock() else {
            return (Vec::new(), None);
        };
        let mut due = Vec::new();
        let mut next: Option<i64> = None;
        let mut quiet = Vec::new();
        for (key, w) in windows.iter_mut() {
            let Some(period) = w.period else {
                // Asked once: forgotten unless asked again like a dashboard.
                if now - w.last_asked > MAX_PERIOD_MS {
                    quiet.push(key.clone());
                }
                continue;
            };
            let period = period.max(SAME_REFRESH_MS);
            // The first expected refresh after the last prefetched one.
            let k = ((w.prefetched_for - w.last_asked).div_euclid(period) + 1).max(1);
            if k > self.idle_periods {
                let quiet_at = w.last_asked + (self.idle_periods + 1) * period;
                if now > quiet_at {
                    quiet.push(key.clone());
                } else {
                    next = Some(next.map_or(quiet_at + 1, |n| n.min(quiet_at + 1)));
                }
                continue;
            }
            let target = w.last_asked + k * period;
            if target < now {
                // Missed (the clock jumped, or the guard kept refusing): on to the next.
                w.prefetched_for = target;
                next = Some(now);
                continue;
            }
            let at = self.due_at(key, target).max(w.retry_at);
            if at <= now {
                w.prefetched_for = target;
                due.push((key.clone(), target));
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for key in quiet {
            if let Some(w) = windows.remove(&key)
                && w.last_mark.is_some_and(|m| !m.was_used())
            {
                self.counters.wasted.inc();
            }
        }
        (due, next)
    }

    /// When to prefetch for a refresh expected at `target`: `lead` before it (at most half a
    /// live period), or just after the last bucket boundary before it, if that is later.
    fn due_at(&self, key: &WindowKey, target: i64) -> i64 {
        let interval = key.base.interval_ms();
        let live_period = self.live_ttl_ms.min(interval).max(1);
        let lead = self.lead_ms.min(live_period / 2);
        let boundary = target.div_euclid(interval) * interval;
        (target - lead).max((boundary + 1).min(target))
    }

    /// Refreshes `key`'s window, as asked at `now`, for its refresh expected at `target`.
    async fn prefetch(&self, key: WindowKey, now: i64, target: i64) {
        let query = key.base.with_range(now - key.length, now);
        let source = self.source.clone();
        let by_range = move |ranged: MetricQuery| {
            let source = source.clone();
            async move {
                source
                    .fetch_as(&ranged, now, None, Priority::Prefetch)
                    .await
            }
        };
        let outcome = self.segments.prefetch(&query, now, target, by_range).await;
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        let window = windows.get_mut(&key);
        match outcome {
            Ok(PrefetchOutcome::Fetched(mark)) => {
                self.counters.fetched.inc();
                if let Some(w) = window
                    && let Some(previous) = w.last_mark.replace(mark)
                    && !previous.was_used()
                {
                    self.counters.wasted.inc();
                }
            }
            Ok(PrefetchOutcome::Fresh) => self.counters.fresh.inc(),
            Ok(PrefetchOutcome::Skipped) => self.counters.skipped.inc(),
            Err(FetchError::Upstream(UpstreamError::Saturated { .. })) => {
                self.counters.deferred.inc();
                // Tried again shortly, while its refresh is still ahead.
                if let Some(w) = window
                    && now + RETRY_MS < target
                {
                    w.prefetched_for = target - 1;
                    w.retry_at = now + RETRY_MS;
                }
            }
            Err(e) => {
                self.counters.failed.inc();
                tracing::debug!(error = %e, "prefetch failed");
            }
        }
    }
}
