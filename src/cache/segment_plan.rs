//! Which runs to fetch for an answer: the lookup's verdict on each segment position, and the
//! adjacent ones that need the appliance merged into bounded runs. Pure.

use std::sync::Arc;

use super::segment::Segment;

/// A segment position, as the lookup found it.
#[derive(Debug, Clone)]
pub(super) enum Slot {
    Fresh(Arc<Segment>),
    /// Expired, with settled buckets a delta refresh keeps.
    Stale(Arc<Segment>),
    Missing,
}

impl Slot {
    /// What a stored segment (or none) at `start` is worth for an answer fresh at `fresh_at`.
    pub(super) fn of(stored: Option<Arc<Segment>>, start: i64, length: i64, fresh_at: i64) -> Self {
        match stored {
            Some(s) if s.deadlines.is_fresh(fresh_at) => Slot::Fresh(s),
            Some(s) if s.settled_until > start && s.settled_until < start + length => {
                Slot::Stale(s)
            }
            _ => Slot::Missing,
        }
    }
}

/// What to fetch for a run: segments `[start, end)`, asked for from `fetch_from`; the buckets
/// of the first segment before `fetch_from` come from `base`, its stored, settled prefix.
#[derive(Debug, Clone)]
pub(super) struct RunPlan {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) fetch_from: i64,
    pub(super) base: Option<Arc<Segment>>,
}

/// Adjacent segments to fetch, merged into runs. A run may start with an expired segment,
/// asked for only from its settled point; expired segments further into a run are fetched
/// whole with it (one request is cheaper than two). A run covers at most `most` segments: a
/// long cold range reaches the appliance as several bounded requests.
pub(super) fn missing_runs(found: &[(i64, Slot)], length: i64, most: i64) -> Vec<RunPlan> {
    let mut runs: Vec<RunPlan> = Vec::new();
    for (at, slot) in found {
        let at = *at;
        match (slot, runs.last_mut()) {
            (Slot::Fresh(_), _) => {}
            (_, Some(run)) if run.end == at && (run.end - run.start) / length < most => {
                run.end += length
            }
            (Slot::Stale(base), _) => runs.push(RunPlan {
                start: at,
                end: at + length,
                fetch_from: base.settled_until,
                base: Some(base.clone()),
            }),
            (Slot::Missing, _) => runs.push(RunPlan {
                start: at,
                end: at + length,
                fetch_from: at,
                base: None,
            }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::freshness::Deadlines;

    fn segment(settled_until: i64) -> Arc<Segment> {
        let deadlines = Deadlines {
            stored_at: 0,
            fresh_until: 0,
            stale_while_revalidate_until: 0,
            stale_if_error_until: 0,
        };
        Arc::new(Segment::new(
            Vec::new(),
            Vec::new(),
            deadlines,
            settled_until,
            None,
        ))
    }

    fn spans(runs: &[RunPlan]) -> Vec<(i64, i64, i64)> {
        runs.iter()
            .map(|r| (r.start, r.end, r.fetch_from))
            .collect()
    }

    #[test]
    fn adjacent_missing_segments_merge_into_runs() {
        let found = vec![
            (0, Slot::Missing),
            (10, Slot::Missing),
            (20, Slot::Fresh(segment(30))),
            (30, Slot::Missing),
            (40, Slot::Fresh(segment(50))),
            (50, Slot::Missing),
        ];
        assert_eq!(
            spans(&missing_runs(&found, 10, 100)),
            [(0, 20, 0), (30, 40, 30), (50, 60, 50)]
        );
    }

    #[test]
    fn an_expired_segment_is_asked_for_from_its_settled_point() {
        let found = vec![
            (0, Slot::Fresh(segment(10))),
            (10, Slot::Stale(segment(17))),
            (20, Slot::Missing),
            (30, Slot::Fresh(segment(30))),
            (40, Slot::Missing),
            (50, Slot::Stale(segment(55))),
        ];
        let runs = missing_runs(&found, 10, 100);
        // The delta opens a run and the new segment joins it; an expired segment further
        // into a run is fetched whole with it.
        assert_eq!(spans(&runs), [(10, 30, 17), (40, 60, 40)]);
        assert!(runs[0].base.is_some() && runs[1].base.is_none());
    }

    #[test]
    fn long_runs_are_split_into_bounded_requests() {
        let found: Vec<_> = (0..7).map(|i| (i * 10, Slot::Missing)).collect();
        assert_eq!(
            spans(&missing_runs(&found, 10, 3)),
            [(0, 30, 0), (30, 60, 30), (60, 70, 60)]
        );
    }
}
