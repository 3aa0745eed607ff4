//! The appliance's metric catalog (`/metrics`) → [`MetricInfo`]s.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AnswerError;

/// One metric the appliance knows, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricInfo {
    /// The name to use in `metric`/`metrics`.
    #[schema(example = "externalconnections")]
    pub name: String,
    #[schema(example = "External Connections")]
    pub label: Option<String>,
    #[schema(example = "connections")]
    pub units: Option<String>,
    /// Seconds one raw value covers.
    #[schema(example = 60)]
    pub unitsinterval: Option<u64>,
    /// Filters the metric supports.
    #[serde(default)]
    pub filtertypes: Vec<String>,
    /// The appliance's own id for the metric (differs between appliances).
    pub mlid: Option<u64>,
    /// Metric set, `A` or `C`.
    pub set: Option<String>,
    pub lengthscale: Option<f64>,
}

/// Decodes `GET /metrics`: an array of metric objects, sorted here by name.
pub fn catalog(body: &[u8]) -> Result<Vec<MetricInfo>, AnswerError> {
    let mut metrics: Vec<MetricInfo> =
        serde_json::from_slice(body).map_err(|e| AnswerError::UnknownShape {
            reason: format!("/metrics: {e}"),
            cause: Some(std::sync::Arc::new(e)),
        })?;
    metrics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(metrics)
}
