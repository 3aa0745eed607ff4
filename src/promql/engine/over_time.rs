//! Functions of a range vector, by name: each reads the samples of one series' window at one
//! time, as Prometheus' `functions.go` defines them (`*_over_time`, `rate`, `deriv`, …).

use super::aggregate::{greater, kahan_inc, lesser, quantile};

/// One series' window at one evaluation time.
pub(super) struct Window<'a> {
    /// The samples in `(end - range, end]`, oldest first.
    pub samples: &'a [(i64, f64)],
    /// The evaluation time (ms).
    pub time: i64,
    /// The window's end: the evaluation time, moved by `offset` and `@`.
    pub end: i64,
    pub range: i64,
    /// The function's number argument at this time, if it takes one.
    pub param: f64,
}

/// Where a function's number argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Param {
    None,
    /// Before the range vector (`quantile_over_time(0.9, x[5m])`).
    Before,
    /// After it (`predict_linear(x[1h], 600)`).
    After,
}

pub(super) struct OverTime {
    pub name: &'static str,
    pub apply: fn(&Window<'_>) -> Option<f64>,
    pub param: Param,
    /// Whether the result is still the metric (`last_over_time`): it keeps its name.
    pub keeps_name: bool,
    /// Whether the function reads counters, so a metric that is not one deserves a note.
    pub counter: bool,
}

const fn f(name: &'static str, apply: fn(&Window<'_>) -> Option<f64>) -> OverTime {
    OverTime {
        name,
        apply,
        param: Param::None,
        keeps_name: false,
        counter: false,
    }
}

const TABLE: &[OverTime] = &[
    f("avg_over_time", avg),
    f("count_over_time", |w| Some(w.samples.len() as f64)),
    f("max_over_time", |w| {
        Some(w.samples.iter().fold(f64::NAN, |a, (_, v)| greater(a, *v)))
    }),
    f("min_over_time", |w| {
        Some(w.samples.iter().fold(f64::NAN, |a, (_, v)| lesser(a, *v)))
    }),
    f("sum_over_time", |w| {
        let (s, c) = w
            .samples
            .iter()
            .fold((0.0, 0.0), |(s, c), (_, v)| kahan_inc(*v, s, c));
        Some(s + c)
    }),
    f("stddev_over_time", |w| Some(variance(w.samples).sqrt())),
    f("stdvar_over_time", |w| Some(variance(w.samples))),
    f("present_over_time", |_| Some(1.0)),
    OverTime {
        keeps_name: true,
        ..f("last_over_time", |w| w.samples.last().map(|(_, v)| *v))
    },
    OverTime {
        keeps_name: true,
        ..f("first_over_time", |w| w.samples.first().map(|(_, v)| *v))
    },
    OverTime {
        param: Param::Before,
        ..f("quantile_over_time", |w| {
            Some(quantile(
                w.param,
                w.samples.iter().map(|(_, v)| *v).collect(),
            ))
        })
    },
    f("changes", |w| {
        let changes = w
            .samples
            .windows(2)
            .filter(|p| {
                let (a, b) = (p[0].1, p[1].1);
                !(a == b || (a.is_nan() && b.is_nan()))
            })
            .count();
        Some(changes as f64)
    }),
    f("resets", |w| {
        Some(w.samples.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64)
    }),
    OverTime {
        counter: true,
        ..f("rate", |w| extrapolated(w, true, true))
    },
    OverTime {
        counter: true,
        ..f("increase", |w| extrapolated(w, true, false))
    },
    f("delta", |w| extrapolated(w, false, false)),
    OverTime {
        counter: true,
        ..f("irate", |w| instant(w, true))
    },
    f("idelta", |w| instant(w, false)),
    f("deriv", |w| {
        let first = w.samples.first()?.0;
        (w.samples.len() >= 2).then(|| regression(w.samples, first).0)
    }),
    OverTime {
        param: Param::After,
        ..f("predict_linear", |w| {
            if w.samples.len() < 2 {
                return None;
            }
            let (slope, intercept) = regression(w.samples, w.time);
            Some(slope * w.param + intercept)
        })
    },
];

/// The range-vector function called `name`, if PromQL has one.
pub(super) fn get(name: &str) -> Option<&'static OverTime> {
    TABLE.iter().find(|f| f.name == name)
}

/// Prometheus 3's `avg_over_time`: a compensated sum, or an incremental mean where the sum
/// would overflow.
fn avg(w: &Window<'_>) -> Option<f64> {
    let values: Vec<f64> = w.samples.iter().map(|(_, v)| *v).collect();
    (!values.is_empty()).then(|| super::aggregate::mean(&values))
}

/// The population variance, as Prometheus' `stdvar_over_time`: in two passes (the mean, then
/// the squared deviations from it), which needs no division per sample and is as exact as
/// Prometheus' compensated Welford (far within the 1e-9 the differential test holds it to).
/// A NaN or an infinity makes it NaN, as there.
fn variance(samples: &[(i64, f64)]) -> f64 {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|(_, v)| v).sum::<f64>() / n;
    let squares: f64 = samples.iter().map(|(_, v)| (v - mean) * (v - mean)).sum();
    squares / n
}

/// Prometheus' `extrapolatedRate`: the change over the window (counter resets added back
/// for a counter), extrapolated to the window's edges where the samples come close to them.
fn extrapolated(w: &Window<'_>, counter: bool, per_second: bool) -> Option<f64> {
    let samples = w.samples;
    if samples.len() < 2 {
        return None;
    }
    let (first_t, first_v) = *samples.first()?;
    let (last_t, last_v) = *samples.last()?;
    let mut result = last_v - first_v;
    if counter {
        let mut previous = 0.0;
        for (_, v) in samples {
            if *v < previous {
                result += previous;
            }
            previous = *v;
        }
    }
    let range_start = w.end - w.range;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let mut to_end = (w.end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (samples.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if counter && result > 0.0 && first_v >= 0.0 {
        // A counter starts at zero: do not extrapolate below it.
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if per_second {
        factor /= w.range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the window's last two samples.
fn instant(w: &Window<'_>, rate: bool) -> Option<f64> {
    let [.., (t0, v0), (t1, v1)] = w.samples else {
        return None;
    };
    let mut result = if rate && v1 < v0 { *v1 } else { v1 - v0 };
    let interval = t1 - t0;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope and intercept (at `intercept_time`, ms) of the samples, with
/// compensated sums, as Prometheus' `linearRegression`.
fn regression(samples: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let Some((_, init)) = samples.first() else {
        return (f64::NAN, f64::NAN);
    };
    let constant = samples.iter().all(|(_, v)| v == init);
    if constant {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, *init);
    }
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (t, v) in samples {
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(*v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}
