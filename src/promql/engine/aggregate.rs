//! Aggregations (`sum`, `topk`, `quantile`, …, with `by`/`without`), at each time over the
//! values present then, as Prometheus' `aggregation` in `engine.go`: sums and means with
//! Kahan–Neumaier compensation, NaN kept as Prometheus keeps it.

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::evaluator::{Builder, Evaluator};
use super::series::{Labels, Series, Value, kept};
use crate::promql::error::PromError;
use crate::promql::time::sample;

/// Refuses the aggregations Prometheus keeps behind a feature flag (`limitk`, `limit_ratio`).
pub(super) fn check(agg: &AggregateExpr) -> Result<(), PromError> {
    match agg.op.id() {
        T_SUM | T_AVG | T_COUNT | T_GROUP | T_MIN | T_MAX | T_STDVAR | T_STDDEV | T_QUANTILE
        | T_TOPK | T_BOTTOMK | T_COUNT_VALUES => Ok(()),
        _ => Err(PromError::bad_data(format!(
            "unsupported: the aggregation {}, experimental in Prometheus (behind its feature \
             flag)",
            agg.op
        ))),
    }
}

pub(super) fn evaluate(
    eval: &dyn Evaluator,
    agg: &AggregateExpr,
    times: &[i64],
) -> Result<Value, PromError> {
    let op = agg.op.id();
    let input = eval.vector(&agg.expr, times)?;
    let groups = groups(&input, agg.modifier.as_ref());
    let steps = times.len();
    let mut out = Builder::new(steps);
    match op {
        T_TOPK | T_BOTTOMK => {
            let k = param(eval, agg, times)?;
            for (_, members) in &groups {
                for (step, k) in k.iter().enumerate() {
                    let k = count_param(*k)?;
                    for i in top(&input, members, step, k, op == T_TOPK) {
                        if let (Some(s), Some(v)) = (input.get(i), value(&input, i, step)) {
                            let slot = out.slot(s.labels.clone());
                            out.set(slot, step, v)?;
                        }
                    }
                }
            }
        }
        T_COUNT_VALUES => {
            let label = match agg.param.as_deref().map(|p| eval.eval(p, times)) {
                Some(Ok(Value::String(s))) => s,
                Some(Err(e)) => return Err(e),
                _ => {
                    return Err(PromError::bad_data(
                        "count_values expects a string label name",
                    ));
                }
            };
            if !valid_label(&label) {
                return Err(PromError::Execution(format!(
                    "invalid label name {label:?}"
                )));
            }
            for (key, members) in &groups {
                for step in 0..steps {
                    let mut counts: Vec<(String, f64)> = Vec::new();
                    for v in members.iter().filter_map(|i| value(&input, *i, step)) {
                        let text = sample(v);
                        match counts.iter_mut().find(|(t, _)| *t == text) {
                            Some((_, n)) => *n += 1.0,
                            None => counts.push((text, 1.0)),
                        }
                    }
                    for (text, n) in counts {
                        let mut labels = key.clone();
                        labels.insert(label.clone(), text);
                        let slot = out.slot(labels);
                        out.set(slot, step, n)?;
                    }
                }
            }
        }
        _ => {
            let q = if op == T_QUANTILE {
                let q = param(eval, agg, times)?;
                if let Some(bad) = q.iter().find(|q| **q < 0.0 || **q > 1.0) {
                    eval.warn(format!(
                        "PromQL warning: quantile value should be between 0 and 1, got {}",
                        sample(*bad)
                    ));
                }
                q
            } else {
                Vec::new()
            };
            for (key, members) in &groups {
                let slot = out.slot(key.clone());
                for step in 0..steps {
                    let values: Vec<f64> = members
                        .iter()
                        .filter_map(|i| value(&input, *i, step))
                        .collect();
                    if values.is_empty() {
                        continue;
                    }
                    let v = match op {
                        T_SUM => sum(&values),
                        T_AVG => mean(&values),
                        T_COUNT => values.len() as f64,
                        T_GROUP => 1.0,
                        T_MIN => values.iter().copied().fold(f64::NAN, lesser),
                        T_MAX => values.iter().copied().fold(f64::NAN, greater),
                        T_STDVAR => variance(&values),
                        T_STDDEV => variance(&values).sqrt(),
                        T_QUANTILE => quantile(q.get(step).copied().unwrap_or(f64::NAN), values),
                        _ => {
                            return Err(PromError::bad_data(format!(
                                "unsupported: the aggregation {}, experimental in Prometheus",
                                agg.op
                            )));
                        }
                    };
                    out.set(slot, step, v)?;
                }
            }
        }
    }
    Ok(Value::Vector(out.finish()))
}

fn value(input: &[Series], i: usize, step: usize) -> Option<f64> {
    input.get(i)?.values.get(step).copied().flatten()
}

fn param(eval: &dyn Evaluator, agg: &AggregateExpr, times: &[i64]) -> Result<Vec<f64>, PromError> {
    match agg.param.as_deref() {
        Some(p) => eval.scalar(p, times),
        None => Err(PromError::bad_data(format!(
            "{} expects a number parameter",
            agg.op
        ))),
    }
}

/// `topk`'s k: Prometheus' execution error for a number no integer holds.
fn count_param(k: f64) -> Result<usize, PromError> {
    // 2^63: the first number past int64, as Go's `convertibleToInt64` bounds it.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if !(-LIMIT..LIMIT).contains(&k) {
        return Err(PromError::Execution(format!(
            "Scalar value {} overflows int64",
            sample(k)
        )));
    }
    Ok(if k < 1.0 { 0 } else { k as usize })
}

/// The input's series by group, groups in the order they are first met: `by` keeps the
/// labels named, `without` drops them and the metric name.
fn groups(input: &[Series], modifier: Option<&LabelModifier>) -> Vec<(Labels, Vec<usize>)> {
    let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    for (i, s) in input.iter().enumerate() {
        let key: Labels = modifier.map_or_else(Labels::new, |m| kept(&s.labels, m));
        match index.get(&key) {
            Some(g) => {
                if let Some(group) = groups.get_mut(*g) {
                    group.1.push(i);
                }
            }
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![i]));
            }
        }
    }
    groups
}

/// The `k` members with the largest (`largest`) or smallest values at `step`, as Prometheus'
/// heap keeps them: NaN counts as the worst, and of equal values the first met stays.
fn top(input: &[Series], members: &[usize], step: usize, k: usize, largest: bool) -> Vec<usize> {
    let mut present: Vec<(usize, f64)> = members
        .iter()
        .filter_map(|i| Some((*i, value(input, *i, step)?)))
        .collect();
    present.sort_by(|(_, a), (_, b)| {
        use std::cmp::Ordering;
        match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ if largest => b.partial_cmp(a).unwrap_or(Ordering::Equal),
            _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
        }
    });
    present.into_iter().take(k).map(|(i, _)| i).collect()
}

fn valid_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Kahan–Neumaier summation, one term: Prometheus' `kahanSumInc`.
pub(super) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub(super) fn sum(values: &[f64]) -> f64 {
    let (s, c) = values
        .iter()
        .fold((0.0, 0.0), |(s, c), v| kahan_inc(*v, s, c));
    s + c
}

/// Prometheus 3's mean: a compensated sum, falling back to an incremental mean where the
/// sum would overflow.
pub(super) fn mean(values: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    let mut incremental: Option<(f64, f64)> = None;
    for (i, v) in values.iter().enumerate() {
        let count = (i + 1) as f64;
        if i == 0 {
            sum = *v;
            continue;
        }
        let (m, mc) = match incremental {
            Some(state) => state,
            None => {
                let (s, sc) = kahan_inc(*v, sum, c);
                if !s.is_infinite() {
                    (sum, c) = (s, sc);
                    continue;
                }
                (sum / (count - 1.0), c / (count - 1.0))
            }
        };
        if m.is_infinite() {
            if v.is_infinite() && (m > 0.0) == (*v > 0.0) {
                incremental = Some((m, mc));
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                incremental = Some((m, mc));
                continue;
            }
        }
        let current = m + mc;
        incremental = Some(kahan_inc(v / count - current / count, m, mc));
    }
    match incremental {
        Some((m, mc)) => m + mc,
        None => (sum + c) / values.len() as f64,
    }
}

/// Welford's population variance, as Prometheus' `stdvar` (NaN from a NaN or infinity).
fn variance(values: &[f64]) -> f64 {
    let Some(first) = values.first() else {
        return f64::NAN;
    };
    let mut acc = if first.is_nan() || first.is_infinite() {
        f64::NAN
    } else {
        0.0
    };
    let mut mean = *first;
    for (i, v) in values.iter().enumerate().skip(1) {
        let count = (i + 1) as f64;
        let delta = v - mean;
        mean += delta / count;
        acc += delta * (v - mean);
    }
    acc / values.len() as f64
}

/// Prometheus' min: NaN only when every value is NaN (`f64::min` skips NaN instead).
pub(super) fn lesser(acc: f64, v: f64) -> f64 {
    if acc > v || acc.is_nan() { v } else { acc }
}

/// Prometheus' max, likewise.
pub(super) fn greater(acc: f64, v: f64) -> f64 {
    if acc < v || acc.is_nan() { v } else { acc }
}

/// Prometheus' `quantile`: the q-quantile by linear interpolation between closest ranks.
pub(super) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go sorts NaN first (its `Less` calls a NaN smaller than anything).
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    let at = |i: f64| values.get(i as usize).copied().unwrap_or(f64::NAN);
    at(lower) * (1.0 - weight) + at(upper) * weight
}
