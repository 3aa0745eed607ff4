//! PromQL text → the supported subset, as a small tree. The text is parsed by `promql-parser`
//! (never by hand); this file only decides what of its tree is supported, and names the first
//! unsupported part it meets.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier, token};

use super::PromError;
use super::functions::MathFn;

/// Longest query text accepted, in bytes (Grafana's longest generated queries are far shorter).
const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Deepest nesting of brackets accepted: the parser's tree is recursive, and so is dropping it.
const MAX_NESTING: usize = 64;

/// A vector selector: every matcher, the metric name's included (as `__name__`).
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aggregation {
    Sum,
    Min,
    Max,
    Avg,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverTime {
    Max,
    Min,
    Avg,
    Sum,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arithmetic {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl Arithmetic {
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Self::Add => a + b,
            Self::Sub => a - b,
            Self::Mul => a * b,
            Self::Div => a / b,
            // Go's math.Mod: the sign of the dividend, NaN for a zero divisor (as Rust's %).
            Self::Mod => a % b,
            Self::Pow => a.powf(b),
        }
    }
}

/// A comparison: with `bool` it answers 1 or 0, without it keeps the values it holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl Comparison {
    /// IEEE comparisons, as Go's: NaN is unequal to everything, itself included.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Self::Eq => a == b,
            Self::Ne => a != b,
            Self::Gt => a > b,
            Self::Lt => a < b,
            Self::Ge => a >= b,
            Self::Le => a <= b,
        }
    }
}

/// Which labels an aggregation keeps: `by (…)` those, `without (…)` all others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

/// The supported subset of PromQL, with selectors not yet resolved against the appliance.
#[derive(Debug, Clone)]
pub(crate) enum Node<S> {
    Number(f64),
    Select(S),
    OverTime {
        func: OverTime,
        range_ms: i64,
        selector: S,
    },
    Aggregate {
        op: Aggregation,
        grouping: Grouping,
        inner: Box<Node<S>>,
    },
    Arithmetic {
        op: Arithmetic,
        lhs: Box<Node<S>>,
        rhs: Box<Node<S>>,
    },
    Negate(Box<Node<S>>),
    /// A comparison with a number on one side at least (`x > 500`, `x > bool 500`).
    Compare {
        op: Comparison,
        returns_bool: bool,
        lhs: Box<Node<S>>,
        rhs: Box<Node<S>>,
    },
    /// A function of one float, applied to every value (`abs(x)`, `ln(x)`, …).
    Math {
        func: MathFn,
        arg: Box<Node<S>>,
    },
    /// A range vector's raw buckets (`x[1h]` alone, in an instant query).
    Raw {
        range_ms: i64,
        selector: S,
    },
}

impl<S> Node<S> {
    /// Whether the node's value is a scalar (no selector below it).
    pub fn is_scalar(&self) -> bool {
        match self {
            Node::Number(_) => true,
            Node::Select(_) | Node::OverTime { .. } | Node::Aggregate { .. } | Node::Raw { .. } => {
                false
            }
            Node::Arithmetic { lhs, rhs, .. } => lhs.is_scalar() && rhs.is_scalar(),
            Node::Negate(inner) => inner.is_scalar(),
            Node::Math { .. } => false,
            Node::Compare { lhs, rhs, .. } => lhs.is_scalar() && rhs.is_scalar(),
        }
    }

    /// The same tree with each selector replaced by what `f` makes of it.
    pub fn try_map<T, E>(
        self,
        f: &mut impl FnMut(S, Option<i64>) -> Result<T, E>,
    ) -> Result<Node<T>, E> {
        Ok(match self {
            Node::Number(v) => Node::Number(v),
            Node::Select(s) => Node::Select(f(s, None)?),
            Node::OverTime {
                func,
                range_ms,
                selector,
            } => Node::OverTime {
                func,
                range_ms,
                selector: f(selector, Some(range_ms))?,
            },
            Node::Aggregate {
                op,
                grouping,
                inner,
            } => Node::Aggregate {
                op,
                grouping,
                inner: Box::new(inner.try_map(f)?),
            },
            Node::Arithmetic { op, lhs, rhs } => Node::Arithmetic {
                op,
                lhs: Box::new(lhs.try_map(f)?),
                rhs: Box::new(rhs.try_map(f)?),
            },
            Node::Negate(inner) => Node::Negate(Box::new(inner.try_map(f)?)),
            Node::Compare {
                op,
                returns_bool,
                lhs,
                rhs,
            } => Node::Compare {
                op,
                returns_bool,
                lhs: Box::new(lhs.try_map(f)?),
                rhs: Box::new(rhs.try_map(f)?),
            },
            Node::Math { func, arg } => Node::Math {
                func,
                arg: Box::new(arg.try_map(f)?),
            },
            Node::Raw { range_ms, selector } => Node::Raw {
                range_ms,
                selector: f(selector, Some(range_ms))?,
            },
        })
    }
}

/// Parses `text` and keeps it if it is in the supported subset.
pub(crate) fn parse(text: &str) -> Result<Node<Selector>, PromError> {
    let expr = parse_expr(text)?;
    // A range vector alone reads its raw buckets (what prometheus-api-client's
    // get_metric_range_data asks for); anywhere else it belongs in an *_over_time.
    if let Expr::MatrixSelector(ms) = &expr {
        let (range_ms, selector) = range_selector(ms)?;
        return Ok(Node::Raw { range_ms, selector });
    }
    convert(&expr)
}

/// The parser's tree of `text`, within the size and nesting limits, its errors as Prometheus
/// words them (`invalid parameter "query": …`).
pub(crate) fn parse_expr(text: &str) -> Result<Expr, PromError> {
    let invalid = |why: String| PromError::bad_data(format!("invalid parameter \"query\": {why}"));
    if text.trim().is_empty() {
        return Err(invalid("no expression found in input".into()));
    }
    if text.len() > MAX_QUERY_BYTES {
        return Err(invalid(format!(
            "the query is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    if nesting(text) > MAX_NESTING {
        return Err(invalid(format!(
            "brackets nest deeper than {MAX_NESTING} levels"
        )));
    }
    // A bug of the parser's must not take a worker down: a panic is a refusal of this query.
    std::panic::catch_unwind(|| parser::parse(text))
        .map_err(|_| invalid("the query could not be parsed".into()))?
        .map_err(|e| invalid(format!("parse error: {e}")))
}

/// The deepest nesting of `(`, `[` and `{` outside string literals.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn unsupported(what: impl std::fmt::Display) -> PromError {
    PromError::bad_data(format!(
        "unsupported: {what}; metricgate answers sum, min, max, avg and count (by/without), \
         max_over_time, min_over_time, avg_over_time, sum_over_time and count_over_time over a \
         range, functions of one value (abs, ln, sqrt, …), arithmetic and comparisons with \
         numbers, and \
         selectors with =, !=, =~ and !~"
    ))
}

fn convert(expr: &Expr) -> Result<Node<Selector>, PromError> {
    match expr {
        Expr::NumberLiteral(n) => Ok(Node::Number(n.val)),
        Expr::Paren(p) => convert(&p.expr),
        Expr::Unary(u) => Ok(Node::Negate(Box::new(convert(&u.expr)?))),
        Expr::VectorSelector(vs) => selector(vs),
        Expr::MatrixSelector(ms) => Err(unsupported(format_args!(
            "the range vector `{ms}` outside max_over_time, min_over_time, avg_over_time, \
             sum_over_time or count_over_time"
        ))),
        Expr::Subquery(s) => Err(unsupported(format_args!("the subquery `{s}`"))),
        Expr::StringLiteral(s) => Err(unsupported(format_args!(
            "the string literal \"{}\"",
            s.val
        ))),
        Expr::Extension(_) => Err(unsupported("an extension expression")),
        Expr::Call(call) => match super::functions::math(call.func.name) {
            Some(func) => {
                let [arg] = call.args.args.as_slice() else {
                    return Err(unsupported(format_args!(
                        "{}() with {} arguments",
                        call.func.name,
                        call.args.args.len()
                    )));
                };
                Ok(Node::Math {
                    func,
                    arg: Box::new(convert(arg)?),
                })
            }
            None => over_time(call),
        },
        Expr::Aggregate(agg) => aggregate(agg),
        Expr::Binary(bin) => binary(bin),
    }
}

fn selector(vs: &parser::VectorSelector) -> Result<Node<Selector>, PromError> {
    if vs.offset.is_some() {
        return Err(unsupported(format_args!("the offset modifier in `{vs}`")));
    }
    if vs.at.is_some() {
        return Err(unsupported(format_args!("the @ modifier in `{vs}`")));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported(format_args!("`or` inside the selector `{vs}`")));
    }
    let mut matchers = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name
        && !matchers
            .iter()
            .any(|m| m.name == super::METRIC_NAME && m.op == MatchOp::Equal && &m.value == name)
    {
        matchers.push(Matcher::new(MatchOp::Equal, super::METRIC_NAME, name));
    }
    Ok(Node::Select(Selector { matchers }))
}

fn over_time(call: &parser::Call) -> Result<Node<Selector>, PromError> {
    let func = match call.func.name {
        "max_over_time" => OverTime::Max,
        "min_over_time" => OverTime::Min,
        "avg_over_time" => OverTime::Avg,
        "sum_over_time" => OverTime::Sum,
        "count_over_time" => OverTime::Count,
        other => return Err(unsupported(format_args!("the function {other}()"))),
    };
    let [arg] = call.args.args.as_slice() else {
        return Err(unsupported(format_args!(
            "{}() with {} arguments",
            call.func.name,
            call.args.args.len()
        )));
    };
    let Expr::MatrixSelector(ms) = arg.as_ref() else {
        return Err(unsupported(format_args!(
            "{}() of `{arg}`: its argument must be a selector with a range, such as x[5m]",
            call.func.name
        )));
    };
    let (range_ms, selector) = range_selector(ms)?;
    Ok(Node::OverTime {
        func,
        range_ms,
        selector,
    })
}

fn range_selector(ms: &parser::MatrixSelector) -> Result<(i64, Selector), PromError> {
    let Node::Select(selector) = self::selector(&ms.vs)? else {
        return Err(unsupported(format_args!("`{ms}`")));
    };
    let range_ms = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
    if range_ms <= 0 {
        return Err(PromError::bad_data(format!(
            "the range of `{ms}` must be positive"
        )));
    }
    Ok((range_ms, selector))
}

fn aggregate(agg: &parser::AggregateExpr) -> Result<Node<Selector>, PromError> {
    let op = match agg.op.id() {
        token::T_SUM => Aggregation::Sum,
        token::T_MIN => Aggregation::Min,
        token::T_MAX => Aggregation::Max,
        token::T_AVG => Aggregation::Avg,
        token::T_COUNT => Aggregation::Count,
        _ => return Err(unsupported(format_args!("the aggregation {}", agg.op))),
    };
    if agg.param.is_some() {
        return Err(unsupported(format_args!("a parameter to {}", agg.op)));
    }
    let labels = |l: &promql_parser::label::Labels| l.labels.clone();
    let grouping = match &agg.modifier {
        None => Grouping::By(Vec::new()),
        Some(LabelModifier::Include(l)) => Grouping::By(labels(l)),
        Some(LabelModifier::Exclude(l)) => Grouping::Without(labels(l)),
    };
    let inner = convert(&agg.expr)?;
    if inner.is_scalar() {
        return Err(PromError::bad_data(format!(
            "{} expects a vector, not the number `{}`",
            agg.op, agg.expr
        )));
    }
    Ok(Node::Aggregate {
        op,
        grouping,
        inner: Box::new(inner),
    })
}

fn binary(bin: &parser::BinaryExpr) -> Result<Node<Selector>, PromError> {
    let comparison = match bin.op.id() {
        token::T_EQLC => Some(Comparison::Eq),
        token::T_NEQ => Some(Comparison::Ne),
        token::T_GTR => Some(Comparison::Gt),
        token::T_LSS => Some(Comparison::Lt),
        token::T_GTE => Some(Comparison::Ge),
        token::T_LTE => Some(Comparison::Le),
        _ => None,
    };
    if let Some(op) = comparison {
        let returns_bool = bin.modifier.as_ref().is_some_and(|m| m.return_bool);
        if bin.modifier.as_ref().is_some_and(|m| m.matching.is_some()) {
            return Err(unsupported(format_args!("vector matching in `{bin}`")));
        }
        let lhs = convert(&bin.lhs)?;
        let rhs = convert(&bin.rhs)?;
        if !lhs.is_scalar() && !rhs.is_scalar() {
            return Err(unsupported(format_args!(
                "`{bin}`: a comparison between two vectors (one side must be a number)"
            )));
        }
        return Ok(Node::Compare {
            op,
            returns_bool,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        });
    }
    let op = match bin.op.id() {
        token::T_ADD => Arithmetic::Add,
        token::T_SUB => Arithmetic::Sub,
        token::T_MUL => Arithmetic::Mul,
        token::T_DIV => Arithmetic::Div,
        token::T_MOD => Arithmetic::Mod,
        token::T_POW => Arithmetic::Pow,
        _ => return Err(unsupported(format_args!("the operator {}", bin.op))),
    };
    if let Some(modifier) = &bin.modifier
        && (modifier.return_bool || modifier.matching.is_some())
    {
        return Err(unsupported(format_args!("vector matching in `{bin}`")));
    }
    let lhs = convert(&bin.lhs)?;
    let rhs = convert(&bin.rhs)?;
    if !lhs.is_scalar() && !rhs.is_scalar() {
        return Err(unsupported(format_args!(
            "`{bin}`: arithmetic between two vectors (one side must be a number)"
        )));
    }
    Ok(Node::Arithmetic {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
    })
}

/// Any valid PromQL (not only the subset) pretty-printed, as `/api/v1/format_query` answers
/// Grafana's "Format query".
pub fn format(text: &str) -> Result<String, PromError> {
    Ok(parse_expr(text)?.prettify())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_subset_is_accepted() {
        for text in [
            "1+1",
            "connections",
            "-connections{did=\"1\"} * 8",
            "sum by (did) (connections{did=~\"1|2\", direction!=\"in\"})",
            "avg without (direction) (bandwidth)",
            "count(max_over_time(connections[5m])) / 2",
            "2 ^ 10 % 7",
            "(sum(bandwidth{did!~\"3\"}))",
        ] {
            assert!(parse(text).is_ok(), "{text}: {:?}", parse(text).err());
        }
    }

    #[test]
    fn the_unsupported_part_is_named() {
        for (text, named) in [
            ("rate(connections[5m])", "the function rate()"),
            ("topk(3, connections)", "the aggregation topk"),
            ("connections and bandwidth", "the operator and"),
            (
                "connections > bandwidth",
                "a comparison between two vectors",
            ),
            ("connections + bandwidth", "arithmetic between two vectors"),
            ("connections offset 5m", "the offset modifier"),
            ("connections @ 1705320000", "the @ modifier"),
            ("(connections[5m])", "the range vector `connections[5m]`"),
            (
                "max_over_time(connections[1h:5m])",
                "its argument must be a selector with a range",
            ),
            ("\"text\"", "the string literal"),
            (
                "connections{did=\"1\" or did=\"2\"}",
                "`or` inside the selector",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(named), "{text}: {e}");
            assert!(e.starts_with("unsupported: "), "{text}: {e}");
        }
    }

    #[test]
    fn parse_errors_read_as_prometheus_writes_them() {
        assert_eq!(
            err(""),
            "invalid parameter \"query\": no expression found in input"
        );
        assert!(err("sum(").starts_with("invalid parameter \"query\": parse error"));
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).contains("nest deeper"));
        // Brackets inside strings are not nesting.
        assert_eq!(nesting("x{a=\"((((\"}"), 1);
    }

    #[test]
    fn the_name_becomes_a_matcher() {
        let Node::Select(s) = parse("connections{did=\"1\"}").unwrap() else {
            panic!("a selector");
        };
        assert!(
            s.matchers
                .iter()
                .any(|m| m.name == "__name__" && m.value == "connections")
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = super::parse(&text);
        }

        #[test]
        fn parsing_plausible_queries_never_panics(
            text in r#"[a-z_(){}\[\]=~!"0-9 +*/^%,.|-]{0,80}"#
        ) {
            let _ = super::parse(&text);
        }
    }
}
