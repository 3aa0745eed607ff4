//! An appliance simulator that speaks the real dialect strictly: it checks tokens, dates and
//! signatures as appliances do, refuses what they refuse, serves deterministic data, injects
//! faults on request, and counts what reached it so tests can assert on it.

mod data;
mod estate;
mod faults;
mod metricdata;
mod profile;

pub use data::APPLICATION_PROTOCOLS;
pub use estate::Estate;
pub use faults::Faults;
pub use profile::{Anchoring, DeviceDetails, EndRule, Profile};

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::upstream::sign;

/// What reached the simulator.
#[derive(Debug, Default)]
pub struct SimStats {
    requests: AtomicU64,
    metricdata: AtomicU64,
    metrics: AtomicU64,
    enums: AtomicU64,
    rejected: AtomicU64,
    /// Data points served in `/metricdata` answers (what a cache saves the appliance).
    points: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    recent: Mutex<VecDeque<String>>,
    last_traceparent: Mutex<Option<String>>,
}

/// A copy of [`SimStats`] at one moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Every request that passed authentication.
    pub requests: u64,
    pub metricdata: u64,
    /// Catalog requests: `/metrics`, `/metrics/{mlid}`, `/enums` and `/status`.
    pub metrics: u64,
    /// `/enums` requests (counted in `metrics` too).
    pub enums: u64,
    /// Requests refused (auth, dialect).
    pub rejected: u64,
    /// Data points served in `/metricdata` answers.
    pub points: u64,
    pub peak_in_flight: u64,
    /// The last path-and-query strings received, oldest first.
    pub recent: Vec<String>,
    /// The `traceparent` header of the last request that had one.
    pub last_traceparent: Option<String>,
}

const RECENT: usize = 512;

impl SimStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::SeqCst),
            metricdata: self.metricdata.load(Ordering::SeqCst),
            metrics: self.metrics.load(Ordering::SeqCst),
            enums: self.enums.load(Ordering::SeqCst),
            rejected: self.rejected.load(Ordering::SeqCst),
            points: self.points.load(Ordering::SeqCst),
            peak_in_flight: self.peak_in_flight.load(Ordering::SeqCst),
            recent: self
                .recent
                .lock()
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
            last_traceparent: self.last_traceparent.lock().ok().and_then(|t| t.clone()),
        }
    }

    pub fn reset(&self) {
        for c in [
            &self.requests,
            &self.metricdata,
            &self.metrics,
            &self.enums,
            &self.rejected,
            &self.points,
            &self.peak_in_flight,
        ] {
            c.store(0, Ordering::SeqCst);
        }
        if let Ok(mut r) = self.recent.lock() {
            r.clear();
        }
    }
}

struct SimState {
    /// Which appliance of a fleet this is: its catalog and devices (fixed for its life).
    estate: Estate,
    public_token: String,
    private_token: SecretString,
    stats: Arc<SimStats>,
    faults: Arc<RwLock<Faults>>,
    profile: Arc<RwLock<Profile>>,
    clock: Arc<RwLock<Clock>>,
}

impl SimState {
    /// The appliance's own clock: the system's, or the one a test handed in.
    fn now_ms(&self) -> i64 {
        self.clock
            .read()
            .map(|c| c.now_ms())
            .unwrap_or_else(|_| Clock::system().now_ms())
    }

    fn profile(&self) -> Profile {
        self.profile.read().map(|p| p.clone()).unwrap_or_default()
    }
}

/// A running simulator.
pub struct Simulator {
    pub addr: std::net::SocketAddr,
    /// `http`, or `https` when built by [`Simulator::spawn_tls`] or [`Simulator::bind_tls`].
    scheme: &'static str,
    pub stats: Arc<SimStats>,
    pub faults: Arc<RwLock<Faults>>,
    pub profile: Arc<RwLock<Profile>>,
    clock: Arc<RwLock<Clock>>,
    handle: ServerHandle,
}

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and starts serving on the current runtime.
    pub fn spawn(listen: &str, public_token: &str, private_token: &str) -> std::io::Result<Self> {
        let (sim, server) = Self::bind(listen, public_token, private_token)?;
        tokio::spawn(server);
        Ok(sim)
    }

    /// Like [`Simulator::spawn`], serving HTTPS with `cert_chain_pem` (the server's certificate
    /// first) and its private key `key_pem`.
    pub fn spawn_tls(
        listen: &str,
        public_token: &str,
        private_token: &str,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<Self> {
        let (sim, server) =
            Self::bind_tls(listen, public_token, private_token, cert_chain_pem, key_pem)?;
        tokio::spawn(server);
        Ok(sim)
    }

    /// Like [`Simulator::spawn`], playing another appliance of a fleet (see [`Estate`]): its
    /// own catalog and devices.
    pub fn spawn_estate(
        listen: &str,
        public_token: &str,
        private_token: &str,
        estate: Estate,
    ) -> std::io::Result<Self> {
        let (sim, server) = Self::build(listen, public_token, private_token, None, estate)?;
        tokio::spawn(server);
        Ok(sim)
    }

    /// Binds `listen` and builds the server, which the caller runs.
    pub fn bind(
        listen: &str,
        public_token: &str,
        private_token: &str,
    ) -> std::io::Result<(Self, Server)> {
        Self::build(listen, public_token, private_token, None, Estate::default())
    }

    /// Like [`Simulator::bind`], serving HTTPS (see [`Simulator::spawn_tls`]).
    pub fn bind_tls(
        listen: &str,
        public_token: &str,
        private_token: &str,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<(Self, Server)> {
        let tls = tls_config(cert_chain_pem, key_pem)?;
        Self::build(
            listen,
            public_token,
            private_token,
            Some(tls),
            Estate::default(),
        )
    }

    fn build(
        listen: &str,
        public_token: &str,
        private_token: &str,
        tls: Option<rustls::ServerConfig>,
        estate: Estate,
    ) -> std::io::Result<(Self, Server)> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(SimStats::default());
        let faults = Arc::new(RwLock::new(Faults::default()));
        let profile = Arc::new(RwLock::new(Profile::default()));
        let clock = Arc::new(RwLock::new(Clock::system()));
        let state = web::Data::new(SimState {
            estate,
            public_token: public_token.to_owned(),
            private_token: SecretString::from(private_token.to_owned()),
            stats: stats.clone(),
            faults: faults.clone(),
            profile: profile.clone(),
            clock: clock.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/_sim/stats", web::get().to(get_stats))
                .route("/_sim/faults", web::post().to(set_faults))
                .route("/_sim/profile", web::post().to(set_profile))
                .route("/_sim/reset", web::post().to(reset))
                .route("/metricdata", web::get().to(metricdata))
                .route("/metrics", web::get().to(metrics))
                .route("/metrics/{mlid}", web::get().to(metric))
                .route("/enums", web::get().to(enums))
                .route("/status", web::get().to(status))
                .default_service(web::to(not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1);
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok((
            Self {
                addr,
                scheme,
                stats,
                faults,
                profile,
                clock,
                handle: server.handle(),
            },
            server,
        ))
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.faults.write() {
            *f = faults;
        }
    }

    /// Makes the simulator behave as another appliance of the family (see [`Profile`]).
    pub fn set_profile(&self, profile: Profile) {
        if let Ok(mut p) = self.profile.write() {
            *p = profile;
        }
    }

    /// Runs the appliance on `clock` (its data's "now" and its check of request dates): a
    /// test hands in the gateway's manual clock and moves both together.
    pub fn set_clock(&self, clock: Clock) {
        if let Ok(mut c) = self.clock.write() {
            *c = clock;
        }
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// A TLS server configuration from PEM text: a certificate chain and its private key.
fn tls_config(cert_chain_pem: &str, key_pem: &str) -> std::io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(std::io::Error::other)?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(std::io::Error::other)
}

async fn get_stats(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats.snapshot())
}

async fn set_faults(state: web::Data<SimState>, faults: web::Json<Faults>) -> HttpResponse {
    if let Ok(mut f) = state.faults.write() {
        *f = faults.into_inner();
    }
    HttpResponse::NoContent().finish()
}

async fn set_profile(state: web::Data<SimState>, profile: web::Json<Profile>) -> HttpResponse {
    if let Ok(mut p) = state.profile.write() {
        *p = profile.into_inner();
    }
    HttpResponse::NoContent().finish()
}

async fn reset(state: web::Data<SimState>) -> HttpResponse {
    state.stats.reset();
    if let Ok(mut f) = state.faults.write() {
        *f = Faults::default();
    }
    if let Ok(mut p) = state.profile.write() {
        *p = Profile::default();
    }
    HttpResponse::NoContent().finish()
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"error": "Not found"}))
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<SimStats>);

impl InFlight {
    fn new(stats: &Arc<SimStats>) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(stats.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks the three DTAPI headers as an appliance does.
fn authenticate(req: &HttpRequest, state: &SimState) -> Result<(), Box<HttpResponse>> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header("DTAPI-Token") != Some(state.public_token.as_str()) {
        return Err(Box::new(
            HttpResponse::Found()
                .insert_header(("Location", "/login"))
                .content_type("text/plain; charset=utf-8")
                .body("Found. Redirecting to /login"),
        ));
    }
    let segment = req
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let now = chrono::DateTime::from_timestamp_millis(state.now_ms()).unwrap_or_default();
    let date_ok = header("DTAPI-Date")
        .and_then(|d| chrono::NaiveDateTime::parse_from_str(d, sign::DATE_FORMAT).ok())
        .is_some_and(|d| (now.naive_utc() - d).num_minutes().abs() <= 30);
    if !date_ok {
        return Err(Box::new(appliance_error(&segment, "API DATE ERROR")));
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let expected = sign::signature(
        &state.private_token,
        &state.public_token,
        path_and_query,
        header("DTAPI-Date").unwrap_or(""),
    );
    if header("DTAPI-Signature") != Some(expected.as_str()) {
        return Err(Box::new(appliance_error(&segment, "API SIGNATURE ERROR")));
    }
    Ok(())
}

/// Appliances pretty-print these with a 2-space indent, keyed by the first path segment.
fn appliance_error(segment: &str, message: &str) -> HttpResponse {
    let mut map = serde_json::Map::new();
    map.insert(segment.to_owned(), message.into());
    let body = serde_json::to_string_pretty(&map).unwrap_or_default();
    HttpResponse::BadRequest()
        .content_type("application/json; charset=utf-8")
        .body(body)
}

fn bad_request(message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": message }))
}

/// Applies the configured faults; `Err` is the faulty answer to send instead.
async fn inject(state: &SimState, counter: u64) -> Result<Faults, HttpResponse> {
    let faults = state.faults.read().map(|f| f.clone()).unwrap_or_default();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.redirect {
        return Err(HttpResponse::Found()
            .insert_header(("Location", "/login"))
            .body("Found. Redirecting to /login"));
    }
    // Spread errors evenly: request n fails when floor(n * rate) moves.
    let rate = faults.error_rate.clamp(0.0, 1.0);
    if rate > 0.0 && ((counter + 1) as f64 * rate).floor() > (counter as f64 * rate).floor() {
        let status = StatusCode::from_u16(faults.error_status.unwrap_or(503))
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut answer = HttpResponse::build(status);
        if let Some(secs) = faults.retry_after_secs {
            answer.insert_header(("Retry-After", secs.to_string()));
        }
        return Err(answer.body("upstream trouble"));
    }
    if faults.malformed_body {
        return Err(HttpResponse::Ok()
            .content_type("application/json")
            .body("[{\"metric\": \"connections\", \"data\": [{\"timems\": 1,"));
    }
    if faults.error_body {
        return Err(
            HttpResponse::Ok().json(serde_json::json!({"error": "Internal error: simulated"}))
        );
    }
    if faults.unknown_shape {
        return Err(HttpResponse::Ok().json(serde_json::json!({"unexpected": [1, 2, 3]})));
    }
    Ok(faults)
}

/// Sends `body` as `faults` say: whole, slowly, or broken off.
fn deliver(body: Vec<u8>, faults: &Faults) -> HttpResponse {
    if faults.reset {
        let half = Bytes::from(body[..body.len() / 2].to_vec());
        let stream = futures::stream::iter(vec![
            Ok::<_, std::io::Error>(half),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated reset",
            )),
        ]);
        return HttpResponse::Ok()
            .content_type("application/json")
            .streaming(stream);
    }
    if faults.slow_body_ms > 0 {
        let delay = Duration::from_millis(faults.slow_body_ms);
        let chunks: Vec<Bytes> = body.chunks(256).map(Bytes::copy_from_slice).collect();
        let stream = futures::stream::unfold(chunks.into_iter(), move |mut it| async move {
            let next = it.next()?;
            tokio::time::sleep(delay).await;
            Some((Ok::<_, std::io::Error>(next), it))
        });
        return HttpResponse::Ok()
            .content_type("application/json")
            .streaming(stream);
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

/// What every catalog route does first: authenticate, count, apply faults. `Err` is the
/// answer to send instead.
async fn admit_catalog(
    req: &HttpRequest,
    state: &SimState,
) -> Result<(InFlight, Faults), HttpResponse> {
    if let Err(refusal) = authenticate(req, state) {
        state.stats.rejected.fetch_add(1, Ordering::SeqCst);
        return Err(*refusal);
    }
    let guard = InFlight::new(&state.stats);
    let n = state.stats.requests.fetch_add(1, Ordering::SeqCst);
    state.stats.metrics.fetch_add(1, Ordering::SeqCst);
    remember(&state.stats, req);
    let faults = inject(state, n).await?;
    if let Some(status) = faults.catalog_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(HttpResponse::build(status).body("catalog unavailable"));
    }
    Ok((guard, faults))
}

async fn metrics(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    match admit_catalog(&req, &state).await {
        Ok((_guard, faults)) => deliver(
            serde_json::to_vec(&data::catalog(&state.estate)).unwrap_or_default(),
            &faults,
        ),
        Err(answer) => answer,
    }
}

async fn enums(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    match admit_catalog(&req, &state).await {
        Ok((_guard, faults)) => {
            state.stats.enums.fetch_add(1, Ordering::SeqCst);
            if let Some(status) = faults.enums_status {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return HttpResponse::build(status).body("enums unavailable");
            }
            deliver(
                serde_json::to_vec(&data::enums(&state.estate)).unwrap_or_default(),
                &faults,
            )
        }
        Err(answer) => answer,
    }
}

/// The instance's description, as appliances give it (a small part of the real one).
async fn status(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    match admit_catalog(&req, &state).await {
        Ok((_guard, faults)) => {
            let seed = state.estate.seed();
            let body = serde_json::json!({
                "version": SIMULATED_VERSION,
                "label": format!("Simulated appliance {seed}"),
                "uuid": format!("00000000-0000-4000-8000-{seed:012x}"),
            });
            deliver(serde_json::to_vec(&body).unwrap_or_default(), &faults)
        }
        Err(answer) => answer,
    }
}

/// The software version the simulator says it runs in `/status`.
pub const SIMULATED_VERSION: &str = "6.2.48 (simulated)";

async fn metric(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    let (_guard, faults) = match admit_catalog(&req, &state).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let mlid: u64 = req.match_info().query("mlid").parse().unwrap_or(0);
    match data::catalog(&state.estate)
        .into_iter()
        .find(|m| m.mlid() == mlid)
    {
        Some(entry) => deliver(serde_json::to_vec(&entry).unwrap_or_default(), &faults),
        None => HttpResponse::NotFound().json(serde_json::json!({"error": "Metric not found"})),
    }
}

fn remember(stats: &SimStats, req: &HttpRequest) {
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        && let Ok(mut last) = stats.last_traceparent.lock()
    {
        *last = Some(tp.to_owned());
    }
    if let Ok(mut recent) = stats.recent.lock() {
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(
            req.uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
        );
    }
}

async fn metricdata(req: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    if let Err(refusal) = authenticate(&req, &state) {
        state.stats.rejected.fetch_add(1, Ordering::SeqCst);
        return *refusal;
    }
    let q = match metricdata::parse_dialect(&state.estate, req.query_string()) {
        Ok(q) => q,
        Err(message) => {
            state.stats.rejected.fetch_add(1, Ordering::SeqCst);
            return bad_request(message);
        }
    };
    let _guard = InFlight::new(&state.stats);
    let n = state.stats.requests.fetch_add(1, Ordering::SeqCst);
    state.stats.metricdata.fetch_add(1, Ordering::SeqCst);
    remember(&state.stats, &req);
    let faults = match inject(&state, n).await {
        Ok(f) => f,
        Err(answer) => return answer,
    };
    if let Some(reason) = &faults.refuse {
        return bad_request(reason);
    }
    let (body, points) =
        metricdata::answer(&state.estate, &q, &faults, &state.profile(), state.now_ms());
    state.stats.points.fetch_add(points, Ordering::SeqCst);
    deliver(body, &faults)
}
