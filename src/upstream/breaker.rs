//! The circuit breaker, as a state machine on the gateway's clock.
//!
//! Only callers' requests move it (readiness probes feed readiness instead), and when it is
//! half-open exactly one caller's request, the trial, goes to the appliance: its outcome
//! decides. A trial that never reached the appliance is given back, so the breaker cannot
//! stay half-open with nobody trying.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// How one appliance request went, as the breaker (and readiness) see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Answered,
    /// The appliance refused this request (4xx, a redirect, a certificate we do not trust):
    /// it is up, and the cause is on our side or the caller's.
    Refused,
    /// A connect error, timeout, broken body or 5xx: the appliance is unwell.
    Failed,
}

/// What the breaker let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Normal,
    /// The one request that decides whether a half-open breaker closes.
    Trial,
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed {
        failures: u32,
    },
    /// Until this time (epoch ms, the gateway's clock).
    Open {
        until: i64,
    },
    HalfOpen {
        trial_out: bool,
    },
}

#[derive(Debug)]
pub struct Breaker {
    phase: Phase,
    failures_to_open: u32,
    open_for_ms: i64,
    opened: u64,
}

impl Breaker {
    pub fn new(failures_to_open: u32, open_for_ms: i64) -> Self {
        Self {
            phase: Phase::Closed { failures: 0 },
            failures_to_open: failures_to_open.max(1),
            open_for_ms,
            opened: 0,
        }
    }

    /// Lets a request through, or says in how many seconds to try again.
    pub fn admit(&mut self, now: i64) -> Result<Pass, u64> {
        match self.phase {
            Phase::Closed { .. } => Ok(Pass::Normal),
            Phase::Open { until } if now < until => {
                Err((until - now).unsigned_abs().div_ceil(1000))
            }
            Phase::Open { .. } | Phase::HalfOpen { trial_out: false } => {
                self.phase = Phase::HalfOpen { trial_out: true };
                Ok(Pass::Trial)
            }
            // The trial is under way; it takes at most the request timeout.
            Phase::HalfOpen { trial_out: true } => Err(1),
        }
    }

    /// A pass that never reached the appliance (no slot or token in time). A trial given
    /// back lets the next request be the trial.
    pub fn give_back(&mut self, pass: Pass) {
        if pass == Pass::Trial && self.phase == (Phase::HalfOpen { trial_out: true }) {
            self.phase = Phase::HalfOpen { trial_out: false };
        }
    }

    /// Records how a request that was let through went.
    pub fn record(&mut self, pass: Pass, outcome: Outcome, now: i64) -> Option<Transition> {
        let (next, transition) = match (self.phase, pass, outcome) {
            (Phase::Closed { failures }, _, Outcome::Failed) => {
                if failures + 1 >= self.failures_to_open {
                    (self.open(now), Some(Transition::Opened))
                } else {
                    (
                        Phase::Closed {
                            failures: failures + 1,
                        },
                        None,
                    )
                }
            }
            (Phase::Closed { .. }, _, _) => (Phase::Closed { failures: 0 }, None),
            (Phase::HalfOpen { .. }, Pass::Trial, Outcome::Failed) => {
                (self.open(now), Some(Transition::Opened))
            }
            (Phase::HalfOpen { .. }, Pass::Trial, _) => {
                (Phase::Closed { failures: 0 }, Some(Transition::Closed))
            }
            // Requests let through before the breaker opened, finishing late, change nothing:
            // only the trial decides.
            (phase, _, _) => (phase, None),
        };
        self.phase = next;
        transition
    }

    fn open(&mut self, now: i64) -> Phase {
        self.opened += 1;
        Phase::Open {
            until: now.saturating_add(self.open_for_ms),
        }
    }

    pub fn state(&self, now: i64) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Times it has opened.
    pub fn opened(&self) -> u64 {
        self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    /// Opens after 2 failures, for 15 s.
    fn breaker() -> Breaker {
        Breaker::new(2, 15_000)
    }

    fn open(b: &mut Breaker, now: i64) {
        for _ in 0..2 {
            let pass = b.admit(now).unwrap();
            b.record(pass, Failed, now);
        }
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn closed_counts_consecutive_failures_and_opens() {
        let mut b = breaker();
        assert_eq!(b.admit(0), Ok(Pass::Normal));
        assert_eq!(b.record(Pass::Normal, Failed, 0), None);
        assert_eq!(b.state(0), BreakerState::Closed);
        // An answer, or a refusal, shows the appliance is up: the count starts again.
        b.record(Pass::Normal, Refused, 0);
        b.record(Pass::Normal, Failed, 0);
        assert_eq!(b.state(0), BreakerState::Closed);
        assert_eq!(b.record(Pass::Normal, Failed, 0), Some(Transition::Opened));
        assert_eq!(b.state(0), BreakerState::Open);
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn open_fails_fast_then_half_opens_for_one_trial() {
        let mut b = breaker();
        open(&mut b, 0);
        assert_eq!(b.admit(1), Err(15), "retry when it half-opens");
        assert_eq!(b.admit(14_001), Err(1));
        assert_eq!(b.state(15_000), BreakerState::HalfOpen);
        assert_eq!(b.admit(15_000), Ok(Pass::Trial));
        assert_eq!(b.admit(15_000), Err(1), "one trial at a time");
        assert_eq!(b.state(15_000), BreakerState::HalfOpen);
    }

    #[test]
    fn the_trial_decides() {
        let mut b = breaker();
        open(&mut b, 0);
        let trial = b.admit(15_000).unwrap();
        assert_eq!(b.record(trial, Answered, 15_500), Some(Transition::Closed));
        assert_eq!(b.state(15_500), BreakerState::Closed);

        open(&mut b, 20_000);
        let trial = b.admit(35_000).unwrap();
        assert_eq!(b.record(trial, Failed, 36_000), Some(Transition::Opened));
        assert_eq!(b.state(36_000), BreakerState::Open, "open again, from now");
        assert_eq!(b.admit(50_999), Err(1));
        assert_eq!(b.admit(51_000), Ok(Pass::Trial));
        // A refusal (say a 404) is an answer: the appliance is up.
        assert_eq!(
            b.record(Pass::Trial, Refused, 51_000),
            Some(Transition::Closed)
        );
        assert_eq!(b.opened(), 3);
    }

    #[test]
    fn saturation_in_half_open_gives_the_trial_back() {
        let mut b = breaker();
        open(&mut b, 0);
        let trial = b.admit(15_000).unwrap();
        // No slot or token in time: the trial never reached the appliance.
        b.give_back(trial);
        assert_eq!(b.state(15_000), BreakerState::HalfOpen);
        assert_eq!(
            b.admit(15_001),
            Ok(Pass::Trial),
            "the next caller is the trial"
        );
        assert_eq!(
            b.record(Pass::Trial, Answered, 15_002),
            Some(Transition::Closed)
        );
        // Giving back a normal pass, or in another state, changes nothing.
        b.give_back(Pass::Normal);
        b.give_back(Pass::Trial);
        assert_eq!(b.state(15_002), BreakerState::Closed);
    }

    #[test]
    fn late_outcomes_of_requests_let_through_before_it_opened_change_nothing() {
        let mut b = breaker();
        let early = b.admit(0).unwrap();
        open(&mut b, 0);
        assert_eq!(b.record(early, Answered, 1_000), None);
        assert_eq!(b.state(1_000), BreakerState::Open);
        let trial = b.admit(15_000).unwrap();
        assert_eq!(b.record(early, Answered, 15_100), None, "not the trial");
        assert_eq!(b.record(early, Failed, 15_200), None, "not the trial");
        assert_eq!(b.state(15_200), BreakerState::HalfOpen);
        assert_eq!(b.record(trial, Answered, 15_300), Some(Transition::Closed));
    }
}
