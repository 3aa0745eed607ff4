//! What every handler shares, built once by `startup`. Nothing below `api/` imports this.

use std::sync::Arc;

use crate::cache::{CacheReport, PurgeReach, Purged};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::health::ApplianceHealth;
use crate::limits::CallerLimits;
use crate::query::PurgeFilter;
use crate::redis::SharedState;
use crate::reload::{ReloadError, ReloadReport, Reloader};
use crate::service::MetricService;
use crate::settings::Settings;
use crate::telemetry::{AccessLog, GatewayMetrics, HttpSeries};
use crate::upstream::ApplianceClient;

/// A handle to the gateway's [`Shared`] state. Each server worker registers its own handle
/// (see `startup`), so the reference count that extractors and middleware touch on every
/// request lives on that worker's core instead of bouncing between cores.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// The handle a server worker registers: its own allocation, counted by that worker alone.
    pub fn for_worker(&self) -> actix_web::web::Data<AppState> {
        actix_web::web::Data::new(self.clone())
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub settings: Settings,
    pub clock: Clock,
    pub catalog: Arc<Catalog>,
    pub service: MetricService,
    pub client: ApplianceClient,
    pub callers: Arc<CallerLimits>,
    pub health: Arc<ApplianceHealth>,
    pub metrics: Arc<GatewayMetrics>,
    /// The HTTP series by route and status, resolved once.
    pub http_series: HttpSeries,
    /// Which requests get an access line.
    pub access_log: AccessLog,
    /// Redis, when replicas share state (`None` in embedded mode).
    pub shared: Option<Arc<SharedState>>,
    /// Reloads the configuration (SIGHUP, `POST /internal/reload`).
    pub reloader: Reloader,
}

impl Shared {
    /// Both caches' statistics.
    pub async fn cache_report(&self) -> CacheReport {
        self.service.cache_report().await
    }

    /// Reads the configuration again and puts what can change in place in force.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload(&self.callers, &self.service).await
    }

    /// Both caches, purged alike (everything, or what `filter` names) on every replica: here,
    /// in Redis, and announced to the others.
    pub async fn purge_caches(&self, filter: &PurgeFilter) -> Purged {
        self.service.purge(filter, PurgeReach::Cluster).await
    }
}
