//! The appliance's catalogs: its metrics (`/metrics`) and its application protocols
//! (`/enums`), fetched at startup, refreshed periodically, used to check metric names, fill in
//! units, and translate application protocol names to the codes the appliance takes.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::Clock;
pub use crate::normalize::MetricInfo;
use crate::normalize::{self, AnswerError, ApplicationProtocols};
use crate::query::{MetricNames, ProtocolLookup};
use crate::upstream::{ApplianceClient, Lane, UpstreamError, dialect};

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
    /// From `/enums`; kept through failed refreshes, `None` until first read.
    protocols: Option<Arc<ApplicationProtocols>>,
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
    protocols: Option<Arc<ApplicationProtocols>>,
}

impl Catalog {
    /// Fetches `/metrics` now, as a caller's request (the probes refresh it otherwise), and
    /// with it `/enums`. The metric catalog decides the outcome: the gateway works without
    /// `/enums`, taking application protocols as codes only.
    pub async fn refresh(&self, client: &ApplianceClient) -> Result<(), CatalogError> {
        match client.get(dialect::CATALOG, None, &Lane::gateway()).await {
            Ok(body) => {
                self.accept(&body)?;
                self.refresh_protocols(client).await;
                Ok(())
            }
            Err(e) => {
                let e = CatalogError::from(e);
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Reads `/enums` again; the protocols known stay in use when it cannot be read.
    pub async fn refresh_protocols(&self, client: &ApplianceClient) {
        let answer = client.get(dialect::ENUMS, None, &Lane::gateway()).await;
        self.accept_protocols(answer);
    }

    /// Takes the appliance's answer to [`dialect::ENUMS`] (the probes fetch it within their
    /// share of the budget, counting it as a request of its own); the protocols known stay in use when it cannot be read.
    pub fn accept_protocols(&self, answer: Result<bytes::Bytes, UpstreamError>) {
        let result = match answer {
            Ok(body) => normalize::application_protocols(&body).map_err(CatalogError::from),
            Err(e) => Err(e.into()),
        };
        let protocols = match result {
            Ok(protocols) => protocols,
            Err(e) => {
                let kept = self
                    .state
                    .read()
                    .ok()
                    .is_some_and(|s| s.protocols.is_some());
                tracing::warn!(
                    error = %crate::telemetry::chain(&e),
                    kept_previous = kept,
                    "cannot read the appliance's application protocols (/enums); protocol names are refused until they are read, codes are accepted"
                );
                return;
            }
        };
        if let Ok(mut state) = self.state.write() {
            state.protocols = Some(Arc::new(protocols));
        }
    }

    /// How many application protocols the gateway knows (0 until `/enums` is read).
    pub fn application_protocol_count(&self) -> usize {
        self.state
            .read()
            .ok()
            .and_then(|s| s.protocols.as_ref().map(|p| p.len()))
            .unwrap_or(0)
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
        let Ok(state) = self.state.read() else {
            return NameSnapshot {
                names: None,
                protocols: None,
            };
        };
        NameSnapshot {
            names: state.catalog.is_some().then(|| state.names.clone()),
            protocols: state.protocols.clone(),
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

    fn application_protocol(&self, name: &str) -> ProtocolLookup {
        let Some(protocols) = &self.protocols else {
            return ProtocolLookup::NotKnownYet;
        };
        match protocols.code_of(name) {
            Some(code) => ProtocolLookup::Code(code),
            None => ProtocolLookup::Unknown {
                closest: protocols.closest(name),
            },
        }
    }

    fn has_application_protocol(&self, code: u32) -> Option<bool> {
        self.protocols.as_ref().map(|p| p.has_code(code))
    }
}
