//! `GET /v1/metricdata`: the request handed to the use case ([`crate::service`]), the answer
//! written back with its caching headers.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use futures::future::{Either, LocalBoxFuture};

use super::cache_headers::{self, Refresh};
use super::failures::ApplianceFailures;
use super::lane::lane;
use super::params::MetricDataParams;
use super::pick;
use crate::cache::Directives;
use crate::error::{ApiError, Problem, fanout_reason};
use crate::fleet::Appliance;
use crate::normalize::MetricData;
use crate::query::{Dialect, FieldError, Offer, Representation};
use crate::service::{MetricRequest, MetricService, fanout};
use crate::state::AppState;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Time-series metric data, normalized into one schema.
///
/// Every parameter is validated before anything reaches the appliance; a 400 names every bad
/// parameter at once. Buckets keep one contract whatever the appliance's own alignment: they
/// start at epoch-aligned multiples of the interval, from the one holding the start up to the
/// exclusive end, each the maximum over its whole bucket (see `MetricData`). When part of the
/// appliance's answer has no known shape, the rest is served with a `Warning` header (and a
/// `warnings` list in JSON), never cached. Answers are cached by canonical query (however it is spelled) and time
/// bucket; `Cache-Status`, `Age`, `Cache-Control` and a strong `ETag` say how fresh each one
/// is. Send `Cache-Control: no-cache` to force a fresh fetch (a few times a minute per caller:
/// beyond that the cached answer is served, with `detail=no-cache-limited` in `Cache-Status`),
/// `only-if-cached` to never wait on the appliance, and `If-None-Match` to get a 304 when
/// nothing changed.
///
/// `appliances=emea,amer` asks several appliances at once, each through its own caches and
/// budget, and merges their answers: each series and breach says its `appliance` (CSV gets an
/// `appliance` column). An appliance that fails leaves the others' series, with a `Warning`
/// and a `warnings` entry naming it and `Cache-Control: no-store`; the merged answer is never
/// stored (its parts are, by each appliance's cache), its `Cache-Status` is its most forwarded
/// part's, `Age` the oldest part's and `ETag` over the merged body.
#[utoipa::path(get, path = "/v1/metricdata", tag = "metrics", params(MetricDataParams),
    responses(
        (status = 200, description = "The data: JSON, or CSV with `format=csv` / `Accept: text/csv`", content(
            (MetricData = "application/json"),
            (String = "text/csv", example = "timestamp_iso,timestamp_ms,metric,did,value,in,out\n2024-01-15T12:00:00.000Z,1705320000000,connections,123,762,335,427\n")), headers(
            ("Cache-Status" = String, description = "RFC 9211: `metricgate; hit; ttl=42`, `metricgate; fwd=miss; stored`, an answer another replica fetched (found in Redis) with `detail=shared`, a stale answer with `detail=stale-while-revalidate` / `detail=stale-if-error`, and `detail=no-cache-limited` when the caller's `no-cache` was over its limit. An answer assembled from cached segments without asking the appliance is a hit: `metricgate; hit; ttl=42; detail=assembled`, or `detail=prefetched` when the gateway refreshed its live tail in the background (a hot rolling window); `detail=archive` when some of the answer came from the archive (`cache.archive`: history the appliance may no longer hold). With `appliances=`, one entry for the merged answer: a hit only when every appliance's part was, else `fwd=miss` (`fwd=request`, `fwd=stale`) as its most forwarded part, never `stored` (the merged answer is kept nowhere), `ttl` the least any part has left; `fwd=miss; detail=partial` when an appliance failed"),
            ("Metricgate-Fetched" = String, description = "The ranges the appliance was asked for to make this answer, oldest first: `2026-11-01T00:00:00Z/2026-11-02T00:00:00Z, …` (RFC 3339 UTC, start inclusive, end exclusive; a long cold range is several bounded requests, a rolling window's refresh only its unsettled tail). Only on answers this request fetched; absent on a hit, on an answer assembled from cached segments, and on an answer from several appliances (`appliances=`)"),
            ("Age" = u64, description = "Seconds since the answer was fetched (with `appliances=`, its oldest part)"),
            ("Cache-Control" = String, description = "`max-age=<seconds of freshness left>`"),
            ("ETag" = String, description = "Strong validator of the body"),
            ("Warning" = String, description = "`199 metricgate \"<n> part(s) of the appliance's answer had no known shape and were left out; this answer is not cached\"`: only then, with `Cache-Control: no-store`. With `appliances=`, one per appliance that failed, `199 metricgate \"appliance <name>: <reason>\"` (and one per appliance whose answer was left out in part), also with `Cache-Control: no-store`"),
            ("RateLimit-Policy" = String, description = "The caller's quota: `<per minute>;w=60;burst=<burst>`"),
            ("RateLimit" = String, description = "The caller's budget: `limit=<burst>, remaining=<n>, reset=<seconds until full>`"))),
        (status = 304, description = "Not modified (`If-None-Match` matched)"),
        (status = 400, description = "Invalid parameters; `errors` names each one", body = Problem, content_type = "application/problem+json"),
        ApplianceFailures))]
pub fn get_metricdata(req: HttpRequest, state: web::Data<AppState>) -> Answering {
    serve(req, state, Dialect::Gateway)
}

/// A metric-data response: written at once for a hit (most requests), else the use case's
/// future, boxed because it carries the whole fetch. A hit thus costs no future of its own.
pub(super) type Answering = Either<
    Ready<Result<HttpResponse, ApiError>>,
    LocalBoxFuture<'static, Result<HttpResponse, ApiError>>,
>;

/// What `/v1/metricdata`, `/darktrace/metricdata` and `/appliance/metricdata` share: the
/// request handed to the use case, and its answer written back.
pub(super) fn serve(req: HttpRequest, state: web::Data<AppState>, dialect: Dialect) -> Answering {
    let offer = match dialect {
        Dialect::Gateway => Offer::JsonOrCsv,
        Dialect::Sdk => Offer::Sdk,
        Dialect::Appliance => Offer::Appliance,
    };
    let representation = Representation::negotiate(
        offer,
        req.query_string(),
        header(&req, header::ACCEPT),
        header(&req, header::ACCEPT_ENCODING),
    );
    let directives = cache_headers::directives(&req);
    match pick::several(&req, &state) {
        Err(e) => return Either::Left(ready(Err(e))),
        Ok(Some(_)) if dialect != Dialect::Gateway => {
            return Either::Left(ready(Err(ApiError::InvalidQuery(vec![FieldError::new(
                "appliances",
                "several appliances are asked through /v1/metricdata; this route answers one (name it with `appliance=` or in the path)",
            )]))));
        }
        Ok(Some(appliances)) => {
            return Either::Right(Box::pin(fan_out(
                req,
                state,
                representation,
                directives,
                appliances,
            )));
        }
        Ok(None) => {}
    }
    // A forced refresh (`no-cache`) is never a hit: it goes the whole way.
    let hit = pick::with_appliance(&req, &state, |appliance| {
        appliance
            .service
            .hit(&request(&req, dialect, representation, directives))
    });
    match hit {
        Ok(Some(served)) => {
            let response = cache_headers::respond(&req, &served, representation, Refresh::AsAsked);
            return Either::Left(ready(Ok(response)));
        }
        Ok(None) => {}
        Err(e) => return Either::Left(ready(Err(e))),
    }
    Either::Right(Box::pin(async move {
        let appliance = pick::appliance(&req, &state)?;
        let mut directives = directives;
        let refresh = if directives.no_cache && !may_refetch(&req, &state).await {
            directives.no_cache = false;
            Refresh::Limited
        } else {
            Refresh::AsAsked
        };
        let served = appliance
            .service
            .answer(
                request(&req, dialect, representation, directives),
                &lane(&req, &state),
            )
            .await?;
        Ok(cache_headers::respond(
            &req,
            &served,
            representation,
            refresh,
        ))
    }))
}

/// `appliances=`: the question asked of each appliance named, at once, through each one's own
/// service; the answers merged into one (see [`crate::service::fanout`]).
async fn fan_out(
    req: HttpRequest,
    state: web::Data<AppState>,
    representation: Representation,
    directives: Directives,
    appliances: Vec<Arc<Appliance>>,
) -> Result<HttpResponse, ApiError> {
    let mut directives = directives;
    // One forced refresh of several appliances counts as one: the caller asked once.
    let refresh = if directives.no_cache && !may_refetch(&req, &state).await {
        directives.no_cache = false;
        Refresh::Limited
    } else {
        Refresh::AsAsked
    };
    // Each appliance is asked the question as if named alone, so the parts share its cache
    // with callers asking that appliance alone.
    let raw_query = without_appliances(req.query_string());
    let asked = MetricRequest {
        raw_query: &raw_query,
        ..request(&req, Dialect::Gateway, representation, directives)
    };
    let services: Vec<(&str, &MetricService)> = appliances
        .iter()
        .map(|a| (a.name.as_str(), &a.service))
        .collect();
    let merged = fanout::answer(
        &services,
        &asked,
        &lane(&req, &state),
        representation.format,
        fanout_reason,
    )
    .await?;
    Ok(cache_headers::respond_fanout(
        &req,
        &merged,
        representation,
        refresh,
        state.settings.cache.gzip_min_bytes,
    ))
}

/// `raw` without its `appliances` parameters, the rest as the caller spelled it.
fn without_appliances(raw: &str) -> String {
    raw.split('&')
        .filter(|pair| {
            form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_none_or(|(key, _)| key != "appliances")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn header(req: &HttpRequest, name: HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The question as the use case takes it.
fn request<'r>(
    req: &'r HttpRequest,
    dialect: Dialect,
    representation: Representation,
    directives: Directives,
) -> MetricRequest<'r> {
    MetricRequest {
        dialect,
        raw_query: req.query_string(),
        representation,
        directives,
        traceparent: header(req, TRACEPARENT),
    }
}

/// Whether the caller may force a refresh now (see `rate_limit.no_cache_per_minute`).
async fn may_refetch(req: &HttpRequest, state: &AppState) -> bool {
    let who = state.callers.identify(req);
    state.callers.may_refetch(&who).await
}

#[cfg(test)]
mod tests {
    use super::without_appliances;

    #[test]
    fn each_part_is_asked_the_question_as_spelled_without_the_appliances() {
        assert_eq!(
            without_appliances("metric=a&appliances=emea,amer&did=7&appliances=apac"),
            "metric=a&did=7"
        );
        // Spelled in percent-encoding, it is still the routing parameter; the rest is left
        // as the caller wrote it.
        assert_eq!(
            without_appliances("appliance%73=emea&from=2024-01-15T12%3A00%3A00Z"),
            "from=2024-01-15T12%3A00%3A00Z"
        );
    }
}
