//! Wiring: builds shared state once, binds the listener, runs the server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};

use crate::api;
use crate::clock::Clock;
use crate::fleet::{Fleet, Parts};
use crate::limits::CallerLimits;
use crate::redis::SharedState;
use crate::reload::Reloader;
use crate::settings::Settings;
use crate::state::{AppState, Shared};
use crate::telemetry::{AccessLog, GatewayMetrics, HttpSeries};

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
    /// The admin listener's port and server, when it has its own (`admin.listen`).
    admin: Option<(u16, Server)>,
    background: Vec<tokio::task::JoinHandle<()>>,
    state: AppState,
}

/// SIGHUP reloads the configuration, as `POST /internal/reload` does. (Without a handler,
/// SIGHUP would end the process.)
async fn reload_on_sighup(state: AppState) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /internal/reload");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        if let Err(e) = state.reload().await {
            tracing::warn!(error = %crate::telemetry::chain(&e), "configuration not reloaded");
        }
    }
}

/// Binds `addr` (port 0 picks a free port); the listener and the port it got.
fn bind(addr: std::net::SocketAddr) -> Result<(TcpListener, u16), StartupError> {
    let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    Ok((listener, port))
}

/// The admin listener's server: one worker, the operator's routes.
fn admin_server(
    state: AppState,
    listener: TcpListener,
    addr: std::net::SocketAddr,
    settings: &Settings,
) -> Result<Server, StartupError> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.for_worker())
            .wrap(api::observe::Observe::new(state.clone()))
            .configure(api::admin_listener_routes)
            .default_service(web::to(api::admin_fallback))
    })
    .workers(1)
    .client_request_timeout(Duration::from_millis(
        settings.server.client_request_timeout_ms,
    ))
    // It stops with the main server (run_until_stopped), not on its own signals.
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_grace_secs)
    .listen(listener)
    .map_err(|source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    })?
    .run();
    Ok(server)
}

impl Application {
    /// Builds the gateway and binds `settings.server.listen` (port 0 picks a free port).
    /// Must be called inside a Tokio runtime.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// [`Application::build`] on `clock` (tests drive a manual one).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> Result<Self, StartupError> {
        let metrics = Arc::new(GatewayMetrics::new());
        let shared =
            SharedState::new(&settings.redis, metrics.clone()).map_err(StartupError::Client)?;
        let parts = Parts {
            metrics: metrics.clone(),
            shared: shared.clone(),
            clock: clock.clone(),
        };
        let fleet = Fleet::start(&settings, &parts).map_err(StartupError::Client)?;
        let callers = Arc::new(
            CallerLimits::new(&settings.rate_limit, clock.clone()).with_shared(shared.clone()),
        );
        let sweeper = callers.clone();
        let mut background = vec![tokio::spawn(async move {
            loop {
                // Read each time: a reload may change it.
                let every = Duration::from_secs(sweeper.settings().sweep_secs.get());
                tokio::time::sleep(every).await;
                sweeper.sweep();
            }
        })];
        if let Some(s) = &shared {
            background.push(tokio::spawn(s.clone().keep()));
        }
        let addr = settings.server.listen;
        let (listener, port) = bind(addr)?;
        let admin_addr = settings.admin.listen;
        let admin_listener = admin_addr.map(bind).transpose()?;
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let grace = settings.server.shutdown_grace_secs;
        let client_timeout_ms = settings.server.client_request_timeout_ms;
        let state = AppState::new(Shared {
            shared,
            fleet,
            parts,
            access_log: AccessLog::new(&settings.server, &metrics, clock.clone()),
            clock,
            callers,
            http_series: HttpSeries::new(&metrics, &api::route_labels()),
            metrics,
            reloader: Reloader::new(&settings),
            settings,
        });
        background.push(tokio::spawn(reload_on_sighup(state.clone())));
        let ready = state.clone();
        let admin = match (admin_listener, admin_addr) {
            (Some((listener, admin_port)), Some(addr)) => {
                let server = admin_server(state.clone(), listener, addr, &state.settings)?;
                tracing::info!(%addr, port = admin_port, "metricgate admin listening");
                Some((admin_port, server))
            }
            _ => None,
        };
        // Without an admin listener, the admin endpoints share the main port, behind the
        // admin token (settings require one then).
        let admin_on_main = admin.is_none();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.for_worker())
                // Outermost last: observe every request, then the caller's limit.
                .wrap(api::limit::Limit::new(state.clone()))
                .wrap(api::observe::Observe::new(state.clone()))
                .configure(api::routes)
                .configure(|cfg| {
                    if admin_on_main {
                        api::admin_routes(cfg);
                    }
                })
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
            admin,
            background,
            state: ready,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Resolves once the gateway can answer: the default appliance's (else the first one's)
    /// metric catalog is in, and answers made without it are gone (what `/readyz` waits for
    /// besides the appliance's probe).
    pub fn ready(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let state = self.state.clone();
        async move {
            let Some(appliance) = state.fleet.default_or_first() else {
                return;
            };
            appliance.catalog.arrived().await;
            while !appliance.catalog.is_settled() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// The admin listener's port; `None` when the admin endpoints share the main port.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(port, _)| *port)
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let admin = self.admin.map(|(_, server)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let result = self.server.await;
        if let Some((handle, task)) = admin {
            handle.stop(true).await;
            let _ = task.await;
        }
        for task in self.background {
            task.abort();
        }
        tracing::info!("metricgate stopped");
        result
    }
}
