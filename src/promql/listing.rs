//! What Grafana's query editor and variables ask before they query: series, label names,
//! label values and metric metadata. All of it comes from each appliance's catalog and the
//! devices the gateway knows there (seen in cached answers, or configured): listing never
//! asks an appliance. Every series carries its appliance's `appliance` label.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::Expr;
use serde::Serialize;

use promql_parser::label::Matcher;

use super::engine::series::{Labels, METRIC_NAME};
use super::error::PromError;
use super::parse;
use super::plan::{merge_warnings, no_appliance, split_appliance};
use super::select::{self, DETAILS, DID, DIRECTION, Purpose};
use super::{APPLIANCE, BREACH_METRIC, Context};
use crate::normalize::MetricInfo;

/// A listing's answer, and what it had to leave out.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub data: T,
    pub warnings: Vec<String>,
}

/// Keeps at most `limit` items (0: all), saying so when it drops any.
fn limited<I>(mut items: Vec<I>, limit: usize, mut warnings: Vec<String>) -> Listing<Vec<I>> {
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        warnings.push(format!("results truncated due to limit ({limit})"));
    }
    Listing {
        data: items,
        warnings,
    }
}

/// `match[]` → its selector, as Prometheus reads it.
fn selector(text: &str) -> Result<Vec<Matcher>, PromError> {
    let bad = |why: String| PromError::bad_data(format!("invalid parameter \"match[]\": {why}"));
    let expr = parse::parse_expr(text).map_err(|e| {
        let (PromError::BadData(m) | PromError::Execution(m)) = e;
        bad(m
            .trim_start_matches("invalid parameter \"query\": ")
            .to_owned())
    })?;
    match &*expr {
        Expr::VectorSelector(vs) if vs.matchers.or_matchers.is_empty() => {
            let mut matchers = vs.matchers.matchers.clone();
            if let Some(name) = &vs.name {
                matchers.push(Matcher::new(
                    promql_parser::label::MatchOp::Equal,
                    METRIC_NAME,
                    name,
                ));
            }
            Ok(matchers)
        }
        other => Err(bad(format!(
            "`{other}` is not a series selector such as connections{{did=\"123\"}}"
        ))),
    }
}

/// Every appliance listings read: each one's name (its `appliance` label) and what it knows.
pub type Appliances<'c, 'a> = [(&'c str, &'c Context<'a>)];

/// The label sets of the series `matches` name (at least one selector is required), on every
/// appliance they pick.
pub fn series(
    matches: &[String],
    limit: usize,
    appliances: &Appliances<'_, '_>,
) -> Result<Listing<Vec<Labels>>, PromError> {
    if matches.is_empty() {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    let (sets, warnings) = label_sets(matches, appliances)?;
    Ok(limited(sets, limit, warnings))
}

fn label_sets(
    matches: &[String],
    appliances: &Appliances<'_, '_>,
) -> Result<(Vec<Labels>, Vec<String>), PromError> {
    let mut warnings = Vec::new();
    let mut sets = BTreeSet::new();
    for text in matches {
        let selector = selector(text)?;
        // The `appliance` matchers pick appliances; each is listed with the rest of them.
        let (on, rest) = split_appliance(&selector);
        let names = appliances.iter().map(|(n, _)| *n);
        if !on.is_empty() && !names.clone().any(|n| on.iter().all(|m| m.is_match(n))) {
            warnings.push(no_appliance(&on, names));
        }
        let mut each = Vec::new();
        for (name, ctx) in appliances {
            if !on.iter().all(|m| m.is_match(name)) {
                continue;
            }
            let mut found = Vec::new();
            let selection = select::resolve(&rest, ctx, Purpose::Listing, &mut found)?;
            each.push((*name, found));
            sets.extend(selection.label_sets(ctx).into_iter().map(|mut labels| {
                labels.insert(APPLIANCE.to_owned(), (*name).to_owned());
                labels
            }));
        }
        merge_warnings(each, &mut warnings);
    }
    Ok((sets.into_iter().collect(), warnings))
}

/// Label names: all there are, or those of the series `matches` name.
pub fn label_names(
    matches: &[String],
    limit: usize,
    appliances: &Appliances<'_, '_>,
) -> Result<Listing<Vec<String>>, PromError> {
    if matches.is_empty() {
        let mut names: Vec<String> = select::all_labels()
            .into_iter()
            .chain([APPLIANCE])
            .map(str::to_owned)
            .collect();
        names.sort_unstable();
        return Ok(limited(names, limit, Vec::new()));
    }
    let (sets, warnings) = label_sets(matches, appliances)?;
    let names: BTreeSet<String> = sets.into_iter().flat_map(|l| l.into_keys()).collect();
    Ok(limited(names.into_iter().collect(), limit, warnings))
}

/// The values of label `name`: all the gateway knows (on every appliance), or those of the
/// series `matches` name.
pub fn label_values(
    name: &str,
    matches: &[String],
    limit: usize,
    appliances: &Appliances<'_, '_>,
) -> Result<Listing<Vec<String>>, PromError> {
    if !matches.is_empty() {
        let (sets, warnings) = label_sets(matches, appliances)?;
        let values: BTreeSet<String> = sets
            .into_iter()
            .filter_map(|mut l| l.remove(name))
            .collect();
        return Ok(limited(values.into_iter().collect(), limit, warnings));
    }
    let values: BTreeSet<String> = if name == APPLIANCE {
        appliances.iter().map(|(n, _)| (*n).to_owned()).collect()
    } else {
        appliances
            .iter()
            .flat_map(|(_, ctx)| known_values(name, ctx))
            .collect()
    };
    Ok(limited(values.into_iter().collect(), limit, Vec::new()))
}

/// The values of label `name` one appliance's catalog and known devices hold.
fn known_values(name: &str, ctx: &Context<'_>) -> BTreeSet<String> {
    match name {
        METRIC_NAME => ctx
            .metrics
            .iter()
            .map(|m| m.name.clone())
            .chain([BREACH_METRIC.to_owned()])
            .collect(),
        DIRECTION => ["in", "out"].into_iter().map(str::to_owned).collect(),
        DID => ctx.devices.get().keys().map(u64::to_string).collect(),
        detail if DETAILS.contains(&detail) => ctx
            .devices
            .get()
            .values()
            .filter_map(|d| {
                let mut labels = Labels::new();
                select::device_labels(d, &mut labels);
                labels.remove(detail)
            })
            .collect(),
        // Filter values are whatever the caller asks for; breaches are only known by asking.
        _ => BTreeSet::new(),
    }
}

/// One metric's metadata, as `/api/v1/metadata` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub help: String,
    pub unit: String,
}

/// Every metric's metadata (or `metric`'s alone), from the catalog: Darktrace values are
/// gauges (each bucket's maximum), with the catalog's label as help and its units.
pub fn metadata(
    metrics: &[MetricInfo],
    metric: Option<&str>,
    limit: usize,
) -> BTreeMap<String, Vec<Metadata>> {
    let breaches = Metadata {
        kind: "gauge",
        help: "Darktrace model breaches: one series per breach (labels model, pbid, pid, did), \
               valued at its score at the breach time"
            .to_owned(),
        unit: String::new(),
    };
    let all = metrics
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                Metadata {
                    kind: "gauge",
                    help: m.label.clone().unwrap_or_else(|| m.name.clone()),
                    unit: m.units.clone().unwrap_or_default(),
                },
            )
        })
        .chain([(BREACH_METRIC.to_owned(), breaches)]);
    all.filter(|(name, _)| metric.is_none_or(|m| m == name))
        .take(if limit == 0 { usize::MAX } else { limit })
        .map(|(name, meta)| (name, vec![meta]))
        .collect()
}
