//! A query and when to evaluate it → the appliance questions it needs ([`Plan::fetches`]);
//! their answers → the result ([`Plan::evaluate`]). This is the appliance source of the
//! engine: its hints (each selector's window) become `/metricdata` questions through the
//! typed builder, the answers become the series the engine reads.
//!
//! A range query at step `s` is evaluated at `start, start + s, …, end` (as Prometheus does:
//! the step is echoed), over appliance buckets of `s` rounded to whole minutes (at least the
//! smallest interval allowed). A bucket is a sample stamped at its start, and it exists once
//! it is complete (the bucket still filling is never read, so a point never changes as its
//! minute goes by). The value at time `t` is the newest sample in `(t - lookback, t]`,
//! the lookback being Prometheus' 5 minutes or the interval if longer. A range `[r]` at `t`
//! holds the samples in `(t - r, t]`. Each selector's window (moved by offsets, `@` and
//! subqueries) is asked for with interval-aligned times, so a dashboard's refreshes share
//! the segment cache; one series read by several parts of a query is asked for once over
//! the union of their windows.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::label::Matcher;
use promql_parser::parser::Expr;

use super::engine::hints::{Hint, hints};
use super::engine::series::Row;
use super::engine::{self, Query, SeriesSource};
use super::error::PromError;
use super::select::{self, Fetch, Purpose, Selection};
use super::time::lookback;
use super::value::QueryData;
use super::{APPLIANCE, Context, parse};
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

/// One appliance's part of a selector: what it reads there, and the fetches that answer it.
struct Part {
    /// Index into the plan's appliances.
    appliance: usize,
    selection: Selection,
    /// Indexes into the plan's fetches.
    fetches: Vec<usize>,
    /// The appliance interval its questions ask for (ms).
    interval_ms: i64,
}

/// One distinct selector (its matchers), and each appliance's part of it.
struct Planned {
    key: String,
    parts: Vec<Part>,
}

/// A query ready to be answered: what to fetch, and how to evaluate the answers.
pub struct Plan {
    expr: Arc<Expr>,
    query: Query,
    /// The appliances' names, by index (their `appliance` label).
    appliances: Vec<String>,
    selections: Vec<Planned>,
    /// Each question, and the index of the appliance it is for.
    fetches: Vec<(usize, Fetch)>,
    warnings: Vec<String>,
}

/// A selector's identity: its matchers, in a canonical order.
fn key(matchers: &[Matcher]) -> String {
    let mut parts: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    parts.sort();
    parts.dedup();
    parts.join(",")
}

/// A selector's matchers split into those on the `appliance` label and the rest: the first
/// pick appliances, the rest are what each appliance is asked (no appliance has the label).
pub(crate) fn split_appliance(matchers: &[Matcher]) -> (Vec<&Matcher>, Vec<Matcher>) {
    let (on, rest): (Vec<&Matcher>, Vec<&Matcher>) =
        matchers.iter().partition(|m| m.name == APPLIANCE);
    (on, rest.into_iter().cloned().collect())
}

/// The hint for `appliance` matchers that pick no appliance.
pub(crate) fn no_appliance<'n>(on: &[&Matcher], names: impl Iterator<Item = &'n str>) -> String {
    let shown: Vec<String> = on.iter().map(ToString::to_string).collect();
    let names: Vec<&str> = names.collect();
    format!(
        "no appliance matches `{}`, so no series; the appliances are {}",
        shown.join(", "),
        names.join(", ")
    )
}

/// Per-appliance warnings joined: one every appliance gave is said once as it is (so a
/// single appliance's warnings read as before), the others name their appliance.
pub(crate) fn merge_warnings(each: Vec<(&str, Vec<String>)>, warnings: &mut Vec<String>) {
    let total = each.len();
    let mut seen: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, found) in &each {
        for w in found {
            match seen.iter_mut().find(|(text, _)| text == w) {
                Some((_, names)) => {
                    if !names.contains(name) {
                        names.push(name);
                    }
                }
                None => seen.push((w.clone(), vec![name])),
            }
        }
    }
    for (text, names) in seen {
        let said = if names.len() == total {
            text
        } else {
            format!("appliance {}: {text}", names.join(", "))
        };
        if !warnings.contains(&said) {
            warnings.push(said);
        }
    }
}

impl Plan {
    /// Plans `text` at `at` over `appliances` (each one's name and what it is planned
    /// against). A selector reads every appliance its `appliance` matchers allow; query-wide
    /// settings (limits, the sample cap, now) are the gateway's, so the first context's.
    pub fn new(text: &str, at: At, appliances: &[(&str, &Context<'_>)]) -> Result<Self, PromError> {
        let Some((_, first)) = appliances.first() else {
            return Err(PromError::bad_data("no appliance is configured"));
        };
        let ctx = *first;
        let interval_seconds = grid(at, ctx.limits)?;
        let interval_ms = interval_seconds as i64 * 1000;
        let expr = parse::parse_expr(text)?;
        let (start, end, step) = match at {
            At::Instant(t) => (t, t, 0),
            At::Range { start, end, step } => (start, end, step),
        };
        let query = Query {
            start,
            end,
            step,
            lookback: lookback(interval_ms),
            max_samples: ctx.max_samples,
        };
        engine::check(&expr, step > 0)?;
        let mut selections: Vec<Planned> = Vec::new();
        let mut uses: HashMap<String, Vec<Hint>> = HashMap::new();
        let mut warnings = Vec::new();
        for hint in hints(&expr, &query) {
            let key = key(&hint.matchers);
            if !selections.iter().any(|p| p.key == key) {
                let parts = resolve_parts(&hint.matchers, appliances, &mut warnings)?
                    .into_iter()
                    .map(|(appliance, selection)| Part {
                        appliance,
                        selection,
                        fetches: Vec::new(),
                        interval_ms,
                    })
                    .collect();
                selections.push(Planned {
                    key: key.clone(),
                    parts,
                });
            }
            uses.entry(key).or_default().push(hint);
        }
        let mut fetches: Vec<(usize, Fetch)> = Vec::new();
        for planned in &mut selections {
            let uses = uses.remove(&planned.key).unwrap_or_default();
            for part in &mut planned.parts {
                let Some((_, ctx)) = appliances.get(part.appliance) else {
                    continue;
                };
                if !part.selection.breaches {
                    part.interval_ms = maxima_interval(&uses, &query, interval_ms, ctx);
                }
                let interval = part.interval_ms;
                let windows = uses
                    .iter()
                    .filter_map(|h| window(h.from, h.to, interval, ctx.now_ms))
                    .collect();
                for (start, end) in union(windows) {
                    check_points(start, end, interval, at, ctx.limits)?;
                    let seconds = u64::try_from(interval / 1000).unwrap_or(interval_seconds);
                    for fetch in part.selection.fetches(start, end, seconds, ctx)? {
                        let same = |(a, f): &(usize, Fetch)| *a == part.appliance && *f == fetch;
                        let i = match fetches.iter().position(same) {
                            Some(i) => i,
                            None => {
                                fetches.push((part.appliance, fetch));
                                fetches.len() - 1
                            }
                        };
                        part.fetches.push(i);
                    }
                }
            }
        }
        Ok(Self {
            expr,
            query,
            appliances: appliances.iter().map(|(n, _)| (*n).to_owned()).collect(),
            selections,
            fetches,
            warnings,
        })
    }

    /// The appliance questions, each with the index of the appliance (in the order
    /// [`Plan::new`] was given them) whose caches answer it.
    pub fn fetches(&self) -> Vec<(usize, MetricQuery)> {
        self.fetches
            .iter()
            .map(|(a, f)| (*a, f.query.clone()))
            .collect()
    }

    /// Things the caller should know that did not stop the query.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The result, from the answers to [`Plan::fetches`], in order (`None` where the
    /// appliance failed: its series are left out, not read in part); and the engine's
    /// warnings. Every series carries the `appliance` label of the appliance it came from.
    pub fn evaluate(
        &self,
        answers: &[Option<MetricData>],
    ) -> Result<(QueryData, Vec<String>), PromError> {
        let source = Answers {
            rows: self
                .selections
                .iter()
                .map(|planned| (planned.key.clone(), self.rows(planned, answers)))
                .collect(),
        };
        let (output, warnings) = engine::evaluate(&self.expr, &self.query, &source)?;
        Ok((QueryData::new(output, &self.query), warnings))
    }

    /// A selector's rows from every appliance whose answers all came.
    fn rows(&self, planned: &Planned, answers: &[Option<MetricData>]) -> Vec<Row> {
        let mut out = Vec::new();
        for part in &planned.parts {
            let Some(name) = self.appliances.get(part.appliance) else {
                continue;
            };
            let pairs: Option<Vec<(&Fetch, &MetricData)>> = part
                .fetches
                .iter()
                .map(|&i| {
                    let (_, fetch) = self.fetches.get(i)?;
                    Some((fetch, answers.get(i)?.as_ref()?))
                })
                .collect();
            let Some(pairs) = pairs else { continue };
            out.extend(
                part.selection
                    .rows(&pairs, part.interval_ms)
                    .into_iter()
                    .map(|mut row| {
                        row.labels.insert(APPLIANCE.to_owned(), name.clone());
                        row
                    }),
            );
        }
        out
    }
}

/// Each appliance `matchers` pick, with its selection of the rest of them. An appliance whose
/// selection fails (its catalog not known yet, say) is left out with a warning naming it;
/// when every one fails, the query fails as it would with one appliance.
fn resolve_parts(
    matchers: &[Matcher],
    appliances: &[(&str, &Context<'_>)],
    warnings: &mut Vec<String>,
) -> Result<Vec<(usize, Selection)>, PromError> {
    let (on, rest) = split_appliance(matchers);
    if !on.is_empty()
        && !appliances
            .iter()
            .any(|(n, _)| on.iter().all(|m| m.is_match(n)))
    {
        warnings.push(no_appliance(&on, appliances.iter().map(|(n, _)| *n)));
    }
    let mut parts = Vec::new();
    let mut each = Vec::new();
    let mut failed: Vec<(&str, PromError)> = Vec::new();
    for (i, (name, ctx)) in appliances.iter().enumerate() {
        if !on.iter().all(|m| m.is_match(name)) {
            continue;
        }
        let mut found = Vec::new();
        match select::resolve(&rest, ctx, Purpose::Query, &mut found) {
            Ok(selection) => {
                parts.push((i, selection));
                each.push((*name, found));
            }
            Err(e) => failed.push((name, e)),
        }
    }
    if parts.is_empty() && !failed.is_empty() {
        let (_, e) = failed.swap_remove(0);
        return Err(e);
    }
    merge_warnings(each, warnings);
    for (name, e) in failed {
        warnings.push(format!("appliance {name}: {e}"));
    }
    Ok(parts)
}

/// The series the appliances' answers hold, by selector.
struct Answers {
    rows: HashMap<String, Vec<Row>>,
}

impl SeriesSource for Answers {
    fn rows(&self, matchers: &[Matcher]) -> Vec<Row> {
        self.rows.get(&key(matchers)).cloned().unwrap_or_default()
    }
}

/// The appliance's values are each bucket's maximum, so where a selector is only read by
/// `max_over_time(x[r])` and every window is exactly some whole buckets of `r` (each window
/// `(t - r, t]` holds the interval buckets starting in it, which span `[t - r + i, t + i)`),
/// one bucket of `r` per window answers the same as `r / i` buckets of the interval `i`.
/// Every window must be complete (the bucket holding now is never read) and `r` an interval
/// the appliance is asked for; otherwise the query's own interval.
fn maxima_interval(uses: &[Hint], query: &Query, interval_ms: i64, ctx: &Context<'_>) -> i64 {
    let Some(first) = uses.first().and_then(|h| h.maximum) else {
        return interval_ms;
    };
    let coarse = first.range;
    let max_ms = i64::try_from(ctx.limits.max_interval_seconds.get())
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let aligned = |t: i64| (t - first.offset + interval_ms).rem_euclid(coarse) == 0;
    let fits = uses.iter().all(|h| h.maximum == Some(first))
        && coarse > interval_ms
        && coarse % interval_ms == 0
        && coarse <= max_ms
        && aligned(query.start)
        && (query.step == 0 || query.step % coarse == 0)
        && query.end - first.offset + interval_ms <= ctx.now_ms;
    if fits { coarse } else { interval_ms }
}

/// Overlapping or touching windows joined, so a series is asked for once over them.
fn union(mut windows: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    windows.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (start, end) in windows {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// The appliance interval in seconds, once the range is known to be one Prometheus answers.
fn grid(at: At, limits: &QueryLimits) -> Result<u64, PromError> {
    match at {
        At::Instant(_) => Ok(limits.default_interval_seconds.get()),
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
            Ok(interval_for(step, limits))
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

/// The buckets holding the samples of `(from, to]`, `[start, end)`: complete (ended by
/// `now`), interval-aligned; `None` when none can exist yet (or ever).
fn window(from: i64, to: i64, interval_ms: i64, now: i64) -> Option<(i64, i64)> {
    let floor = |t: i64| t.div_euclid(interval_ms) * interval_ms;
    let start = floor(from).max(floor(EARLIEST_MS));
    let end = floor(to).saturating_add(interval_ms).min(floor(now));
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
        let (first, last) = (1_705_320_030_000, 1_705_320_090_000);
        assert_eq!(
            window(first, last, 60_000, i64::MAX),
            Some((1_705_320_000_000, 1_705_320_120_000))
        );
        // The bucket still filling at `now` (12:01:40) is left out.
        assert_eq!(
            window(first - 300_000, last, 60_000, 1_705_320_100_000),
            Some((1_705_319_700_000, 1_705_320_060_000))
        );
        assert_eq!(window(first, last, 60_000, 1_705_319_000_000), None);
        assert_eq!(window(0, 4_000, 60_000, i64::MAX), None);
        assert_eq!(
            union(vec![(5, 9), (0, 3), (3, 4), (8, 12)]),
            [(0, 4), (5, 12)]
        );
    }

    /// Each question of `text`'s plan: metrics, devices (none: network-wide), breaches, and
    /// its `[start, end)` in minutes from `S`.
    fn questions(text: &str, at: At) -> Vec<(String, Vec<u64>, bool, i64, i64)> {
        let settings = Settings::defaults();
        let devices = crate::promql::KnownDevices::new(|| {
            vec![
                crate::normalize::Device::bare(5),
                crate::normalize::Device::bare(6),
            ]
        });
        let ctx = Context {
            limits: &settings.query,
            names: &crate::query::AnyMetric,
            metrics: &[],
            devices: &devices,
            now_ms: E + 10 * MINUTE_MS,
            max_samples: 1_000_000,
        };
        let minutes = |t: Option<i64>| (t.unwrap() - S) / MINUTE_MS;
        Plan::new(text, at, &[("default", &ctx)])
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .fetches()
            .iter()
            .map(|(_, q)| {
                (
                    q.metrics().join(","),
                    q.devices().to_vec(),
                    q.breachtimes(),
                    minutes(q.starttime()),
                    minutes(q.endtime()),
                )
            })
            .collect()
    }

    /// 2024-01-15 06:00 and 12:00 UTC: a range query over six hours.
    const S: i64 = 1_705_298_400_000;
    const E: i64 = 1_705_320_000_000;

    /// What docs/grafana.md's table says reaches the appliance, per expression shape.
    #[test]
    fn each_selector_is_one_question_over_the_union_of_its_windows() {
        let range = At::Range {
            start: S,
            end: E,
            step: MINUTE_MS,
        };
        let q = |text: &str| questions(text, range);
        let c = |devices: &[u64], from: i64, to: i64| {
            ("connections".to_owned(), devices.to_vec(), false, from, to)
        };
        // Six hours are 360 minutes; the lookback 5; the bucket holding `end` is read.
        assert_eq!(q("connections"), [c(&[], -5, 361)]);
        assert_eq!(q("max_over_time(connections[1h])"), [c(&[], -60, 361)]);
        assert_eq!(q("connections offset 1h"), [c(&[], -65, 301)]);
        assert_eq!(q("connections @ 1705309200"), [c(&[], 175, 181)]);
        assert_eq!(q("connections @ end()"), [c(&[], 355, 361)]);
        assert_eq!(
            q("max_over_time(connections[30m:5m] offset 1h)"),
            [c(&[], -95, 301)]
        );
        assert_eq!(
            q("max_over_time(avg_over_time(connections[10m])[30m:])"),
            [c(&[], -40, 361)]
        );
        let b = ("bandwidth".to_owned(), vec![], false, -5, 361);
        assert_eq!(q("connections / bandwidth"), [c(&[], -5, 361), b]);
        // One selector in two windows: joined when they overlap, else two questions.
        assert_eq!(q("connections / connections offset 1h"), [c(&[], -65, 361)]);
        assert_eq!(
            questions("connections / connections offset 1h", At::Instant(E)),
            [c(&[], 295, 301), c(&[], 355, 361)]
        );
        // Selectors that differ only in what they keep of one answer share its question.
        assert_eq!(
            q(
                "sum(connections{did=~\"1|2\"}) - sum(connections{did=~\"(1|2)\", direction=\"in\"})"
            ),
            [c(&[1, 2], -5, 361)]
        );
        // A `did` matcher that is no list reads the known devices, and the network-wide
        // series too when it matches no `did`.
        assert_eq!(
            q("connections{did!=\"5\"}"),
            [c(&[], -5, 361), c(&[6], -5, 361)]
        );
        assert_eq!(
            q("darktrace_model_breach{did=\"5\"}"),
            [("connections".to_owned(), vec![5], true, -5, 361)]
        );
        // No selector, nothing to ask; nor for a window whose buckets cannot exist yet.
        for text in [
            "1 + 1",
            "time()",
            "vector(1) * pi()",
            "connections offset -1d",
        ] {
            assert_eq!(q(text), [], "{text}");
        }
        // A step of 5 minutes reads 5-minute buckets.
        let coarse = At::Range {
            start: S,
            end: E,
            step: 300_000,
        };
        assert_eq!(questions("connections", coarse), [c(&[], -5, 365)]);
    }

    /// A selector reads every appliance its `appliance` matchers allow, each asked the same
    /// question (deduplicated per appliance, never across them); the label never reaches
    /// the appliance's question or its warnings.
    #[test]
    fn appliance_matchers_pick_the_appliances_asked() {
        let settings = Settings::defaults();
        let devices = crate::promql::KnownDevices::new(Vec::new);
        let ctx = Context {
            limits: &settings.query,
            names: &crate::query::AnyMetric,
            metrics: &[],
            devices: &devices,
            now_ms: E + 10 * MINUTE_MS,
            max_samples: 1_000_000,
        };
        let fleet = [("default", &ctx), ("emea", &ctx), ("amer", &ctx)];
        let asked = |text: &str| {
            let plan = Plan::new(text, At::Instant(E), &fleet).unwrap();
            assert_eq!(plan.warnings(), [] as [String; 0], "{text}");
            plan.fetches()
                .into_iter()
                .map(|(a, q)| (a, q.metrics().join(",")))
                .collect::<Vec<_>>()
        };
        let c = |a: usize| (a, "connections".to_owned());
        assert_eq!(asked("connections"), [c(0), c(1), c(2)]);
        assert_eq!(asked("connections{appliance=\"emea\"}"), [c(1)]);
        assert_eq!(asked("connections{appliance=~\"emea|amer\"}"), [c(1), c(2)]);
        assert_eq!(asked("connections{appliance!=\"emea\"}"), [c(0), c(2)]);
        assert_eq!(
            asked("connections{appliance=\"emea\"} / connections"),
            [c(1), c(0), c(2)]
        );
        let none = Plan::new("connections{appliance=\"apac\"}", At::Instant(E), &fleet).unwrap();
        assert!(none.fetches().is_empty());
        assert!(
            none.warnings()[0].contains("default, emea, amer"),
            "{:?}",
            none.warnings()
        );
    }

    #[test]
    fn warnings_every_appliance_gives_are_said_once_plainly() {
        let mut out = Vec::new();
        merge_warnings(
            vec![
                ("default", vec!["a".to_owned(), "b".to_owned()]),
                ("emea", vec!["a".to_owned()]),
            ],
            &mut out,
        );
        assert_eq!(out, ["a", "appliance default: b"]);
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
        assert_eq!(range(0, 120_000, 60_000).unwrap(), 60);
    }
}
