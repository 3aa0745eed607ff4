//! The appliance's protection, whatever the callers do: a bound on requests in flight, the
//! per-minute budget (with a small fixed share kept for readiness probes, and the callers'
//! share handed out by a fair queue), a retry budget, and the circuit breaker, which only
//! callers' requests move.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{HistogramVec, IntCounterVec};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use super::breaker::{Breaker, BreakerState, Outcome, Pass, Transition};
use super::budget::{MinuteBudget, caller_share, probe_share};
use super::error::UpstreamError;
use super::queue::{FairQueue, Lane, Refusal};
use crate::clock::Clock;
use crate::redis::SharedState;
use crate::settings::UpstreamSettings;
use crate::telemetry::GatewayMetrics;

/// Retries may use `percent`% of first attempts, plus a small reserve: a struggling
/// appliance sees at most that much extra load from retries.
struct RetryBudget {
    /// In hundredths of a retry.
    balance: AtomicI64,
    deposit: i64,
}

const RETRY_COST: i64 = 100;
const RETRY_RESERVE: i64 = 10 * RETRY_COST;

impl RetryBudget {
    fn on_request(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + self.deposit).min(RETRY_RESERVE))
            });
    }

    fn try_spend(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= RETRY_COST).then_some(b - RETRY_COST)
            })
            .is_ok()
    }
}

/// Guards every appliance request.
pub struct ApplianceGuard {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    /// Callers' requests waiting for a slot or a token.
    queued: AtomicUsize,
    /// The callers' share of the per-minute budget, and the callers waiting for it.
    queue: Arc<FairQueue>,
    queue_wait: Duration,
    per_minute: u32,
    queue_timeout: Duration,
    /// How long callers' requests waited their turn, by outcome (`sent`, `refused`).
    queue_waits: HistogramVec,
    /// Callers' requests refused a turn, by reason (`full`, `timeout`).
    queue_refusals: IntCounterVec,
    clock: Clock,
    breaker: Mutex<Breaker>,
    retry_budget: RetryBudget,
    pub retries: u32,
    backoff: Duration,
    /// The appliance's per-minute budget, shared by replicas through Redis.
    shared: Option<(Arc<SharedState>, String)>,
    /// How long an appliance request typically takes (moving average, ms): how fast slots
    /// free up.
    typical_ms: AtomicU64,
    /// When a caller's request last got a 2xx answer (epoch ms), for readiness.
    last_answered: AtomicI64,
    /// Prefetching's share of the callers' budget, once set (see
    /// [`ApplianceGuard::share_with_prefetch`]).
    prefetch_budget: OnceLock<MinuteBudget>,
}

/// Leave to send one request. Report how it went with [`Ticket::done`]; a ticket dropped
/// unreported counts as a failure.
pub struct Ticket<'a> {
    guard: &'a ApplianceGuard,
    _slot: OwnedSemaphorePermit,
    pass: Pass,
    started: Instant,
    reported: bool,
}

impl Ticket<'_> {
    pub fn done(mut self, outcome: Outcome) {
        self.reported = true;
        self.guard
            .record(self.pass, outcome, self.started.elapsed());
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.guard
                .record(self.pass, Outcome::Failed, self.started.elapsed());
        }
    }
}

/// Leave for one readiness probe: an in-flight slot, and nothing else.
pub struct ProbeTicket {
    _slot: OwnedSemaphorePermit,
}

/// A caller's request waiting for leave: counted in `queued`, and its breaker pass given back
/// unless it gets through (also when the wait is cancelled).
struct Waiting<'a> {
    guard: &'a ApplianceGuard,
    pass: Option<Pass>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.guard.queued.fetch_sub(1, Ordering::Relaxed);
        if let Some(pass) = self.pass
            && let Ok(mut b) = self.guard.breaker.lock()
        {
            b.give_back(pass);
        }
    }
}

/// `GET /internal/limits`, appliance side.
#[derive(Debug, Serialize, ToSchema)]
pub struct GuardReport {
    pub max_in_flight: usize,
    pub in_flight: usize,
    /// Requests waiting for a slot or the per-minute budget.
    pub queued: usize,
    /// Of those, the callers' requests waiting their turn for the per-minute budget.
    pub waiting_for_budget: usize,
    /// The callers (client ids proven by their keys, else addresses) they wait for.
    pub waiting_callers: usize,
    /// `upstream.queue_wait_secs`: the longest a request waits its turn.
    pub queue_wait_secs: u64,
    /// `upstream.per_minute`: the callers' share plus the probes'.
    pub per_minute: u32,
    /// The part of `per_minute` kept for readiness probes.
    pub probe_per_minute: u32,
    pub queue_timeout_ms: u64,
    pub retries: u32,
    pub breaker: BreakerState,
    /// Times the breaker has opened.
    pub breaker_opened: u64,
}

impl ApplianceGuard {
    /// `shared` (Redis, and a name for this appliance) shares the per-minute budget; the
    /// queue's waits and refusals are counted in `metrics`.
    pub fn new(
        s: &UpstreamSettings,
        shared: Option<(Arc<SharedState>, String)>,
        clock: Clock,
        metrics: &GatewayMetrics,
    ) -> Self {
        let queue_wait = Duration::from_secs(s.queue_wait_secs.get());
        Self {
            shared,
            slots: Arc::new(Semaphore::new(s.max_in_flight.get())),
            max_in_flight: s.max_in_flight.get(),
            queued: AtomicUsize::new(0),
            queue: Arc::new(FairQueue::new(
                MinuteBudget::per_minute(caller_share(s.per_minute)),
                queue_wait,
                clock.clone(),
            )),
            queue_wait,
            per_minute: s.per_minute,
            clock,
            queue_timeout: Duration::from_millis(s.queue_timeout_ms.get()),
            queue_waits: metrics.upstream_queue_wait.clone(),
            queue_refusals: metrics.upstream_queue_refused.clone(),
            breaker: Mutex::new(Breaker::new(
                s.breaker_failures.get(),
                i64::try_from(s.breaker_open_secs.get().saturating_mul(1000)).unwrap_or(i64::MAX),
            )),
            retry_budget: RetryBudget {
                balance: AtomicI64::new(3 * RETRY_COST),
                deposit: i64::from(s.retry_budget_percent),
            },
            retries: s.retries,
            backoff: Duration::from_millis(s.retry_backoff_ms),
            typical_ms: AtomicU64::new(0),
            last_answered: AtomicI64::new(i64::MIN),
            prefetch_budget: OnceLock::new(),
        }
    }

    /// Lets background prefetches spend up to `percent`% of the callers' per-minute budget
    /// (at least one request a minute when above 0). Set once; later calls change nothing.
    pub fn share_with_prefetch(&self, percent: u32) -> u32 {
        let callers = caller_share(self.per_minute);
        let share = (u64::from(callers) * u64::from(percent.min(100)) / 100) as u32;
        let share = if percent > 0 { share.max(1) } else { 0 };
        if share > 0 {
            let _ = self.prefetch_budget.set(MinuteBudget::per_minute(share));
        }
        share
    }

    /// Leave for one background prefetch, at once or not at all: never while a caller's
    /// request waits, while the breaker is not closed, when no slot is free, when prefetching
    /// has spent its share, or when taking a token would leave the callers none. A prefetch
    /// takes a token from the callers' budget too (and, with Redis, from both shared budgets),
    /// so the appliance never sees more than `per_minute`.
    pub async fn admit_prefetch(&self) -> Option<Ticket<'_>> {
        let share = self.prefetch_budget.get()?;
        if self.queued.load(Ordering::Relaxed) > 0 || self.breaker_state() != BreakerState::Closed {
            return None;
        }
        let now = self.clock.now_ms();
        if share.wait_for(1, now) > Duration::ZERO {
            return None;
        }
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        // The queue's own check: no caller waits, and the callers keep a token.
        if !self.queue.take_spare(now) {
            return None;
        }
        share.try_take(now).ok()?;
        let budget = self.queue.budget();
        if let Some((shared, name)) = self.shared.as_ref().filter(|(s, _)| s.is_up()) {
            let period = |b: &MinuteBudget| b.period().as_millis().max(1) as u64;
            let own = shared.key("budget-prefetch", name);
            if let Some(g) = shared.gcra(&own, period(share), share.burst()).await
                && !g.allowed
            {
                return None;
            }
            let callers = shared.key("budget", name);
            if let Some(g) = shared.gcra(&callers, period(budget), budget.burst()).await
                && !g.allowed
            {
                return None;
            }
        }
        let pass = self.breaker_admit().ok()?;
        Some(Ticket {
            guard: self,
            _slot: slot,
            pass,
            started: Instant::now(),
            reported: false,
        })
    }

    /// Waits (boundedly) for leave to send one caller's request: its turn for a token among
    /// the callers waiting (`lane` is whom it is for), then an in-flight slot.
    pub async fn admit(&self, lane: &Lane) -> Result<Ticket<'_>, UpstreamError> {
        let pass = self.breaker_admit()?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        let mut waiting = Waiting {
            guard: self,
            pass: Some(pass),
        };
        let slot = self.wait_for_leave(lane).await?;
        waiting.pass = None;
        Ok(Ticket {
            guard: self,
            _slot: slot,
            pass,
            started: Instant::now(),
            reported: false,
        })
    }

    /// Leave for one readiness probe: a slot within `within`, or `None` when callers' requests
    /// hold every slot that long (then they tell how the appliance is). Probes take no token
    /// (their share is kept aside: they run at most `probe_share` times a minute) and never
    /// touch the breaker.
    pub async fn admit_probe(&self, within: Duration) -> Option<ProbeTicket> {
        let within_ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        let deadline = self.clock.now_ms().saturating_add(within_ms);
        let slot = self
            .clock
            .run_until(deadline, self.slots.clone().acquire_owned())
            .await?
            .ok()?;
        Some(ProbeTicket { _slot: slot })
    }

    /// How often probes may run so that they keep to their share of the budget.
    pub fn probe_every(s: &UpstreamSettings) -> Duration {
        let share_every = 60_u64.div_ceil(u64::from(probe_share(s.per_minute)));
        Duration::from_secs(s.probe_secs.get().max(share_every))
    }

    async fn wait_for_leave(&self, lane: &Lane) -> Result<OwnedSemaphorePermit, UpstreamError> {
        let arrived = self.clock.now_ms();
        // A token first, in turn: a request holding a slot while it waits would let one
        // caller's backlog hold them all.
        match self.queue.take_turn(lane).await {
            Ok(waited) if waited > Duration::ZERO => self
                .queue_waits
                .with_label_values(&["sent"])
                .observe(waited.as_secs_f64()),
            Ok(_) => {}
            Err(refusal) => return Err(self.refused(refusal)),
        }
        // Across replicas, through Redis while it answers, within what is left of the wait.
        let deadline = arrived.saturating_add(millis(self.queue_wait));
        let budget = self.queue.budget();
        while let Some((shared, name)) = self.shared.as_ref().filter(|(s, _)| s.is_up()) {
            let key = shared.key("budget", name);
            let period_ms = budget.period().as_millis().max(1) as u64;
            match shared.gcra(&key, period_ms, budget.burst()).await {
                Some(g) if g.allowed => break,
                Some(g) => {
                    let wait = Duration::from_millis(g.retry_after_ms);
                    let at = self.clock.now_ms().saturating_add(millis(wait));
                    if at > deadline {
                        return Err(self.saturated(wait));
                    }
                    self.clock.sleep_until(at).await;
                }
                None => break,
            }
        }
        let slot_deadline = self
            .clock
            .now_ms()
            .saturating_add(millis(self.queue_timeout));
        match self
            .clock
            .run_until(slot_deadline, self.slots.clone().acquire_owned())
            .await
        {
            Some(Ok(slot)) => Ok(slot),
            _ => Err(self.saturated(Duration::ZERO)),
        }
    }

    /// The 503 for a request the queue turned away, told to come back when its own place
    /// comes (or, if later, when the slots could have served that many at the typical request
    /// time).
    fn refused(&self, refusal: Refusal) -> UpstreamError {
        let reason = match refusal.waited {
            Some(waited) => {
                self.queue_waits
                    .with_label_values(&["refused"])
                    .observe(waited.as_secs_f64());
                "timeout"
            }
            None => "full",
        };
        self.queue_refusals.with_label_values(&[reason]).inc();
        let wait = refusal
            .retry_after
            .max(self.by_slots(refusal.place.saturating_add(1)));
        tracing::debug!(
            place = refusal.place,
            reason,
            retry_after_ms = wait.as_millis() as u64,
            "no turn for the appliance in time"
        );
        UpstreamError::Saturated {
            retry_after_secs: whole_secs(wait),
        }
    }

    /// The 503 for a request that got its token but no leave in time (no slot, or the shared
    /// budget said no), with an honest `Retry-After`: when the budget could have served it and
    /// everyone still waiting ahead of it, and when the slots could have (at the typical
    /// request time); `own_wait` is what this request was told to wait for its next token.
    fn saturated(&self, own_wait: Duration) -> UpstreamError {
        let waiting = u32::try_from(self.queued.load(Ordering::Relaxed).max(1)).unwrap_or(u32::MAX);
        let ahead = waiting - 1;
        let budget = self.queue.budget();
        let by_budget = budget
            .wait_for(waiting, self.clock.now_ms())
            .max(own_wait + budget.period() * ahead);
        UpstreamError::Saturated {
            retry_after_secs: whole_secs(by_budget.max(self.by_slots(waiting as usize))),
        }
    }

    /// How long the slots take to serve `requests`, at the typical request time.
    fn by_slots(&self, requests: usize) -> Duration {
        let slots = u64::try_from(self.max_in_flight.max(1)).unwrap_or(1);
        let requests = u64::try_from(requests).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.typical_ms
                .load(Ordering::Relaxed)
                .saturating_mul(requests)
                / slots,
        )
    }

    /// Counts a first attempt towards the retry budget.
    pub fn first_attempt(&self) {
        self.retry_budget.on_request();
    }

    /// Whether attempt number `attempt` (1 = first retry) may go, and after how long.
    pub fn retry_after(&self, attempt: u32) -> Option<Duration> {
        if attempt > self.retries || !self.retry_budget.try_spend() {
            return None;
        }
        // Full jitter: uniformly in [0, backoff * 2^(attempt-1)].
        let ceiling = self.backoff.saturating_mul(1 << (attempt - 1).min(10));
        Some(ceiling.mul_f64(rand::random::<f64>()))
    }

    fn breaker_admit(&self) -> Result<Pass, UpstreamError> {
        let Ok(mut b) = self.breaker.lock() else {
            return Ok(Pass::Normal);
        };
        b.admit(self.clock.now_ms())
            .map_err(|secs| UpstreamError::CircuitOpen {
                retry_after_secs: secs.max(1),
            })
    }

    fn record(&self, pass: Pass, outcome: Outcome, took: Duration) {
        let now = self.clock.now_ms();
        if outcome == Outcome::Answered {
            self.last_answered.fetch_max(now, Ordering::Relaxed);
        }
        let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .typical_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(if t == 0 {
                    took_ms
                } else {
                    (t * 7 + took_ms) / 8
                })
            });
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        match b.record(pass, outcome, now) {
            Some(Transition::Opened) => {
                tracing::warn!(?pass, "appliance circuit breaker opened")
            }
            Some(Transition::Closed) => tracing::info!("appliance circuit breaker closed"),
            None => {}
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .lock()
            .map_or(BreakerState::Closed, |b| b.state(self.clock.now_ms()))
    }

    /// When a caller's request last got a 2xx answer (epoch ms).
    pub fn last_answered_ms(&self) -> Option<i64> {
        Some(self.last_answered.load(Ordering::Relaxed)).filter(|t| *t != i64::MIN)
    }

    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }

    /// Callers' requests waiting their turn for the per-minute budget.
    pub fn waiting_for_budget(&self) -> usize {
        self.queue.waiting().0
    }

    pub fn report(&self, s: &UpstreamSettings) -> GuardReport {
        let (waiting_for_budget, waiting_callers) = self.queue.waiting();
        GuardReport {
            max_in_flight: self.max_in_flight,
            in_flight: self.in_flight(),
            queued: self.queued.load(Ordering::Relaxed),
            waiting_for_budget,
            waiting_callers,
            queue_wait_secs: self.queue_wait.as_secs(),
            per_minute: self.per_minute,
            probe_per_minute: probe_share(self.per_minute),
            queue_timeout_ms: s.queue_timeout_ms.get(),
            retries: self.retries,
            breaker: self.breaker_state(),
            breaker_opened: self.breaker.lock().map_or(0, |b| b.opened()),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `Retry-After`'s whole seconds: rounded up, at least one.
fn whole_secs(d: Duration) -> u64 {
    u64::try_from(d.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use std::num::NonZero;

    fn guard(adjust: impl FnOnce(&mut UpstreamSettings)) -> (ApplianceGuard, Clock) {
        let mut s = Settings::defaults().upstream;
        adjust(&mut s);
        let clock = Clock::manual(1_000_000);
        let guard = ApplianceGuard::new(&s, None, clock.clone(), &GatewayMetrics::new());
        (guard, clock)
    }

    fn caller() -> Lane {
        Lane::new("ip:192.0.2.1")
    }

    #[tokio::test]
    async fn only_callers_requests_move_the_breaker() {
        let (g, clock) = guard(|s| {
            s.breaker_failures = NonZero::new(2).unwrap();
            s.breaker_open_secs = NonZero::new(15).unwrap();
        });
        // Probes fail as often as they like: the breaker never hears of them.
        for _ in 0..10 {
            let probe = g.admit_probe(Duration::ZERO).await.expect("a free slot");
            drop(probe);
        }
        assert_eq!(g.breaker_state(), BreakerState::Closed);
        for _ in 0..2 {
            g.admit(&caller()).await.unwrap().done(Outcome::Failed);
        }
        assert_eq!(g.breaker_state(), BreakerState::Open);
        assert!(matches!(
            g.admit(&caller()).await,
            Err(UpstreamError::CircuitOpen {
                retry_after_secs: 15
            })
        ));
        // A probe still gets a slot while the breaker is open: readiness keeps looking.
        assert!(g.admit_probe(Duration::ZERO).await.is_some());
        clock.advance(Duration::from_secs(15));
        assert_eq!(g.breaker_state(), BreakerState::HalfOpen);
        let trial = g
            .admit(&caller())
            .await
            .expect("a caller's request is the trial");
        assert!(matches!(
            g.admit(&caller()).await,
            Err(UpstreamError::CircuitOpen { .. })
        ));
        trial.done(Outcome::Answered);
        assert_eq!(g.breaker_state(), BreakerState::Closed);
        assert_eq!(g.report(&Settings::defaults().upstream).breaker_opened, 1);
    }

    #[tokio::test]
    async fn a_trial_that_gets_no_token_is_given_back() {
        // The reproduction: 6 per minute (5 for callers: a burst of 1, then one every
        // 15 s), 2 failures open the breaker for 2 s.
        let (g, clock) = guard(|s| {
            s.per_minute = 6;
            s.breaker_failures = NonZero::new(2).unwrap();
            s.breaker_open_secs = NonZero::new(2).unwrap();
            s.queue_wait_secs = NonZero::new(1).unwrap();
        });
        g.admit(&caller()).await.unwrap().done(Outcome::Failed);
        clock.advance(Duration::from_secs(15));
        g.admit(&caller()).await.unwrap().done(Outcome::Failed);
        assert_eq!(g.breaker_state(), BreakerState::Open);
        clock.advance(Duration::from_secs(2));
        // Half-open: the trial's token is 13 s away, past its 1 s wait: refused at once.
        let saturated = g.admit(&caller()).await.err().expect("no token in time");
        assert!(
            matches!(saturated, UpstreamError::Saturated { retry_after_secs } if retry_after_secs >= 13),
            "{saturated:?}"
        );
        assert_eq!(g.breaker_state(), BreakerState::HalfOpen, "not stuck");
        clock.advance(Duration::from_secs(13));
        let trial = g
            .admit(&caller())
            .await
            .expect("the next caller is the trial");
        trial.done(Outcome::Answered);
        assert_eq!(g.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_trial_that_gets_no_slot_is_given_back() {
        let (g, clock) = guard(|s| {
            s.max_in_flight = NonZero::new(1).unwrap();
            s.breaker_failures = NonZero::new(1).unwrap();
            s.breaker_open_secs = NonZero::new(1).unwrap();
            s.queue_timeout_ms = NonZero::new(500).unwrap();
        });
        let g = Arc::new(g);
        g.admit(&caller()).await.unwrap().done(Outcome::Failed);
        clock.advance(Duration::from_secs(1));
        // A probe holds the only slot while the trial waits for it.
        let probe = g.admit_probe(Duration::ZERO).await.unwrap();
        let waiting = tokio::spawn({
            let g = g.clone();
            async move { g.admit(&caller()).await.map(|t| t.done(Outcome::Answered)) }
        });
        while g.queued.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_millis(500));
        let result = waiting.await.unwrap();
        assert!(
            matches!(result, Err(UpstreamError::Saturated { .. })),
            "{result:?}"
        );
        drop(probe);
        assert_eq!(g.breaker_state(), BreakerState::HalfOpen);
        g.admit(&caller())
            .await
            .expect("the trial is free again")
            .done(Outcome::Answered);
        assert_eq!(g.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn callers_wait_their_turn_and_the_rest_are_told_their_own_time() {
        // 60 per minute: 54 for callers, a burst of 9, then one every 60/45 s.
        let (g, clock) = guard(|s| {
            s.per_minute = 60;
            s.queue_wait_secs = NonZero::new(5).unwrap();
        });
        let g = Arc::new(g);
        for _ in 0..9 {
            g.admit(&caller()).await.unwrap().done(Outcome::Answered);
        }
        let asked: Vec<_> = (0..20)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move {
                    match g.admit(&caller()).await {
                        Ok(t) => {
                            t.done(Outcome::Answered);
                            0
                        }
                        Err(UpstreamError::Saturated { retry_after_secs }) => retry_after_secs,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        // Tokens at 1.3, 2.7 and 4 s: three wait for them; the other 17 cannot be served
        // within 5 s and are told so at once.
        while g.waiting_for_budget() < 3 || asked.iter().filter(|a| a.is_finished()).count() < 17 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_secs(5));
        let mut advice = Vec::new();
        for a in asked {
            advice.push(a.await.unwrap());
        }
        assert_eq!(advice.iter().filter(|s| **s == 0).count(), 3, "{advice:?}");
        let refused: Vec<u64> = advice.iter().copied().filter(|s| *s > 0).collect();
        // Each told a token later than the one before: from 5.3 s to 26.7 s.
        assert_eq!(refused.first(), Some(&6), "{advice:?}");
        assert_eq!(refused.last(), Some(&27), "{advice:?}");
        assert!(refused.windows(2).all(|w| w[0] < w[1]), "{advice:?}");
    }

    #[tokio::test]
    async fn prefetches_keep_to_their_share_and_never_go_ahead_of_a_waiting_caller() {
        // 60 a minute: 54 for callers (a burst of 9); 20% of that is 10 for prefetching.
        let (g, clock) = guard(|s| {
            s.per_minute = 60;
            s.queue_wait_secs = NonZero::new(60).unwrap();
        });
        let g = Arc::new(g);
        assert!(
            g.admit_prefetch().await.is_none(),
            "no share, no prefetching"
        );
        assert_eq!(g.share_with_prefetch(20), 10);
        // Greedy for ten minutes: never more than its share in any 60 s.
        let mut taken = Vec::new();
        for t in 0..6_000 {
            if let Some(ticket) = g.admit_prefetch().await {
                ticket.done(Outcome::Answered);
                taken.push(t * 100);
            }
            clock.advance(Duration::from_millis(100));
        }
        let most = crate::upstream::budget::most_in_any_minute(&taken);
        assert!((9..=10).contains(&most), "{most} in one minute");
        // The callers' budget spent: a caller waits for its token, and prefetching yields.
        clock.advance(Duration::from_secs(10));
        while g.queue.budget().try_take(clock.now_ms()).is_ok() {}
        let caller = tokio::spawn({
            let g = g.clone();
            async move {
                g.admit(&caller())
                    .await
                    .map(|t| t.done(Outcome::Answered))
                    .is_ok()
            }
        });
        while g.queued.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(g.admit_prefetch().await.is_none(), "a caller is waiting");
        clock.advance(Duration::from_secs(2));
        assert!(caller.await.unwrap(), "the caller got through");
        // Nobody waits, but taking a token would leave the callers none (one comes every
        // 1.33 s: 45 a minute after the burst).
        clock.advance(Duration::from_secs(60));
        while g.queue.budget().try_take(clock.now_ms()).is_ok() {}
        clock.advance(Duration::from_millis(1_400));
        assert_eq!(g.queue.budget().wait_for(1, clock.now_ms()), Duration::ZERO);
        assert!(
            g.admit_prefetch().await.is_none(),
            "the callers' last token is theirs"
        );
    }

    #[test]
    fn probes_run_no_more_often_than_their_share() {
        let mut s = Settings::defaults().upstream;
        assert_eq!(ApplianceGuard::probe_every(&s), Duration::from_secs(5));
        s.per_minute = 6; // one probe a minute
        assert_eq!(ApplianceGuard::probe_every(&s), Duration::from_secs(60));
    }

    #[test]
    fn the_retry_budget_runs_out() {
        let mut s = Settings::defaults().upstream;
        s.retry_budget_percent = 10;
        s.retries = 100;
        let g = ApplianceGuard::new(&s, None, Clock::manual(0), &GatewayMetrics::new());
        let granted = (1..=20).filter(|_| g.retry_after(1).is_some()).count();
        assert_eq!(granted, 3, "the starting reserve");
        for _ in 0..10 {
            g.first_attempt();
        }
        assert!(g.retry_after(1).is_some(), "ten requests earn one retry");
        assert!(g.retry_after(1).is_none());
    }
}
