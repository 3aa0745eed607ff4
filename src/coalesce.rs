//! Single flight: concurrent askers of one key share one fetch, and its value or its error.
//!
//! The fetch runs as its own task, so it completes (and fills whatever cache it fills) even if
//! every caller that wanted it has gone away.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

pub type SharedFetch<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;

/// A fetch task that ended without an answer (it panicked): our failure, not the appliance's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the fetch task ended without an answer")]
pub struct TaskFailed {
    #[source]
    cause: Arc<tokio::task::JoinError>,
}

/// How a caller got its fetch.
pub enum Joined<V, E> {
    /// This caller started the fetch.
    Started(SharedFetch<V, E>),
    /// Another caller's fetch was already running; this one waits for it.
    Collapsed(SharedFetch<V, E>),
}

impl<V, E> Joined<V, E> {
    pub fn is_collapsed(&self) -> bool {
        matches!(self, Joined::Collapsed(_))
    }

    pub fn into_fetch(self) -> SharedFetch<V, E> {
        match self {
            Joined::Started(f) | Joined::Collapsed(f) => f,
        }
    }
}

pub struct Coalescer<K, V, E> {
    inflight: Arc<Mutex<HashMap<K, SharedFetch<V, E>>>>,
}

impl<K, V, E> Default for Coalescer<K, V, E> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

impl<K, V, E> Coalescer<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: From<TaskFailed> + Clone + Send + Sync + 'static,
{
    /// Joins the running fetch for `key`, or starts `fetch`.
    ///
    /// A fetch that finished just after the caller looked in its store is not joined, so
    /// `fetch` should look in the store again first: the finished fetch stored its value
    /// before leaving the in-flight map, so the second look finds it.
    pub fn join_or_start<F>(&self, key: K, fetch: F) -> Joined<V, E>
    where
        F: std::future::Future<Output = Result<V, E>> + Send + 'static,
    {
        let Ok(mut map) = self.inflight.lock() else {
            // A poisoned lock only means a panic elsewhere; fetch without coalescing.
            return Joined::Started(fetch.boxed().shared());
        };
        if let Some(running) = map.get(&key) {
            return Joined::Collapsed(running.clone());
        }
        let inflight = self.inflight.clone();
        let task_key = key.clone();
        // The fetch keeps the span of the request that started it, so its logs carry that
        // request's id.
        let span = tracing::Span::current();
        let handle = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = fetch.await;
                if let Ok(mut map) = inflight.lock() {
                    map.remove(&task_key);
                }
                result
            },
            span,
        ));
        let cleanup = self.inflight.clone();
        let cleanup_key = key.clone();
        let shared = async move {
            handle.await.unwrap_or_else(|e| {
                // A panicked task never removed itself.
                if let Ok(mut map) = cleanup.lock() {
                    map.remove(&cleanup_key);
                }
                Err(E::from(TaskFailed { cause: Arc::new(e) }))
            })
        }
        .boxed()
        .shared();
        map.insert(key, shared.clone());
        Joined::Started(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    enum Failure {
        Ours,
    }

    impl From<TaskFailed> for Failure {
        fn from(_: TaskFailed) -> Self {
            Failure::Ours
        }
    }

    #[tokio::test]
    async fn a_panicked_fetch_is_our_failure_and_frees_its_key() {
        let c: Coalescer<u8, u8, Failure> = Coalescer::default();
        let f = c
            .join_or_start(1, async { panic!("a bug of ours") })
            .into_fetch();
        assert_eq!(f.await, Err(Failure::Ours));
        let again = c.join_or_start(1, async { Ok(7) });
        assert!(!again.is_collapsed(), "the key was freed");
        assert_eq!(again.into_fetch().await, Ok(7));
    }
}
