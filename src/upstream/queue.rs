//! The callers' queue for the appliance's per-minute budget. A caller's request that finds no
//! token waits its turn, round robin across callers ([`Lane`]s), so one dashboard's hundred
//! cold panels cannot starve another caller's single question. Each waits at most
//! `upstream.queue_wait_secs`. One whose place the budget cannot reach within that wait, or
//! that finds [`MAX_WAITING`] requests waiting, is refused at once rather than kept waiting
//! in vain; every refusal is told when the budget would reach its own place, so refused callers
//! come back spread out instead of together. Nothing else takes the callers' tokens while
//! anyone waits ([`FairQueue::take_spare`] is prefetching's way in).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::budget::MinuteBudget;
use crate::clock::Clock;

/// The most requests that wait at once, whatever the budget: a bound on memory. At sane budgets
/// the wait's own bound (a request is refused at once when its place cannot be served within
/// `upstream.queue_wait_secs`) keeps the queue far shorter: about 45 for one caller at the
/// default budget, somewhat more across several.
pub const MAX_WAITING: usize = 10_000;

/// Whose turn a request takes in the queue: one caller (the HTTP layer names a client id
/// proven by its key, else the client's address), or the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lane(Arc<str>);

impl Lane {
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The gateway's own requests (its catalog).
    pub fn gateway() -> Self {
        Self::new("gateway")
    }
}

/// Requests waiting, by lane, in the order they will be served: the front lane's oldest, then
/// the next lane's oldest, and so on round the lanes; a lane that joins goes last in the
/// round. Pure (no clock, no budget), so its order and places are tested alone.
struct Waiters<T> {
    /// Lanes with requests waiting; the front one is served next, then goes to the back.
    ring: VecDeque<Lane>,
    lanes: HashMap<Lane, VecDeque<Waiter<T>>>,
    len: usize,
    next_id: u64,
}

struct Waiter<T> {
    id: u64,
    deadline_ms: i64,
    held: T,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Self {
            ring: VecDeque::new(),
            lanes: HashMap::new(),
            len: 0,
            next_id: 0,
        }
    }
}

impl<T> Waiters<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many would be served before the request that is `i`th in the lane at ring index
    /// `r`, if nobody joined or left: `i` rounds of every other lane (one more of those ahead
    /// of it in the round), as far as they have requests.
    fn place_at(&self, r: usize, i: usize) -> usize {
        self.ring
            .iter()
            .enumerate()
            .map(|(k, lane)| {
                let len = self.lanes.get(lane).map_or(0, VecDeque::len);
                match k.cmp(&r) {
                    std::cmp::Ordering::Less => len.min(i + 1),
                    std::cmp::Ordering::Equal => i,
                    std::cmp::Ordering::Greater => len.min(i),
                }
            })
            .sum()
    }

    /// The place a request joining `lane` now would have.
    fn place_of_new(&self, lane: &Lane) -> usize {
        match self.ring.iter().position(|l| l == lane) {
            Some(r) => self.place_at(r, self.lanes.get(lane).map_or(0, VecDeque::len)),
            // Last in the round: after one of each lane.
            None => self.ring.len(),
        }
    }

    #[cfg(test)]
    fn place(&self, lane: &Lane, id: u64) -> Option<usize> {
        let r = self.ring.iter().position(|l| l == lane)?;
        let i = self.lanes.get(lane)?.iter().position(|w| w.id == id)?;
        Some(self.place_at(r, i))
    }

    fn push(&mut self, lane: &Lane, deadline_ms: i64, held: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let queue = self.lanes.entry(lane.clone()).or_default();
        if queue.is_empty() {
            self.ring.push_back(lane.clone());
        }
        queue.push_back(Waiter {
            id,
            deadline_ms,
            held,
        });
        self.len += 1;
        id
    }

    /// The next request to serve, its lane moved to the back of the round.
    fn pop(&mut self) -> Option<T> {
        let lane = self.ring.pop_front()?;
        let queue = self.lanes.get_mut(&lane)?;
        let waiter = queue.pop_front()?;
        if queue.is_empty() {
            self.lanes.remove(&lane);
        } else {
            self.ring.push_back(lane);
        }
        self.len -= 1;
        Some(waiter.held)
    }

    fn remove(&mut self, lane: &Lane, id: u64) -> Option<T> {
        let queue = self.lanes.get_mut(lane)?;
        let at = queue.iter().position(|w| w.id == id)?;
        let waiter = queue.remove(at)?;
        if queue.is_empty() {
            self.lanes.remove(lane);
            self.ring.retain(|l| l != lane);
        }
        self.len -= 1;
        Some(waiter.held)
    }

    /// Takes out every request whose deadline is past (at or before `now_ms`), each with its
    /// place before any of them left (so requests that give up together have distinct
    /// places), in the order of those places.
    fn expire(&mut self, now_ms: i64) -> Vec<(T, usize)> {
        let mut due = Vec::new();
        for (r, lane) in self.ring.iter().enumerate() {
            if let Some(queue) = self.lanes.get(lane) {
                for (i, w) in queue.iter().enumerate() {
                    if w.deadline_ms <= now_ms {
                        due.push((lane.clone(), w.id, self.place_at(r, i)));
                    }
                }
            }
        }
        due.sort_unstable_by_key(|(_, _, place)| *place);
        due.into_iter()
            .filter_map(|(lane, id, place)| Some((self.remove(&lane, id)?, place)))
            .collect()
    }

    fn next_deadline(&self) -> Option<i64> {
        self.lanes
            .values()
            .flat_map(|q| q.iter().map(|w| w.deadline_ms))
            .min()
    }
}

/// Why a request got no turn: its place (how many the budget would serve before it), when to
/// come back, and how long it waited (`None`: refused on arrival).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub place: usize,
    /// When the budget would reach its place, and after every request refused before it
    /// (each told a later time than the last, one token apart): refused callers come back
    /// in turn, not together.
    pub retry_after: Duration,
    pub waited: Option<Duration>,
}

type Verdict = Result<Duration, Refusal>;

/// The callers' budget and the requests waiting for it.
pub struct FairQueue {
    budget: MinuteBudget,
    wait: Duration,
    clock: Clock,
    state: Mutex<State>,
}

struct State {
    waiters: Waiters<Sent>,
    /// Whether a task serves the queue as tokens come (see [`FairQueue::serve`]).
    serving: bool,
    /// The latest time a refused request was told to come back, µs on the gateway's clock.
    told_us: i64,
}

/// What the queue holds for a waiting request: where to send its verdict, and since when it
/// waits.
struct Sent {
    verdict: oneshot::Sender<Verdict>,
    since_ms: i64,
}

impl FairQueue {
    pub fn new(budget: MinuteBudget, wait: Duration, clock: Clock) -> Self {
        Self {
            budget,
            wait,
            clock,
            state: Mutex::new(State {
                waiters: Waiters::default(),
                serving: false,
                told_us: i64::MIN,
            }),
        }
    }

    pub fn budget(&self) -> &MinuteBudget {
        &self.budget
    }

    /// Requests waiting now, and the lanes they wait in.
    pub fn waiting(&self) -> (usize, usize) {
        let state = self.lock();
        (state.waiters.len(), state.waiters.ring.len())
    }

    /// Waits for a token for `lane`, its turn coming round robin; how long it waited.
    pub async fn take_turn(self: &Arc<Self>, lane: &Lane) -> Result<Duration, Refusal> {
        let now = self.clock.now_ms();
        let deadline = now.saturating_add(millis(self.wait));
        let (id, mut verdict) = {
            let mut state = self.lock();
            if state.waiters.is_empty() && self.budget.try_take(now).is_ok() {
                return Ok(Duration::ZERO);
            }
            let place = state.waiters.place_of_new(lane);
            if self.reached_in(place, now) > self.wait || state.waiters.len() >= MAX_WAITING {
                return Err(Refusal {
                    place,
                    retry_after: self.come_back(&mut state, place, now),
                    waited: None,
                });
            }
            let (sender, verdict) = oneshot::channel();
            let sent = Sent {
                verdict: sender,
                since_ms: now,
            };
            let id = state.waiters.push(lane, deadline, sent);
            if !state.serving {
                state.serving = true;
                tokio::spawn(self.clone().serve());
            }
            (id, verdict)
        };
        let _leaving = Leaving {
            queue: self,
            lane,
            id,
        };
        let verdict = match self.clock.run_until(deadline, &mut verdict).await {
            Some(verdict) => verdict.ok(),
            // The serving task refuses a waiter whose time is up; should it be a moment late
            // (or gone, its runtime shut down), the waiter settles the queue itself.
            None => {
                self.settle(&mut self.lock(), self.clock.now_ms());
                verdict.try_recv().ok()
            }
        };
        // Whatever takes a request out of the queue sends its verdict: this is a fallback.
        verdict.unwrap_or_else(|| {
            let now = self.clock.now_ms();
            Err(Refusal {
                place: 0,
                retry_after: self.come_back(&mut self.lock(), 0, now),
                waited: Some(self.wait),
            })
        })
    }

    /// A token for prefetching, at once or not at all: never while a caller's request waits,
    /// nor when it would leave the callers none.
    pub fn take_spare(&self, now_ms: i64) -> bool {
        let state = self.lock();
        state.waiters.is_empty()
            && self.budget.wait_for(2, now_ms) == Duration::ZERO
            && self.budget.try_take(now_ms).is_ok()
    }

    /// Serves the queue while anyone waits: tokens to the waiters in turn as the budget
    /// refills, refusals to those whose wait is over.
    async fn serve(self: Arc<Self>) {
        let mut serving = Serving {
            queue: &self,
            ended: false,
        };
        loop {
            let next = {
                let mut state = self.lock();
                let next = self.settle(&mut state, self.clock.now_ms());
                if next.is_none() {
                    state.serving = false;
                    serving.ended = true;
                }
                next
            };
            let Some(next) = next else { return };
            self.clock.sleep_until(next).await;
        }
    }

    /// Gives the tokens there are to the waiters in turn, then refuses those whose wait is
    /// over; when to look again (`None`: nobody waits).
    fn settle(&self, state: &mut State, now: i64) -> Option<i64> {
        let mut next_token = None;
        while !state.waiters.is_empty() {
            if let Err(wait) = self.budget.try_take(now) {
                let wait_ms = i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i64::MAX);
                next_token = Some(now.saturating_add(wait_ms));
                break;
            }
            if let Some(sent) = state.waiters.pop() {
                // A waiter gone meanwhile wastes its token: the appliance sees less, not more.
                let _ = sent.verdict.send(Ok(since(sent.since_ms, now)));
            }
        }
        for (sent, place) in state.waiters.expire(now) {
            let retry_after = self.come_back(state, place, now);
            let _ = sent.verdict.send(Err(Refusal {
                place,
                retry_after,
                waited: Some(since(sent.since_ms, now)),
            }));
        }
        let deadline = state.waiters.next_deadline()?;
        Some(next_token.map_or(deadline, |t| t.min(deadline)))
    }

    /// How long until the budget would serve the request at `place` (after `place` others).
    fn reached_in(&self, place: usize, now: i64) -> Duration {
        let tokens = u32::try_from(place.saturating_add(1)).unwrap_or(u32::MAX);
        self.budget.wait_for(tokens, now)
    }

    /// When a request refused at `place` should come back: when the budget reaches its place,
    /// but at least a token after the last request refused was told to.
    fn come_back(&self, state: &mut State, place: usize, now: i64) -> Duration {
        let now_us = now.saturating_mul(1000);
        let own = micros(self.reached_in(place, now));
        let period = micros(self.budget.period());
        let at = now_us
            .saturating_add(own)
            .max(state.told_us.saturating_add(period));
        state.told_us = at;
        Duration::from_micros(at.saturating_sub(now_us).max(0).unsigned_abs())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every step leaves the state consistent, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn since(from_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(from_ms).max(0).unsigned_abs())
}

/// Takes a request out of the queue when its wait ends without a turn (the caller went away,
/// or its time is up).
struct Leaving<'a> {
    queue: &'a FairQueue,
    lane: &'a Lane,
    id: u64,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        self.queue.lock().waiters.remove(self.lane, self.id);
    }
}

/// Marks the queue unserved if its serving task ends early (its runtime shut down), so the
/// next request to wait starts another.
struct Serving<'a> {
    queue: &'a FairQueue,
    ended: bool,
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.queue.lock().serving = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(name: &str) -> Lane {
        Lane::new(name)
    }

    #[test]
    fn lanes_take_turns_and_each_lane_keeps_its_order() {
        let mut w = Waiters::default();
        for name in ["a1", "a2", "a3", "b1", "c1", "c2"] {
            w.push(&lane(&name[..1]), 0, name);
        }
        let order: Vec<&str> = std::iter::from_fn(|| w.pop()).collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "c2", "a3"]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_lane_that_joins_goes_last_in_the_round() {
        let mut w = Waiters::default();
        for name in ["a1", "a2", "b1", "b2"] {
            w.push(&lane(&name[..1]), 0, name);
        }
        assert_eq!(w.pop(), Some("a1"));
        w.push(&lane("c"), 0, "c1");
        let order: Vec<&str> = std::iter::from_fn(|| w.pop()).collect();
        assert_eq!(order, ["b1", "a2", "c1", "b2"]);
    }

    #[test]
    fn places_foretell_the_order() {
        let mut w = Waiters::default();
        let mut ids = Vec::new();
        for name in ["a1", "a2", "a3", "a4", "b1", "c1", "c2"] {
            let l = lane(&name[..1]);
            ids.push((name, w.push(&l, 0, name), l));
        }
        assert_eq!(w.place_of_new(&lane("d")), 3, "after one of each lane");
        assert_eq!(
            w.place_of_new(&lane("b")),
            4,
            "b's second: after a2 and c2's round"
        );
        assert_eq!(w.place_of_new(&lane("a")), 7, "last");
        let mut places: Vec<(usize, &str)> = ids
            .iter()
            .map(|(name, id, l)| (w.place(l, *id).unwrap(), *name))
            .collect();
        places.sort_unstable();
        let foretold: Vec<&str> = places.iter().map(|(_, n)| *n).collect();
        let order: Vec<&str> = std::iter::from_fn(|| w.pop()).collect();
        assert_eq!(foretold, order);
        assert_eq!(places.last().unwrap().0, 6);
    }

    #[test]
    fn requests_that_give_up_together_keep_distinct_places() {
        let mut w = Waiters::default();
        w.push(&lane("a"), 10, "a1");
        w.push(&lane("a"), 10, "a2");
        w.push(&lane("b"), 20, "b1");
        w.push(&lane("b"), 10, "b2");
        assert!(w.expire(9).is_empty());
        assert_eq!(w.next_deadline(), Some(10));
        // Served a1, b1, a2, b2: those whose time is up keep the places they had.
        assert_eq!(w.expire(10), [("a1", 0), ("a2", 2), ("b2", 3)]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.place_of_new(&lane("a")), 1);
        assert_eq!(w.pop(), Some("b1"));
        assert!(w.is_empty() && w.ring.is_empty() && w.lanes.is_empty());
    }

    #[test]
    fn a_request_that_leaves_gives_its_place_to_those_behind() {
        let mut w = Waiters::default();
        let a1 = w.push(&lane("a"), 0, "a1");
        let a2 = w.push(&lane("a"), 0, "a2");
        let b1 = w.push(&lane("b"), 0, "b1");
        assert_eq!(w.place(&lane("a"), a2), Some(2));
        assert_eq!(w.remove(&lane("a"), a1), Some("a1"));
        assert_eq!(w.remove(&lane("a"), a1), None, "once");
        assert_eq!(
            w.place(&lane("b"), b1),
            Some(1),
            "a2 is a's head, served first"
        );
        assert_eq!(w.place(&lane("a"), a2), Some(0));
        assert_eq!(w.remove(&lane("b"), b1), Some("b1"));
        assert_eq!(w.ring, [lane("a")]);
    }

    /// A queue on a manual clock: 12 a minute for callers is a burst of 2, then one every 6 s.
    fn queue(wait_secs: u64) -> (Arc<FairQueue>, Clock) {
        let clock = Clock::manual(1_000_000);
        let q = FairQueue::new(
            MinuteBudget::per_minute(12),
            Duration::from_secs(wait_secs),
            clock.clone(),
        );
        (Arc::new(q), clock)
    }

    type Outcomes = Arc<Mutex<Vec<(String, Result<Duration, Refusal>)>>>;

    /// Asks for a turn in `lane` as `name`, in a task; the outcome goes to `outcomes`.
    async fn ask(q: &Arc<FairQueue>, lane_name: &str, name: &str, outcomes: &Outcomes) {
        let task = tokio::spawn({
            let (q, l, name, outcomes) = (
                q.clone(),
                lane(lane_name),
                name.to_owned(),
                outcomes.clone(),
            );
            async move {
                let outcome = q.take_turn(&l).await;
                outcomes.lock().unwrap().push((name, outcome));
            }
        });
        // It has joined the queue, or been answered, before the next one asks.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(task.is_finished() || q.waiting().0 > 0);
    }

    async fn until(outcomes: &Outcomes, n: usize) -> Vec<String> {
        for _ in 0..1_000 {
            if outcomes.lock().unwrap().len() >= n {
                break;
            }
            tokio::task::yield_now().await;
        }
        let got = outcomes.lock().unwrap();
        assert_eq!(got.len(), n, "{got:?}");
        got.iter().map(|(name, _)| name.clone()).collect()
    }

    #[tokio::test]
    async fn another_callers_question_goes_ahead_of_a_backlog() {
        let (q, clock) = queue(60);
        let outcomes = Outcomes::default();
        for i in 1..=8 {
            ask(&q, "dashboard", &format!("d{i}"), &outcomes).await;
        }
        ask(&q, "analyst", "a1", &outcomes).await;
        assert_eq!(until(&outcomes, 2).await, ["d1", "d2"], "the burst");
        assert_eq!(q.waiting(), (7, 2));
        for served in 3..=9 {
            clock.advance(Duration::from_secs(6));
            until(&outcomes, served).await;
        }
        let order = until(&outcomes, 9).await;
        assert_eq!(
            order,
            ["d1", "d2", "d3", "a1", "d4", "d5", "d6", "d7", "d8"]
        );
        let got = outcomes.lock().unwrap();
        let waited = |name: &str| got.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(waited("a1"), Ok(Duration::from_secs(12)));
        assert_eq!(waited("d8"), Ok(Duration::from_secs(42)));
    }

    #[tokio::test]
    async fn a_wait_is_bounded_and_a_turn_that_cannot_come_in_time_is_refused_at_once() {
        let (q, clock) = queue(15);
        let outcomes = Outcomes::default();
        q.take_turn(&lane("a")).await.unwrap();
        q.take_turn(&lane("a")).await.unwrap();
        // Tokens at 6 and 12 s: two wait; the third's would come at 18 s, past its 15 s.
        for name in ["a1", "a2", "a3", "a4"] {
            ask(&q, "a", name, &outcomes).await;
        }
        assert_eq!(until(&outcomes, 2).await, ["a3", "a4"]);
        {
            let got = outcomes.lock().unwrap();
            let told: Vec<_> = got.iter().map(|(_, o)| *o).collect();
            assert_eq!(
                told,
                [
                    Err(Refusal {
                        place: 2,
                        retry_after: Duration::from_secs(18),
                        waited: None
                    }),
                    Err(Refusal {
                        place: 2,
                        retry_after: Duration::from_secs(24),
                        waited: None
                    })
                ],
                "each told a token later than the one before"
            );
        }
        assert_eq!(q.waiting(), (2, 1));
        clock.advance(Duration::from_secs(6));
        assert_eq!(until(&outcomes, 3).await[2], "a1");
        // Something else takes the next token before the queue's task runs (as a bug would,
        // or a clock set back): a2 waits in vain, and is refused when its 15 s are up.
        clock.advance(Duration::from_secs(6));
        assert!(q.budget.try_take(clock.now_ms()).is_ok());
        until(&outcomes, 3).await;
        clock.advance(Duration::from_secs(2));
        until(&outcomes, 3).await;
        clock.advance(Duration::from_secs(1));
        until(&outcomes, 4).await;
        let got = outcomes.lock().unwrap();
        let (name, outcome) = &got[3];
        assert_eq!(name, "a2");
        let refusal = outcome.unwrap_err();
        assert_eq!(refusal.waited, Some(Duration::from_secs(15)));
        assert_eq!(refusal.place, 0);
        // Its own token is 3 s away, but a3 and a4 were told 18 and 24 s from the start:
        // a token after those, at 30 s, is 15 s from now.
        assert_eq!(refusal.retry_after, Duration::from_secs(15));
        assert_eq!(q.waiting(), (0, 0));
    }

    #[tokio::test]
    async fn prefetching_gets_no_token_while_anyone_waits_nor_the_callers_last() {
        let (q, clock) = queue(60);
        let now = clock.now_ms();
        assert!(q.take_spare(now), "two in the burst: one is spare");
        assert!(!q.take_spare(now), "the last is the callers'");
        q.take_turn(&lane("a")).await.unwrap();
        let outcomes = Outcomes::default();
        ask(&q, "a", "a1", &outcomes).await;
        clock.advance(Duration::from_secs(60));
        // The budget is full again, but the serving task has not run yet: a caller waits.
        assert!(!q.take_spare(clock.now_ms()));
        until(&outcomes, 1).await;
        assert!(
            !q.take_spare(clock.now_ms()),
            "one token left: the callers'"
        );
        clock.advance(Duration::from_secs(6));
        assert!(q.take_spare(clock.now_ms()));
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_leaves_the_queue() {
        let (q, _clock) = queue(60);
        q.take_turn(&lane("a")).await.unwrap();
        q.take_turn(&lane("a")).await.unwrap();
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.take_turn(&lane("b")).await }
        });
        while q.waiting().0 == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(q.waiting(), (0, 0));
    }
}
