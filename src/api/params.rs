//! The OpenAPI parameters of both metric-data routes, generated from the one list the parser
//! reads ([`crate::query::PARAMETERS`]), so the document cannot drift from what is accepted.

use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Required, Schema};

use crate::query::{self, Example, Shape};

/// `/v1/metricdata`'s parameters.
pub struct MetricDataParams;

/// `/darktrace/metricdata`'s parameters (the SDK's spellings).
pub struct SdkMetricDataParams;

/// `/appliance/metricdata`'s parameters: the SDK's spellings are the appliance's, plus the
/// guide's `startTime`/`endTime`, which are not listed (they are `starttime`/`endtime`).
pub struct ApplianceMetricDataParams;

fn schema(shape: Shape) -> Schema {
    let integer = |format, min: i64, max: Option<i64>| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(format)))
            .minimum(Some(min as f64))
            .maximum(max.map(|m| m as f64))
            .into()
    };
    match shape {
        Shape::Text => ObjectBuilder::new().schema_type(Type::String).into(),
        Shape::Token(max) => ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^[A-Za-z0-9_.:-]{{1,{max}}}$")))
            .into(),
        Shape::Id => integer(KnownFormat::Int64, 1, None),
        Shape::Port => integer(KnownFormat::Int32, 1, Some(65535)),
        Shape::Boolean => ObjectBuilder::new().schema_type(Type::Boolean).into(),
        Shape::List => ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::String))
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
            let list = p.shape == Shape::List;
            ParameterBuilder::new()
                .name(p.name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(doc))
                .schema(Some(schema(p.shape)))
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
