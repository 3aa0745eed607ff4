//! Why an appliance answer could not be read.

/// Why an appliance answer could not be read as metric data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnswerError {
    #[error("the appliance's answer matches no known shape: {reason}")]
    UnknownShape {
        reason: String,
        #[source]
        cause: Option<std::sync::Arc<serde_json::Error>>,
    },
    /// An `{"error": …}` inside a 2xx answer.
    #[error("the appliance reported an error: {0}")]
    Reported(String),
    /// A metric that was asked for is not in the answer: an error, never an empty series.
    #[error("the appliance's answer has no `{metric}`{}", device.map(|d| format!(" for device {d}")).unwrap_or_default())]
    MissingMetric { metric: String, device: Option<u64> },
}
