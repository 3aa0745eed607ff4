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
}

/// Every selector's hint, in the order they appear.
pub fn hints(expr: &Expr, query: &Query) -> Vec<Hint> {
    let mut out = Vec::new();
    walk(expr, query, (query.start, query.end), &mut out);
    out
}

/// `times`: the earliest and latest time `expr` is evaluated at.
fn walk(expr: &Expr, query: &Query, times: (i64, i64), out: &mut Vec<Hint>) {
    match expr {
        Expr::VectorSelector(vs) => selector(vs, query, times, 0, out),
        Expr::MatrixSelector(ms) => selector(&ms.vs, query, times, duration_ms(ms.range), out),
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
            walk(&sq.expr, query, inner, out);
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, query, times, out);
            }
            walk(&a.expr, query, times, out);
        }
        Expr::Unary(u) => walk(&u.expr, query, times, out),
        Expr::Binary(b) => {
            walk(&b.lhs, query, times, out);
            walk(&b.rhs, query, times, out);
        }
        Expr::Paren(p) => walk(&p.expr, query, times, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, query, times, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector(
    vs: &VectorSelector,
    query: &Query,
    times: (i64, i64),
    range: i64,
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
        });
    }
}
