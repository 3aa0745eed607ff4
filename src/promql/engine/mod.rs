//! A PromQL engine over promql-parser's own tree ([`Expr`]) and any [`SeriesSource`], with
//! Prometheus 3's meaning: every expression is evaluated at all its times at once, as
//! Prometheus' range evaluation does, and an instant query is a range of one time.
//!
//! It knows nothing of appliances, caches or HTTP. [`hints`] says which samples each selector
//! needs (as Prometheus' `populateSeries`); the source provides them; [`evaluate`] computes.
//! Functions are a table by name ([`functions`], [`over_time`]), aggregations and binary
//! operators have their own files, as Prometheus keeps `functions.go` apart from `engine.go`.
//!
//! Windows are Prometheus 3's: a range `x[r]` at `t` holds the samples in `(t - r, t]`, an
//! instant selector reads the newest sample in `(t - lookback, t]`.

mod aggregate;
mod binary;
mod evaluator;
mod functions;
pub mod hints;
mod over_time;
mod query;
pub mod series;

use std::cell::{Cell, RefCell};

use promql_parser::parser::{Expr, VectorSelector};

use self::evaluator::{Evaluator, unique};
pub use self::query::{Query, SeriesSource};
use self::query::{at_ms, duration_ms, matcher_sets, offset_ms, unparen};
use self::series::{Labels, Output, Ranges, Reach, Row, Series, Value};
use super::error::PromError;

/// Subqueries without a step are evaluated at Prometheus' default evaluation interval.
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// The result of `expr` over `query`'s times, and the warnings that did not stop it.
pub fn evaluate(
    expr: &Expr,
    query: &Query,
    source: &dyn SeriesSource,
) -> Result<(Output, Vec<String>), PromError> {
    let eval = Eval {
        query,
        source,
        samples: Cell::new(0),
        warnings: RefCell::new(Vec::new()),
    };
    let times = query.times();
    let output = match unparen(expr) {
        e @ (Expr::MatrixSelector(_) | Expr::Subquery(_)) => {
            if query.step > 0 {
                return Err(PromError::bad_data(
                    "invalid expression type \"range vector\" for range query, must be Scalar \
                     or instant Vector",
                ));
            }
            let ranges = eval.range(e, &times)?;
            let series = (0..ranges.series.len())
                .filter_map(|i| {
                    let points = ranges.at(i, 0).to_vec();
                    let labels = ranges.series.get(i)?.0.clone();
                    (!points.is_empty()).then_some((labels, points))
                })
                .collect();
            Output::Matrix(series)
        }
        e => match eval.eval(e, &times)? {
            Value::Scalar(v) => Output::Scalar(v),
            Value::Vector(series) => Output::Vector {
                series,
                ordered: query.step <= 0 && ordered(e),
            },
            Value::String(s) if query.step > 0 => {
                let _ = s;
                return Err(PromError::bad_data(
                    "invalid expression type \"string\" for range query, must be Scalar or \
                     instant Vector",
                ));
            }
            Value::String(s) => Output::String(s),
        },
    };
    Ok((output, eval.warnings.into_inner()))
}

/// Refuses, before anything is read, what evaluating would refuse: a function or aggregation
/// the engine does not answer, and a range query of a range vector or a string.
pub fn check(expr: &Expr, range_query: bool) -> Result<(), PromError> {
    use promql_parser::parser::value::ValueType;
    if range_query {
        match expr.value_type() {
            ValueType::Matrix => {
                return Err(PromError::bad_data(
                    "invalid expression type \"range vector\" for range query, must be Scalar \
                     or instant Vector",
                ));
            }
            ValueType::String => {
                return Err(PromError::bad_data(
                    "invalid expression type \"string\" for range query, must be Scalar or \
                     instant Vector",
                ));
            }
            _ => {}
        }
    }
    walk_check(expr)
}

fn walk_check(expr: &Expr) -> Result<(), PromError> {
    match expr {
        Expr::Call(c) => {
            functions::check(c.func.name)?;
            c.args.args.iter().try_for_each(|a| walk_check(a))
        }
        Expr::Aggregate(a) => {
            aggregate::check(a)?;
            if let Some(p) = &a.param {
                walk_check(p)?;
            }
            walk_check(&a.expr)
        }
        Expr::Binary(b) => {
            binary::check(b)?;
            walk_check(&b.lhs)?;
            walk_check(&b.rhs)
        }
        Expr::Unary(u) => walk_check(&u.expr),
        Expr::Paren(p) => walk_check(&p.expr),
        Expr::Subquery(s) => walk_check(&s.expr),
        Expr::Extension(_) => Err(PromError::bad_data("unsupported: an extension expression")),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_) => Ok(()),
    }
}

/// Whether Prometheus' instant answer to `expr` is in an order of its own, not the labels'.
fn ordered(expr: &Expr) -> bool {
    use promql_parser::parser::token::{T_BOTTOMK, T_LIMITK, T_TOPK};
    match unparen(expr) {
        Expr::Call(c) => c.func.name.starts_with("sort"),
        Expr::Aggregate(a) => matches!(a.op.id(), T_TOPK | T_BOTTOMK | T_LIMITK),
        _ => false,
    }
}

/// One evaluation: the query, the source, and what it has loaded and noticed so far.
pub(crate) struct Eval<'a> {
    pub query: &'a Query,
    source: &'a dyn SeriesSource,
    samples: Cell<usize>,
    warnings: RefCell<Vec<String>>,
}

impl Eval<'_> {
    /// Counts `n` more samples held, refusing the query past its limit.
    pub fn hold(&self, n: usize) -> Result<(), PromError> {
        let total = self.samples.get().saturating_add(n);
        self.samples.set(total);
        if total > self.query.max_samples {
            return Err(PromError::Execution(
                "query processing would load too many samples into memory in query execution"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// The rows of a selector, each `or` alternative's together.
    fn rows(&self, vs: &VectorSelector) -> Vec<Row> {
        let sets = matcher_sets(vs);
        let mut rows: Vec<Row> = Vec::new();
        for matchers in &sets {
            for row in self.source.rows(matchers) {
                if !rows.iter().any(|r| r.labels == row.labels) {
                    rows.push(row);
                }
            }
        }
        rows.sort_by(|a, b| a.labels.cmp(&b.labels));
        rows
    }
}

impl Evaluator for Eval<'_> {
    fn warn(&self, warning: String) {
        let mut warnings = self.warnings.borrow_mut();
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }

    /// `expr`'s value at each of `times`.
    fn eval(&self, expr: &Expr, times: &[i64]) -> Result<Value, PromError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; times.len()])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, times),
            Expr::Unary(u) => match self.eval(&u.expr, times)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(v) => {
                    let negated = v
                        .into_iter()
                        .map(|s| Series {
                            labels: series::without_name(s.labels),
                            values: s.values.into_iter().map(|x| x.map(|x| -x)).collect(),
                        })
                        .collect();
                    Ok(Value::Vector(unique(negated)?))
                }
                Value::String(_) => Err(PromError::bad_data(
                    "unary expression only allowed on expressions of type scalar or vector",
                )),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.select(vs, times, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => Err(PromError::bad_data(format!(
                "a range vector (`{expr}`) is not allowed here: use it in a function such as \
                 rate() or max_over_time()"
            ))),
            Expr::Call(call) => functions::call(self, call, times),
            Expr::Aggregate(agg) => aggregate::evaluate(self, agg, times),
            Expr::Binary(bin) => binary::evaluate(self, bin, times),
            Expr::Extension(_) => Err(PromError::bad_data("unsupported: an extension expression")),
        }
    }

    /// An instant selector at each time: the sample it reads, or (`stamps`) that sample's
    /// time in seconds, as `timestamp()` of a selector gives.
    fn select(
        &self,
        vs: &VectorSelector,
        times: &[i64],
        stamps: bool,
    ) -> Result<Vec<Series>, PromError> {
        let at = at_ms(&vs.at, self.query);
        let offset = offset_ms(&vs.offset);
        let lookback = self.query.lookback;
        let mut out = Vec::new();
        for row in self.rows(vs) {
            let values: Vec<Option<f64>> = times
                .iter()
                .map(|t| {
                    let te = at.unwrap_or(*t).saturating_sub(offset);
                    let sample = match row.reach {
                        Reach::Lookback => row.window(te.saturating_sub(lookback), te).last(),
                        Reach::Bucket(width) => {
                            let start = te.div_euclid(width.max(1)) * width.max(1);
                            row.window(start - 1, start).last()
                        }
                    };
                    sample.map(|(ts, v)| if stamps { *ts as f64 / 1000.0 } else { *v })
                })
                .collect();
            if values.iter().any(Option::is_some) {
                self.hold(values.iter().flatten().count())?;
                out.push(Series {
                    labels: row.labels,
                    values,
                });
            }
        }
        Ok(out)
    }

    /// A range vector (`x[r]`, a subquery) read at each time.
    fn range(&self, expr: &Expr, times: &[i64]) -> Result<Ranges, PromError> {
        match expr {
            Expr::Paren(p) => self.range(&p.expr, times),
            Expr::MatrixSelector(ms) => {
                let at = at_ms(&ms.vs.at, self.query);
                let offset = offset_ms(&ms.vs.offset);
                let range = duration_ms(ms.range);
                let ends: Vec<i64> = times
                    .iter()
                    .map(|t| at.unwrap_or(*t).saturating_sub(offset))
                    .collect();
                let (lo, hi) = span(&ends);
                let mut series = Vec::new();
                for row in self.rows(&ms.vs) {
                    let held = series::window(&row.points, lo.saturating_sub(range), hi);
                    if held.is_empty() {
                        continue;
                    }
                    self.hold(held.len())?;
                    series.push((row.labels, held.to_vec()));
                }
                Ok(Ranges {
                    series,
                    ends,
                    range,
                })
            }
            Expr::Subquery(sq) => {
                let at = at_ms(&sq.at, self.query);
                let offset = offset_ms(&sq.offset);
                let range = duration_ms(sq.range);
                let step = sq
                    .step
                    .map(duration_ms)
                    .filter(|s| *s > 0)
                    .unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
                let ends: Vec<i64> = times
                    .iter()
                    .map(|t| at.unwrap_or(*t).saturating_sub(offset))
                    .collect();
                let (lo, hi) = span(&ends);
                // As Prometheus: the first multiple of the step at or after the earliest
                // window's start, then every step to the last window's end.
                let from = lo.saturating_sub(range);
                let mut first = step * (from / step);
                if first < from {
                    first += step;
                }
                let count = if hi < first {
                    0
                } else {
                    (hi - first) / step + 1
                };
                self.hold(usize::try_from(count).unwrap_or(usize::MAX))?;
                let grid: Vec<i64> = (0..count).map(|k| first + k * step).collect();
                let inner = match self.eval(&sq.expr, &grid)? {
                    Value::Vector(v) => v,
                    Value::Scalar(v) => vec![Series {
                        labels: Labels::new(),
                        values: v.into_iter().map(Some).collect(),
                    }],
                    Value::String(_) => {
                        return Err(PromError::bad_data(
                            "subquery is only allowed on instant vector or scalar",
                        ));
                    }
                };
                let series = inner
                    .into_iter()
                    .map(|s| {
                        let points = grid
                            .iter()
                            .zip(s.values)
                            .filter_map(|(t, v)| Some((*t, v?)))
                            .collect();
                        (s.labels, points)
                    })
                    .collect();
                Ok(Ranges {
                    series,
                    ends,
                    range,
                })
            }
            other => Err(PromError::bad_data(format!(
                "expected type range vector, got `{other}`"
            ))),
        }
    }
}

/// The earliest and latest of `times`.
fn span(times: &[i64]) -> (i64, i64) {
    let lo = times.iter().copied().min().unwrap_or(0);
    let hi = times.iter().copied().max().unwrap_or(0);
    (lo, hi)
}

#[cfg(test)]
mod tests;
