//! Evaluation of the supported subset over every evaluation time at once: a vector is a list
//! of series, each with one optional value per time.

use std::collections::BTreeMap;

use super::expr::{Aggregation, Comparison, Grouping, Node, OverTime};
use super::value::{Labels, Reach, Row, Series};
use super::{METRIC_NAME, PromError};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Evaluated {
    Scalar(f64),
    Vector(Vec<Series>),
}

/// Evaluates `node`; `rows[i]` are the series of the selection numbered `i`.
pub(crate) fn evaluate(
    node: &Node<usize>,
    rows: &[Vec<Row>],
    times: &[i64],
    interval_ms: i64,
) -> Result<Evaluated, PromError> {
    walk(node, rows, times, interval_ms)
}

/// Series that lost their metric name, refused where two of them now have the same labels
/// and a value at the same time, as Prometheus refuses them at every step.
fn distinct(series: Vec<Series>) -> Result<Vec<Series>, PromError> {
    let mut by_labels: BTreeMap<&Labels, Vec<&Series>> = BTreeMap::new();
    for s in &series {
        by_labels.entry(&s.labels).or_default().push(s);
    }
    for (labels, same) in by_labels.into_iter().filter(|(_, same)| same.len() > 1) {
        let steps = same.first().map_or(0, |s| s.values.len());
        let clash = (0..steps).any(|k| same.iter().filter(|s| s.values[k].is_some()).count() > 1);
        if clash {
            return Err(PromError::Execution(format!(
                "vector cannot contain metrics with the same labelset {}",
                super::value::labels_text(labels)
            )));
        }
    }
    Ok(series)
}

fn walk(
    node: &Node<usize>,
    rows: &[Vec<Row>],
    times: &[i64],
    interval_ms: i64,
) -> Result<Evaluated, PromError> {
    Ok(match node {
        Node::Number(v) => Evaluated::Scalar(*v),
        Node::Select(i) => {
            let floor = |t: i64| t.div_euclid(interval_ms) * interval_ms;
            let lookback = super::time::lookback(interval_ms);
            let value = |row: &Row, t: i64| match row.reach {
                // The newest sample in (t - lookback, t], as Prometheus reads one.
                Reach::Lookback => row
                    .points
                    .range(t.saturating_sub(lookback).saturating_add(1)..=t)
                    .next_back()
                    .map(|(_, v)| *v),
                Reach::Bucket => row.points.get(&floor(t)).copied(),
            };
            Evaluated::Vector(
                selected(rows, *i)
                    .iter()
                    .map(|row| Series {
                        labels: row.labels.clone(),
                        values: times.iter().map(|t| value(row, *t)).collect(),
                    })
                    .collect(),
            )
        }
        Node::OverTime {
            func,
            range_ms,
            selector,
        } => Evaluated::Vector(distinct(
            selected(rows, *selector)
                .iter()
                .map(|row| Series {
                    labels: without_name(&row.labels),
                    values: times
                        .iter()
                        .map(|t| {
                            let window = row
                                .points
                                .range(t.saturating_sub(*range_ms).saturating_add(1)..=*t)
                                .map(|(_, v)| *v);
                            over_time(*func, window)
                        })
                        .collect(),
                })
                .collect(),
        )?),
        Node::Aggregate {
            op,
            grouping,
            inner,
        } => match walk(inner, rows, times, interval_ms)? {
            Evaluated::Vector(series) => Evaluated::Vector(aggregate(*op, grouping, series)),
            // The parser refuses aggregations of numbers.
            scalar @ Evaluated::Scalar(_) => scalar,
        },
        Node::Arithmetic { op, lhs, rhs } => {
            let l = walk(lhs, rows, times, interval_ms)?;
            let r = walk(rhs, rows, times, interval_ms)?;
            match (l, r) {
                (Evaluated::Scalar(a), Evaluated::Scalar(b)) => Evaluated::Scalar(op.apply(a, b)),
                (Evaluated::Vector(v), Evaluated::Scalar(b)) => {
                    Evaluated::Vector(distinct(map_values(v, |a| op.apply(a, b)))?)
                }
                (Evaluated::Scalar(a), Evaluated::Vector(v)) => {
                    Evaluated::Vector(distinct(map_values(v, |b| op.apply(a, b)))?)
                }
                // The parser refuses arithmetic between two vectors.
                (Evaluated::Vector(_), Evaluated::Vector(_)) => Evaluated::Vector(Vec::new()),
            }
        }
        Node::Negate(inner) => match walk(inner, rows, times, interval_ms)? {
            Evaluated::Scalar(v) => Evaluated::Scalar(-v),
            Evaluated::Vector(v) => Evaluated::Vector(distinct(map_values(v, |a| -a))?),
        },
        Node::Compare {
            op,
            returns_bool,
            lhs,
            rhs,
        } => {
            let l = walk(lhs, rows, times, interval_ms)?;
            let r = walk(rhs, rows, times, interval_ms)?;
            compare(*op, *returns_bool, l, r)?
        }
        Node::Math { func, arg } => match walk(arg, rows, times, interval_ms)? {
            Evaluated::Vector(v) => Evaluated::Vector(distinct(map_values(v, func.apply))?),
            // The parser refuses a number where an instant vector is expected.
            scalar @ Evaluated::Scalar(_) => scalar,
        },
        // Raw buckets are only ever the whole query, which the plan answers itself.
        Node::Raw { .. } => Evaluated::Vector(Vec::new()),
    })
}

/// A comparison with a number, as Prometheus' vector-scalar comparison: the vector's own value
/// is kept where the comparison holds (the metric name too); with `bool` every value becomes
/// 1 or 0 and loses its name.
fn compare(
    op: Comparison,
    returns_bool: bool,
    l: Evaluated,
    r: Evaluated,
) -> Result<Evaluated, PromError> {
    let one = |holds: bool| if holds { 1.0 } else { 0.0 };
    let each = |series: Vec<Series>, holds: &dyn Fn(f64) -> bool| -> Result<Evaluated, PromError> {
        Ok(Evaluated::Vector(if returns_bool {
            distinct(map_values(series, |v| one(holds(v))))?
        } else {
            series
                .into_iter()
                .map(|s| Series {
                    values: s
                        .values
                        .into_iter()
                        .map(|v| v.filter(|v| holds(*v)))
                        .collect(),
                    labels: s.labels,
                })
                .collect()
        }))
    };
    match (l, r) {
        // The parser asks for `bool` between two numbers.
        (Evaluated::Scalar(a), Evaluated::Scalar(b)) => Ok(Evaluated::Scalar(one(op.holds(a, b)))),
        (Evaluated::Vector(v), Evaluated::Scalar(b)) => each(v, &|a| op.holds(a, b)),
        (Evaluated::Scalar(a), Evaluated::Vector(v)) => each(v, &|b| op.holds(a, b)),
        // The parser refuses comparisons between two vectors.
        (Evaluated::Vector(_), Evaluated::Vector(_)) => Ok(Evaluated::Vector(Vec::new())),
    }
}

fn selected(rows: &[Vec<Row>], i: usize) -> &[Row] {
    rows.get(i).map_or(&[], Vec::as_slice)
}

fn without_name(labels: &Labels) -> Labels {
    let mut out = labels.clone();
    out.remove(METRIC_NAME);
    out
}

/// Applies `f` to every value; the result is no longer the metric, so it loses its name.
fn map_values(series: Vec<Series>, f: impl Fn(f64) -> f64) -> Vec<Series> {
    series
        .into_iter()
        .map(|s| Series {
            labels: without_name(&s.labels),
            values: s.values.into_iter().map(|v| v.map(&f)).collect(),
        })
        .collect()
}

/// Prometheus' min: NaN only when every value is NaN (`f64::min` skips NaN instead).
fn lesser(acc: f64, v: f64) -> f64 {
    if acc > v || acc.is_nan() { v } else { acc }
}

/// Prometheus' max, likewise.
fn greater(acc: f64, v: f64) -> f64 {
    if acc < v || acc.is_nan() { v } else { acc }
}

fn over_time(func: OverTime, values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut count, mut sum) = (0u64, 0.0);
    let (mut min, mut max) = (f64::NAN, f64::NAN);
    for v in values {
        count += 1;
        sum += v;
        min = lesser(min, v);
        max = greater(max, v);
    }
    (count > 0).then(|| match func {
        OverTime::Max => max,
        OverTime::Min => min,
        OverTime::Avg => sum / count as f64,
        OverTime::Sum => sum,
        OverTime::Count => count as f64,
    })
}

fn group_key(labels: &Labels, grouping: &Grouping) -> Labels {
    match grouping {
        Grouping::By(keep) => labels
            .iter()
            .filter(|(k, _)| keep.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Grouping::Without(drop) => labels
            .iter()
            .filter(|(k, _)| k.as_str() != METRIC_NAME && !drop.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn aggregate(op: Aggregation, grouping: &Grouping, series: Vec<Series>) -> Vec<Series> {
    let mut groups: BTreeMap<Labels, Vec<Series>> = BTreeMap::new();
    for s in series {
        groups
            .entry(group_key(&s.labels, grouping))
            .or_default()
            .push(s);
    }
    groups
        .into_iter()
        .map(|(labels, members)| {
            let steps = members.first().map_or(0, |m| m.values.len());
            let values = (0..steps)
                .map(|k| {
                    let present = members.iter().filter_map(|m| m.values[k]);
                    let (mut count, mut sum) = (0u64, 0.0);
                    let (mut min, mut max) = (f64::NAN, f64::NAN);
                    for v in present {
                        count += 1;
                        sum += v;
                        min = lesser(min, v);
                        max = greater(max, v);
                    }
                    (count > 0).then(|| match op {
                        Aggregation::Sum => sum,
                        Aggregation::Min => min,
                        Aggregation::Max => max,
                        Aggregation::Avg => sum / count as f64,
                        Aggregation::Count => count as f64,
                    })
                })
                .collect();
            Series { labels, values }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::expr::Arithmetic;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn row(pairs: &[(&str, &str)], points: &[(i64, f64)]) -> Row {
        Row {
            labels: labels(pairs),
            points: points.iter().copied().collect(),
            reach: Reach::Lookback,
        }
    }

    fn rows() -> Vec<Vec<Row>> {
        vec![vec![
            row(
                &[("__name__", "c"), ("did", "1")],
                &[(0, 1.0), (60, 5.0), (120, 3.0)],
            ),
            row(
                &[("__name__", "c"), ("did", "2")],
                &[(0, 10.0), (120, 30.0)],
            ),
        ]]
    }

    fn vector(node: Node<usize>, times: &[i64]) -> Vec<Series> {
        match evaluate(&node, &rows(), times, 60).unwrap() {
            Evaluated::Vector(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_newest_sample_within_the_lookback_is_each_times_value() {
        // The lookback is Prometheus' five minutes.
        let v = vector(Node::Select(0), &[0, 30, 60, 150, 400, 300_120]);
        assert_eq!(
            v[0].values,
            [Some(1.0), Some(1.0), Some(5.0), Some(3.0), Some(3.0), None]
        );
        assert_eq!(
            v[1].values,
            [
                Some(10.0),
                Some(10.0),
                Some(10.0),
                Some(30.0),
                Some(30.0),
                None
            ]
        );
        assert_eq!(v[0].labels["__name__"], "c");
        let mut breach = rows();
        breach[0][1].reach = Reach::Bucket;
        let Evaluated::Vector(v) = evaluate(&Node::Select(0), &breach, &[0, 60], 60).unwrap()
        else {
            panic!("a vector");
        };
        assert_eq!(
            v[1].values,
            [Some(10.0), None],
            "a breach marks its own bucket"
        );
    }

    #[test]
    fn aggregations_group_and_skip_missing_values() {
        let sum = |grouping| Node::Aggregate {
            op: Aggregation::Sum,
            grouping,
            inner: Box::new(Node::Select(0)),
        };
        let v = vector(sum(Grouping::By(vec![])), &[0, 60]);
        assert_eq!(v.len(), 1);
        assert!(v[0].labels.is_empty());
        // At 60 the second series has no bucket: its newest within the lookback counts.
        assert_eq!(v[0].values, [Some(11.0), Some(15.0)]);
        let v = vector(sum(Grouping::By(vec!["did".into()])), &[0]);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].labels, labels(&[("did", "2")]));
        let v = vector(sum(Grouping::Without(vec![])), &[0]);
        assert_eq!(v[0].labels, labels(&[("did", "1")]), "the name is dropped");
        let count = Node::Aggregate {
            op: Aggregation::Count,
            grouping: Grouping::By(vec![]),
            inner: Box::new(Node::Select(0)),
        };
        assert_eq!(vector(count, &[60, 300_200])[0].values, [Some(2.0), None]);
    }

    #[test]
    fn over_time_reads_the_buckets_in_its_range() {
        let max = Node::OverTime {
            func: OverTime::Max,
            range_ms: 120,
            selector: 0,
        };
        // At 120: the buckets starting in (0, 120] are 60 and 120.
        let v = vector(max, &[120]);
        assert_eq!(v[0].values, [Some(5.0)]);
        assert_eq!(v[1].values, [Some(30.0)]);
        assert!(!v[0].labels.contains_key("__name__"));
        let avg = Node::OverTime {
            func: OverTime::Avg,
            range_ms: 180,
            selector: 0,
        };
        assert_eq!(vector(avg, &[120])[0].values, [Some(3.0)]);
    }

    #[test]
    fn arithmetic_with_numbers() {
        let times = [0];
        let two = || Box::new(Node::Number(2.0));
        let v = vector(
            Node::Arithmetic {
                op: Arithmetic::Mul,
                lhs: Box::new(Node::Select(0)),
                rhs: two(),
            },
            &times,
        );
        assert_eq!(v[0].values, [Some(2.0)]);
        assert!(!v[0].labels.contains_key("__name__"));
        let v = vector(
            Node::Arithmetic {
                op: Arithmetic::Sub,
                lhs: two(),
                rhs: Box::new(Node::Select(0)),
            },
            &times,
        );
        assert_eq!(v[1].values, [Some(-8.0)]);
        let scalar = Node::Arithmetic {
            op: Arithmetic::Add,
            lhs: Box::new(Node::Number(1.0)),
            rhs: Box::new(Node::Negate(two())),
        };
        assert_eq!(
            evaluate(&scalar, &rows(), &times, 60).unwrap(),
            Evaluated::Scalar(-1.0)
        );
    }

    #[test]
    fn series_that_become_one_are_refused() {
        let rows = vec![vec![
            row(&[("__name__", "a")], &[(0, 1.0)]),
            row(&[("__name__", "b")], &[(0, 2.0)]),
        ]];
        let node = Node::Negate(Box::new(Node::Select(0)));
        let e = evaluate(&node, &rows, &[0], 60).unwrap_err();
        assert!(matches!(e, PromError::Execution(_)), "{e}");
    }
}
