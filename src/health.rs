//! Is the appliance there, and does it accept our signature? A periodic probe answers, and
//! keeps the metric catalog fresh on the way.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::settings::UpstreamSettings;
use crate::telemetry::chain;
use crate::upstream::ApplianceClient;

/// The last probe's outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProbeResult {
    /// When it finished, epoch ms.
    pub at: i64,
    pub ok: bool,
    /// What went wrong (never a token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Default)]
pub struct ApplianceHealth {
    last: RwLock<Option<ProbeResult>>,
}

impl ApplianceHealth {
    pub fn last(&self) -> Option<ProbeResult> {
        self.last.read().ok().and_then(|l| l.clone())
    }

    fn record(&self, at: i64, error: Option<String>) {
        if let Ok(mut last) = self.last.write() {
            *last = Some(ProbeResult {
                at,
                ok: error.is_none(),
                error,
            });
        }
    }
}

/// Probes every `probe_secs`: a catalog fetch when the catalog is missing or due, else the
/// cheapest signed request there is, one metric's description.
pub async fn probe_loop(
    health: Arc<ApplianceHealth>,
    catalog: Arc<Catalog>,
    client: ApplianceClient,
    settings: UpstreamSettings,
    clock: Clock,
) {
    let every = Duration::from_secs(settings.probe_secs);
    let timeout = Duration::from_millis(settings.probe_timeout_ms);
    let refresh_ms = (settings.catalog_refresh_secs as i64).saturating_mul(1000);
    loop {
        let due = catalog
            .get()
            .is_none_or(|c| clock.now_ms() - c.fetched_at >= refresh_ms);
        let error = if due {
            catalog.refresh(&client).await.err().map(|e| chain(&e))
        } else {
            client
                .probe(&catalog.probe_path(), timeout)
                .await
                .err()
                .map(|e| chain(&e))
        };
        if let Some(e) = &error {
            tracing::warn!(error = %e, "appliance probe failed");
        }
        health.record(clock.now_ms(), error);
        clock.sleep(every).await;
    }
}
