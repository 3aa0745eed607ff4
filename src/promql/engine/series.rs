//! What the engine reads and computes: labelled samples from a [`SeriesSource`], and values
//! at every evaluation time.
//!
//! [`SeriesSource`]: super::SeriesSource

use std::collections::BTreeMap;

/// A series' labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// The label that holds a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// A stored series: its samples as `(epoch ms, value)`, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
    pub reach: Reach,
}

/// Which sample an instant selector reads at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The newest within the lookback, as Prometheus reads a metric.
    Lookback,
    /// Only a sample stamped at the start of the bucket of this width (ms) holding the time:
    /// an event marks its own bucket, not the minutes after it.
    Bucket(i64),
}

impl Row {
    /// The samples in `(from, to]`.
    pub fn window(&self, from: i64, to: i64) -> &[(i64, f64)] {
        window(&self.points, from, to)
    }
}

/// The samples of `points` (oldest first) in `(from, to]`.
pub fn window(points: &[(i64, f64)], from: i64, to: i64) -> &[(i64, f64)] {
    let lo = points.partition_point(|(t, _)| *t <= from);
    let hi = points.partition_point(|(t, _)| *t <= to);
    points.get(lo..hi.max(lo)).unwrap_or(&[])
}

/// One series of an instant vector: a value (or none) at each evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// A range vector: series and their samples, and the window each evaluation time reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranges {
    pub series: Vec<(Labels, Vec<(i64, f64)>)>,
    /// Per evaluation time, the window's end; it reaches `range` back, left-open.
    pub ends: Vec<i64>,
    pub range: i64,
}

impl Ranges {
    /// Series `i`'s samples at evaluation time `k`.
    pub fn at(&self, i: usize, k: usize) -> &[(i64, f64)] {
        match (self.series.get(i), self.ends.get(k)) {
            (Some((_, points)), Some(end)) => window(points, end.saturating_sub(self.range), *end),
            _ => &[],
        }
    }
}

/// The value of an expression at every evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
    String(String),
}

/// A query's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A number at each time.
    Scalar(Vec<f64>),
    /// Series at each time; `ordered` when Prometheus' order of an instant vector is its own
    /// (`sort`, `topk`, …), not the labels'.
    Vector {
        series: Vec<Series>,
        ordered: bool,
    },
    /// A range vector at one time: samples at their own times.
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
    String(String),
}

/// `{a="1", b="2"}`, as Prometheus writes label sets in messages.
pub fn labels_text(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// The labels `by (…)`/`on (…)` keep (those named, the metric name too if named), or that
/// `without (…)`/`ignoring (…)` keep (all others but the metric name): what aggregations
/// group by and what binary operators match on.
pub fn kept(labels: &Labels, modifier: &promql_parser::parser::LabelModifier) -> Labels {
    use promql_parser::parser::LabelModifier;
    match modifier {
        LabelModifier::Include(on) => labels
            .iter()
            .filter(|(k, _)| on.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        LabelModifier::Exclude(ignoring) => labels
            .iter()
            .filter(|(k, _)| k.as_str() != METRIC_NAME && !ignoring.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// `labels` without the metric name.
pub fn without_name(mut labels: Labels) -> Labels {
    labels.remove(METRIC_NAME);
    labels
}
