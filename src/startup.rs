//! Wiring: builds shared state once, binds the listener, runs the server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::api;
use crate::cache::segments::SegmentCache;
use crate::cache::{CacheReport, Purged, ResponseCache};
use crate::catalog::Catalog;
use crate::health::{self, ApplianceHealth};
use crate::limits::CallerLimits;
use crate::redis::SharedState;
use crate::settings::Settings;
use crate::source::MetricSource;
use crate::telemetry::{GatewayMetrics, request};
use crate::upstream::ApplianceClient;

/// What every handler shares.
pub struct AppState {
    pub settings: Settings,
    pub catalog: Arc<Catalog>,
    pub source: MetricSource,
    pub cache: ResponseCache,
    pub callers: Arc<CallerLimits>,
    pub health: Arc<ApplianceHealth>,
    pub metrics: Arc<GatewayMetrics>,
    /// Redis, when replicas share state (`None` in embedded mode).
    pub shared: Option<Arc<SharedState>>,
    /// `None` when `segments.enabled` is false.
    pub segments: Option<Arc<SegmentCache>>,
}

impl AppState {
    /// Both caches' statistics.
    pub async fn cache_report(&self) -> CacheReport {
        let mut report = self.cache.report().await;
        if let Some(segments) = &self.segments {
            report.segments = Some(segments.report().await);
        }
        report
    }

    /// Both caches, purged alike: everything, or what names `metric` and/or `did`.
    pub async fn purge_caches(&self, metric: Option<&str>, did: Option<u64>) -> Purged {
        let segments = match &self.segments {
            Some(s) => s.purge(metric, did).await,
            None => 0,
        };
        Purged {
            purged: self.cache.purge(metric, did).await,
            segments,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Client(String),
}

pub struct Application {
    port: u16,
    server: Server,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Builds the gateway and binds `settings.server.listen` (port 0 picks a free port).
    /// Must be called inside a Tokio runtime.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let metrics = Arc::new(GatewayMetrics::new());
        let shared =
            SharedState::new(&settings.redis, metrics.clone()).map_err(StartupError::Client)?;
        let client = ApplianceClient::new(&settings.upstream, metrics.clone(), shared.clone())
            .map_err(StartupError::Client)?;
        let catalog = Arc::new(Catalog::default());
        let health = Arc::new(ApplianceHealth::default());
        let callers = Arc::new(CallerLimits::new(&settings.rate_limit));
        let sweep_every = Duration::from_secs(settings.rate_limit.sweep_secs);
        let sweeper = callers.clone();
        let mut background = vec![
            tokio::spawn(health::probe_loop(
                health.clone(),
                catalog.clone(),
                client.clone(),
                settings.upstream.clone(),
            )),
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(sweep_every).await;
                    sweeper.sweep();
                }
            }),
        ];
        if let Some(s) = &shared {
            background.push(tokio::spawn(s.clone().keep()));
        }
        let addr = settings.listen_addr();
        let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let grace = settings.server.shutdown_grace_secs;
        let client_timeout_ms = settings.server.client_request_timeout_ms;
        let state = web::Data::new(AppState {
            cache: ResponseCache::new(
                &settings.cache,
                &client.identity(),
                &metrics,
                shared.clone(),
            ),
            shared,
            segments: settings.segments.enabled.then(|| {
                Arc::new(SegmentCache::new(
                    &settings.segments,
                    &settings.cache,
                    &client.identity(),
                ))
            }),
            source: MetricSource::new(client, catalog.clone()),
            catalog,
            callers,
            health,
            metrics,
            settings,
        });
        // Answers made before the catalog arrived lack units; drop them when it does. Readiness
        // waits for this, so a balancer's first callers never see an answer purged under them.
        let arrival = state.clone();
        background.push(tokio::spawn(async move {
            arrival.catalog.arrived().await;
            let purged = arrival.purge_caches(None, None).await;
            if purged.purged + purged.segments > 0 {
                tracing::info!(
                    purged.purged,
                    purged.segments,
                    "metric catalog arrived; dropped answers made without its units"
                );
            }
            arrival.catalog.settle();
        }));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(request::observe))
                .configure(api::routes)
                .default_service(web::to(api::fallback))
        })
        .workers(workers)
        .client_request_timeout(Duration::from_millis(client_timeout_ms))
        .client_disconnect_timeout(Duration::from_secs(1))
        // SIGTERM and SIGINT stop accepting, then let requests in flight finish this long.
        .shutdown_timeout(grace)
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?
        .run();
        tracing::info!(%addr, port, workers, "metricgate listening");
        Ok(Self {
            port,
            server,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        for task in self.background {
            task.abort();
        }
        tracing::info!("metricgate stopped");
        result
    }
}
