//! Which requests get an access line: all of them, only errors, or every error and a sample of
//! successes; and never more than a set number a second, whatever callers do. Every request's
//! line is counted by what became of it, so dropped lines show in `/metrics`.

use std::sync::Arc;

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use prometheus::IntCounter;

use super::GatewayMetrics;
use super::sharded::ShardedCounter;
use crate::clock::Clock;
use crate::settings::{AccessLogMode, ServerSettings};

type Cap = RateLimiter<NotKeyed, InMemoryState, Clock, NoOpMiddleware<governor::nanos::Nanos>>;

pub struct AccessLog {
    mode: AccessLogMode,
    sample: u64,
    /// Successes seen, per thread: each thread keeps one in `sample` of its own, so no
    /// counter is shared between the workers' cores.
    successes: ShardedCounter,
    cap: Cap,
    kept: IntCounter,
    /// The common outcome when sampling: counted in shards too.
    sampled_out: Arc<ShardedCounter>,
    over_cap: IntCounter,
}

impl AccessLog {
    pub fn new(s: &ServerSettings, metrics: &GatewayMetrics, clock: Clock) -> Self {
        let lines = |outcome| metrics.access_log_lines.vec().with_label_values(&[outcome]);
        Self {
            mode: s.access_log,
            sample: s.access_log_sample.get(),
            successes: ShardedCounter::default(),
            cap: RateLimiter::direct_with_clock(
                Quota::per_second(s.access_log_max_per_second),
                clock,
            ),
            kept: lines("kept"),
            sampled_out: metrics.access_log_lines.sharded(&["sampled_out"]),
            over_cap: lines("over_cap"),
        }
    }

    /// Whether the request answered with `status` gets its line (and counts the answer).
    pub fn admit(&self, status: u16) -> bool {
        let error = status >= 400;
        let wanted = match self.mode {
            AccessLogMode::All => true,
            AccessLogMode::Errors => error,
            AccessLogMode::Sampled => {
                error || self.successes.next_in_shard().is_multiple_of(self.sample)
            }
        };
        if !wanted {
            self.sampled_out.inc();
            false
        } else if self.cap.check().is_err() {
            self.over_cap.inc();
            false
        } else {
            self.kept.inc();
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use std::num::NonZero;

    fn log(mode: AccessLogMode, per_second: u32) -> (AccessLog, Clock, GatewayMetrics) {
        let mut s = Settings::defaults().server;
        s.access_log = mode;
        s.access_log_sample = NonZero::new(10).unwrap();
        s.access_log_max_per_second = NonZero::new(per_second).unwrap();
        let clock = Clock::manual(1_000_000);
        let metrics = GatewayMetrics::new();
        (AccessLog::new(&s, &metrics, clock.clone()), clock, metrics)
    }

    #[test]
    fn sampled_keeps_every_error_and_one_success_in_n() {
        let (l, _, _) = log(AccessLogMode::Sampled, 1000);
        let successes = (0..100).filter(|_| l.admit(200)).count();
        let errors = (0..100).filter(|_| l.admit(503)).count();
        assert_eq!((successes, errors), (10, 100));
        assert_eq!(l.sampled_out.get(), 90);
    }

    #[test]
    fn errors_and_all() {
        let (l, _, _) = log(AccessLogMode::Errors, 1000);
        assert!(!l.admit(200) && !l.admit(304) && l.admit(400) && l.admit(500));
        let (l, _, _) = log(AccessLogMode::All, 1000);
        assert!((0..50).all(|_| l.admit(200)));
    }

    #[test]
    fn the_cap_holds_and_counts_what_it_drops() {
        let (l, clock, metrics) = log(AccessLogMode::All, 5);
        let written = (0..1000).filter(|_| l.admit(429)).count();
        assert_eq!(written, 5);
        assert_eq!(l.over_cap.get(), 995);
        clock.advance(std::time::Duration::from_secs(1));
        assert_eq!((0..1000).filter(|_| l.admit(429)).count(), 5);
        assert!(
            metrics
                .render()
                .contains(r#"metricgate_access_log_lines_total{outcome="over_cap"} 1990"#)
        );
    }
}
