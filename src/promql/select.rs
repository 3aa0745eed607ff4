//! A selector's matchers → what to ask the appliance ([`Selection`]), and the appliance's
//! normalized answers → labelled series ([`Row`]s).
//!
//! - `__name__` picks catalog metrics (a regex is matched against the catalog) and/or
//!   [`BREACH_METRIC`].
//! - `did="N"` or `did=~"N|M|…"` (optionally in parentheses, as Grafana writes multi-value
//!   variables) names devices: one appliance request each, as `/v1`'s `devices`. Other `did`
//!   matchers (`!=`, `!~`, any other regex) are matched against the devices the gateway knows.
//!   Without any `did` matcher a selector reads the network-wide series (no device filter).
//! - The other filters take `=` only (the appliance filters on one value).
//! - `direction` chooses among the total (no `direction` label) and the `in` and `out` parts;
//!   without a `direction` matcher only the total is read, so sums do not count twice.
//! - Every matcher is then applied to every series' labels, as Prometheus does.

use std::collections::BTreeMap;

use promql_parser::label::{MatchOp, Matcher};

use super::engine::series::{Labels, METRIC_NAME, Reach, Row};
use super::error::PromError;
use super::{BREACH_METRIC, Context};
use crate::normalize::{Device, MetricData};
use crate::query::{self, BuildError, Field, Filter, MetricQuery};

/// The appliance's filters, as labels: the names of `/metricdata`'s own parameters.
pub(crate) const FILTERS: [&str; 7] = {
    let mut names = [""; 7];
    let mut i = 0;
    while i < Filter::ALL.len() {
        names[i] = Filter::ALL[i].name();
        i += 1;
    }
    names
};
/// A device's details, as labels.
pub(crate) const DETAILS: &[&str] = &["hostname", "ip", "label"];
/// A breach's labels (besides `did`).
pub(crate) const BREACH_LABELS: &[&str] = &["model", "pbid", "pid"];
pub(crate) const DID: &str = "did";
pub(crate) const DIRECTION: &str = "direction";

/// Every label name a series can have.
pub(crate) fn all_labels() -> Vec<&'static str> {
    let mut names = vec![METRIC_NAME, DID, DIRECTION];
    names.extend_from_slice(&FILTERS);
    names.extend_from_slice(DETAILS);
    names.extend_from_slice(BREACH_LABELS);
    names.sort_unstable();
    names
}

/// A value, or a part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Total,
    In,
    Out,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "",
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// Whether the selector is read for its values, or listed (`/series`, `/labels`): a listing
/// names every series there is, a query only those its matchers ask the appliance for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Query,
    Listing,
}

/// A selector resolved against the catalog and the known devices.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub metrics: Vec<String>,
    pub breaches: bool,
    /// Read the network-wide series (no device filter).
    pub network: bool,
    pub devices: Vec<u64>,
    /// Appliance filters, spelled as the caller spelled them (and labelled so).
    pub filters: Vec<(Filter, String)>,
    pub directions: Vec<Direction>,
    pub matchers: Vec<Matcher>,
}

/// One question for the appliance, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetch {
    pub query: MetricQuery,
    pub breaches: bool,
}

fn value_of<'m>(labels: &'m Labels, name: &str) -> &'m str {
    labels.get(name).map_or("", String::as_str)
}

/// Whether every matcher holds for `labels` (a missing label is the empty string).
pub(crate) fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers
        .iter()
        .all(|m| m.is_match(value_of(labels, &m.name)))
}

/// `N`, `N|M|…` or `(N|M|…)`: the device ids a regex names literally, if that is all it does.
fn literal_ids(regex: &str) -> Option<Vec<String>> {
    let inner = regex
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(regex);
    let ids: Vec<String> = inner.split('|').map(str::to_owned).collect();
    ids.iter()
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .then_some(ids)
}

fn by_name<'m>(matchers: &'m [Matcher], name: &str) -> Vec<&'m Matcher> {
    matchers.iter().filter(|m| m.name == name).collect()
}

pub(crate) fn resolve(
    matchers: &[Matcher],
    ctx: &Context<'_>,
    purpose: Purpose,
    warnings: &mut Vec<String>,
) -> Result<Selection, PromError> {
    let matchers = matchers.to_vec();
    let (metrics, breaches) = names(&matchers, ctx, purpose, warnings)?;
    let (network, devices) = devices(&matchers, ctx, purpose)?;
    let filters = filters(&matchers, purpose)?;
    let direction_matchers = by_name(&matchers, DIRECTION);
    let directions = if direction_matchers.is_empty() && purpose == Purpose::Query {
        vec![Direction::Total]
    } else {
        [Direction::Total, Direction::In, Direction::Out]
            .into_iter()
            .filter(|d| direction_matchers.iter().all(|m| m.is_match(d.label())))
            .collect()
    };
    let known = |name: &str| {
        name == METRIC_NAME
            || name == DID
            || name == DIRECTION
            || FILTERS.contains(&name)
            || DETAILS.contains(&name)
            || BREACH_LABELS.contains(&name)
    };
    for m in &matchers {
        if !known(&m.name) && !m.is_match("") {
            warnings.push(format!(
                "no series has the label `{}`, so `{m}` matches nothing; the labels are {}",
                m.name,
                all_labels().join(", ")
            ));
        }
    }
    let nothing = matchers.iter().any(|m| !known(&m.name) && !m.is_match(""));
    Ok(Selection {
        metrics: if nothing { Vec::new() } else { metrics },
        breaches: breaches && !nothing,
        network,
        devices,
        filters,
        directions,
        matchers,
    })
}

/// The catalog metrics, and whether the breaches, that the `__name__` matchers pick.
fn names(
    matchers: &[Matcher],
    ctx: &Context<'_>,
    purpose: Purpose,
    warnings: &mut Vec<String>,
) -> Result<(Vec<String>, bool), PromError> {
    // A selector without a name (`{did="123"}`, as Grafana's label browser writes) reads
    // every metric of the catalog, as Prometheus reads every series its matchers match.
    let name_matchers = by_name(matchers, METRIC_NAME);
    let fits = |name: &str| name_matchers.iter().all(|m| m.is_match(name));
    let exact = name_matchers
        .iter()
        .find(|m| m.op == MatchOp::Equal && !m.value.is_empty())
        .map(|m| m.value.clone());
    if let Some(name) = exact {
        if !fits(&name) {
            return Ok((Vec::new(), false));
        }
        if name == BREACH_METRIC {
            return Ok((Vec::new(), true));
        }
        if ctx.names.contains(&name) == Some(false) {
            // As Prometheus answers a metric it has no series of: nothing, plus a hint.
            let closest = ctx.names.closest(&name);
            let hint = if closest.is_empty() {
                "; /api/v1/label/__name__/values lists the metrics".to_owned()
            } else {
                format!("; did you mean {}?", query::quoted_list(&closest))
            };
            warnings.push(format!(
                "no series: the appliance has no metric `{name}`{hint}"
            ));
            return Ok((Vec::new(), false));
        }
        return Ok((vec![name], false));
    }
    if ctx.metrics.is_empty() && purpose == Purpose::Query {
        return Err(PromError::bad_data(
            "the appliance's metric catalog is not known yet, so a metric name cannot be \
             matched by a regex or left out; name the metric with =",
        ));
    }
    let metrics: Vec<String> = ctx
        .metrics
        .iter()
        .map(|m| m.name.clone())
        .filter(|n| fits(n))
        .collect();
    Ok((metrics, fits(BREACH_METRIC)))
}

/// Whether to read the network-wide series, and which devices.
fn devices(
    matchers: &[Matcher],
    ctx: &Context<'_>,
    purpose: Purpose,
) -> Result<(bool, Vec<u64>), PromError> {
    let did = by_name(matchers, DID);
    let details: Vec<&Matcher> = matchers
        .iter()
        .filter(|m| DETAILS.contains(&m.name.as_str()))
        .collect();
    let network = did.iter().all(|m| m.is_match("")) && details.iter().all(|m| m.is_match(""));
    // Ids the matchers name literally: the intersection of every such list.
    let mut named: Option<Vec<String>> = None;
    for m in &did {
        let ids = match &m.op {
            MatchOp::Equal if !m.value.is_empty() => Some(vec![m.value.clone()]),
            MatchOp::Re(_) => literal_ids(&m.value),
            _ => None,
        };
        if let Some(ids) = ids {
            named = Some(match named {
                None => ids,
                Some(before) => before.into_iter().filter(|id| ids.contains(id)).collect(),
            });
        }
    }
    let wants_devices =
        purpose == Purpose::Listing || !did.is_empty() || details.iter().any(|m| !m.is_match(""));
    let mut devices: Vec<u64> = match named {
        Some(ids) => ids
            .iter()
            .map(|id| {
                query::positive_id(id).map_err(|m| PromError::bad_data(format!("label did: {m}")))
            })
            .collect::<Result<_, _>>()?,
        None if wants_devices => {
            // Described by the known devices' labels, so `did!="5"` or `hostname=~"web.*"`
            // finds them.
            ctx.devices
                .get()
                .values()
                .filter(|d| {
                    let mut labels = Labels::new();
                    device_labels(d, &mut labels);
                    did.iter()
                        .chain(details.iter())
                        .all(|m| m.is_match(value_of(&labels, &m.name)))
                })
                .map(|d| d.did)
                .collect()
        }
        None => Vec::new(),
    };
    devices.sort_unstable();
    devices.dedup();
    Ok((network, devices))
}

/// The appliance filters the matchers ask for: `label="value"` each.
fn filters(matchers: &[Matcher], purpose: Purpose) -> Result<Vec<(Filter, String)>, PromError> {
    let mut out = Vec::new();
    for filter in Filter::ALL {
        let name = filter.name();
        let on = by_name(matchers, name);
        let chosen = on
            .iter()
            .find(|m| m.op == MatchOp::Equal && !m.value.is_empty());
        match chosen {
            Some(m) => out.push((filter, m.value.clone())),
            None => {
                // Without a filter the series has no such label: fine for a matcher that
                // matches the empty string.
                if let Some(m) = on.iter().find(|m| !m.is_match("")) {
                    if purpose == Purpose::Listing {
                        continue;
                    }
                    return Err(PromError::bad_data(format!(
                        "unsupported: `{m}`; the appliance filters {name} on one value, so \
                         {name} takes only {name}=\"…\""
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// A device's labels: `did`, and `hostname`, `ip` and `label` where known.
pub(crate) fn device_labels(device: &Device, labels: &mut Labels) {
    labels.insert(DID.to_owned(), device.did.to_string());
    for (name, value) in [
        ("hostname", &device.hostname),
        ("ip", &device.ip),
        ("label", &device.label),
    ] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            labels.insert(name.to_owned(), v.clone());
        }
    }
}

/// The metric the gateway asks for when it wants breaches (they come with any metric):
/// `connections`, or the catalog's first metric if it has no such one.
fn breach_carrier(ctx: &Context<'_>) -> String {
    if ctx.metrics.is_empty() || ctx.metrics.iter().any(|m| m.name == "connections") {
        "connections".to_owned()
    } else {
        ctx.metrics[0].name.clone()
    }
}

/// Where a question's problem shows in PromQL.
fn label_for(field: Field) -> &'static str {
    match field {
        Field::Metric(_) | Field::Metrics => METRIC_NAME,
        Field::Devices => DID,
        Field::Filter(f) => f.name(),
        Field::Interval => "step",
        Field::Start | Field::End => "time range",
    }
}

impl Selection {
    /// The appliance questions for `[start, end)` at `interval_seconds`, validated as `/v1`
    /// validates its own (the same builder and limits).
    pub fn fetches(
        &self,
        start: i64,
        end: i64,
        interval_seconds: u64,
        ctx: &Context<'_>,
    ) -> Result<Vec<Fetch>, PromError> {
        let mut out = Vec::new();
        let mut kinds: Vec<(bool, Vec<String>)> = Vec::new();
        // As many metrics a question as `/v1` takes.
        for chunk in self.metrics.chunks(ctx.limits.max_metrics.get()) {
            kinds.push((false, chunk.to_vec()));
        }
        if self.breaches {
            kinds.push((true, vec![breach_carrier(ctx)]));
        }
        for (breaches, metrics) in kinds {
            let mut scopes: Vec<Option<&[u64]>> = Vec::new();
            if self.network {
                scopes.push(None);
            }
            if !self.devices.is_empty() {
                scopes.push(Some(&self.devices));
            }
            for devices in scopes {
                let mut question = MetricQuery::builder()
                    .metrics(metrics.iter().cloned())
                    .range(start, end)
                    .interval_seconds(interval_seconds)
                    .breachtimes(breaches);
                if let Some(devices) = devices {
                    // Device details become the hostname, ip and label labels.
                    question = question
                        .devices(devices.iter().copied())
                        .fulldevicedetails(true);
                }
                for (filter, value) in &self.filters {
                    question = question.filter_text(*filter, value);
                }
                let query = question
                    .build(ctx.limits, ctx.names, ctx.now_ms)
                    .map_err(|errors| invalid(&errors))?;
                out.push(Fetch { query, breaches });
            }
        }
        Ok(out)
    }

    /// The labels every series of this selection carries besides its own.
    fn base_labels(&self) -> Labels {
        self.filters
            .iter()
            .map(|(k, v)| (k.name().to_owned(), v.clone()))
            .collect()
    }

    /// The series the answers hold, labelled, each point stamped at its bucket's start, and
    /// filtered by every matcher. Answers for several windows of one series are joined.
    pub fn rows(&self, answers: &[(&Fetch, &MetricData)], interval_ms: i64) -> Vec<Row> {
        let mut rows: BTreeMap<Labels, BTreeMap<i64, f64>> = BTreeMap::new();
        let mut breaches: BTreeMap<Labels, BTreeMap<i64, f64>> = BTreeMap::new();
        for (fetch, data) in answers {
            if fetch.breaches {
                self.breach_rows(data, interval_ms, &mut breaches);
            } else {
                self.metric_rows(data, &mut rows);
            }
        }
        let reach = |r: Reach| {
            move |(labels, points): (Labels, BTreeMap<i64, f64>)| Row {
                labels,
                points: points.into_iter().collect(),
                reach: r,
            }
        };
        rows.into_iter()
            .map(reach(Reach::Lookback))
            .chain(breaches.into_iter().map(reach(Reach::Bucket(interval_ms))))
            .filter(|row| matches_all(&self.matchers, &row.labels))
            .collect()
    }

    fn metric_rows(&self, data: &MetricData, rows: &mut BTreeMap<Labels, BTreeMap<i64, f64>>) {
        for series in &data.series {
            let mut base = self.base_labels();
            base.insert(METRIC_NAME.to_owned(), series.metric.clone());
            if let Some(device) = &series.device {
                device_labels(device, &mut base);
            }
            for direction in &self.directions {
                let points: BTreeMap<i64, f64> = series
                    .points
                    .iter()
                    .filter_map(|p| {
                        let v = match direction {
                            Direction::Total => p.value.as_ref(),
                            Direction::In => p.in_.as_ref(),
                            Direction::Out => p.out.as_ref(),
                        }?;
                        Some((p.timestamp, v.as_f64()?))
                    })
                    .collect();
                if points.is_empty() && *direction != Direction::Total {
                    continue;
                }
                let mut labels = base.clone();
                if *direction != Direction::Total {
                    labels.insert(DIRECTION.to_owned(), direction.label().to_owned());
                }
                rows.entry(labels).or_default().extend(points);
            }
        }
    }

    fn breach_rows(
        &self,
        data: &MetricData,
        interval_ms: i64,
        rows: &mut BTreeMap<Labels, BTreeMap<i64, f64>>,
    ) {
        let devices: BTreeMap<u64, &Device> = data
            .series
            .iter()
            .filter_map(|s| s.device.as_ref().map(|d| (d.did, d)))
            .collect();
        for breach in &data.breaches {
            let mut labels = self.base_labels();
            labels.insert(METRIC_NAME.to_owned(), BREACH_METRIC.to_owned());
            if let Some(did) = breach.did {
                match devices.get(&did) {
                    Some(device) => device_labels(device, &mut labels),
                    None => device_labels(&Device::bare(did), &mut labels),
                }
            }
            for (name, value) in [
                ("model", breach.model.clone()),
                ("pbid", breach.pbid.map(|v| v.to_string())),
                ("pid", breach.pid.map(|v| v.to_string())),
            ] {
                if let Some(v) = value {
                    labels.insert(name.to_owned(), v);
                }
            }
            if !labels.contains_key("pbid")
                && let Some(id) = &breach.id
            {
                labels.insert("pbid".to_owned(), id.clone());
            }
            let bucket = breach.time.div_euclid(interval_ms) * interval_ms;
            // A breach without a score still marks its time.
            let score = breach.score.unwrap_or(1.0);
            let points = rows.entry(labels).or_default();
            points.entry(bucket).or_insert(score);
        }
    }

    /// The series a listing names, without asking the appliance: per metric, the
    /// network-wide series and one per device, each as a total and its `in` and `out` parts.
    pub fn label_sets(&self, ctx: &Context<'_>) -> Vec<Labels> {
        let known = ctx.devices.get();
        let mut scopes: Vec<Option<Device>> = Vec::new();
        if self.network {
            scopes.push(None);
        }
        for did in &self.devices {
            scopes.push(Some(
                known
                    .get(did)
                    .cloned()
                    .unwrap_or_else(|| Device::bare(*did)),
            ));
        }
        let mut names: Vec<&str> = self.metrics.iter().map(String::as_str).collect();
        if self.breaches {
            names.push(BREACH_METRIC);
        }
        let mut out = Vec::new();
        for name in names {
            for scope in &scopes {
                let mut base = self.base_labels();
                base.insert(METRIC_NAME.to_owned(), name.to_owned());
                if let Some(device) = scope {
                    device_labels(device, &mut base);
                }
                let directions: &[Direction] = if name == BREACH_METRIC {
                    &[Direction::Total]
                } else {
                    &self.directions
                };
                for direction in directions {
                    let mut labels = base.clone();
                    if *direction != Direction::Total {
                        labels.insert(DIRECTION.to_owned(), direction.label().to_owned());
                    }
                    if matches_all(&self.matchers, &labels) {
                        out.push(labels);
                    }
                }
            }
        }
        out
    }
}

fn invalid(errors: &[BuildError]) -> PromError {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", label_for(e.field), e.message))
        .collect();
    PromError::bad_data(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_multi_values_are_literal_ids() {
        assert_eq!(literal_ids("1|22|333").unwrap(), ["1", "22", "333"]);
        assert_eq!(literal_ids("(1|2)").unwrap(), ["1", "2"]);
        assert_eq!(literal_ids("7").unwrap(), ["7"]);
        assert!(literal_ids(".*").is_none());
        assert!(literal_ids("1|").is_none());
        assert!(literal_ids("1.*").is_none());
    }
}
