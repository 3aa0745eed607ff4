//! Answers a [`MetricQuery`] from the appliance: one request per device, fetched concurrently
//! (identical device requests from concurrent queries share one fetch), then normalized into
//! one [`MetricData`].

use std::sync::Arc;

use bytes::Bytes;
use futures::future::try_join_all;

use crate::cache::Coalescer;
use crate::cache::coalesce::Joined;
use crate::catalog::Catalog;
use crate::normalize::{self, MetricData, Part, TimeRange};
use crate::query::MetricQuery;
use crate::upstream::{ApplianceClient, UpstreamError, dialect};

#[derive(Clone)]
pub struct MetricSource {
    client: ApplianceClient,
    catalog: Arc<Catalog>,
    per_request: Arc<Coalescer<String, Bytes>>,
}

impl MetricSource {
    pub fn new(client: ApplianceClient, catalog: Arc<Catalog>) -> Self {
        Self {
            client,
            catalog,
            per_request: Arc::default(),
        }
    }

    pub fn client(&self) -> &ApplianceClient {
        &self.client
    }

    /// Fetches and normalizes the answer to `query`; `now_ms` closes open ranges.
    /// `traceparent` goes to the appliance with every request this fetch makes.
    pub async fn fetch(
        &self,
        query: &MetricQuery,
        now_ms: i64,
        traceparent: Option<String>,
    ) -> Result<MetricData, UpstreamError> {
        let requests = dialect::requests(query, now_ms);
        let parts = try_join_all(requests.into_iter().map(|r| {
            let client = self.client.clone();
            let path = r.path_and_query.clone();
            let trace = traceparent.clone();
            let shared = match self
                .per_request
                .join_or_start(r.path_and_query, async move {
                    client.get(&path, trace.as_deref()).await
                }) {
                Joined::Started(s) | Joined::Collapsed(s) => s,
            };
            async move {
                Ok::<_, UpstreamError>(Part {
                    device: r.device,
                    body: shared.await?,
                })
            }
        }))
        .await?;
        let timerange = TimeRange {
            start: query.starttime,
            end: query.starttime.map(|_| query.endtime.unwrap_or(now_ms)),
        };
        normalize::normalize(query, timerange, &parts, &|m| self.catalog.unit_of(m))
    }
}
