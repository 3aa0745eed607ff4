//! The OpenAPI document (the contract's source of truth) and Swagger UI.

use std::time::Duration;

use serde_json::Value;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::schema::{
    ArrayBuilder, ArrayItems, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::catalog::{MetricCatalog, MetricInfo};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::fetch::FetchError;
use crate::normalize::{AnswerError, Breach, Device, MetricData, Point, Series, TimeRange};
use crate::query::{self, Dialect, FieldError, MetricQuery};
use crate::reload::ReloadError;
use crate::settings::{QueryLimits, Settings, SettingsError};
use crate::upstream::UpstreamError;

#[derive(OpenApi)]
#[openapi(
    modifiers(&OversizedRequests, &ProblemExamples, &PrometheusValues, &PickedFields),
    info(
        title = "metricgate",
        description = "An internal gateway in front of a Darktrace appliance's time-series API. \
It validates `/metricdata` queries, signs and forwards them, caches the answers and returns one \
normalized schema. No authentication: callers never hold appliance tokens.",
        license(name = "MIT"),
    ),
    paths(
        super::metricdata::get_metricdata,
        super::metrics::get_metrics,
        super::appliances::list,
        super::darktrace::get_metricdata,
        super::darktrace::get_metrics,
        super::darktrace::get_metric,
        super::appliance::get_metricdata,
        super::appliance::get_metrics,
        super::appliance::get_metric,
        super::darktrace::get_named_metricdata,
        super::darktrace::get_named_metrics,
        super::darktrace::get_named_metric,
        super::appliance::get_named_metricdata,
        super::appliance::get_named_metrics,
        super::appliance::get_named_metric,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::prometheus,
        super::prometheus::query::get_query,
        super::prometheus::query::post_query,
        super::prometheus::query::get_query_range,
        super::prometheus::query::post_query_range,
        super::prometheus::query::format_query,
        super::prometheus::query::post_format_query,
        super::prometheus::query::query_exemplars,
        super::prometheus::query::post_query_exemplars,
        super::prometheus::listing::get_labels,
        super::prometheus::listing::post_labels,
        super::prometheus::listing::label_values,
        super::prometheus::listing::get_series,
        super::prometheus::listing::post_series,
        super::prometheus::listing::metadata,
        super::prometheus::listing::buildinfo,
        super::prometheus::listing::rules,
        super::prometheus::listing::alerts,
    ),
    components(schemas(
        MetricData, MetricQuery, TimeRange, Series, Device, Point, Breach,
        MetricCatalog, MetricInfo, Problem, FieldError,
        super::ops::Health, super::ops::Ready, super::appliances::ApplianceListing,
        crate::render::appliance::ApplianceElement, crate::render::appliance::ApplianceBreaches,
        crate::render::appliance::ApplianceBreach, crate::render::appliance::ApplianceMetric,
        crate::render::appliance::AppliancePoint,
        crate::error::PrometheusFailure,
    )),
    tags(
        (name = "metrics", description = "Darktrace metric data"),
        (name = "darktrace-sdk", description = "A drop-in for scripts written against darktrace-sdk: \
set `host=\"http://<gateway>/darktrace\"`. The SDK's parameters, the shapes its documentation shows."),
        (name = "appliance", description = "For scripts written against the vendor's API guide, which call the appliance \
directly: change only the host to `http://<gateway>/appliance` (tokens may go). The appliance's parameters and \
its own array answers, from the gateway's cache and under its limits."),
        (name = "operations", description = "Health and readiness"),
        (name = "prometheus", description = "The Prometheus HTTP API over Darktrace metrics, for Grafana's built-in \
Prometheus data source (URL `http://<gateway>/prometheus`). Every series has an `appliance` label, the \
name of the appliance it came from: a selector without an `appliance` matcher reads every appliance, \
`appliance=~\"emea|amer\"` only those, `sum by (appliance)` totals each, and listings are per appliance. \
A metric is the catalog's name; labels are the appliance's filters (`did`, `ddid`, `odid`, `port`, `sourceport`, `destinationport`, `protocol`, \
`applicationprotocol`), `direction` (`in`, `out`) for the parts of a value (without a `direction` matcher \
a selector reads the total), and `hostname`, `ip`, `label` where the device is known. A selector without \
a `did` matcher reads the network-wide series; `did=~\"1|2\"` asks once per device. The step becomes \
the appliance's interval, rounded to whole minutes; the value at a time is the newest complete bucket \
within Prometheus' lookback. Model breaches are `darktrace_model_breach{model, pbid, pid, did}`, valued \
at their score. PromQL is the whole language of Prometheus 3 for float samples: every aggregation, \
binary operator and vector matching, `offset`, `@`, subqueries and the functions; what Prometheus keeps \
behind its experimental feature flag is a `bad_data` naming the part. Errors use Prometheus' envelope."),
    )
)]
pub struct ApiDoc;

/// Every route refuses a request too large to read before routing it (`observe`): a path and
/// query over 8 KiB (414) or headers over the limit (431), as a problem.
struct OversizedRequests;

impl Modify for OversizedRequests {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for (_, item) in doc.paths.paths.iter_mut() {
            let operations = [item.get.as_mut(), item.post.as_mut(), item.delete.as_mut()];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.entry("414".to_owned()).or_insert_with(|| {
                    RefOr::T(problem("The path and query are longer than 8 KiB"))
                });
                responses.entry("431".to_owned()).or_insert_with(|| {
                    RefOr::T(problem(
                        "The request's headers are larger than the gateway reads",
                    ))
                });
            }
        }
    }
}

/// Gives every problem response examples of its own, made by the code that makes the real
/// ones (the parser's messages, `ApiError::problem`), so Swagger UI never shows a 400's body
/// under a 503 and the examples cannot drift from what callers get.
struct ProblemExamples;

impl Modify for ProblemExamples {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // The defaults are a whole configuration load: read once, not per response.
        let limits = Settings::defaults().query;
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [item.get.as_mut(), item.post.as_mut(), item.delete.as_mut()];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let Some(content) = response.content.get_mut(PROBLEM_JSON) else {
                        continue;
                    };
                    let mut examples = problem_examples(path, status, &limits).into_iter();
                    match (examples.next(), examples.len()) {
                        (None, _) => {}
                        (Some((_, _, one)), 0) => content.example = Some(one),
                        (Some(first), _) => {
                            for (name, summary, value) in std::iter::once(first).chain(examples) {
                                let example = ExampleBuilder::new()
                                    .summary(summary)
                                    .value(Some(value))
                                    .build();
                                content.examples.insert(name.to_owned(), RefOr::T(example));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The SDK's and the appliance's catalog routes answer every field of a metric, or only those
/// `responsedata` picks: their answers are `MetricFields`, `MetricInfo` with no field required.
struct PickedFields;

impl Modify for PickedFields {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(info))) = components.schemas.get("MetricInfo") else {
            return;
        };
        let mut fields = info.clone();
        fields.required.clear();
        fields.description = Some(
            "A metric's fields: all of them (as `MetricInfo`), or those `responsedata` picks."
                .to_owned(),
        );
        components
            .schemas
            .insert("MetricFields".to_owned(), RefOr::T(Schema::Object(fields)));
        let one = || RefOr::Ref(utoipa::openapi::Ref::from_schema_name("MetricFields"));
        for (path, list) in [
            ("/darktrace/metrics", true),
            ("/appliance/metrics", true),
            ("/darktrace/metrics/{mlid}", false),
            ("/appliance/metrics/{mlid}", false),
            ("/darktrace/{appliance}/metrics", true),
            ("/appliance/{appliance}/metrics", true),
            ("/darktrace/{appliance}/metrics/{mlid}", false),
            ("/appliance/{appliance}/metrics/{mlid}", false),
        ] {
            let Some(operation) = doc.paths.paths.get_mut(path).and_then(|i| i.get.as_mut()) else {
                continue;
            };
            let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") else {
                continue;
            };
            if let Some(content) = ok.content.get_mut("application/json") {
                content.schema = Some(if list {
                    RefOr::T(ArrayBuilder::new().items(one()).into())
                } else {
                    one()
                });
            }
        }
    }
}

/// Says what the Prometheus API's parameters read, in the URL and in form bodies alike, from
/// the parsers' own patterns ([`crate::promql::time`]): times, durations and counts have
/// their shapes and are never `null` (a form field is text; absent is how to leave one out),
/// a selector or an expression is not empty, a label name is one.
struct PrometheusValues;

impl Modify for PrometheusValues {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let prefix = super::prometheus::PREFIX;
        // A listing of every label needs no parameters: its form body may be left out.
        if let Some(body) = doc
            .paths
            .paths
            .get_mut(&format!("{prefix}/labels"))
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut())
        {
            body.required = Some(Required::False);
        }
        for (_, item) in doc
            .paths
            .paths
            .iter_mut()
            .filter(|(p, _)| p.starts_with(prefix))
        {
            for operation in [item.get.as_mut(), item.post.as_mut()]
                .into_iter()
                .flatten()
            {
                for parameter in operation.parameters.iter_mut().flatten() {
                    let required = matches!(parameter.required, Required::True);
                    if let Some(RefOr::T(schema)) = parameter.schema.as_mut() {
                        prometheus_value(&parameter.name, required, schema);
                    }
                }
            }
        }
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        for (_, schema) in components.schemas.iter_mut() {
            let RefOr::T(Schema::Object(form)) = schema else {
                continue;
            };
            if !form.properties.contains_key("query") && !form.properties.contains_key("match[]") {
                continue;
            }
            for (name, field) in form.properties.iter_mut() {
                let required = form.required.contains(name);
                if let RefOr::T(field) = field {
                    prometheus_value(name, required, field);
                    if name == "match[]" {
                        // Form-encoded, one selector is the same bytes as a list of one.
                        let one: Schema = ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .into();
                        let list = std::mem::replace(field, one.clone());
                        *field = utoipa::openapi::schema::AnyOfBuilder::new()
                            .item(one)
                            .item(list)
                            .into();
                    }
                }
            }
        }
    }
}

/// One Prometheus parameter's schema, made precise by its name. An optional one may be given
/// empty, which counts as absent (as Prometheus reads it).
fn prometheus_value(name: &str, required: bool, schema: &mut Schema) {
    use crate::promql::time;
    let text = |schema: &mut Schema, pattern: Option<String>, min_length: Option<usize>| {
        if let Schema::Object(o) = schema {
            o.schema_type = SchemaType::Type(Type::String);
            o.pattern = match pattern {
                Some(p) if !required => Some(format!("^({})?$", &p[1..p.len() - 1])),
                p => p,
            };
            o.min_length = min_length;
        }
    };
    match name {
        "time" | "start" | "end" => text(schema, Some(time::time_pattern()), None),
        "step" | "timeout" => text(schema, Some(time::duration_pattern()), None),
        "query" => text(schema, None, Some(1)),
        "name" => text(schema, Some("^[A-Za-z_][A-Za-z0-9_]*$".to_owned()), None),
        "limit" | "limit_per_metric" => {
            // A form field's description is on its schema (a parameter's is beside it).
            let description = match schema {
                Schema::Object(o) => o.description.take(),
                _ => None,
            };
            let count: Schema = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
                .maximum(Some(i64::MAX))
                .into();
            *schema = if required {
                count
            } else {
                super::params::or_empty(count)
            };
            match schema {
                Schema::AnyOf(any) => any.description = description,
                Schema::Object(o) => o.description = description,
                _ => {}
            }
        }
        "match[]" => {
            if let Schema::Array(a) = schema {
                a.schema_type = SchemaType::Type(Type::Array);
                a.min_items = required.then_some(1);
                if let ArrayItems::RefOrSchema(items) = &mut a.items
                    && let RefOr::T(item) = items.as_mut()
                {
                    text(item, None, Some(1));
                }
            }
        }
        _ => {}
    }
}

/// (name, summary, problem) for one route's response status.
fn problem_examples(
    path: &str,
    status: &str,
    limits: &QueryLimits,
) -> Vec<(&'static str, &'static str, Value)> {
    let problem = |e: ApiError| serde_json::to_value(e.problem()).unwrap_or_default();
    let invalid = |errors: Vec<FieldError>| problem(ApiError::InvalidQuery(errors));
    let parse = |dialect, raw: &str| {
        query::parse_in(dialect, raw, limits, &query::AnyMetric, 0)
            .err()
            .unwrap_or_default()
    };
    // A named drop-in path answers as its unnamed twin, and may name an appliance the gateway
    // does not front.
    let unnamed = path.replace("/{appliance}", "");
    let mut examples = match (status, unnamed.as_str()) {
        ("400", "/v1/metricdata") => vec![(
            "invalid-query",
            "Every bad parameter, named",
            invalid(parse(
                Dialect::Gateway,
                "metric=connections&did=1&did=2&interval=7x",
            )),
        )],
        ("400", "/darktrace/metricdata" | "/appliance/metricdata") => vec![(
            "invalid-query",
            "Every bad parameter, named as the SDK sent it",
            invalid(parse(Dialect::Sdk, "metric=bandwidth&did=abc&interval=7x")),
        )],
        (
            "400",
            "/darktrace/metrics"
            | "/darktrace/metrics/{mlid}"
            | "/appliance/metrics"
            | "/appliance/metrics/{mlid}",
        ) => vec![(
            "unknown-field",
            "An unknown field in responsedata",
            invalid(
                super::darktrace::responsedata("responsedata=mlid,nme")
                    .err()
                    .unwrap_or_default(),
            ),
        )],
        ("400", "/internal/cache") => vec![(
            "invalid-filter",
            "A bad purge filter",
            invalid(query::parse_purge("did=0").err().unwrap_or_default()),
        )],
        ("404", _) => vec![(
            "unknown-metric",
            "No metric has this id",
            problem(ApiError::UnknownMetricId(99)),
        )],
        ("409", _) => vec![
            (
                "invalid",
                "The file is invalid: the running configuration stays",
                problem(ApiError::Reload(ReloadError::Invalid(SettingsError(vec![
                    "rate_limit.burst must be greater than 0".into(),
                ])))),
            ),
            (
                "no-file",
                "Started without configuration files (demo)",
                problem(ApiError::Reload(ReloadError::NotFromConfiguration)),
            ),
        ],
        ("429", _) => vec![(
            "rate-limited",
            "Over the caller's limit",
            problem(ApiError::RateLimited {
                retry_after_secs: 6,
            }),
        )],
        ("502", _) => vec![
            (
                "appliance-error",
                "The appliance answered with an error",
                problem(upstream(UpstreamError::Rejected {
                    status: 500,
                    message: "Internal Server Error".into(),
                })),
            ),
            (
                "appliance-credentials",
                "The appliance refused the gateway's signature",
                problem(upstream(UpstreamError::BadSignature)),
            ),
            (
                "appliance-unknown-shape",
                "The appliance's answer has an unknown shape",
                problem(ApiError::Fetch(FetchError::Answer(
                    AnswerError::UnknownShape {
                        reason: "expected an array of metric objects".into(),
                        cause: None,
                    },
                ))),
            ),
        ],
        ("503", _) => vec![
            (
                "appliance-busy",
                "The appliance's request budget is exhausted",
                problem(upstream(UpstreamError::Saturated {
                    retry_after_secs: 5,
                })),
            ),
            (
                "appliance-failing",
                "The circuit breaker is open",
                problem(upstream(UpstreamError::CircuitOpen {
                    retry_after_secs: 15,
                })),
            ),
        ],
        ("504", "/v1/metricdata" | "/darktrace/metricdata" | "/appliance/metricdata") => vec![
            (
                "appliance-timeout",
                "The appliance did not answer in time",
                problem(upstream(UpstreamError::Timeout(Duration::from_secs(30)))),
            ),
            (
                "not-cached",
                "only-if-cached, and nothing is stored",
                problem(ApiError::NotCached),
            ),
        ],
        ("504", _) => vec![(
            "appliance-timeout",
            "The appliance did not answer in time",
            problem(upstream(UpstreamError::Timeout(Duration::from_secs(30)))),
        )],
        _ => Vec::new(),
    };
    if status == "400" && unnamed != path {
        let unknown = crate::fleet::PickError::Unknown {
            asked: "emae".into(),
            choices: vec!["default".into(), "emea".into()],
        };
        examples.push((
            "unknown-appliance",
            "An appliance the gateway does not front",
            invalid(vec![FieldError::new("appliance", unknown.to_string())]),
        ));
    }
    examples
}

fn upstream(e: UpstreamError) -> ApiError {
    ApiError::Fetch(FetchError::Upstream(e))
}
/// The admin surface, served on the admin listener (`admin.listen`) at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "metricgate admin",
        description = "The operator's endpoints: the cache, the limits in force and readiness with \
its reasons. Served on the admin listener (`admin.listen`, loopback by default), or on the main \
port when `admin.listen` is empty. When `admin.token` is set, every one needs \
`Authorization: Bearer <admin token>`.",
        license(name = "MIT"),
    ),
    paths(
        super::admin::get_cache,
        super::admin::delete_cache,
        super::admin::get_limits,
        super::admin::reload,
        super::ops::readiness_detail,
    ),
    components(schemas(
        Problem, FieldError,
        super::ops::Readiness, crate::health::ProbeResult, crate::health::ProbeStatus,
        crate::cache::CacheReport, crate::cache::segments::SegmentReport, crate::cache::Purged, super::admin::Limits,
        crate::settings::ClientQuota, crate::upstream::GuardReport, crate::upstream::BreakerState,
        crate::reload::ReloadReport,
    )),
    tags((name = "admin", description = "For operators, off the public surface")),
)]
pub struct AdminApiDoc;

/// The document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `/docs` → `/docs/`, where Swagger UI is (its relative links need the slash).
pub async fn docs_without_slash() -> actix_web::HttpResponse {
    actix_web::HttpResponse::PermanentRedirect()
        .insert_header((actix_web::http::header::LOCATION, "/docs/"))
        .finish()
}

/// The admin surface's document as pretty JSON, exactly as committed in `openapi/admin.json`.
pub fn admin_document() -> String {
    let mut text = AdminApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}

/// Serves the admin surface's OpenAPI document (on the admin listener).
pub async fn serve_admin_document() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(admin_document())
}
