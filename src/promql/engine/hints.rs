//! Which samples each selector needs, before anything is read: as Prometheus'
//! `populateSeries`/`getTimeRangesForSelector`, each selector's window follows from the
//! query's times moved by every enclosing subquery's range, offset and `@`, then its own.

use promql_parser::label::Matcher;
use promql_parser::parser::{Expr, VectorSelector};

use super::query::{Query, at_ms, duration_ms, matcher_sets, offset_ms};

/// A selector's matchers (one `or` alternative), and the samples it reads: `(from, to]`, ms.
#[derive(Debug, Clone)]
pub struct Hint {
    pub matchers: Vec<Matcher>,
    pub from: i64,
    pub to: i64,
    /// Set where the selector is read only for its largest sample in each window:
    /// `max_over_time(x[range] offset offset)` evaluated at the query's own times.
    pub maximum: Option<Maximum>,
}

/// `max_over_time(x[range] offset offset)`, at the query's times (no `@`, no subquery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maximum {
    pub range: i64,
    pub offset: i64,
}

/// Every selector's hint, in the order they appear.
pub fn hints(expr: &Expr, query: &Query) -> Vec<Hint> {
    let mut out = Vec::new();
    walk(expr, query, (query.start, query.end), true, &mut out);
    out
}

/// `times`: the earliest and latest time `expr` is evaluated at; `own`: whether those are the
/// query's own times (not a subquery's).
fn walk(expr: &Expr, query: &Query, times: (i64, i64), own: bool, out: &mut Vec<Hint>) {
    let walk = |e: &Expr, out: &mut Vec<Hint>| self::walk(e, query, times, own, out);
    match expr {
        Expr::VectorSelector(vs) => selector(vs, query, times, 0, None, out),
        Expr::MatrixSelector(ms) => {
            selector(&ms.vs, query, times, duration_ms(ms.range), None, out)
        }
        Expr::Call(c) if own && c.func.name == "max_over_time" => {
            for a in &c.args.args {
                match a.as_ref() {
                    Expr::MatrixSelector(ms) if ms.vs.at.is_none() => {
                        let range = duration_ms(ms.range);
                        let maximum = Maximum {
                            range,
                            offset: offset_ms(&ms.vs.offset),
                        };
                        selector(&ms.vs, query, times, range, Some(maximum), out);
                    }
                    other => walk(other, out),
                }
            }
        }
        Expr::Subquery(sq) => {
            let offset = offset_ms(&sq.offset);
            let (lo, hi) = match at_ms(&sq.at, query) {
                Some(at) => (at, at),
                None => times,
            };
            let inner = (
                lo.saturating_sub(offset)
                    .saturating_sub(duration_ms(sq.range)),
                hi.saturating_sub(offset),
            );
            self::walk(&sq.expr, query, inner, false, out);
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, out);
            }
            walk(&a.expr, out);
        }
        Expr::Unary(u) => walk(&u.expr, out),
        Expr::Binary(b) => {
            walk(&b.lhs, out);
            walk(&b.rhs, out);
        }
        Expr::Paren(p) => walk(&p.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector(
    vs: &VectorSelector,
    query: &Query,
    times: (i64, i64),
    range: i64,
    maximum: Option<Maximum>,
    out: &mut Vec<Hint>,
) {
    let (lo, hi) = match at_ms(&vs.at, query) {
        Some(at) => (at, at),
        None => times,
    };
    let offset = offset_ms(&vs.offset);
    let reach = if range > 0 { range } else { query.lookback };
    for matchers in matcher_sets(vs) {
        out.push(Hint {
            matchers,
            from: lo.saturating_sub(offset).saturating_sub(reach),
            to: hi.saturating_sub(offset),
            maximum,
        });
    }
}
