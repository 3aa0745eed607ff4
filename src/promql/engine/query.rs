//! What an evaluation is asked: its times and limits, where it reads series, and the
//! modifiers of a selector (`offset`, `@`, `or` alternatives) in milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use promql_parser::label::Matcher;
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use super::series::{METRIC_NAME, Row};

/// What to evaluate at, and the engine's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Epoch ms; an instant query has `start == end` and a zero step.
    pub start: i64,
    pub end: i64,
    pub step: i64,
    /// How far back an instant selector reads (ms).
    pub lookback: i64,
    /// The most samples a query may hold at once (Prometheus' `--query.max-samples`).
    pub max_samples: usize,
}

impl Query {
    pub(crate) fn times(&self) -> Vec<i64> {
        if self.step <= 0 {
            return vec![self.end];
        }
        (0..)
            .map(|k| self.start + k * self.step)
            .take_while(|t| *t <= self.end)
            .collect()
    }
}

/// Where the engine reads series: every series whose labels all `matchers` match.
pub trait SeriesSource {
    fn rows(&self, matchers: &[Matcher]) -> Vec<Row>;
}

pub(crate) fn unparen(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => unparen(&p.expr),
        e => e,
    }
}

/// A selector's matchers, its metric name's included (as `__name__`); one set per `or`
/// alternative.
pub fn matcher_sets(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let with_name = |mut matchers: Vec<Matcher>| {
        if let Some(name) = &vs.name {
            matchers.push(Matcher::new(
                promql_parser::label::MatchOp::Equal,
                METRIC_NAME,
                name,
            ));
        }
        matchers
    };
    if vs.matchers.or_matchers.is_empty() {
        vec![with_name(vs.matchers.matchers.clone())]
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|alternative| {
                let mut all = vs.matchers.matchers.clone();
                all.extend(alternative.iter().cloned());
                with_name(all)
            })
            .collect()
    }
}

pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    let ms = |d: &std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
    }
}

/// The time an `@` modifier fixes, in epoch ms.
pub(crate) fn at_ms(at: &Option<AtModifier>, query: &Query) -> Option<i64> {
    Some(match at.as_ref()? {
        AtModifier::Start => query.start,
        AtModifier::End => query.end,
        AtModifier::At(time) => system_ms(*time),
    })
}

fn system_ms(time: SystemTime) -> i64 {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

pub(crate) fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}
