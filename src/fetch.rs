//! Answers a [`MetricQuery`] from the appliance: one request per device, fetched concurrently
//! (identical device requests from concurrent queries share one fetch), then normalized into
//! one [`MetricData`].

use std::sync::Arc;

use bytes::Bytes;
use futures::future::try_join_all;

use crate::catalog::Catalog;
use crate::coalesce::{Coalescer, TaskFailed};
use crate::normalize::{self, AnswerError, MetricData, Part, TimeRange};
use crate::query::MetricQuery;
use crate::render::RenderError;
pub use crate::upstream::Lane;
use crate::upstream::{ApplianceClient, UpstreamError, dialect};

/// Why a question got no answer: the appliance's doing (`Upstream`, `Answer`) or ours
/// (`Render`, `Task`). Cheap to clone: coalesced waiters share one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Answer(#[from] AnswerError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// Who a fetch is for: a caller waiting for it (in its lane when callers queue for the
/// appliance's budget), or the prefetcher (which never queues: it goes only when the
/// appliance's guard gives leave at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Priority {
    Caller(Lane),
    Prefetch,
}

#[derive(Clone)]
pub struct MetricSource {
    client: ApplianceClient,
    catalog: Arc<Catalog>,
    per_request: Arc<Coalescer<String, Bytes, FetchError>>,
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

    /// Fetches and normalizes the answer to `query` for a caller in `lane`; `now_ms` closes
    /// open ranges. `traceparent` goes to the appliance with every request this fetch makes.
    pub async fn fetch(
        &self,
        query: &MetricQuery,
        now_ms: i64,
        traceparent: Option<String>,
        lane: &Lane,
    ) -> Result<MetricData, FetchError> {
        self.fetch_as(query, now_ms, traceparent, Priority::Caller(lane.clone()))
            .await
    }

    /// [`MetricSource::fetch`] for `priority`. A caller never joins a prefetch's request (a
    /// prefetch may be refused leave, and the caller must not get its refusal).
    pub async fn fetch_as(
        &self,
        query: &MetricQuery,
        now_ms: i64,
        traceparent: Option<String>,
        priority: Priority,
    ) -> Result<MetricData, FetchError> {
        let requests = dialect::requests(query, now_ms);
        let parts = try_join_all(requests.into_iter().map(|r| {
            let client = self.client.clone();
            let path = r.path_and_query.clone();
            let trace = traceparent.clone();
            let priority = priority.clone();
            let key = match priority {
                Priority::Caller(_) => r.path_and_query,
                Priority::Prefetch => format!("prefetch {}", r.path_and_query),
            };
            let shared = self
                .per_request
                .join_or_start(key, async move {
                    Ok(match priority {
                        Priority::Caller(lane) => {
                            client.get(&path, trace.as_deref(), &lane).await?
                        }
                        Priority::Prefetch => client.get_prefetch(&path, trace.as_deref()).await?,
                    })
                })
                .into_fetch();
            async move {
                Ok::<_, FetchError>(Part {
                    device: r.device,
                    body: shared.await?,
                })
            }
        }))
        .await?;
        let timerange = TimeRange {
            start: query.starttime(),
            end: query.starttime().map(|_| query.endtime().unwrap_or(now_ms)),
        };
        let data = normalize::normalize(query, timerange, &parts, &|m| self.catalog.unit_of(m))
            .map_err(|e| match e {
                // The appliance's words reach callers: never with its address.
                AnswerError::Reported(message) => {
                    AnswerError::Reported(self.client.scrub(&message))
                }
                other => other,
            })?;
        if !data.warnings.is_empty() {
            self.client
                .metrics()
                .appliance_unknown_shapes
                .inc_by(data.warnings.len() as u64);
            // Keys and names only: the warnings never quote the appliance's values.
            tracing::warn!(
                warnings = ?data.warnings,
                "the appliance's answer held parts of no known shape; served without them, not cached"
            );
        }
        Ok(data)
    }
}
