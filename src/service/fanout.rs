//! One question to several appliances at once (`appliances=emea,amer`). Each appliance is
//! asked through its own [`MetricService`], so its caches, coalescing, budget and breaker work
//! as for a question to it alone (and an answer one of them caches serves both); their
//! answers are merged into one, every series and breach labelled with its appliance, since
//! device ids are only unique within one.
//!
//! The merged answer is made anew for each request and stored nowhere: each part is stored (or
//! not) by its own appliance's cache, and an answer missing a failed appliance's part must
//! never be mistaken later for a whole one.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Lane, MetricRequest, MetricService, Served, ServiceError};
use crate::fetch::FetchError;
use crate::normalize::{Breach, Series, TimeRange};
use crate::query::{Format, Representation};
use crate::render::{RenderError, csv};

/// One appliance's answer within the merged one.
pub struct Part {
    pub appliance: String,
    pub served: Served,
}

/// An appliance that gave no answer, and why (in the words of the problem it would have been).
pub struct Failure {
    pub appliance: String,
    pub reason: String,
}

/// The merged answer and what went into it.
pub struct FanOut {
    /// In the format asked for (JSON or CSV), never compressed.
    pub body: Bytes,
    /// Strong validator of `body`, quoted.
    pub etag: String,
    /// The appliances that answered, in the order asked.
    pub parts: Vec<Part>,
    /// The appliances that did not, in the order asked.
    pub failures: Vec<Failure>,
    /// Parts of the appliances' answers left out because they had no known shape.
    pub left_out: usize,
}

impl FanOut {
    /// Whether every appliance answered whole: only then may anyone keep it.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty() && self.left_out == 0
    }
}

/// An appliance's JSON answer read back, and the merged answer written: `MetricData`'s
/// fields in its order. The query is passed through as written (every part answers the same
/// question), so the merged answer says exactly what the parts say.
#[derive(Serialize, Deserialize)]
struct Data {
    query: Box<RawValue>,
    interval_seconds: u64,
    timerange: TimeRange,
    series: Vec<Series>,
    breaches: Vec<Breach>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// The representation each part is asked in: the one the merge reads back (and the one a
/// caller asking that appliance alone most often shares in its cache).
const PART: Representation = Representation {
    format: Format::Json,
    encoding: crate::query::Encoding::Identity,
};

/// `req` asked of every appliance in `asked` (by name, in the caller's order, no name twice)
/// at once, in `lane`, answered in `format`. A failed appliance is named in the answer's
/// `warnings` with `reason`'s words for its error; when none answers, the first failure is
/// the error (an invalid question thus fails before any appliance is asked: each checks it
/// against its own catalog first).
pub async fn answer(
    asked: &[(&str, &MetricService)],
    req: &MetricRequest<'_>,
    lane: &Lane,
    format: Format,
    reason: impl Fn(&ServiceError) -> String,
) -> Result<FanOut, ServiceError> {
    let part_request = || MetricRequest {
        dialect: req.dialect,
        raw_query: req.raw_query,
        representation: PART,
        directives: req.directives,
        traceparent: req.traceparent,
    };
    // Catalogs differ between appliances: a metric one lacks fails there alone. Checked for
    // all before any is asked, so a question wrong for every appliance reaches none.
    let checked: Vec<Result<(), ServiceError>> = asked
        .iter()
        .map(|(_, service)| service.check(&part_request()))
        .collect();
    if checked.iter().all(Result::is_err) {
        if let Some(Err(first)) = checked.into_iter().next() {
            return Err(first);
        }
        return Err(ServiceError::InvalidQuery(Vec::new()));
    }
    let mut outcomes: Vec<Option<Result<Served, ServiceError>>> =
        checked.into_iter().map(|c| c.err().map(Err)).collect();
    let pending: Vec<usize> = (0..outcomes.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    let answered = futures::future::join_all(
        pending
            .iter()
            .filter_map(|&i| asked.get(i))
            .map(|(_, service)| service.answer(part_request(), lane)),
    )
    .await;
    for (i, outcome) in pending.into_iter().zip(answered) {
        outcomes[i] = Some(outcome);
    }
    let mut parts = Vec::new();
    let mut errors = Vec::new();
    for ((name, _), outcome) in asked.iter().zip(outcomes) {
        match outcome {
            Some(Ok(served)) => parts.push(Part {
                appliance: (*name).to_owned(),
                served,
            }),
            Some(Err(e)) => errors.push(((*name).to_owned(), e)),
            None => {}
        }
    }
    if parts.is_empty() {
        // `asked` held at least one that checked fine, so there is an error here.
        return Err(errors
            .into_iter()
            .next()
            .map_or(ServiceError::InvalidQuery(Vec::new()), |(_, e)| e));
    }
    let failures: Vec<Failure> = errors
        .iter()
        .map(|(appliance, e)| Failure {
            appliance: appliance.clone(),
            reason: reason(e),
        })
        .collect();
    merge(parts, failures, format).map_err(|e| ServiceError::Fetch(FetchError::Render(e)))
}

/// The parts' answers as one, `failures` named in its warnings.
fn merge(parts: Vec<Part>, failures: Vec<Failure>, format: Format) -> Result<FanOut, RenderError> {
    let mut merged: Option<Data> = None;
    let mut series = Vec::new();
    let mut breaches = Vec::new();
    let mut warnings = Vec::new();
    let mut left_out = 0;
    for part in &parts {
        let data: Data =
            serde_json::from_slice(&part.served.entry.body).map_err(RenderError::json)?;
        let name = &part.appliance;
        left_out += part.served.entry.left_out;
        series.extend(data.series.iter().cloned().map(|mut s| {
            s.appliance = Some(name.clone());
            s
        }));
        breaches.extend(data.breaches.iter().cloned().map(|mut b| {
            b.appliance = Some(name.clone());
            b
        }));
        warnings.extend(
            data.warnings
                .iter()
                .map(|w| format!("appliance {name}: {w}")),
        );
        // The question, its interval and its range are the same for every part; the first
        // part's stand for all.
        merged.get_or_insert(data);
    }
    warnings.extend(
        failures
            .iter()
            .map(|f| format!("appliance {}: {}", f.appliance, f.reason)),
    );
    // Breaches stay sorted by time across appliances (a stable sort keeps the order asked
    // for equal times).
    breaches.sort_by_key(|b| b.time);
    let body = match merged {
        None => Bytes::new(),
        Some(first) => match format {
            Format::Csv => csv::rows(&series, true),
            _ => {
                let data = Data {
                    series,
                    breaches,
                    warnings,
                    ..first
                };
                serde_json::to_vec(&data)
                    .map(Bytes::from)
                    .map_err(RenderError::json)?
            }
        },
    };
    Ok(FanOut {
        etag: crate::cache::etag(&body),
        body,
        parts,
        failures,
        left_out,
    })
}
