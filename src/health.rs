//! Is the appliance there, and does it accept our signature? A periodic probe answers, and
//! keeps the metric catalog fresh on the way.
//!
//! The probe asks for what every appliance serves, the catalog (`GET /metrics`): any answer
//! short of a 5xx, a 404 included, shows the appliance is reachable. Probes have their own
//! small share of the appliance's budget, take an in-flight slot only when one is free in
//! time, and never move the circuit breaker: a slow or failing probe makes the gateway
//! unready, it never locks callers out.
//!
//! Replicas sharing Redis probe once per cluster, not once each: each period of the clock
//! (`now / period`) is claimed with `SET NX` by the first replica to get there, which probes
//! and publishes its result; the others read that result instead of asking the appliance. A
//! replica whose catalog is due probes for itself (it needs the answer's body), and so does
//! one without Redis. A claimer that dies leaves its period unprobed: the next period's
//! claimer probes, well within the staleness readiness tolerates (two periods).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalog::{Catalog, CatalogError};
use crate::clock::{Clock, Worker};
use crate::redis::SharedState;
use crate::settings::UpstreamSettings;
use crate::telemetry::chain;
use crate::upstream::{ApplianceClient, ApplianceGuard, UpstreamError, dialect, probe_share};

/// What the last probe showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStatus {
    /// The appliance answered (any status short of a 5xx) and accepted the signature.
    Reachable,
    /// No answer in time, no connection, or a 5xx.
    Unreachable,
    /// The appliance refused the gateway: signature, date, token (a redirect) or its TLS
    /// certificate. A setting to fix.
    Refused,
}

/// The last probe's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProbeResult {
    /// When it finished, epoch ms.
    pub at: i64,
    pub ok: bool,
    pub status: ProbeStatus,
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

    fn record(&self, result: ProbeResult) {
        if let Ok(mut last) = self.last.write() {
            *last = Some(result);
        }
    }
}

/// What a probe's answer says about the appliance.
fn classify(answer: &Result<bytes::Bytes, UpstreamError>) -> ProbeStatus {
    use UpstreamError as U;
    match answer {
        Ok(_) => ProbeStatus::Reachable,
        Err(U::Rejected { status, .. }) if *status < 500 => ProbeStatus::Reachable,
        Err(U::TooLarge(_)) => ProbeStatus::Reachable,
        Err(U::BadSignature | U::BadDate | U::Redirected { .. } | U::Untrusted { .. }) => {
            ProbeStatus::Refused
        }
        Err(_) => ProbeStatus::Unreachable,
    }
}

/// The record of one probe that got an answer, or none.
fn probed(answer: Result<bytes::Bytes, UpstreamError>, at: i64) -> ProbeResult {
    let status = classify(&answer);
    let error = answer
        .err()
        .map(|e| chain(&e))
        .filter(|_| status != ProbeStatus::Reachable);
    if let Some(e) = &error {
        tracing::warn!(error = %e, ?status, "appliance probe failed");
    }
    ProbeResult {
        at,
        ok: status == ProbeStatus::Reachable,
        status,
        error,
    }
}

/// A probe's result shared through Redis, with the period it was claimed for.
#[derive(Serialize, Deserialize)]
struct SharedProbe {
    period: i64,
    result: ProbeResult,
}

/// The probes' shared state in Redis: a claim per period, and the last result.
struct SharedProbes {
    shared: Arc<SharedState>,
    every_ms: i64,
}

impl SharedProbes {
    /// Whether this replica probes `period`: `Some(false)` when another replica claimed it,
    /// `None` when Redis is out of reach (each replica probes for itself then).
    async fn claim(&self, period: i64) -> Option<bool> {
        if !self.shared.is_up() {
            return None;
        }
        let key = self.shared.key("probe", &format!("claim:{period}"));
        // Kept a little beyond the period; only its first setter matters.
        let keep_ms = (self.every_ms as u64).saturating_mul(2) + 1_000;
        self.shared.set_nx(&key, b"1", keep_ms).await
    }

    async fn publish(&self, period: i64, result: &ProbeResult, keep_ms: u64) {
        let shared = SharedProbe {
            period,
            result: result.clone(),
        };
        if let Ok(json) = serde_json::to_vec(&shared) {
            self.shared
                .set(&self.shared.key("probe", "last"), &json, keep_ms)
                .await;
        }
    }

    /// The claimer's result for `period` (or a later one), polled until `within` has passed.
    async fn result_of(&self, period: i64, within: Duration) -> Option<ProbeResult> {
        let key = self.shared.key("probe", "last");
        let started = std::time::Instant::now();
        loop {
            let last = self.shared.get(&key).await;
            if let Some(p) = last.and_then(|b| serde_json::from_slice::<SharedProbe>(&b).ok())
                && p.period >= period
            {
                return Some(p.result);
            }
            if started.elapsed() >= within {
                return None;
            }
            // Real time: the claimer's probe is bounded in real time (its timeout).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Probes every `probe_secs` (less often when the probes' share of the budget is smaller):
/// a signed `GET /metrics`, whose answer also refreshes the catalog when it is missing or due.
/// With Redis (`shared`), one replica probes each period and the others take its result.
///
/// `worker` is the loop's registration on `clock`, made by the caller before it spawns the
/// loop, so a test on a manual clock waits for the first probe too.
pub async fn probe_loop(
    health: Arc<ApplianceHealth>,
    catalog: Arc<Catalog>,
    client: ApplianceClient,
    settings: UpstreamSettings,
    clock: Clock,
    shared: Option<Arc<SharedState>>,
    worker: Worker,
) {
    let every = ApplianceGuard::probe_every(&settings);
    let timeout = Duration::from_millis(settings.probe_timeout_ms.get());
    // Until a catalog is known, the probe is the gateway's first request and fetches it, as
    // a caller's request would: with a request's time (a new connection, a whole catalog, a
    // process still starting), not a probe's. The gateway is not ready without it anyway.
    let first_timeout = Duration::from_millis(settings.timeout_ms.get()).max(timeout);
    let refresh_ms = (settings.catalog_refresh_secs.get() as i64).saturating_mul(1000);
    let every_ms = (every.as_millis() as i64).max(1);
    let keep_ms = (stale_after_ms(&settings) as u64).saturating_mul(4);
    let shared = shared.map(|shared| SharedProbes { shared, every_ms });
    let mut sent = ProbeLog::new(probe_share(settings.per_minute));
    // After a catalog, its `/enums` is owed: read with it when the probes' share has room,
    // else by the next probe instead of the catalog.
    let mut enums_owed = false;
    loop {
        let period = clock.now_ms() / every_ms;
        if enums_owed && sent.take(clock.now_ms()) {
            enums_owed = false;
            let enums = client.probe(dialect::ENUMS, timeout).await;
            if !matches!(enums, Err(UpstreamError::Saturated { .. })) {
                health.record(probed(enums.clone(), clock.now_ms()));
            }
            catalog.accept_protocols(enums);
            worker.sleep(every).await;
            continue;
        }
        let catalog_due = catalog.is_due(refresh_ms);
        let claimed = match &shared {
            // A due catalog needs this replica's own request.
            Some(s) if !catalog_due => s.claim(period).await,
            _ => None,
        };
        if let (Some(s), Some(false)) = (&shared, claimed) {
            // Another replica probes this period: its result is this replica's too.
            if let Some(result) = s.result_of(period, timeout + Duration::from_secs(1)).await {
                health.record(result);
            }
            worker.sleep(every).await;
            continue;
        }
        let within = if catalog.get().is_none() {
            first_timeout
        } else {
            timeout
        };
        if !sent.take(clock.now_ms()) {
            worker.sleep(every).await;
            continue;
        }
        let answer = client.probe(dialect::CATALOG, within).await;
        match answer {
            // Callers' requests held every slot for the probe's whole timeout: they tell how
            // the appliance is (readiness reads their answers), so this probe is skipped.
            Err(UpstreamError::Saturated { .. }) => {
                tracing::debug!("appliance probe skipped: every in-flight slot is busy");
            }
            answer => {
                if catalog_due {
                    match &answer {
                        Ok(body) => {
                            if catalog.accept(body).is_ok() {
                                if sent.take(clock.now_ms()) {
                                    let enums = client.probe(dialect::ENUMS, within).await;
                                    catalog.accept_protocols(enums);
                                } else {
                                    enums_owed = true;
                                }
                            }
                        }
                        Err(e) => catalog.failed(&CatalogError::Upstream(e.clone())),
                    }
                }
                let result = probed(answer, clock.now_ms());
                if let Some(s) = &shared {
                    s.publish(period, &result, keep_ms).await;
                }
                health.record(result);
            }
        }
        worker.sleep(every).await;
    }
}

/// The probes' requests in the last minute, so that they never make more than their share
/// in any 60 s, whatever each probe asks (a catalog and its `/enums` are two).
struct ProbeLog {
    share: usize,
    sent_ms: std::collections::VecDeque<i64>,
}

impl ProbeLog {
    fn new(share: u32) -> Self {
        Self {
            share: share as usize,
            sent_ms: std::collections::VecDeque::new(),
        }
    }

    /// Whether one more request fits now; if so it is counted.
    fn take(&mut self, now_ms: i64) -> bool {
        while self.sent_ms.front().is_some_and(|t| now_ms - t >= 60_000) {
            self.sent_ms.pop_front();
        }
        let fits = self.sent_ms.len() < self.share;
        if fits {
            self.sent_ms.push_back(now_ms);
        }
        fits
    }
}

/// The appliance's side of readiness: `None` when it is fine, else why not.
///
/// Reachable if the last probe (not older than `stale_after_ms`) found it so, or if a
/// caller's request got an answer within that time: a probe that times out against a slow
/// but healthy appliance does not make the gateway unready while callers are being answered.
/// A refusal (credentials, clock, certificate) always counts: callers' requests fail too.
pub fn appliance_problem(
    probe: Option<&ProbeResult>,
    last_answered_ms: Option<i64>,
    now_ms: i64,
    stale_after_ms: i64,
) -> Option<String> {
    let answered_lately = last_answered_ms.is_some_and(|t| now_ms - t <= stale_after_ms);
    match probe {
        Some(p) if p.status == ProbeStatus::Refused => Some(format!(
            "appliance: {}",
            p.error.as_deref().unwrap_or("it refused the gateway")
        )),
        _ if answered_lately => None,
        None => Some("appliance: not probed yet".to_owned()),
        Some(p) if !p.ok => Some(format!(
            "appliance: {}",
            p.error.as_deref().unwrap_or("probe failed")
        )),
        Some(p) if now_ms - p.at > stale_after_ms => Some(format!(
            "appliance: no probe answer for {} s",
            (now_ms - p.at) / 1000
        )),
        Some(_) => None,
    }
}

/// How old the last probe may be before readiness stops trusting it.
pub fn stale_after_ms(settings: &UpstreamSettings) -> i64 {
    let every = ApplianceGuard::probe_every(settings).as_millis() as i64;
    (every + settings.probe_timeout_ms.get() as i64) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(at: i64, status: ProbeStatus) -> ProbeResult {
        ProbeResult {
            at,
            ok: status == ProbeStatus::Reachable,
            status,
            error: (status != ProbeStatus::Reachable).then(|| "the reason".to_owned()),
        }
    }

    #[test]
    fn the_probes_never_send_more_than_their_share_in_any_minute() {
        let mut log = ProbeLog::new(2);
        assert!(log.take(0) && log.take(0), "a catalog and its /enums");
        assert!(!log.take(30_000), "the third waits");
        assert!(!log.take(59_999));
        assert!(log.take(60_000) && log.take(60_000));
        assert!(!log.take(60_001));
        let mut one = ProbeLog::new(1);
        assert!(one.take(0) && !one.take(5_000) && one.take(60_000));
    }

    #[test]
    fn a_404_is_reachable_and_only_5xx_or_silence_is_not() {
        let rejected = |status| {
            Err(UpstreamError::Rejected {
                status,
                message: String::new(),
            })
        };
        assert_eq!(classify(&rejected(404)), ProbeStatus::Reachable);
        assert_eq!(classify(&rejected(429)), ProbeStatus::Reachable);
        assert_eq!(classify(&rejected(503)), ProbeStatus::Unreachable);
        assert_eq!(
            classify(&Err(UpstreamError::Timeout(Duration::from_secs(3)))),
            ProbeStatus::Unreachable
        );
        assert_eq!(
            classify(&Err(UpstreamError::BadSignature)),
            ProbeStatus::Refused
        );
    }

    #[test]
    fn readiness_of_the_appliance() {
        let stale = 10_000;
        let ok = probe(1_000, ProbeStatus::Reachable);
        let down = probe(1_000, ProbeStatus::Unreachable);
        let refused = probe(1_000, ProbeStatus::Refused);
        assert_eq!(appliance_problem(Some(&ok), None, 2_000, stale), None);
        assert!(appliance_problem(None, None, 0, stale).is_some());
        assert!(appliance_problem(Some(&down), None, 2_000, stale).is_some());
        assert!(
            appliance_problem(Some(&ok), None, 20_000, stale)
                .unwrap()
                .contains("no probe answer for 19 s")
        );
        // Slow probes, but callers are answered: ready.
        assert_eq!(
            appliance_problem(Some(&down), Some(1_500), 2_000, stale),
            None
        );
        assert_eq!(appliance_problem(None, Some(1_500), 2_000, stale), None);
        assert!(appliance_problem(Some(&down), Some(1_500), 20_000, stale).is_some());
        // A refusal is a setting to fix, whatever else happened.
        assert!(appliance_problem(Some(&refused), Some(1_900), 2_000, stale).is_some());
    }
}
