//! Why the appliance gave no usable answer, told apart as the breaker, retries and callers
//! need it.

use std::sync::Arc;
use std::time::Duration;

/// Why the appliance gave no usable answer. Cheap to clone: coalesced waiters share one.
/// Transport failures keep their cause (`source()`), TLS refusals included.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("the appliance rejected the request signature (API SIGNATURE ERROR)")]
    BadSignature,
    #[error("the appliance rejected the request date (API DATE ERROR)")]
    BadDate,
    #[error("the appliance redirected to {location:?}")]
    Redirected { location: String },
    /// A 400 that is not about signing: the appliance refused the query itself. `message` is
    /// the first line of its reason, at most 200 characters, with its address taken out.
    #[error("the appliance refused the query: {message}")]
    Refused { message: String },
    /// A 429: the appliance asks the gateway to slow down, for `retry_after_secs` (its own
    /// `Retry-After` when it sends one).
    #[error("the appliance is rate-limiting the gateway")]
    Throttled { retry_after_secs: u64 },
    #[error("the appliance answered {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("the appliance did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to the appliance")]
    Connect(#[source] Arc<reqwest::Error>),
    /// The appliance's TLS certificate is not trusted: a setting to fix, with the reason and
    /// the presented certificate's pin in plain words.
    #[error("{reason}")]
    Untrusted {
        reason: String,
        #[source]
        cause: Arc<reqwest::Error>,
    },
    #[error("the appliance's answer broke off")]
    Body(#[source] Arc<reqwest::Error>),
    #[error("the appliance's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the appliance's request budget is exhausted")]
    Saturated { retry_after_secs: u64 },
    #[error("the appliance is failing; the circuit breaker is open")]
    CircuitOpen { retry_after_secs: u64 },
}

impl UpstreamError {
    /// Worth another try soon: the appliance (or the way to it) hiccuped.
    pub(super) fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::Rejected {
                    status: 502..=504,
                    ..
                }
        )
    }

    /// The appliance is unwell (as opposed to refusing this request): feeds the breaker.
    /// A throttling appliance counts too: it must not be asked again at once.
    pub(super) fn is_appliance_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::Throttled { .. }
                | UpstreamError::Timeout(_)
                | UpstreamError::Body(_)
                | UpstreamError::Rejected { status: 500.., .. }
        )
    }
}
