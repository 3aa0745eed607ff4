//! The OpenAPI parameters of both metric-data routes, generated from the one list the parser
//! reads ([`crate::query::PARAMETERS`]), so the document cannot drift from what is accepted.

use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayBuilder, ArrayItems, KnownFormat, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::{RefOr, Required, Schema};

use crate::query::{self, APPLICATION_PROTOCOL_PATTERN, Example, Shape, TIME_PATTERN};

/// `/v1/metricdata`'s parameters.
pub struct MetricDataParams;

/// `/darktrace/metricdata`'s parameters (the SDK's spellings).
pub struct SdkMetricDataParams;

/// `/appliance/metricdata`'s parameters: the SDK's spellings are the appliance's, plus the
/// guide's `startTime`/`endTime`, which are not listed (they are `starttime`/`endtime`).
pub struct ApplianceMetricDataParams;

/// A metric name, as [`Shape::Token`] spells it.
fn token_pattern(max: usize) -> String {
    format!("[A-Za-z0-9_.:-]{{1,{max}}}")
}

/// A string matching `pattern` (anchored), or empty: every parameter given empty counts as
/// absent.
fn string(pattern: String) -> ObjectBuilder {
    let inner = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or(&pattern);
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^({inner})?$")))
}

/// `schema`, or the empty string: a parameter given empty counts as absent. (Not a type list
/// with `maxLength: 0`: Swagger UI holds every value to `maxLength`.)
pub(crate) fn or_empty(schema: Schema) -> Schema {
    AnyOfBuilder::new()
        .item(schema)
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([""])),
        )
        .into()
}

/// Largest id accepted (exact in JSON numbers everywhere).
const MAX_ID: i64 = (1 << 53) - 1;

/// An appliance's name, as [`crate::settings::ApplianceName`] takes it.
const APPLIANCE_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,31}$";

/// `sdk`: the SDK's and the appliance's `metric`, which also takes `a,b`.
fn schema(shape: Shape, sdk: bool) -> Schema {
    let integer = |format, min: i64, max: i64| {
        or_empty(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(format)))
                .minimum(Some(min as f64))
                .maximum(Some(max as f64))
                .into(),
        )
    };
    let id = || integer(KnownFormat::Int64, 1, MAX_ID);
    match shape {
        Shape::Time => string(TIME_PATTERN.to_owned()).into(),
        Shape::Interval => string(query::interval_pattern()).into(),
        Shape::Protocol => string(query::protocol_pattern()).into(),
        Shape::ApplicationProtocol => string(APPLICATION_PROTOCOL_PATTERN.to_owned()).into(),
        Shape::Token(max) if sdk => {
            let one = token_pattern(max);
            string(format!("^{one}(,{one})*$")).into()
        }
        Shape::Token(max) => string(format!("^{}$", token_pattern(max))).into(),
        Shape::Id => id(),
        Shape::Port => integer(KnownFormat::Int32, 1, 65535),
        Shape::Boolean => or_empty(ObjectBuilder::new().schema_type(Type::Boolean).into()),
        Shape::Metrics => ArrayBuilder::new()
            .items(string(format!("^{}$", token_pattern(64))))
            .into(),
        Shape::Devices => ArrayBuilder::new()
            .items(ArrayItems::RefOrSchema(Box::new(RefOr::T(id()))))
            .into(),
        Shape::Appliance => string(APPLIANCE_PATTERN.to_owned()).into(),
        Shape::Appliances => string(format!(
            "^{one}(,{one})*$",
            one = APPLIANCE_PATTERN.trim_matches(['^', '$'])
        ))
        .into(),
        Shape::Format => ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["json", "csv"]))
            .into(),
    }
}

fn parameters(sdk: bool) -> Vec<Parameter> {
    query::PARAMETERS
        .iter()
        .filter(|p| !sdk || p.in_sdk)
        .map(|p| {
            let doc = if sdk {
                p.sdk_doc.unwrap_or(p.doc)
            } else {
                p.doc
            };
            let list = matches!(p.shape, Shape::Metrics | Shape::Devices);
            ParameterBuilder::new()
                .name(p.name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(doc))
                .schema(Some(schema(p.shape, sdk)))
                .style(list.then_some(ParameterStyle::Form))
                .explode(list.then_some(true))
                .example(p.example.map(|e| match e {
                    Example::Text(t) => serde_json::Value::from(t),
                    Example::Number(n) => serde_json::Value::from(n),
                }))
                .build()
        })
        .collect()
}

impl IntoParams for MetricDataParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        parameters(false)
    }
}

impl IntoParams for SdkMetricDataParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        parameters(true)
    }
}

impl IntoParams for ApplianceMetricDataParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        parameters(true)
    }
}
