//! What every handler shares, built once by `startup`. Nothing below `api/` imports this.

use std::sync::Arc;

use crate::cache::{PurgeReach, Purged};
use crate::clock::Clock;
use crate::fleet::{Fleet, Parts};
use crate::limits::CallerLimits;
use crate::query::PurgeFilter;
use crate::redis::SharedState;
use crate::reload::{ReloadError, ReloadReport, Reloader};
use crate::settings::Settings;
use crate::telemetry::{AccessLog, GatewayMetrics, HttpSeries};

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
    /// The appliances, by name.
    pub fleet: Fleet,
    /// What appliances a reload adds are built with.
    pub parts: Parts,
    pub callers: Arc<CallerLimits>,
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
    /// Every appliance's caches' statistics, the default's also on their own.
    pub async fn cache_report(&self) -> crate::cache::FleetCacheReport {
        let mut appliances = std::collections::BTreeMap::new();
        for a in self.fleet.all() {
            appliances.insert(a.name.to_string(), a.service.cache_report().await);
        }
        let default = match self.fleet.default_or_first() {
            Some(a) => Some(a.service.cache_report().await),
            None => None,
        };
        crate::cache::FleetCacheReport {
            default,
            appliances,
        }
    }

    /// Reads the configuration again and puts what can change in place in force.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader
            .reload(&self.callers, &self.fleet, &self.parts)
            .await
    }

    /// Both caches of `appliances` (every one when empty), purged alike (everything, or what
    /// `filter` names) on every replica: here, in Redis, and announced to the others.
    pub async fn purge_caches(&self, filter: &PurgeFilter, appliances: &[String]) -> Purged {
        let mut total = Purged::default();
        for a in self.fleet.all() {
            if appliances.is_empty() || appliances.iter().any(|n| n == a.name.as_str()) {
                let purged = a.service.purge(filter, PurgeReach::Cluster).await;
                total.purged += purged.purged;
                total.segments += purged.segments;
                total.generation = total.generation.max(purged.generation);
            }
        }
        total
    }
}
