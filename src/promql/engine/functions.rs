//! PromQL's functions by name, as Prometheus keeps them in a table in `functions.go`: those
//! of one value ([`MATH`]), those with number arguments, those of a range vector
//! ([`super::over_time`]), and the few that need the whole call (`label_replace`, `absent`,
//! `timestamp`, …). Each keeps Go's `math` meaning.

use chrono::{Datelike, Timelike};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

use super::evaluator::{Builder, Evaluator, unique};
use super::over_time::{self, Param, Window};
use super::query::unparen;
use super::series::{Labels, METRIC_NAME, Series, Value, without_name};
use crate::promql::error::PromError;

/// A function applied to every value of an instant vector; the result loses its name.
struct MathFn {
    name: &'static str,
    apply: fn(f64) -> f64,
}

const fn m(name: &'static str, apply: fn(f64) -> f64) -> MathFn {
    MathFn { name, apply }
}

/// `sgn`: -1, 1, or the value itself (0, -0, NaN), as Prometheus writes it.
fn sgn(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else if v > 0.0 {
        1.0
    } else {
        v
    }
}

const MATH: &[MathFn] = &[
    m("abs", f64::abs),
    m("ceil", f64::ceil),
    m("floor", f64::floor),
    m("exp", f64::exp),
    m("sqrt", f64::sqrt),
    m("ln", f64::ln),
    m("log2", f64::log2),
    m("log10", f64::log10),
    m("sgn", sgn),
    m("sin", f64::sin),
    m("cos", f64::cos),
    m("tan", f64::tan),
    m("asin", f64::asin),
    m("acos", f64::acos),
    m("atan", f64::atan),
    m("sinh", f64::sinh),
    m("cosh", f64::cosh),
    m("tanh", f64::tanh),
    m("asinh", f64::asinh),
    m("acosh", f64::acosh),
    m("atanh", f64::atanh),
    m("deg", f64::to_degrees),
    m("rad", f64::to_radians),
];

type Utc = chrono::DateTime<chrono::Utc>;
/// A function of a time: its name, and what it is of a UTC time.
type DateFn = (&'static str, fn(Utc) -> f64);

/// Functions of a time (Unix seconds, UTC): of each value, or of the evaluation time.
const DATES: &[DateFn] = &[
    ("minute", |t| f64::from(t.minute())),
    ("hour", |t| f64::from(t.hour())),
    ("day_of_week", |t| {
        f64::from(t.weekday().num_days_from_sunday())
    }),
    ("day_of_month", |t| f64::from(t.day())),
    ("day_of_year", |t| f64::from(t.ordinal())),
    ("days_in_month", days_in_month),
    ("month", |t| f64::from(t.month())),
    ("year", |t| f64::from(t.year())),
];

fn days_in_month(t: Utc) -> f64 {
    let (y, mo) = (t.year(), t.month());
    let next = if mo == 12 {
        chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(y, mo + 1, 1)
    };
    match (next, chrono::NaiveDate::from_ymd_opt(y, mo, 1)) {
        (Some(next), Some(first)) => (next - first).num_days() as f64,
        _ => f64::NAN,
    }
}

/// Functions Prometheus only answers behind a feature flag; they are not answered here.
const EXPERIMENTAL: &[&str] = &[
    "double_exponential_smoothing",
    "info",
    "integral",
    "histogram_quantiles",
    "limitk",
    "limit_ratio",
    "mad_over_time",
    "max_of",
    "min_of",
    "range",
    "sort_by_label",
    "sort_by_label_desc",
    "start",
    "end",
    "step",
    "start_timestamp",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
    "ts_of_max_over_time",
    "ts_of_min_over_time",
    "xrate",
    "xdelta",
    "xincrease",
];

/// Refuses a function the engine does not answer.
pub(super) fn check(name: &str) -> Result<(), PromError> {
    const SPECIAL: &[&str] = &[
        "time",
        "pi",
        "vector",
        "scalar",
        "timestamp",
        "round",
        "clamp",
        "clamp_min",
        "clamp_max",
        "sort",
        "sort_desc",
        "label_replace",
        "label_join",
        "absent",
        "absent_over_time",
        "histogram_quantile",
        "histogram_fraction",
        "histogram_avg",
        "histogram_count",
        "histogram_sum",
        "histogram_stddev",
        "histogram_stdvar",
    ];
    if MATH.iter().any(|f| f.name == name)
        || DATES.iter().any(|(n, _)| *n == name)
        || over_time::get(name).is_some()
        || SPECIAL.contains(&name)
    {
        return Ok(());
    }
    Err(unsupported(name))
}

fn unsupported(name: &str) -> PromError {
    if EXPERIMENTAL.contains(&name) {
        PromError::bad_data(format!(
            "unsupported: the function {name}(), experimental in Prometheus (behind its \
             feature flag)"
        ))
    } else {
        PromError::bad_data(format!("unsupported: the function {name}()"))
    }
}

pub(super) fn call(eval: &dyn Evaluator, call: &Call, times: &[i64]) -> Result<Value, PromError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    let arg = |i: usize| {
        args.get(i).copied().ok_or_else(|| {
            PromError::bad_data(format!("{name}() expects more arguments than it was given"))
        })
    };
    if let Some(f) = MATH.iter().find(|f| f.name == name) {
        let v = eval.vector(arg(0)?, times)?;
        return Ok(Value::Vector(map(v, |x, _| Some((f.apply)(x)))?));
    }
    if let Some((_, date)) = DATES.iter().find(|(n, _)| *n == name) {
        let of_seconds = |s: f64| {
            if !s.is_finite() {
                return f64::NAN;
            }
            chrono::DateTime::from_timestamp(s.trunc() as i64, 0).map_or(f64::NAN, date)
        };
        return Ok(match args.first() {
            Some(a) => Value::Vector(map(eval.vector(a, times)?, |x, _| Some(of_seconds(x)))?),
            None => Value::Vector(vec![Series {
                labels: Labels::new(),
                values: times
                    .iter()
                    .map(|t| Some(of_seconds((t.div_euclid(1000)) as f64)))
                    .collect(),
            }]),
        });
    }
    if let Some(f) = over_time::get(name) {
        return range_function(eval, f, &args, times);
    }
    match name {
        "time" => Ok(Value::Scalar(
            times.iter().map(|t| *t as f64 / 1000.0).collect(),
        )),
        "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; times.len()])),
        "vector" => {
            let v = eval.scalar(arg(0)?, times)?;
            Ok(Value::Vector(vec![Series {
                labels: Labels::new(),
                values: v.into_iter().map(Some).collect(),
            }]))
        }
        "scalar" => {
            let v = eval.vector(arg(0)?, times)?;
            Ok(Value::Scalar(
                (0..times.len())
                    .map(|k| {
                        let mut present =
                            v.iter().filter_map(|s| s.values.get(k).copied().flatten());
                        match (present.next(), present.next()) {
                            (Some(x), None) => x,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let v = match unparen(arg(0)?) {
                Expr::VectorSelector(vs) => eval.select(vs, times, true)?,
                other => {
                    let v = eval.vector(other, times)?;
                    v.into_iter()
                        .map(|s| Series {
                            labels: s.labels,
                            values: s
                                .values
                                .iter()
                                .zip(times)
                                .map(|(v, t)| v.map(|_| *t as f64 / 1000.0))
                                .collect(),
                        })
                        .collect()
                }
            };
            Ok(Value::Vector(map(v, |x, _| Some(x))?))
        }
        "round" => {
            let v = eval.vector(arg(0)?, times)?;
            let to = match args.get(1) {
                Some(a) => eval.scalar(a, times)?,
                None => vec![1.0; times.len()],
            };
            Ok(Value::Vector(map(v, |x, k| {
                let inverse = 1.0 / to.get(k).copied().unwrap_or(1.0);
                Some((x * inverse + 0.5).floor() / inverse)
            })?))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = eval.vector(arg(0)?, times)?;
            let first = eval.scalar(arg(1)?, times)?;
            let second = match name {
                "clamp" => eval.scalar(arg(2)?, times)?,
                _ => Vec::new(),
            };
            Ok(Value::Vector(map(v, |x, k| {
                let a = first.get(k).copied().unwrap_or(f64::NAN);
                match name {
                    "clamp_min" => Some(go_max(a, x)),
                    "clamp_max" => Some(go_min(a, x)),
                    _ => {
                        let b = second.get(k).copied().unwrap_or(f64::NAN);
                        // No answer where the bounds are the wrong way round.
                        (b >= a || a.is_nan() || b.is_nan()).then(|| go_max(a, go_min(b, x)))
                    }
                }
            })?))
        }
        "sort" | "sort_desc" => {
            let mut v = eval.vector(arg(0)?, times)?;
            if times.len() == 1 {
                let descending = name == "sort_desc";
                v.sort_by(|a, b| {
                    let (x, y) = (
                        a.values.first().copied().flatten().unwrap_or(f64::NAN),
                        b.values.first().copied().flatten().unwrap_or(f64::NAN),
                    );
                    use std::cmp::Ordering;
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Greater,
                        (false, true) => Ordering::Less,
                        _ if descending => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
                        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                    }
                });
            }
            Ok(Value::Vector(v))
        }
        "label_replace" => label_replace(eval, &args, times),
        "label_join" => label_join(eval, &args, times),
        "absent" => {
            let v = eval.vector(arg(0)?, times)?;
            Ok(Value::Vector(absent(arg(0)?, times.len(), |k| {
                v.iter()
                    .any(|s| s.values.get(k).copied().flatten().is_some())
            })))
        }
        "absent_over_time" => {
            let ranges = eval.range(arg(0)?, times)?;
            Ok(Value::Vector(absent(arg(0)?, times.len(), |k| {
                (0..ranges.series.len()).any(|i| !ranges.at(i, k).is_empty())
            })))
        }
        "histogram_quantile" | "histogram_fraction" | "histogram_avg" | "histogram_count"
        | "histogram_sum" | "histogram_stddev" | "histogram_stdvar" => {
            histogram(eval, name, &args, times)
        }
        _ => Err(unsupported(name)),
    }
}

/// Go's `math.Max`: NaN if either is NaN (Rust's `f64::max` skips NaN instead).
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`, likewise.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Applies `f` (value, time index) to every value; the result loses the metric name, and two
/// series left alike are Prometheus' execution error.
fn map(
    series: Vec<Series>,
    f: impl Fn(f64, usize) -> Option<f64>,
) -> Result<Vec<Series>, PromError> {
    let steps = series.first().map_or(0, |s| s.values.len());
    let mut out = Builder::new(steps);
    for s in series {
        let slot = out.slot(without_name(s.labels));
        for (k, v) in s.values.iter().enumerate() {
            if let Some(v) = v.and_then(|v| f(v, k)) {
                out.set(slot, k, v)?;
            }
        }
    }
    Ok(out.finish())
}

/// A function of a range vector, for each series and time.
fn range_function(
    eval: &dyn Evaluator,
    f: &over_time::OverTime,
    args: &[&Expr],
    times: &[i64],
) -> Result<Value, PromError> {
    let (range_arg, param_arg) = match f.param {
        Param::None => (args.first(), None),
        Param::Before => (args.get(1), args.first()),
        Param::After => (args.first(), args.get(1)),
    };
    let range_arg = range_arg.ok_or_else(|| {
        PromError::bad_data(format!("{}() expects a range vector argument", f.name))
    })?;
    let params = match param_arg {
        Some(p) => eval.scalar(p, times)?,
        None => vec![f64::NAN; times.len()],
    };
    if f.name == "quantile_over_time"
        && let Some(bad) = params.iter().find(|q| **q < 0.0 || **q > 1.0)
    {
        eval.warn(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}",
            crate::promql::time::sample(*bad)
        ));
    }
    let ranges = eval.range(range_arg, times)?;
    let mut out = Vec::new();
    for (i, (labels, _)) in ranges.series.iter().enumerate() {
        let values: Vec<Option<f64>> = times
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let samples = ranges.at(i, k);
                if samples.is_empty() {
                    return None;
                }
                (f.apply)(&Window {
                    samples,
                    time: *t,
                    end: ranges.ends.get(k).copied().unwrap_or(*t),
                    range: ranges.range,
                    param: params.get(k).copied().unwrap_or(f64::NAN),
                })
            })
            .collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        if f.counter
            && let Some(name) = labels.get(METRIC_NAME)
            && !["_total", "_sum", "_count", "_bucket"]
                .iter()
                .any(|s| name.ends_with(s))
        {
            eval.warn(format!(
                "PromQL info: metric might not be a counter, name does not end in \
                 _total/_sum/_count/_bucket: {name:?}"
            ));
        }
        out.push(Series {
            labels: if f.keeps_name {
                labels.clone()
            } else {
                without_name(labels.clone())
            },
            values,
        });
    }
    Ok(Value::Vector(unique(out)?))
}

/// `absent()`'s answer: 1 where nothing is `present`, labelled with the selector's equality
/// matchers (a label matched twice is left out, as Prometheus does).
fn absent(arg: &Expr, steps: usize, present: impl Fn(usize) -> bool) -> Vec<Series> {
    let values: Vec<Option<f64>> = (0..steps).map(|k| (!present(k)).then_some(1.0)).collect();
    if values.iter().all(Option::is_none) {
        return Vec::new();
    }
    let vs = match arg {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let mut labels = Labels::new();
    let mut seen = std::collections::HashSet::new();
    for m in vs.map_or(&[][..], |vs| vs.matchers.matchers.as_slice()) {
        if m.name == METRIC_NAME {
            continue;
        }
        if m.op == MatchOp::Equal && seen.insert(m.name.clone()) {
            if m.value.is_empty() {
                labels.remove(&m.name);
            } else {
                labels.insert(m.name.clone(), m.value.clone());
            }
        } else {
            labels.remove(&m.name);
        }
    }
    vec![Series { labels, values }]
}

fn string_arg(
    eval: &dyn Evaluator,
    arg: Option<&&Expr>,
    times: &[i64],
) -> Result<String, PromError> {
    match arg.map(|a| eval.eval(a, times)) {
        Some(Ok(Value::String(s))) => Ok(s),
        Some(Err(e)) => Err(e),
        _ => Err(PromError::bad_data("expected a string argument")),
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sets (or, when empty, removes) label `name`.
fn set_label(labels: &mut Labels, name: &str, value: String) {
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.insert(name.to_owned(), value);
    }
}

fn label_replace(eval: &dyn Evaluator, args: &[&Expr], times: &[i64]) -> Result<Value, PromError> {
    let v = eval.vector(
        args.first()
            .ok_or_else(|| PromError::bad_data("label_replace() expects 5 arguments"))?,
        times,
    )?;
    let dst = string_arg(eval, args.get(1), times)?;
    let replacement = string_arg(eval, args.get(2), times)?;
    let src = string_arg(eval, args.get(3), times)?;
    let pattern = string_arg(eval, args.get(4), times)?;
    let regex = regex::Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
        PromError::Execution(format!(
            "invalid regular expression in label_replace(): {pattern}: {e}"
        ))
    })?;
    if !valid_label_name(&dst) {
        return Err(PromError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let out = v
        .into_iter()
        .map(|mut s| {
            let value = s.labels.get(&src).cloned().unwrap_or_default();
            if let Some(captures) = regex.captures(&value) {
                let mut expanded = String::new();
                captures.expand(&replacement, &mut expanded);
                set_label(&mut s.labels, &dst, expanded);
            }
            s
        })
        .collect();
    Ok(Value::Vector(unique(out)?))
}

fn label_join(eval: &dyn Evaluator, args: &[&Expr], times: &[i64]) -> Result<Value, PromError> {
    let v = eval.vector(
        args.first()
            .ok_or_else(|| PromError::bad_data("label_join() expects at least 3 arguments"))?,
        times,
    )?;
    let dst = string_arg(eval, args.get(1), times)?;
    let separator = string_arg(eval, args.get(2), times)?;
    let sources = args
        .iter()
        .skip(3)
        .map(|a| string_arg(eval, Some(a), times))
        .collect::<Result<Vec<_>, _>>()?;
    if !valid_label_name(&dst) {
        return Err(PromError::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    if let Some(bad) = sources.iter().find(|s| !valid_label_name(s)) {
        return Err(PromError::Execution(format!(
            "invalid source label name in label_join(): {bad}"
        )));
    }
    let out = v
        .into_iter()
        .map(|mut s| {
            let joined: Vec<String> = sources
                .iter()
                .map(|n| s.labels.get(n).cloned().unwrap_or_default())
                .collect();
            set_label(&mut s.labels, &dst, joined.join(&separator));
            s
        })
        .collect();
    Ok(Value::Vector(unique(out)?))
}

/// The histogram functions read native histograms and classic `le` buckets; Darktrace
/// metrics are plain gauges, so (as Prometheus answers for such series) there is nothing.
fn histogram(
    eval: &dyn Evaluator,
    name: &str,
    args: &[&Expr],
    times: &[i64],
) -> Result<Value, PromError> {
    let vector_arg = match name {
        "histogram_quantile" => args.get(1),
        "histogram_fraction" => args.get(2),
        _ => args.first(),
    };
    let v = match vector_arg {
        Some(a) => eval.vector(a, times)?,
        None => Vec::new(),
    };
    if name == "histogram_quantile" && v.iter().any(|s| s.labels.contains_key("le")) {
        return Err(PromError::bad_data(
            "unsupported: histogram_quantile() of series with an `le` label (classic \
             histogram buckets); Darktrace metrics have none",
        ));
    }
    Ok(Value::Vector(Vec::new()))
}
