//! The PromQL use case: an expression planned against what the gateway knows (limits, the
//! appliance's catalog, the devices seen or configured), each appliance question answered by
//! the metric-data use case (segments, coalescing, the budget), then evaluated. Listings read
//! the same knowledge and never ask the appliance for data.

use futures::future::try_join_all;

use super::{Lane, MetricService};
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

impl MetricService {
    /// Evaluates `text` at `at` for the caller in `lane`, keeping at most `limit` series (0:
    /// all).
    pub async fn evaluate(
        &self,
        text: &str,
        at: At,
        limit: usize,
        traceparent: Option<&str>,
        lane: &Lane,
    ) -> Result<Evaluated, PromqlError> {
        let plan = self.with_context(|ctx| Plan::new(text, at, ctx))?;
        let queries = plan.fetches();
        let answers = try_join_all(queries.iter().map(|q| self.data(q, traceparent, lane))).await?;
        let (mut data, found) = plan.evaluate(&answers)?;
        let mut warnings = plan.warnings().to_vec();
        warnings.extend(found);
        if data.truncate(limit) {
            warnings.push(format!("results truncated due to limit ({limit})"));
        }
        Ok(Evaluated { data, warnings })
    }

    /// Runs `f` with what a PromQL question is planned or listed against, taken once.
    pub fn with_context<T>(&self, f: impl FnOnce(&Context<'_>) -> T) -> T {
        let catalog = self.catalog.get();
        let names = self.catalog.names();
        let devices = KnownDevices::new(|| {
            let mut devices = self.seen_devices();
            devices.extend(self.configured_devices.iter().map(|did| Device::bare(*did)));
            devices
        });
        f(&Context {
            limits: &self.limits,
            names: &names,
            metrics: catalog.as_ref().map_or(&[], |c| &c.metrics),
            devices: &devices,
            now_ms: self.clock.now_ms(),
            max_samples: self.max_samples,
        })
    }
}
