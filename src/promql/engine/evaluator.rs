//! How the parts of the engine evaluate each other's arguments ([`Evaluator`]), and how they
//! assemble vectors as Prometheus does: a label set once per time ([`Builder`]), and no two
//! series alike once their names are gone ([`unique`]).

use promql_parser::parser::{Expr, VectorSelector};

use super::series::{Labels, Ranges, Series, Value, labels_text};
use crate::promql::error::PromError;

/// The evaluation a function, an aggregation or an operator asks for its arguments.
pub(crate) trait Evaluator {
    /// `expr`'s value at each of `times`.
    fn eval(&self, expr: &Expr, times: &[i64]) -> Result<Value, PromError>;
    /// A range vector (`x[r]`, a subquery) read at each time.
    fn range(&self, expr: &Expr, times: &[i64]) -> Result<Ranges, PromError>;
    /// An instant selector at each time: the sample it reads, or (`stamps`) that sample's
    /// time in seconds, as `timestamp()` of a selector gives.
    fn select(
        &self,
        vs: &VectorSelector,
        times: &[i64],
        stamps: bool,
    ) -> Result<Vec<Series>, PromError>;
    /// Notes something the caller should know that does not stop the query.
    fn warn(&self, warning: String);

    /// `expr` as a scalar at each time (a function's or aggregation's number argument).
    fn scalar(&self, expr: &Expr, times: &[i64]) -> Result<Vec<f64>, PromError> {
        match self.eval(expr, times)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(PromError::bad_data(format!(
                "expected type scalar, got `{expr}`"
            ))),
        }
    }

    /// `expr` as an instant vector.
    fn vector(&self, expr: &Expr, times: &[i64]) -> Result<Vec<Series>, PromError> {
        match self.eval(expr, times)? {
            Value::Vector(v) => Ok(v),
            _ => Err(PromError::bad_data(format!(
                "expected type instant vector, got `{expr}`"
            ))),
        }
    }
}

/// Series that lost what told them apart (their name) are refused where two have the same
/// labels, as Prometheus refuses a matrix that "contains the same labelset".
pub(crate) fn unique(series: Vec<Series>) -> Result<Vec<Series>, PromError> {
    let mut seen = std::collections::HashSet::new();
    for s in series
        .iter()
        .filter(|s| s.values.iter().any(Option::is_some))
    {
        if !seen.insert(&s.labels) {
            return Err(PromError::Execution(format!(
                "vector cannot contain metrics with the same labelset {}",
                labels_text(&s.labels)
            )));
        }
    }
    Ok(series)
}

/// Builds a vector time by time, as Prometheus' range evaluation does: two values of one
/// label set at one time are its execution error.
pub(crate) struct Builder {
    steps: usize,
    index: std::collections::HashMap<Labels, usize>,
    out: Vec<Series>,
}

impl Builder {
    pub fn new(steps: usize) -> Self {
        Self {
            steps,
            index: std::collections::HashMap::new(),
            out: Vec::new(),
        }
    }

    /// The output series with these labels (made on first use).
    pub fn slot(&mut self, labels: Labels) -> usize {
        if let Some(i) = self.index.get(&labels) {
            return *i;
        }
        let i = self.out.len();
        self.index.insert(labels.clone(), i);
        self.out.push(Series {
            labels,
            values: vec![None; self.steps],
        });
        i
    }

    pub fn set(&mut self, slot: usize, k: usize, value: f64) -> Result<(), PromError> {
        let Some(cell) = self.out.get_mut(slot).and_then(|s| s.values.get_mut(k)) else {
            return Ok(());
        };
        if cell.is_some() {
            let labels = self.out.get(slot).map(|s| labels_text(&s.labels));
            return Err(PromError::Execution(format!(
                "vector cannot contain metrics with the same labelset {}",
                labels.unwrap_or_default()
            )));
        }
        *cell = Some(value);
        Ok(())
    }

    pub fn finish(self) -> Vec<Series> {
        self.out
            .into_iter()
            .filter(|s| s.values.iter().any(Option::is_some))
            .collect()
    }
}
