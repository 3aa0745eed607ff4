//! The appliance's metric catalog (`/metrics`): fetched at startup, refreshed periodically,
//! used to check metric names and to fill in units.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::Clock;
pub use crate::normalize::MetricInfo;
use crate::normalize::{self, AnswerError};
use crate::query::MetricNames;
use crate::upstream::{ApplianceClient, UpstreamError, dialect};

/// Why the catalog could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Answer(#[from] AnswerError),
}

/// The catalog as `GET /v1/metrics` returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricCatalog {
    pub metrics: Vec<MetricInfo>,
    /// When the gateway last fetched it, epoch ms.
    pub fetched_at: i64,
}

#[derive(Default)]
struct State {
    catalog: Option<Arc<MetricCatalog>>,
    names: Arc<HashSet<String>>,
    last_error: Option<String>,
}

/// Shared, periodically refreshed view of the catalog.
pub struct Catalog {
    state: RwLock<State>,
    clock: Clock,
    /// Becomes true once a catalog has been fetched.
    known: tokio::sync::watch::Sender<bool>,
    /// True once answers made before the first catalog (without its units) are gone.
    settled: std::sync::atomic::AtomicBool,
}

impl Catalog {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            state: RwLock::default(),
            known: tokio::sync::watch::Sender::new(false),
            settled: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// A consistent view of the known names, for one request.
pub struct NameSnapshot {
    names: Option<Arc<HashSet<String>>>,
}

impl Catalog {
    /// Fetches the catalog now, as a caller's request (the probes refresh it otherwise).
    pub async fn refresh(&self, client: &ApplianceClient) -> Result<(), CatalogError> {
        match client.get(dialect::CATALOG, None).await {
            Ok(body) => self.accept(&body),
            Err(e) => {
                let e = CatalogError::from(e);
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Takes `body`, the appliance's answer to [`dialect::CATALOG`], as the new catalog.
    pub fn accept(&self, body: &[u8]) -> Result<(), CatalogError> {
        let metrics = match normalize::catalog(body) {
            Ok(metrics) => metrics,
            Err(e) => {
                let e = CatalogError::from(e);
                self.failed(&e);
                return Err(e);
            }
        };
        if let Ok(mut state) = self.state.write() {
            state.names = Arc::new(metrics.iter().map(|m| m.name.clone()).collect());
            state.catalog = Some(Arc::new(MetricCatalog {
                metrics,
                fetched_at: self.clock.now_ms(),
            }));
            state.last_error = None;
        }
        self.known.send_replace(true);
        Ok(())
    }

    /// Records why the catalog could not be fetched (kept until one is).
    pub fn failed(&self, e: &CatalogError) {
        let why = crate::telemetry::chain(e);
        tracing::warn!(error = %why, "cannot fetch the appliance's metric catalog; metric names are not checked until it is fetched");
        if let Ok(mut state) = self.state.write() {
            state.last_error = Some(why);
        }
    }

    /// Whether the catalog is missing, or older than `refresh_ms`.
    pub fn is_due(&self, refresh_ms: i64) -> bool {
        self.get()
            .is_none_or(|c| self.clock.now_ms() - c.fetched_at >= refresh_ms)
    }

    /// Resolves once a catalog has been fetched (at once if one has).
    pub async fn arrived(&self) {
        let mut known = self.known.subscribe();
        let _ = known.wait_for(|k| *k).await;
    }

    /// Records that what was cached before the first catalog has been dropped.
    pub fn settle(&self) {
        self.settled
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// A catalog is known and no answer made without it remains: ready to serve.
    pub fn is_settled(&self) -> bool {
        self.settled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The catalog, fetched now if the gateway has none yet (`None` only if the lock is
    /// poisoned).
    pub async fn get_or_fetch(
        &self,
        client: &ApplianceClient,
    ) -> Result<Option<Arc<MetricCatalog>>, CatalogError> {
        if self.get().is_none() {
            self.refresh(client).await?;
        }
        Ok(self.get())
    }

    pub fn get(&self) -> Option<Arc<MetricCatalog>> {
        self.state.read().ok().and_then(|s| s.catalog.clone())
    }

    pub fn last_error(&self) -> Option<String> {
        self.state.read().ok().and_then(|s| s.last_error.clone())
    }

    pub fn names(&self) -> NameSnapshot {
        NameSnapshot {
            names: self
                .state
                .read()
                .ok()
                .filter(|s| s.catalog.is_some())
                .map(|s| s.names.clone()),
        }
    }

    pub fn unit_of(&self, metric: &str) -> Option<String> {
        let catalog = self.get()?;
        catalog
            .metrics
            .iter()
            .find(|m| m.name == metric)
            .and_then(|m| m.units.clone())
    }
}

impl MetricNames for NameSnapshot {
    fn contains(&self, name: &str) -> Option<bool> {
        self.names.as_ref().map(|n| n.contains(name))
    }

    fn closest(&self, name: &str) -> Vec<String> {
        let Some(names) = &self.names else {
            return Vec::new();
        };
        let lower = name.to_ascii_lowercase();
        let mut scored: Vec<(f64, &String)> = names
            .iter()
            .map(|n| {
                let score = strsim::jaro_winkler(&lower, &n.to_ascii_lowercase());
                let contains = n.contains(&lower) || lower.contains(n.as_str());
                (if contains { score.max(0.9) } else { score }, n)
            })
            .filter(|(score, _)| *score >= 0.75)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
    }
}
