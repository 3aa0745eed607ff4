//! Why a PromQL request gets no answer, in Prometheus' own words.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromError {
    /// The request is wrong: Prometheus' `bad_data`.
    #[error("{0}")]
    BadData(String),
    /// The query is valid but cannot be evaluated: Prometheus' `execution`.
    #[error("{0}")]
    Execution(String),
}

impl PromError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::BadData(message.into())
    }
}
