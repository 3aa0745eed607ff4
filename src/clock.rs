//! The only source of "now": the system clock in service, a manual clock that tests drive.
//!
//! Freshness, live buckets, segment lifetimes, the breaker, the appliance budget, probes and
//! request signing all read this clock, so a test advances time instead of sleeping through it.
//! (Durations that are only measured, such as how long the appliance took, use `Instant`.)
//!
//! Background loops that run on the clock (probes, prefetching) do so as [`Worker`]s: on a
//! manual clock, a test waits for [`Clock::is_idle`] after moving time, rather than guessing
//! how long the loops need to catch up.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System,
    Manual {
        /// Epoch ms, moved only by [`Clock::advance`] and [`Clock::set`]; sleepers watch it.
        now: watch::Sender<i64>,
        /// The background loops on this clock, for [`Clock::is_idle`].
        workers: Mutex<Vec<Weak<WorkerState>>>,
    },
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System => f.write_str("Clock::System"),
            Source::Manual { now, .. } => write!(f, "Clock::Manual({})", *now.borrow()),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

/// Epoch milliseconds from the system clock.
fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock standing still at `start_ms` until the test moves it.
    pub fn manual(start_ms: i64) -> Self {
        Self(Arc::new(Source::Manual {
            now: watch::Sender::new(start_ms),
            workers: Mutex::default(),
        }))
    }

    /// A manual clock starting at the system's now (so signed dates stay plausible).
    pub fn manual_from_now() -> Self {
        Self::manual(system_ms())
    }

    pub fn is_manual(&self) -> bool {
        matches!(&*self.0, Source::Manual { .. })
    }

    /// Epoch milliseconds (UTC).
    pub fn now_ms(&self) -> i64 {
        match &*self.0 {
            Source::System => system_ms(),
            Source::Manual { now, .. } => *now.borrow(),
        }
    }

    /// Moves a manual clock forward and wakes the sleepers that are due; no effect on the
    /// system clock.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual { now, .. } = &*self.0 {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            now.send_modify(|t| *t = t.saturating_add(by));
        }
    }

    /// Sets a manual clock (forward or back); no effect on the system clock.
    pub fn set(&self, at_ms: i64) {
        if let Source::Manual { now, .. } = &*self.0 {
            now.send_replace(at_ms);
        }
    }

    /// Resolves once the clock reads `deadline_ms` or later.
    pub async fn sleep_until(&self, deadline_ms: i64) {
        match &*self.0 {
            Source::System => {
                let left = deadline_ms.saturating_sub(system_ms()).max(0);
                tokio::time::sleep(Duration::from_millis(left as u64)).await;
            }
            Source::Manual { now, .. } => {
                let mut rx = now.subscribe();
                // The sender lives as long as this clock, which the caller holds.
                let _ = rx.wait_for(|t| *t >= deadline_ms).await;
            }
        }
    }

    pub async fn sleep(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.sleep_until(self.now_ms().saturating_add(ms)).await;
    }

    /// Runs `f` until the clock reads `deadline_ms`; `None` if the deadline came first.
    pub async fn run_until<F: std::future::Future>(
        &self,
        deadline_ms: i64,
        f: F,
    ) -> Option<F::Output> {
        // A result that is ready wins over a deadline that has passed.
        tokio::select! {
            biased;
            out = f => Some(out),
            () = self.sleep_until(deadline_ms) => None,
        }
    }

    /// A background loop's handle on this clock, busy until it first parks.
    pub fn worker(&self) -> Worker {
        let state = Arc::new(WorkerState::default());
        if let Source::Manual { workers, .. } = &*self.0 {
            let mut workers = lock(workers);
            workers.retain(|w| w.strong_count() > 0);
            workers.push(Arc::downgrade(&state));
        }
        Worker {
            clock: self.clone(),
            state,
        }
    }

    /// Whether every background loop on this manual clock has caught up with it: each is
    /// parked, until a time still ahead or until woken, none is due or working. (Always true
    /// on the system clock, whose loops are not tracked.)
    ///
    /// A test moves the clock, then polls this (bounded, in real time) before looking at what
    /// the loops did. Work a loop started before that (an appliance request) is finished by
    /// then; so is work it waits for on the clock, so that must not wait for a later time.
    pub fn is_idle(&self) -> bool {
        let Source::Manual { now, workers } = &*self.0 else {
            return true;
        };
        let now = *now.borrow();
        lock(workers).iter().filter_map(Weak::upgrade).all(|w| {
            let park = lock(&w.park);
            match park.parked {
                _ if park.ended => true,
                Some(Some(until)) => until > now,
                Some(None) => true,
                None => false,
            }
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A background loop that runs on a [`Clock`]: it works, then parks until a time or until
/// woken (through its [`Wake`]), and again. On a manual clock, [`Clock::is_idle`] tells a
/// test when every loop has done what the clock made due. The loop owns it: dropping it (the
/// loop ended, or was aborted) forgets it.
pub struct Worker {
    clock: Clock,
    state: Arc<WorkerState>,
}

/// Wakes a [`Worker`] from elsewhere (a request that gave its loop something to do).
#[derive(Clone)]
pub struct Wake(Arc<WorkerState>);

#[derive(Default)]
struct WorkerState {
    park: Mutex<Park>,
    wake: Notify,
}

#[derive(Default)]
struct Park {
    /// `None` while working; parked until a time (`Some(Some(at))`) or until woken.
    parked: Option<Option<i64>>,
    /// Woken since it last parked: its next park returns at once.
    woken: bool,
    /// Its loop ended: nothing more to wait for.
    ended: bool,
}

/// Marks the worker busy when its park ends, or is abandoned.
struct Working<'a>(&'a WorkerState);

impl Drop for Working<'_> {
    fn drop(&mut self) {
        let mut park = lock(&self.0.park);
        park.parked = None;
        park.woken = false;
    }
}

impl Worker {
    /// Parks until the clock reads `until` (`None`: until woken), or its [`Wake`] is used; a
    /// wake since the last park ends it at once.
    pub async fn park(&self, until: Option<i64>) {
        let _working = Working(&self.state);
        // Created before the check, so a wake after it is not missed.
        let woken = self.state.wake.notified();
        {
            let mut park = lock(&self.state.park);
            if park.woken {
                return;
            }
            park.parked = Some(until);
        }
        match until {
            Some(at) => {
                tokio::select! {
                    () = self.clock.sleep_until(at) => {}
                    () = woken => {}
                }
            }
            None => woken.await,
        }
    }

    /// Parks for `d` of the clock's time.
    pub async fn sleep(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.park(Some(self.clock.now_ms().saturating_add(ms)))
            .await;
    }

    /// A handle that wakes this worker.
    pub fn wake_handle(&self) -> Wake {
        Wake(self.state.clone())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        lock(&self.state.park).ended = true;
    }
}

impl Wake {
    /// Ends the worker's current park, or its next: something changed that its loop should
    /// look at. The worker counts as busy from now on, so a test sees the work this asks for.
    pub fn wake(&self) {
        {
            let mut park = lock(&self.0.park);
            park.parked = None;
            park.woken = true;
        }
        self.0.wake.notify_waiters();
    }
}

/// The appliance budget's token buckets (`governor`) run on this clock too.
impl governor::clock::Clock for Clock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> Self::Instant {
        let ms = u64::try_from(self.now_ms()).unwrap_or(0);
        governor::nanos::Nanos::from(ms.saturating_mul(1_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_advanced() {
        let clock = Clock::manual(1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(6_000).await }
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "the clock reads 5 s, not 6");
        clock.advance(Duration::from_secs(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now_ms(), 6_000);
    }

    /// Lets the runtime (one thread) run until the clock's workers are idle.
    async fn until_idle(clock: &Clock) {
        for _ in 0..1_000 {
            if clock.is_idle() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the workers never parked");
    }

    #[tokio::test]
    async fn a_worker_is_idle_only_while_parked_with_nothing_due() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let clock = Clock::manual(0);
        let worker = clock.worker();
        let wake = worker.wake_handle();
        assert!(!clock.is_idle(), "busy until it first parks");
        let rounds = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let rounds = rounds.clone();
            async move {
                loop {
                    rounds.fetch_add(1, Ordering::SeqCst);
                    worker.sleep(Duration::from_secs(1)).await;
                }
            }
        });
        until_idle(&clock).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_millis(999));
        assert!(clock.is_idle(), "nothing due yet");
        clock.advance(Duration::from_millis(1));
        assert!(!clock.is_idle(), "due, and not yet run");
        until_idle(&clock).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        wake.wake();
        assert!(!clock.is_idle(), "woken, and not yet run");
        until_idle(&clock).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 3);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(clock.is_idle(), "a loop that ended is not waited for");
    }

    #[tokio::test]
    async fn a_wake_before_the_park_is_not_lost() {
        let clock = Clock::manual(0);
        let worker = clock.worker();
        worker.wake_handle().wake();
        // Parked until woken: returns at once.
        worker.park(None).await;
        // The wake was used up: the next park lasts until its time.
        let parked = worker.park(Some(1_000));
        tokio::pin!(parked);
        assert!(futures::poll!(parked.as_mut()).is_pending());
        assert!(clock.is_idle());
        clock.advance(Duration::from_secs(1));
        assert!(!clock.is_idle());
        parked.await;
        assert!(!clock.is_idle(), "working again");
    }

    #[tokio::test]
    async fn run_until_gives_up_at_the_deadline() {
        let clock = Clock::manual(0);
        let pending = clock.run_until(100, std::future::pending::<()>());
        let mover = async {
            tokio::task::yield_now().await;
            clock.advance(Duration::from_millis(100));
        };
        let (out, ()) = tokio::join!(pending, mover);
        assert_eq!(out, None);
        assert_eq!(clock.run_until(0, async { 7 }).await, Some(7));
    }
}
