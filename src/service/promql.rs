//! The PromQL use case, over the fleet: an expression planned against what the gateway knows
//! of each appliance (limits, its catalog, the devices seen or configured there), each
//! question answered by that appliance's metric-data use case (its segments, coalescing and
//! budget), the appliances asked at once, then evaluated. Listings read the same knowledge
//! and never ask an appliance for data.
//!
//! The appliances come in as names and services, not as the fleet: the fleet builds services,
//! so naming it here would be a circle.

use futures::future::{join_all, try_join_all};

use super::{Lane, MetricService};
use crate::catalog::{MetricCatalog, NameSnapshot};
use crate::fetch::FetchError;
use crate::normalize::Device;
use crate::promql::{At, Context, KnownDevices, Plan, PromError, QueryData};

/// Why an expression has no answer.
#[derive(Debug, thiserror::Error)]
pub enum PromqlError {
    #[error(transparent)]
    Query(#[from] PromError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// An evaluated expression, and what the caller should know about it.
pub struct Evaluated {
    pub data: QueryData,
    pub warnings: Vec<String>,
}

/// The appliances a PromQL question reads: each one's name (its `appliance` label) and use
/// case.
pub type Members<'m> = [(&'m str, &'m MetricService)];

/// Evaluates `text` at `at` over `members` for the caller in `lane`, keeping at most `limit`
/// series (0: all). An appliance that fails is left out with a warning naming it; the query
/// fails only when every appliance it asks fails (with the first one's error).
pub async fn evaluate(
    members: &Members<'_>,
    text: &str,
    at: At,
    limit: usize,
    traceparent: Option<&str>,
    lane: &Lane,
) -> Result<Evaluated, PromqlError> {
    let plan = with_contexts(members, |appliances| Plan::new(text, at, appliances))?;
    let fetches = plan.fetches();
    // Each appliance's questions together, through its own caches and budget; the appliances
    // at once, so a slow one costs its own latency, not the sum.
    let asked = join_all(members.iter().enumerate().map(|(i, (_, service))| {
        let mine: Vec<_> = fetches.iter().filter(|(a, _)| *a == i).collect();
        async move {
            if mine.is_empty() {
                return None;
            }
            let answers =
                try_join_all(mine.iter().map(|(_, q)| service.data(q, traceparent, lane))).await;
            Some(answers)
        }
    }))
    .await;
    let mut warnings = plan.warnings().to_vec();
    let mut answered: Vec<Option<Vec<_>>> = Vec::with_capacity(members.len());
    let mut first_error = None;
    let mut any_answered = false;
    for ((name, _), result) in members.iter().zip(asked) {
        match result {
            None => answered.push(None),
            Some(Ok(answers)) => {
                any_answered = true;
                answered.push(Some(answers));
            }
            Some(Err(e)) => {
                warnings.push(format!("appliance {name}: {e}"));
                first_error.get_or_insert(e);
                answered.push(None);
            }
        }
    }
    if let Some(e) = first_error
        && !any_answered
    {
        return Err(e.into());
    }
    // Back into the plan's order: each appliance's answers came in its questions' order.
    let mut next: Vec<std::vec::IntoIter<_>> = answered
        .into_iter()
        .map(|a| a.unwrap_or_default().into_iter())
        .collect();
    let answers: Vec<_> = fetches
        .iter()
        .map(|(a, _)| next.get_mut(*a).and_then(Iterator::next))
        .collect();
    let (mut data, found) = plan.evaluate(&answers)?;
    warnings.extend(found);
    if data.truncate(limit) {
        warnings.push(format!("results truncated due to limit ({limit})"));
    }
    Ok(Evaluated { data, warnings })
}

/// Runs `f` with what a PromQL question is planned or listed against on each of `members`,
/// taken once.
pub fn with_contexts<T>(members: &Members<'_>, f: impl FnOnce(&[(&str, &Context<'_>)]) -> T) -> T {
    let known: Vec<Known<'_>> = members.iter().map(|(_, s)| s.known()).collect();
    let contexts: Vec<Context<'_>> = known.iter().map(Known::context).collect();
    let appliances: Vec<(&str, &Context<'_>)> = members
        .iter()
        .zip(&contexts)
        .map(|((name, _), ctx)| (*name, ctx))
        .collect();
    f(&appliances)
}

/// What one appliance's PromQL questions are planned against, held while they are.
struct Known<'s> {
    service: &'s MetricService,
    catalog: Option<std::sync::Arc<MetricCatalog>>,
    names: NameSnapshot,
    devices: KnownDevices<'s>,
    now_ms: i64,
}

impl Known<'_> {
    fn context(&self) -> Context<'_> {
        Context {
            limits: &self.service.limits,
            names: &self.names,
            metrics: self.catalog.as_ref().map_or(&[], |c| &c.metrics),
            devices: &self.devices,
            now_ms: self.now_ms,
            max_samples: self.service.max_samples,
        }
    }
}

impl MetricService {
    fn known(&self) -> Known<'_> {
        Known {
            service: self,
            catalog: self.catalog.get(),
            names: self.catalog.names(),
            devices: KnownDevices::new(move || {
                let mut devices = self.seen_devices();
                devices.extend(self.configured_devices.iter().map(|did| Device::bare(*did)));
                devices
            }),
            now_ms: self.clock.now_ms(),
        }
    }
}
