//! PromQL text → promql-parser's tree, within the gateway's size and nesting limits, with
//! Prometheus' wording of parse errors. The text is parsed by `promql-parser`, never by hand.

use std::sync::{Arc, OnceLock};

use promql_parser::parser::{self, Expr};

use super::error::PromError;

/// Longest query text accepted, in bytes (Grafana's longest generated queries are far shorter).
const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Deepest nesting of brackets accepted: the parser's tree is recursive, and so is dropping it.
const MAX_NESTING: usize = 64;

/// Query texts whose trees are kept: a dashboard asks the same few queries at every refresh,
/// and parsing compiles each `=~` matcher's regex anew.
const PARSED_TEXTS: u64 = 1_024;

/// The parser's tree of `text`, within the size and nesting limits, its errors as Prometheus
/// words them (`invalid parameter "query": …`). Trees of texts parsed before are shared.
pub(crate) fn parse_expr(text: &str) -> Result<Arc<Expr>, PromError> {
    static PARSED: OnceLock<moka::sync::Cache<Box<str>, Arc<Expr>>> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| moka::sync::Cache::new(PARSED_TEXTS));
    if let Some(expr) = parsed.get(text) {
        return Ok(expr);
    }
    let expr = Arc::new(parse_text(text)?);
    parsed.insert(Box::from(text), expr.clone());
    Ok(expr)
}

fn parse_text(text: &str) -> Result<Expr, PromError> {
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

/// Any valid PromQL pretty-printed, as `/api/v1/format_query` answers
/// Grafana's "Format query".
pub fn format(text: &str) -> Result<String, PromError> {
    Ok(parse_expr(text)?.prettify())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_expr(text).unwrap_err().to_string()
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
        assert!(parse_expr("topk(3, rate(connections[5m] offset 1h))").is_ok());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = super::parse_expr(&text);
        }

        #[test]
        fn parsing_plausible_queries_never_panics(
            text in r#"[a-z_(){}\[\]=~!"0-9 +*/^%,.|-]{0,80}"#
        ) {
            let _ = super::parse_expr(&text);
        }
    }
}
