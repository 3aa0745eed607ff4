//! Binary operators between numbers and vectors, as Prometheus' `VectorBinop`,
//! `VectorscalarBinop`, `VectorAnd`/`Or`/`Unless`: one-to-one, many-to-one and one-to-many
//! matching on label signatures (`on`, `ignoring`, `group_left`, `group_right`), with
//! Prometheus' execution errors where a match is ambiguous.

use std::collections::HashMap;

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB, TokenId,
};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::evaluator::{Builder, Evaluator};
use super::series::{Labels, METRIC_NAME, Series, Value, kept, labels_text, without_name};
use crate::promql::error::PromError;

/// Refuses the `fill` modifiers, which Prometheus keeps behind a feature flag.
pub(super) fn check(bin: &BinaryExpr) -> Result<(), PromError> {
    match &bin.modifier {
        Some(m) if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() => {
            Err(PromError::bad_data(format!(
                "unsupported: the fill modifier in `{bin}`, experimental in Prometheus"
            )))
        }
        _ => Ok(()),
    }
}

pub(super) fn evaluate(
    eval: &dyn Evaluator,
    bin: &BinaryExpr,
    times: &[i64],
) -> Result<Value, PromError> {
    let op = bin.op.id();
    let returns_bool = bin.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = eval.eval(&bin.lhs, times)?;
    let rhs = eval.eval(&bin.rhs, times)?;
    match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => Ok(Value::Scalar(
            a.iter()
                .zip(&b)
                .map(|(a, b)| {
                    let (v, keep) = apply(op, *a, *b);
                    if is_comparison(op) {
                        if keep { 1.0 } else { 0.0 }
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Value::Vector(v), Value::Scalar(s)) => with_scalar(op, returns_bool, v, &s, false),
        (Value::Scalar(s), Value::Vector(v)) => with_scalar(op, returns_bool, v, &s, true),
        (Value::Vector(l), Value::Vector(r)) => {
            let fallback = BinModifier::default();
            let modifier = bin.modifier.as_ref().unwrap_or(&fallback);
            match op {
                T_LAND | T_LOR | T_LUNLESS => Ok(Value::Vector(set_operation(
                    op,
                    l,
                    r,
                    modifier,
                    times.len(),
                ))),
                _ => vectors(op, returns_bool, l, r, modifier, times.len()),
            }
        }
        _ => Err(PromError::bad_data(format!(
            "binary expression must contain only scalar and instant vector types: `{bin}`"
        ))),
    }
}

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Whether the result of `op` is no longer the metric (Prometheus' `shouldDropMetricName`,
/// which keeps the name through `atan2`).
fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD)
}

/// `a op b`, and for a comparison whether it holds (Go's IEEE meaning: NaN is unequal to
/// everything, `%` is `math.Mod`, `^` is `math.Pow`).
fn apply(op: TokenId, a: f64, b: f64) -> (f64, bool) {
    match op {
        T_ADD => (a + b, true),
        T_SUB => (a - b, true),
        T_MUL => (a * b, true),
        T_DIV => (a / b, true),
        T_MOD => (a % b, true),
        T_POW => (a.powf(b), true),
        T_ATAN2 => (a.atan2(b), true),
        T_EQLC => (a, a == b),
        T_NEQ => (a, a != b),
        T_GTR => (a, a > b),
        T_LSS => (a, a < b),
        T_GTE => (a, a >= b),
        T_LTE => (a, a <= b),
        _ => (f64::NAN, false),
    }
}

/// A vector and a number (`swapped`: the number on the left): a comparison keeps the vector's
/// own value and name where it holds; anything else is a new value without the name.
fn with_scalar(
    op: TokenId,
    returns_bool: bool,
    vector: Vec<Series>,
    scalar: &[f64],
    swapped: bool,
) -> Result<Value, PromError> {
    let comparison = is_comparison(op);
    let drop = drops_name(op) || returns_bool;
    let out: Vec<Series> = vector
        .into_iter()
        .map(|s| {
            let values = s
                .values
                .iter()
                .zip(scalar)
                .map(|(v, n)| {
                    let v = (*v)?;
                    let (l, r) = if swapped { (*n, v) } else { (v, *n) };
                    let (result, keep) = apply(op, l, r);
                    if returns_bool {
                        Some(if keep { 1.0 } else { 0.0 })
                    } else if comparison {
                        keep.then_some(v)
                    } else {
                        Some(result)
                    }
                })
                .collect();
            Series {
                labels: if drop {
                    without_name(s.labels)
                } else {
                    s.labels
                },
                values,
            }
        })
        .collect();
    let mut builder = Builder::new(scalar.len());
    for s in out {
        let slot = builder.slot(s.labels);
        for (k, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                builder.set(slot, k, *v)?;
            }
        }
    }
    Ok(Value::Vector(builder.finish()))
}

/// The labels a match compares: those `on` names, or all but those `ignoring` names and the
/// metric name.
fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(modifier) => kept(labels, modifier),
        None => without_name(labels.clone()),
    }
}

/// Each series' signature as a small number, equal numbers for equal signatures: matching
/// then compares numbers at every time instead of hashing label sets.
fn signature_ids(
    left: &[Series],
    right: &[Series],
    matching: Option<&LabelModifier>,
) -> (Vec<usize>, Vec<usize>, Vec<Labels>) {
    let mut ids: HashMap<Labels, usize> = HashMap::new();
    let mut names: Vec<Labels> = Vec::new();
    let mut id = |labels: &Labels| {
        let sig = signature(labels, matching);
        match ids.get(&sig) {
            Some(i) => *i,
            None => {
                ids.insert(sig.clone(), names.len());
                names.push(sig);
                names.len() - 1
            }
        }
    };
    let l = left.iter().map(|s| id(&s.labels)).collect();
    let r = right.iter().map(|s| id(&s.labels)).collect();
    (l, r, names)
}

/// `and`, `or`, `unless`, time by time: the left side's series (and for `or` the right's)
/// kept by whether their signature is on the other side then.
fn set_operation(
    op: TokenId,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    modifier: &BinModifier,
    steps: usize,
) -> Vec<Series> {
    let (lsig, rsig, names) = signature_ids(&lhs, &rhs, modifier.matching.as_ref());
    let present = |series: &[Series], sigs: &[usize], k: usize| -> Vec<bool> {
        let mut on = vec![false; names.len()];
        for (s, sig) in series.iter().zip(sigs) {
            if s.values.get(k).copied().flatten().is_some() {
                on[*sig] = true;
            }
        }
        on
    };
    let mut left: Vec<Series> = lhs
        .iter()
        .map(|s| Series {
            labels: s.labels.clone(),
            values: vec![None; steps],
        })
        .collect();
    let mut right: Vec<Series> = rhs
        .iter()
        .map(|s| Series {
            labels: s.labels.clone(),
            values: vec![None; steps],
        })
        .collect();
    for k in 0..steps {
        let on_right = present(&rhs, &rsig, k);
        let on_left = present(&lhs, &lsig, k);
        for (i, s) in lhs.iter().enumerate() {
            let Some(v) = s.values.get(k).copied().flatten() else {
                continue;
            };
            let keep = match op {
                T_LAND => on_right[lsig[i]],
                T_LUNLESS => !on_right[lsig[i]],
                _ => true,
            };
            if keep && let Some(cell) = left.get_mut(i).and_then(|s| s.values.get_mut(k)) {
                *cell = Some(v);
            }
        }
        if op == T_LOR {
            for (j, s) in rhs.iter().enumerate() {
                let Some(v) = s.values.get(k).copied().flatten() else {
                    continue;
                };
                if !on_left[rsig[j]]
                    && let Some(cell) = right.get_mut(j).and_then(|s| s.values.get_mut(k))
                {
                    *cell = Some(v);
                }
            }
        }
    }
    // `or` may give a left and a right series of the same labels at different times.
    let mut merged: Vec<Series> = Vec::new();
    let mut by_labels: HashMap<Labels, usize> = HashMap::new();
    for s in left.into_iter().chain(right) {
        if !s.values.iter().any(Option::is_some) {
            continue;
        }
        match by_labels.get(&s.labels).and_then(|i| merged.get_mut(*i)) {
            Some(m) => {
                for (cell, v) in m.values.iter_mut().zip(s.values) {
                    if cell.is_none() {
                        *cell = v;
                    }
                }
            }
            None => {
                by_labels.insert(s.labels.clone(), merged.len());
                merged.push(s);
            }
        }
    }
    merged
}

/// Arithmetic or a comparison between two vectors, matched time by time.
fn vectors(
    op: TokenId,
    returns_bool: bool,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    modifier: &BinModifier,
    steps: usize,
) -> Result<Value, PromError> {
    let matching = modifier.matching.as_ref();
    let one_to_many = matches!(modifier.card, VectorMatchCardinality::OneToMany(_));
    let include: Vec<String> = match &modifier.card {
        VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => {
            l.labels.clone()
        }
        _ => Vec::new(),
    };
    let one_to_one = matches!(modifier.card, VectorMatchCardinality::OneToOne);
    // The "many" side is matched against the "one" side, which must be unique.
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let (many_sig, one_sig, names) = signature_ids(&many, &one, matching);
    let mut out = Builder::new(steps);
    let mut result_slots: HashMap<(usize, usize), usize> = HashMap::new();
    // Per signature: the "one" series present at this time, and the results it gave.
    let mut ones: Vec<Option<usize>> = vec![None; names.len()];
    let mut matched: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for k in 0..steps {
        ones.iter_mut().for_each(|o| *o = None);
        matched.iter_mut().for_each(Vec::clear);
        let mut any = false;
        for (j, s) in one.iter().enumerate() {
            if s.values.get(k).copied().flatten().is_none() {
                continue;
            }
            any = true;
            if let Some(before) = ones[one_sig[j]].replace(j) {
                let side = if one_to_many { "left" } else { "right" };
                return Err(PromError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of \
                     the operation: [{}, {}];many-to-many matching not allowed: matching labels \
                     must be unique on one side",
                    labels_text(&names[one_sig[j]]),
                    labels_text(&s.labels),
                    labels_text(&one[before].labels)
                )));
            }
        }
        if !any {
            continue;
        }
        for (i, s) in many.iter().enumerate() {
            let Some(mv) = s.values.get(k).copied().flatten() else {
                continue;
            };
            let Some(j) = ones[many_sig[i]] else {
                continue;
            };
            let Some(ov) = one.get(j).and_then(|s| s.values.get(k).copied().flatten()) else {
                continue;
            };
            let (l, r) = if one_to_many { (ov, mv) } else { (mv, ov) };
            let (mut value, keep) = apply(op, l, r);
            if is_comparison(op) {
                // A comparison keeps the left side's value.
                value = l;
            }
            if returns_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let slot = match result_slots.get(&(i, j)) {
                Some(slot) => *slot,
                None => {
                    let labels = result_labels(
                        &s.labels,
                        &one[j].labels,
                        op,
                        returns_bool,
                        modifier,
                        &include,
                    );
                    let slot = out.slot(labels);
                    result_slots.insert((i, j), slot);
                    slot
                }
            };
            let results = &mut matched[many_sig[i]];
            if one_to_one {
                if !results.is_empty() {
                    return Err(PromError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit \
                         (group_left/group_right)"
                            .to_owned(),
                    ));
                }
            } else if results.contains(&slot) {
                return Err(PromError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique results"
                        .to_owned(),
                ));
            }
            results.push(slot);
            out.set(slot, k, value)?;
        }
    }
    Ok(Value::Vector(out.finish()))
}

/// Prometheus' `resultMetric`: the "many" side's labels, without the name for arithmetic
/// and `bool`, reduced to the matching labels for one-to-one, plus the `group_x` labels
/// taken from the "one" side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    op: TokenId,
    returns_bool: bool,
    modifier: &BinModifier,
    include: &[String],
) -> Labels {
    let mut labels = many.clone();
    if drops_name(op) || returns_bool {
        labels.remove(METRIC_NAME);
    }
    if matches!(modifier.card, VectorMatchCardinality::OneToOne) {
        match modifier.matching.as_ref() {
            Some(LabelModifier::Include(on)) => labels.retain(|k, _| on.labels.contains(k)),
            Some(LabelModifier::Exclude(ignoring)) => {
                labels.retain(|k, _| !ignoring.labels.contains(k))
            }
            None => {}
        }
    }
    for name in include {
        match one.get(name).filter(|v| !v.is_empty()) {
            Some(v) => {
                labels.insert(name.clone(), v.clone());
            }
            None => {
                labels.remove(name);
            }
        }
    }
    labels
}
