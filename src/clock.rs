//! The only source of "now": the system clock in service, a manual clock that tests drive.
//!
//! Freshness, live buckets, segment lifetimes, the breaker, the appliance budget, probes and
//! request signing all read this clock, so a test advances time instead of sleeping through it.
//! (Durations that are only measured, such as how long the appliance took, use `Instant`.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System,
    /// Epoch ms, moved only by [`Clock::advance`] and [`Clock::set`]; sleepers watch it.
    Manual(watch::Sender<i64>),
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System => f.write_str("Clock::System"),
            Source::Manual(now) => write!(f, "Clock::Manual({})", *now.borrow()),
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
        Self(Arc::new(Source::Manual(watch::Sender::new(start_ms))))
    }

    /// A manual clock starting at the system's now (so signed dates stay plausible).
    pub fn manual_from_now() -> Self {
        Self::manual(system_ms())
    }

    pub fn is_manual(&self) -> bool {
        matches!(&*self.0, Source::Manual(_))
    }

    /// Epoch milliseconds (UTC).
    pub fn now_ms(&self) -> i64 {
        match &*self.0 {
            Source::System => system_ms(),
            Source::Manual(now) => *now.borrow(),
        }
    }

    /// Moves a manual clock forward and wakes the sleepers that are due; no effect on the
    /// system clock.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(now) = &*self.0 {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            now.send_modify(|t| *t = t.saturating_add(by));
        }
    }

    /// Sets a manual clock (forward or back); no effect on the system clock.
    pub fn set(&self, at_ms: i64) {
        if let Source::Manual(now) = &*self.0 {
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
            Source::Manual(now) => {
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
