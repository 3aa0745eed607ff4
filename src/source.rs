//! Answers a [`MetricQuery`] from the appliance: one request per device, fetched concurrently,
//! then normalized into one [`MetricData`].

use std::sync::Arc;

use futures::future::try_join_all;

use crate::catalog::Catalog;
use crate::normalize::{self, MetricData, Part, TimeRange};
use crate::query::MetricQuery;
use crate::upstream::{ApplianceClient, UpstreamError, dialect};

#[derive(Clone)]
pub struct MetricSource {
    client: ApplianceClient,
    catalog: Arc<Catalog>,
}

impl MetricSource {
    pub fn new(client: ApplianceClient, catalog: Arc<Catalog>) -> Self {
        Self { client, catalog }
    }

    pub fn client(&self) -> &ApplianceClient {
        &self.client
    }

    /// Fetches and normalizes the answer to `query`; `now_ms` closes open ranges.
    pub async fn fetch(
        &self,
        query: &MetricQuery,
        now_ms: i64,
    ) -> Result<MetricData, UpstreamError> {
        let requests = dialect::requests(query, now_ms);
        let parts = try_join_all(requests.into_iter().map(|r| async move {
            let body = self.client.get(&r.path_and_query).await?;
            Ok::<_, UpstreamError>(Part {
                device: r.device,
                body,
            })
        }))
        .await?;
        let timerange = TimeRange {
            start: query.starttime,
            end: query.starttime.map(|_| query.endtime.unwrap_or(now_ms)),
        };
        normalize::normalize(query, timerange, &parts, &|m| self.catalog.unit_of(m))
    }
}
