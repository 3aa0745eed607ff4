//! Liveness, readiness and the gateway's Prometheus series.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::fleet::Appliance;
use crate::health::{self, ProbeResult};
use crate::state::AppState;
use crate::upstream::BreakerState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness, with the reasons when not ready: on the admin listener only. The gateway is
/// ready while its default appliance (without one: any appliance) is; the fields besides
/// `appliances` are that appliance's.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why the gateway is not ready (empty when ready).
    pub reasons: Vec<String>,
    #[serde(flatten)]
    pub detail: Option<ApplianceReadiness>,
    /// Each appliance's readiness, by name.
    pub appliances: std::collections::BTreeMap<String, ApplianceReadiness>,
}

/// One appliance's readiness.
#[derive(Serialize, ToSchema, Clone)]
pub struct ApplianceReadiness {
    #[serde(skip)]
    pub ready: bool,
    /// Why this appliance is not ready (empty when it is).
    #[serde(rename = "appliance_reasons")]
    pub reasons: Vec<String>,
    /// Whether the metric catalog has been fetched.
    pub catalog: bool,
    /// Application protocols known from the appliance's `/enums` (not a readiness condition):
    /// 0 means protocol names are refused and only numeric codes accepted.
    pub application_protocols: usize,
    /// The last probe of the appliance, if any.
    pub appliance: Option<ProbeResult>,
    pub breaker: BreakerState,
}

/// Readiness as anyone may see it: ready or not, nothing more.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The gateway can answer: the appliance answered the last periodic probe (or a caller's
/// request lately) and accepted our signature, the metric catalog is fetched, and the circuit
/// breaker is not open. The reasons are on the admin surface (`/internal/readiness`).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready", body = Ready)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = readiness(&state).ready;
    answer(ready, Ready { ready })
}

/// Readiness with its reasons, for operators (also the admin listener's `/readyz`).
#[utoipa::path(get, path = "/internal/readiness", tag = "admin",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, with reasons", body = Readiness)))]
pub async fn readiness_detail(state: web::Data<AppState>) -> HttpResponse {
    let detail = readiness(&state);
    answer(detail.ready, detail)
}

fn answer(ready: bool, body: impl Serialize) -> HttpResponse {
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

fn readiness(state: &AppState) -> Readiness {
    let now = state.clock.now_ms();
    let appliances: std::collections::BTreeMap<String, ApplianceReadiness> = state
        .fleet
        .all()
        .iter()
        .map(|a| (a.name.to_string(), appliance_readiness(a, now)))
        .collect();
    // The default appliance decides; without one, any appliance ready will do.
    let detail = match state.fleet.pick(None) {
        Ok(a) => appliances.get(a.name.as_str()).cloned(),
        Err(_) => appliances
            .values()
            .find(|r| r.ready)
            .or_else(|| appliances.values().next())
            .cloned(),
    };
    let reasons = match &detail {
        Some(d) => d.reasons.clone(),
        None => vec!["no appliance is configured".into()],
    };
    Readiness {
        ready: reasons.is_empty(),
        reasons,
        detail,
        appliances,
    }
}

/// One appliance's readiness: its probe (or a caller's answer lately), its catalog, its
/// breaker.
pub fn appliance_readiness(a: &Appliance, now: i64) -> ApplianceReadiness {
    let mut reasons = Vec::new();
    let probe = a.health.last();
    let guard = a.client.guard();
    reasons.extend(health::appliance_problem(
        probe.as_ref(),
        guard.last_answered_ms(),
        now,
        health::stale_after_ms(&a.settings),
    ));
    let catalog = a.catalog.get().is_some();
    if catalog && !a.catalog.is_settled() {
        reasons.push("metric catalog: just fetched, dropping answers made without it".into());
    } else if !catalog {
        let why = a
            .catalog
            .last_error()
            .unwrap_or_else(|| "not fetched yet".into());
        reasons.push(format!("metric catalog: {why}"));
    }
    let breaker = guard.breaker_state();
    if breaker == BreakerState::Open {
        reasons.push("appliance: circuit breaker open after repeated failures".into());
    }
    ApplianceReadiness {
        ready: reasons.is_empty(),
        reasons,
        catalog,
        application_protocols: a.catalog.application_protocol_count(),
        appliance: probe,
        breaker,
    }
}

fn breaker_value(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

/// The gateway's own series in the Prometheus text format (Darktrace's metric catalog is
/// `/v1/metrics`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn prometheus(state: web::Data<AppState>) -> HttpResponse {
    let m = &state.metrics;
    let Some(cache) = state.cache_report().await.default else {
        return HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(m.render());
    };
    m.cache_bytes.set(cache.bytes as i64);
    m.cache_entries.set(cache.entries as i64);
    if let Some(segments) = cache.segments {
        m.segment_bytes.set(segments.bytes as i64);
        m.segment_entries.set(segments.entries as i64);
        if let Some(disk) = segments.disk {
            m.disk_up.set(i64::from(disk.up));
            m.disk_bytes.set(disk.bytes as i64);
            m.disk_indexed.set(i64::from(disk.indexed));
            m.disk_entries.set(disk.entries as i64);
            for (event, n) in [
                ("hit", disk.hits),
                ("write", disk.writes),
                ("corrupt", disk.corrupt),
                ("error", disk.errors),
                ("evicted", disk.evicted),
            ] {
                m.disk_events.with_label_values(&[event]).set(n as i64);
            }
        }
    }
    let fleet = state.fleet.all();
    m.upstream_in_flight.set(
        fleet
            .iter()
            .map(|a| a.client.guard().in_flight() as i64)
            .sum(),
    );
    m.upstream_queue_waiting.set(
        fleet
            .iter()
            .map(|a| i64::try_from(a.client.guard().waiting_for_budget()).unwrap_or(i64::MAX))
            .fold(0, i64::saturating_add),
    );
    if let Some(a) = state.fleet.default_or_first() {
        m.breaker_state
            .set(breaker_value(a.client.guard().breaker_state()));
    }
    let now = state.clock.now_ms();
    // Only the appliances in the fleet now: one a reload removed leaves no series behind.
    for vec in [
        &m.appliance_ready,
        &m.appliance_breaker,
        &m.appliance_in_flight,
        &m.appliance_queue_waiting,
    ] {
        vec.reset();
    }
    for a in &fleet {
        let name = a.name.as_str();
        let ready = appliance_readiness(a, now).ready;
        m.appliance_ready
            .with_label_values(&[name])
            .set(i64::from(ready));
        let guard = a.client.guard();
        m.appliance_breaker
            .with_label_values(&[name])
            .set(breaker_value(guard.breaker_state()));
        m.appliance_in_flight
            .with_label_values(&[name])
            .set(guard.in_flight() as i64);
        m.appliance_queue_waiting
            .with_label_values(&[name])
            .set(i64::try_from(guard.waiting_for_budget()).unwrap_or(i64::MAX));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render())
}
