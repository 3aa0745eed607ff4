//! A query and when to evaluate it → the appliance questions it needs ([`Plan::fetches`]);
//! their answers → the result ([`Plan::evaluate`]).
//!
//! A range query at step `s` is evaluated at `start, start + s, …, end` (as Prometheus does:
//! the step is echoed), over appliance buckets of `s` rounded to whole minutes (at least the
//! smallest interval allowed). A bucket is a sample stamped at its start, and it exists once
//! it is complete (the bucket still filling is never read, so a point never changes as its
//! minute goes by). The value at time `t` is the newest sample in `(t - lookback, t]`,
//! the lookback being Prometheus' 5 minutes or the interval if longer: the bucket holding `t`
//! once complete, before that the one before it. A range `[r]` at `t` holds the samples in
//! `(t - r, t]`. Each selector's window is asked for with interval-aligned times, so a
//! dashboard's refreshes share the segment cache.

use super::eval::{self, Evaluated};
use super::expr::{self, Node};
use super::select::{self, Fetch, Purpose, Selection};
use super::time::lookback;
use super::value::{QueryData, Row};
use super::{Context, PromError};
use crate::normalize::MetricData;
use crate::query::MetricQuery;
use crate::settings::QueryLimits;

/// When to evaluate: one instant, or every step from start to end (both inclusive). Times
/// and the step in epoch ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

/// Prometheus' own cap on the points of one series in a range query.
const MAX_STEPS: i64 = 11_000;
/// No appliance holds data from before this (2001-09-09); `/v1` reads smaller numbers as
/// epoch seconds.
const EARLIEST_MS: i64 = 1_000_000_000_000;
const MINUTE_MS: i64 = 60_000;

struct Planned {
    selection: Selection,
    /// Indexes into the plan's fetches.
    fetches: Vec<usize>,
}

/// A query ready to be answered: what to fetch, and how to evaluate the answers.
pub struct Plan {
    root: Node<usize>,
    selections: Vec<Planned>,
    fetches: Vec<Fetch>,
    times: Vec<i64>,
    interval_ms: i64,
    range: bool,
    warnings: Vec<String>,
}

impl Plan {
    pub fn new(text: &str, at: At, ctx: &Context<'_>) -> Result<Self, PromError> {
        let (times, interval_seconds) = grid(at, ctx.limits)?;
        let interval_ms = interval_seconds as i64 * 1000;
        let node = expr::parse(text)?;
        if matches!(node, Node::Raw { .. }) && matches!(at, At::Range { .. }) {
            return Err(PromError::bad_data(
                "invalid expression type \"range vector\" for range query, must be Scalar or \
                 instant Vector",
            ));
        }
        let mut selections: Vec<Planned> = Vec::new();
        let mut fetches: Vec<Fetch> = Vec::new();
        let mut warnings = Vec::new();
        let root = node.try_map(&mut |selector, range_ms| {
            let selection = select::resolve(&selector, ctx, Purpose::Query, &mut warnings)?;
            let mut indexes = Vec::new();
            let reach = range_ms.unwrap_or_else(|| lookback(interval_ms));
            if let Some((start, end)) = window(&times, interval_ms, reach, ctx.now_ms) {
                check_points(start, end, interval_ms, at, ctx.limits)?;
                for fetch in selection.fetches(start, end, interval_seconds, ctx)? {
                    let i = match fetches.iter().position(|f| *f == fetch) {
                        Some(i) => i,
                        None => {
                            fetches.push(fetch);
                            fetches.len() - 1
                        }
                    };
                    indexes.push(i);
                }
            }
            selections.push(Planned {
                selection,
                fetches: indexes,
            });
            Ok::<_, PromError>(selections.len() - 1)
        })?;
        Ok(Self {
            root,
            selections,
            fetches,
            times,
            interval_ms,
            range: matches!(at, At::Range { .. }),
            warnings,
        })
    }

    /// The appliance questions, each to be answered through the caches.
    pub fn fetches(&self) -> Vec<MetricQuery> {
        self.fetches.iter().map(|f| f.query.clone()).collect()
    }

    /// Whether answering needs the appliance at all (`1+1` does not).
    pub fn is_constant(&self) -> bool {
        self.fetches.is_empty()
    }

    /// Things the caller should know that did not stop the query.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The result, from the answers to [`Plan::fetches`], in order.
    pub fn evaluate(&self, answers: &[MetricData]) -> Result<QueryData, PromError> {
        let rows: Vec<Vec<Row>> = self
            .selections
            .iter()
            .map(|planned| {
                let pairs: Vec<(&Fetch, &MetricData)> = planned
                    .fetches
                    .iter()
                    .filter_map(|&i| Some((self.fetches.get(i)?, answers.get(i)?)))
                    .collect();
                planned.selection.rows(&pairs, self.interval_ms)
            })
            .collect();
        if let Node::Raw { range_ms, selector } = &self.root {
            let raw = rows.get(*selector).map_or(&[][..], Vec::as_slice);
            return Ok(QueryData::raw(raw, self.times[0], *range_ms));
        }
        let value = eval::evaluate(&self.root, &rows, &self.times, self.interval_ms)?;
        Ok(match value {
            Evaluated::Scalar(v) if self.range => QueryData::scalar_matrix(&self.times, v),
            Evaluated::Scalar(v) => QueryData::scalar(self.times[0], v),
            Evaluated::Vector(series) if self.range => QueryData::matrix(&self.times, series),
            Evaluated::Vector(series) => QueryData::vector(self.times[0], series),
        })
    }
}

/// The evaluation times, and the appliance interval in seconds.
fn grid(at: At, limits: &QueryLimits) -> Result<(Vec<i64>, u64), PromError> {
    match at {
        At::Instant(t) => Ok((vec![t], limits.default_interval_seconds.get())),
        At::Range { start, end, step } => {
            if end < start {
                return Err(PromError::bad_data(
                    "invalid parameter \"end\": end timestamp must not be before start time",
                ));
            }
            if step <= 0 {
                return Err(PromError::bad_data(
                    "invalid parameter \"step\": zero or negative query resolution step widths \
                     are not accepted. Try a positive integer",
                ));
            }
            if (end - start) / step > MAX_STEPS {
                return Err(PromError::bad_data(
                    "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing \
                     the query resolution (?step=XX)",
                ));
            }
            let times = (0..)
                .map(|k| start + k * step)
                .take_while(|t| *t <= end)
                .collect();
            Ok((times, interval_for(step, limits)))
        }
    }
}

/// A step in ms → the appliance interval in seconds: whole minutes, the nearest (half a
/// minute rounds up), within the configured bounds.
pub(crate) fn interval_for(step_ms: i64, limits: &QueryLimits) -> u64 {
    let minutes = ((step_ms + MINUTE_MS / 2) / MINUTE_MS).max(1) as u64;
    (minutes * 60).clamp(
        limits.min_interval_seconds.get(),
        limits.max_interval_seconds.get(),
    )
}

/// The buckets a selector needs, `[start, end)`: those a time reads `reach` back from, and
/// complete (ended by `now`), interval-aligned; `None` when none can exist yet (or ever).
fn window(times: &[i64], interval_ms: i64, reach: i64, now: i64) -> Option<(i64, i64)> {
    let floor = |t: i64| t.div_euclid(interval_ms) * interval_ms;
    let first = *times.first()?;
    let last = *times.last()?;
    let start = floor(first.saturating_sub(reach)).max(floor(EARLIEST_MS));
    let end = (floor(last) + interval_ms).min(floor(now));
    (end > start).then_some((start, end))
}

fn check_points(
    start: i64,
    end: i64,
    interval_ms: i64,
    at: At,
    limits: &QueryLimits,
) -> Result<(), PromError> {
    let points = (end - start + interval_ms - 1) / interval_ms;
    if points as u64 <= limits.max_points.get() {
        return Ok(());
    }
    let asked = match at {
        At::Range { step, .. } => format!("at step {}s", step / 1000),
        At::Instant(_) => "for an instant query".to_owned(),
    };
    Err(PromError::bad_data(format!(
        "the query needs {points} points per series from the appliance {asked}, more than \
         the gateway's limit of {}; use a larger step, a shorter range or a shorter [range]",
        limits.max_points
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn steps_become_whole_minutes() {
        let limits = Settings::defaults().query;
        for (step_s, interval) in [
            (1, 60),
            (15, 60),
            (60, 60),
            (89, 60),
            (90, 120),
            (100, 120),
            (300, 300),
            (3_600, 3_600),
        ] {
            assert_eq!(interval_for(step_s * 1000, &limits), interval, "{step_s}");
        }
    }

    #[test]
    fn windows_are_aligned_and_hold_complete_buckets_only() {
        let times = [1_705_320_030_000, 1_705_320_090_000];
        assert_eq!(
            window(&times, 60_000, 0, i64::MAX),
            Some((1_705_320_000_000, 1_705_320_120_000))
        );
        // The bucket still filling at `now` (12:01:40) is left out.
        assert_eq!(
            window(&times, 60_000, 300_000, 1_705_320_100_000),
            Some((1_705_319_700_000, 1_705_320_060_000))
        );
        assert_eq!(window(&times, 60_000, 0, 1_705_319_000_000), None);
        assert_eq!(window(&[4_000], 60_000, 0, i64::MAX), None);
    }

    #[test]
    fn prometheus_refusals_of_ranges() {
        let limits = Settings::defaults().query;
        let range = |start, end, step| grid(At::Range { start, end, step }, &limits);
        assert!(range(10, 5, 1).unwrap_err().to_string().contains("\"end\""));
        assert!(range(0, 5, 0).unwrap_err().to_string().contains("\"step\""));
        assert!(
            range(0, 11_001_000, 1_000)
                .unwrap_err()
                .to_string()
                .contains("11,000 points")
        );
        assert_eq!(range(0, 120_000, 60_000).unwrap().0, [0, 60_000, 120_000]);
    }
}
