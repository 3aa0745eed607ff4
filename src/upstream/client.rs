//! The appliance's HTTP client: signing every request, strict timeouts, no redirects,
//! a cap on body size, and appliance failures turned into [`UpstreamError`]s.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::{StatusCode, Url, redirect};
use secrecy::SecretString;

use super::error::UpstreamError;
use super::guard::ApplianceGuard;
use super::{Lane, Outcome, sign, tls};
use crate::clock::Clock;
use crate::redis::SharedState;
use crate::settings::UpstreamSettings;
use crate::telemetry::GatewayMetrics;

#[derive(Clone)]
pub struct ApplianceClient {
    /// The appliance's name in the fleet: the `appliance` label of its series.
    name: Arc<str>,
    http: reqwest::Client,
    base: Url,
    public_token: String,
    private_token: SecretString,
    max_body: usize,
    timeout: Duration,
    guard: Arc<ApplianceGuard>,
    metrics: Arc<GatewayMetrics>,
    clock: Clock,
}

impl std::fmt::Debug for ApplianceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplianceClient")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ApplianceClient {
    /// The client of the appliance named `name` (its series carry it as `appliance`).
    /// `shared` (Redis) shares the appliance's per-minute budget with other replicas.
    pub fn new(
        name: &str,
        settings: &UpstreamSettings,
        metrics: Arc<GatewayMetrics>,
        shared: Option<Arc<SharedState>>,
        clock: Clock,
    ) -> Result<Self, String> {
        let base = settings.url.base().clone();
        let timeout = Duration::from_millis(settings.timeout_ms.get());
        let mut builder = reqwest::Client::builder()
            // A redirect means the appliance refused our token or permissions (see the notes):
            // following it would only fetch a login page.
            .redirect(redirect::Policy::none())
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms.get()))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("metricgate/", env!("CARGO_PKG_VERSION")))
            .gzip(true);
        if settings.insecure_skip_verify {
            tracing::warn!(
                "upstream.insecure_skip_verify is set: the appliance's TLS certificate is NOT verified"
            );
            builder = builder.danger_accept_invalid_certs(true);
        } else {
            builder = builder.use_preconfigured_tls(tls::client_config(settings)?);
        }
        Ok(Self {
            name: Arc::from(name),
            http: builder.build().map_err(|e| format!("HTTP client: {e}"))?,
            base,
            public_token: settings.public_token.clone(),
            private_token: settings.private_token.clone(),
            max_body: settings.max_response_bytes.get(),
            timeout,
            guard: Arc::new(ApplianceGuard::new(
                settings,
                shared.map(|s| {
                    (
                        s,
                        budget_name(settings.url.as_str(), &settings.public_token),
                    )
                }),
                clock.clone(),
                &metrics,
            )),
            metrics,
            clock,
        })
    }

    /// The identity answers depend on (permissions, anonymisation): base URL and public token.
    pub fn identity(&self) -> String {
        format!("{}|{}", self.base, self.public_token)
    }

    pub fn guard(&self) -> &ApplianceGuard {
        &self.guard
    }

    /// The gateway's Prometheus series, which appliance requests count into.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// GETs `path_and_query` (which must start with `/`), signed, within the appliance's
    /// budget (waiting its turn in `lane` when callers queue for it), retrying transient
    /// failures, and returns the body of a 2xx answer. `traceparent` (W3C) is passed on to the
    /// appliance.
    #[tracing::instrument(name = "appliance", skip(self, traceparent, lane), fields(appliance = %self.name))]
    pub async fn get(
        &self,
        path_and_query: &str,
        traceparent: Option<&str>,
        lane: &Lane,
    ) -> Result<Bytes, UpstreamError> {
        self.guard.first_attempt();
        let mut attempt = 0;
        loop {
            let ticket = self.guard.admit(lane).await?;
            let result = self.send(path_and_query, traceparent, self.timeout).await;
            ticket.done(outcome(&result));
            match result {
                Err(e) if e.is_transient() => {
                    attempt += 1;
                    let Some(backoff) = self.guard.retry_after(attempt) else {
                        return Err(e);
                    };
                    tracing::debug!(error = %e, attempt, ?backoff, "retrying");
                    // Real time: the backoff paces a remote peer; it decides nothing.
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
    }

    /// GETs `path_and_query` for a background prefetch: one attempt, only if the guard gives
    /// leave at once ([`ApplianceGuard::admit_prefetch`]); `Saturated` when it does not.
    pub async fn get_prefetch(
        &self,
        path_and_query: &str,
        traceparent: Option<&str>,
    ) -> Result<Bytes, UpstreamError> {
        let Some(ticket) = self.guard.admit_prefetch().await else {
            return Err(UpstreamError::Saturated {
                retry_after_secs: 1,
            });
        };
        self.metrics.prefetch_requests.inc();
        let result = self.send(path_and_query, traceparent, self.timeout).await;
        ticket.done(outcome(&result));
        result
    }

    /// One attempt within `timeout`, no retries, for readiness: it takes an in-flight slot
    /// (waiting at most `timeout`; else `Saturated`, the slots being busy with callers'
    /// requests) but no token and no breaker trial, and its outcome never moves the breaker.
    pub async fn probe(
        &self,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Bytes, UpstreamError> {
        let Some(_slot) = self.guard.admit_probe(timeout).await else {
            return Err(UpstreamError::Saturated {
                retry_after_secs: timeout.as_secs().max(1),
            });
        };
        self.send(path_and_query, None, timeout).await
    }

    /// Sends once, and counts the outcome and its time.
    async fn send(
        &self,
        path_and_query: &str,
        traceparent: Option<&str>,
        timeout: Duration,
    ) -> Result<Bytes, UpstreamError> {
        let started = std::time::Instant::now();
        let result = self.send_once(path_and_query, traceparent, timeout).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(UpstreamError::BadSignature) => "bad_signature",
            Err(UpstreamError::BadDate) => "bad_date",
            Err(UpstreamError::Redirected { .. }) => "redirected",
            Err(UpstreamError::Refused { .. }) => "refused",
            Err(UpstreamError::Throttled { .. }) => "throttled",
            Err(UpstreamError::Rejected { status: 500.., .. }) => "server_error",
            Err(UpstreamError::Rejected { .. }) => "rejected",
            Err(UpstreamError::Timeout(_)) => "timeout",
            Err(UpstreamError::Connect(_)) => "connect_error",
            Err(UpstreamError::Untrusted { .. }) => "untrusted_certificate",
            Err(UpstreamError::Body(_)) => "broken_body",
            Err(UpstreamError::TooLarge(_)) => "too_large",
            Err(_) => "other",
        };
        let labels = [&*self.name, outcome];
        self.metrics
            .upstream_requests
            .with_label_values(&labels)
            .inc();
        self.metrics
            .upstream_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        result
    }

    #[tracing::instrument(name = "attempt", skip(self, traceparent, timeout), fields(status))]
    async fn send_once(
        &self,
        path_and_query: &str,
        traceparent: Option<&str>,
        timeout: Duration,
    ) -> Result<Bytes, UpstreamError> {
        // The base may carry a path prefix; the appliance signs what it sees after the host.
        let full_path = format!(
            "{}{}",
            self.base.path().trim_end_matches('/'),
            path_and_query
        );
        let mut url = self.base.clone();
        url.set_path("");
        let url = format!("{}{}", url.as_str().trim_end_matches('/'), full_path);
        let signed = sign::sign_at(
            &self.private_token,
            &self.public_token,
            &full_path,
            self.clock.now_ms(),
        );
        let mut request = self
            .http
            .get(&url)
            .timeout(timeout)
            .header("DTAPI-Token", signed.token)
            .header("DTAPI-Date", signed.date)
            .header("DTAPI-Signature", signed.signature)
            .header("Accept", "application/json");
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(e, timeout))?;
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        if status.is_redirection() {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            return Err(UpstreamError::Redirected { location });
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = self.read_body(response).await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(classify_failure(status, retry_after, &body, &self.base))
    }

    /// `text` with the appliance's address taken out: for messages that reach callers.
    pub fn scrub(&self, text: &str) -> String {
        scrub(text, &self.base)
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, UpstreamError> {
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(UpstreamError::TooLarge(self.max_body));
        }
        let mut buf = BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > self.max_body {
                        return Err(UpstreamError::TooLarge(self.max_body));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf.freeze()),
                Err(e) => return Err(self.transport_error(e, self.timeout)),
            }
        }
    }

    fn transport_error(&self, e: reqwest::Error, timeout: Duration) -> UpstreamError {
        // Causes are shown to operators (readiness, logs); the appliance's address is in the
        // settings already.
        let e = e.without_url();
        if e.is_timeout() {
            UpstreamError::Timeout(timeout)
        } else if e.is_connect() {
            match tls::refusal(&e) {
                Some(reason) => UpstreamError::Untrusted {
                    reason,
                    cause: Arc::new(e),
                },
                None => UpstreamError::Connect(Arc::new(e)),
            }
        } else {
            UpstreamError::Body(Arc::new(e))
        }
    }
}

/// What a request's result tells the breaker.
fn outcome(result: &Result<Bytes, UpstreamError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Answered,
        Err(e) if e.is_appliance_failure() => Outcome::Failed,
        Err(_) => Outcome::Refused,
    }
}

/// The appliance's budget is per appliance and token: a short hash of both.
fn budget_name(base: &str, public_token: &str) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(&Sha1::digest(format!("{base}|{public_token}"))[..8])
}

/// How long a throttled gateway waits when the appliance's 429 does not say.
const THROTTLED_RETRY_SECS: u64 = 30;
/// The most of an appliance's refusal a caller is shown.
const REFUSAL_CHARS: usize = 200;

fn classify_failure(
    status: StatusCode,
    retry_after: Option<u64>,
    body: &[u8],
    base: &Url,
) -> UpstreamError {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return UpstreamError::Throttled {
            retry_after_secs: retry_after.unwrap_or(THROTTLED_RETRY_SECS).clamp(1, 3600),
        };
    }
    if status == StatusCode::BAD_REQUEST {
        if text.contains("API SIGNATURE ERROR") {
            return UpstreamError::BadSignature;
        }
        if text.contains("API DATE ERROR") {
            return UpstreamError::BadDate;
        }
    }
    let reason = reason(body).unwrap_or_else(|| text.trim().to_owned());
    if status == StatusCode::BAD_REQUEST {
        let first_line = reason.lines().map(str::trim).find(|l| !l.is_empty());
        let message: String = scrub(first_line.unwrap_or(""), base)
            .chars()
            .take(REFUSAL_CHARS)
            .collect();
        return UpstreamError::Refused {
            message: if message.is_empty() {
                "(no reason given)".to_owned()
            } else {
                message
            },
        };
    }
    UpstreamError::Rejected {
        status: status.as_u16(),
        message: scrub(&reason, base).chars().take(300).collect(),
    }
}

/// The reason in an appliance's JSON error: `{"error": "…"}`, or the appliance's own
/// `{"<endpoint>": "…"}` with one text value.
fn reason(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    if let Some(error) = object.get("error").and_then(|e| e.as_str()) {
        return Some(error.to_owned());
    }
    match object.values().collect::<Vec<_>>().as_slice() {
        [only] => only.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Replaces the appliance's URL, `host:port` and host in `text` (any case) with `<appliance>`.
fn scrub(text: &str, base: &Url) -> String {
    let mut needles: Vec<String> = vec![base.as_str().trim_end_matches('/').to_owned()];
    if let Some(host) = base.host_str() {
        if let Some(port) = base.port_or_known_default() {
            needles.push(format!("{host}:{port}"));
        }
        needles.push(host.to_owned());
    }
    let mut out = text.to_owned();
    for needle in needles.iter().filter(|n| !n.is_empty()) {
        out = replace_ignoring_case(&out, needle, "<appliance>");
    }
    out
}

fn replace_ignoring_case(text: &str, needle: &str, with: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(&needle) {
        out.push_str(&text[at..at + found]);
        out.push_str(with);
        at += found + needle.len();
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_first_line_and_never_the_appliances_address() {
        let base = Url::parse("https://DT-01.example.internal:8443").unwrap();
        let body = br#"{"error": "Invalid applicationprotocol at https://dt-01.example.internal:8443/metricdata\nTraceback: ..."}"#;
        let e = classify_failure(StatusCode::BAD_REQUEST, None, body, &base);
        let UpstreamError::Refused { message } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            message,
            "Invalid applicationprotocol at <appliance>/metricdata"
        );

        let long = format!("{{\"metricdata\": \"{}\"}}", "x".repeat(500));
        let UpstreamError::Refused { message } =
            classify_failure(StatusCode::BAD_REQUEST, None, long.as_bytes(), &base)
        else {
            panic!()
        };
        assert_eq!(message.chars().count(), 200);

        let plain = b"bad input from 10.0.0.1 on dt-01.example.internal";
        let UpstreamError::Refused { message } =
            classify_failure(StatusCode::BAD_REQUEST, None, plain, &base)
        else {
            panic!()
        };
        assert!(!message.to_lowercase().contains("dt-01"), "{message}");
    }

    #[test]
    fn throttling_keeps_the_appliances_retry_after() {
        let base = Url::parse("http://127.0.0.1:1").unwrap();
        let e = classify_failure(StatusCode::TOO_MANY_REQUESTS, Some(7), b"slow down", &base);
        assert!(matches!(
            e,
            UpstreamError::Throttled {
                retry_after_secs: 7
            }
        ));
        let e = classify_failure(StatusCode::TOO_MANY_REQUESTS, None, b"", &base);
        assert!(matches!(
            e,
            UpstreamError::Throttled {
                retry_after_secs: THROTTLED_RETRY_SECS
            }
        ));
    }
}
