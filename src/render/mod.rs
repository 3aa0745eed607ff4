//! One answer, written in the representation the caller negotiated: JSON, CSV, the shapes
//! darktrace-sdk scripts expect, or the appliance's own array.

pub mod appliance;
pub mod csv;
pub mod sdk;

use std::sync::Arc;

use bytes::Bytes;

use crate::normalize::MetricData;
use crate::query::Format;

/// Our own output could not be written: a bug of ours, never the appliance's doing.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot serialize the answer")]
pub struct RenderError {
    #[source]
    cause: Arc<serde_json::Error>,
}

impl RenderError {
    /// Our own JSON could not be written, or read back (a fan-out reads each appliance's
    /// answer to merge them): a bug of ours either way.
    pub fn json(cause: serde_json::Error) -> Self {
        Self {
            cause: Arc::new(cause),
        }
    }
}

pub fn render(format: Format, data: &MetricData) -> Result<Bytes, RenderError> {
    let failed = |e| RenderError { cause: Arc::new(e) };
    match format {
        Format::Csv => Ok(csv::render(data)),
        Format::Json => serde_json::to_vec(data).map(Bytes::from).map_err(failed),
        Format::Sdk => sdk::render(data).map_err(failed),
        Format::Appliance => appliance::render(data).map_err(failed),
    }
}
