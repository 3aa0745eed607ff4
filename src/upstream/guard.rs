//! The appliance's budget, whatever the callers do: a bound on requests in flight, a bound
//! per minute, a retry budget, and a circuit breaker.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use super::UpstreamError;
use crate::clock::Clock;
use crate::redis::SharedState;
use crate::settings::UpstreamSettings;

/// The per-minute token bucket, on the gateway's clock.
type PerMinute =
    RateLimiter<NotKeyed, InMemoryState, Clock, NoOpMiddleware<governor::nanos::Nanos>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Breaker {
    Closed {
        failures: u32,
    },
    /// Until this time (epoch ms, the gateway's clock).
    Open {
        until: i64,
    },
    HalfOpen {
        probing: bool,
    },
}

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
    slots: std::sync::Arc<Semaphore>,
    max_in_flight: usize,
    /// Requests waiting for a slot or a token.
    queued: std::sync::atomic::AtomicUsize,
    per_minute: PerMinute,
    queue_timeout: Duration,
    clock: Clock,
    breaker: Mutex<Breaker>,
    breaker_failures: u32,
    open_for: Duration,
    budget: RetryBudget,
    pub retries: u32,
    backoff: Duration,
    opened: AtomicU64,
    /// The appliance's per-minute budget, shared by replicas through Redis.
    shared: Option<(Arc<SharedState>, String)>,
    budget_period_ms: u64,
    budget_burst: u32,
}

/// Leave to send one request. Report how it went with [`Ticket::done`]; a ticket dropped
/// unreported counts as a failure.
pub struct Ticket<'a> {
    guard: &'a ApplianceGuard,
    _slot: OwnedSemaphorePermit,
    reported: bool,
}

impl Ticket<'_> {
    /// `healthy` is false when the appliance failed (connect error, timeout, broken body, 5xx).
    pub fn done(mut self, healthy: bool) {
        self.reported = true;
        self.guard.record(healthy);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.guard.record(false);
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
    pub per_minute: u32,
    pub queue_timeout_ms: u64,
    pub retries: u32,
    pub breaker: BreakerState,
    /// Times the breaker has opened.
    pub breaker_opened: u64,
}

/// The token bucket that lets at most `n` requests through in any 60 s: a burst of a sixth,
/// refilled at the rest.
fn window_quota(n: u32) -> Quota {
    let burst = (n / 6).max(1);
    let refill = n.saturating_sub(burst).max(1);
    let period = Duration::from_micros(60_000_000_u64.div_ceil(u64::from(refill)));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl ApplianceGuard {
    /// `shared` (Redis, and a name for this appliance) shares the per-minute budget.
    pub fn new(
        s: &UpstreamSettings,
        shared: Option<(Arc<SharedState>, String)>,
        clock: Clock,
    ) -> Self {
        let quota = window_quota(s.per_minute);
        Self {
            shared,
            budget_period_ms: quota.replenish_interval().as_millis().max(1) as u64,
            budget_burst: quota.burst_size().get(),
            slots: std::sync::Arc::new(Semaphore::new(s.max_in_flight)),
            max_in_flight: s.max_in_flight,
            queued: std::sync::atomic::AtomicUsize::new(0),
            per_minute: RateLimiter::direct_with_clock(window_quota(s.per_minute), clock.clone()),
            clock,
            queue_timeout: Duration::from_millis(s.queue_timeout_ms),
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            breaker_failures: s.breaker_failures,
            open_for: Duration::from_secs(s.breaker_open_secs),
            budget: RetryBudget {
                balance: AtomicI64::new(3 * RETRY_COST),
                deposit: i64::from(s.retry_budget_percent),
            },
            retries: s.retries,
            backoff: Duration::from_millis(s.retry_backoff_ms),
            opened: AtomicU64::new(0),
        }
    }

    /// Waits (boundedly) for leave to send one request.
    pub async fn admit(&self) -> Result<Ticket<'_>, UpstreamError> {
        self.breaker_allows()?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        let admitted = self.wait_for_leave().await;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        admitted
    }

    async fn wait_for_leave(&self) -> Result<Ticket<'_>, UpstreamError> {
        let queue_ms = i64::try_from(self.queue_timeout.as_millis()).unwrap_or(i64::MAX);
        let deadline = self.clock.now_ms().saturating_add(queue_ms);
        let saturated = |retry_after_secs| UpstreamError::Saturated { retry_after_secs };
        let slot = self
            .clock
            .run_until(deadline, self.slots.clone().acquire_owned())
            .await
            .ok_or(saturated(1))?
            .map_err(|_| saturated(1))?;
        // Waits for `wait`, unless that would pass the deadline.
        let wait_within = |wait: Duration| {
            let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            let at = self.clock.now_ms().saturating_add(wait_ms);
            if at > deadline {
                Err(saturated(wait.as_millis().div_ceil(1000).max(1) as u64))
            } else {
                Ok(self.clock.sleep_until(at))
            }
        };
        loop {
            match self.per_minute.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.per_minute.clock().now());
                    wait_within(wait)?.await;
                }
            }
        }
        // Across replicas, through Redis while it answers.
        while let Some((shared, name)) = self.shared.as_ref().filter(|(s, _)| s.is_up()) {
            let key = shared.key("budget", name);
            match shared
                .gcra(&key, self.budget_period_ms, self.budget_burst)
                .await
            {
                Some(g) if g.allowed => break,
                Some(g) => wait_within(Duration::from_millis(g.retry_after_ms))?.await,
                None => break,
            }
        }
        Ok(Ticket {
            guard: self,
            _slot: slot,
            reported: false,
        })
    }

    /// Counts a first attempt towards the retry budget.
    pub fn first_attempt(&self) {
        self.budget.on_request();
    }

    /// Whether attempt number `attempt` (1 = first retry) may go, and after how long.
    pub fn retry_after(&self, attempt: u32) -> Option<Duration> {
        if attempt > self.retries || !self.budget.try_spend() {
            return None;
        }
        // Full jitter: uniformly in [0, backoff * 2^(attempt-1)].
        let ceiling = self.backoff.saturating_mul(1 << (attempt - 1).min(10));
        Some(ceiling.mul_f64(rand::random::<f64>()))
    }

    fn breaker_allows(&self) -> Result<(), UpstreamError> {
        let Ok(mut b) = self.breaker.lock() else {
            return Ok(());
        };
        match *b {
            Breaker::Closed { .. } => Ok(()),
            Breaker::Open { until } => {
                let now = self.clock.now_ms();
                if now >= until {
                    *b = Breaker::HalfOpen { probing: true };
                    Ok(())
                } else {
                    Err(UpstreamError::CircuitOpen {
                        retry_after_secs: ((until - now) as u64).div_ceil(1000).max(1),
                    })
                }
            }
            Breaker::HalfOpen { probing: true } => Err(UpstreamError::CircuitOpen {
                retry_after_secs: 1,
            }),
            Breaker::HalfOpen { probing: false } => {
                *b = Breaker::HalfOpen { probing: true };
                Ok(())
            }
        }
    }

    fn record(&self, healthy: bool) {
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        let next = match (&*b, healthy) {
            (_, true) => Breaker::Closed { failures: 0 },
            (Breaker::Closed { failures }, false) if failures + 1 < self.breaker_failures => {
                Breaker::Closed {
                    failures: failures + 1,
                }
            }
            // An old request finishing late while open changes nothing.
            (Breaker::Open { until }, false) => Breaker::Open { until: *until },
            (_, false) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    open_for_secs = self.open_for.as_secs(),
                    "appliance circuit breaker opened"
                );
                Breaker::Open {
                    until: self
                        .clock
                        .now_ms()
                        .saturating_add(self.open_for.as_millis() as i64),
                }
            }
        };
        if matches!(*b, Breaker::Open { .. } | Breaker::HalfOpen { .. })
            && matches!(next, Breaker::Closed { .. })
        {
            tracing::info!("appliance circuit breaker closed");
        }
        *b = next;
    }

    pub fn breaker_state(&self) -> BreakerState {
        match self.breaker.lock().map(|b| match *b {
            Breaker::Closed { .. } => BreakerState::Closed,
            Breaker::Open { until } if self.clock.now_ms() >= until => BreakerState::HalfOpen,
            Breaker::Open { .. } => BreakerState::Open,
            Breaker::HalfOpen { .. } => BreakerState::HalfOpen,
        }) {
            Ok(state) => state,
            Err(_) => BreakerState::Closed,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }

    pub fn report(&self, s: &UpstreamSettings) -> GuardReport {
        GuardReport {
            max_in_flight: self.max_in_flight,
            in_flight: self.in_flight(),
            queued: self.queued.load(Ordering::Relaxed),
            per_minute: s.per_minute,
            queue_timeout_ms: s.queue_timeout_ms,
            retries: self.retries,
            breaker: self.breaker_state(),
            breaker_opened: self.opened.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn the_breaker_opens_fails_fast_and_half_opens() {
        let mut s = Settings::defaults().upstream;
        s.breaker_failures = 2;
        s.breaker_open_secs = 0;
        let g = ApplianceGuard::new(&s, None, Clock::manual(0));
        g.record(false);
        assert_eq!(g.breaker_state(), BreakerState::Closed);
        g.record(false);
        assert_eq!(g.breaker_state(), BreakerState::HalfOpen, "open for 0 s");
        assert!(g.breaker_allows().is_ok(), "one probe goes through");
        assert!(matches!(
            g.breaker_allows(),
            Err(UpstreamError::CircuitOpen { .. })
        ));
        g.record(true);
        assert_eq!(g.breaker_state(), BreakerState::Closed);
    }

    #[test]
    fn the_retry_budget_runs_out() {
        let mut s = Settings::defaults().upstream;
        s.retry_budget_percent = 10;
        s.retries = 100;
        let g = ApplianceGuard::new(&s, None, Clock::manual(0));
        let granted = (1..=20).filter(|_| g.retry_after(1).is_some()).count();
        assert_eq!(granted, 3, "the starting reserve");
        for _ in 0..10 {
            g.first_attempt();
        }
        assert!(g.retry_after(1).is_some(), "ten requests earn one retry");
        assert!(g.retry_after(1).is_none());
    }

    #[test]
    fn the_window_quota_never_exceeds_n_per_minute() {
        for n in [1, 2, 6, 60, 120, 1000] {
            let q = window_quota(n);
            let burst = q.burst_size().get();
            let refills = (60.0 / q.replenish_interval().as_secs_f64()).floor() as u32;
            assert!(burst + refills <= n.max(2), "{n}: {burst} + {refills}");
        }
    }
}
