//! Request coalescing: concurrent askers of one key share one fetch, and its error.
//!
//! The fetch runs as its own task, so it completes (and fills the cache) even if every
//! caller that wanted it has gone away.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::upstream::UpstreamError;

pub type SharedFetch<V> = Shared<BoxFuture<'static, Result<V, UpstreamError>>>;

/// How a caller got its fetch.
pub enum Joined<V> {
    /// This caller started the fetch.
    Started(SharedFetch<V>),
    /// Another caller's fetch was already running; this one waits for it.
    Collapsed(SharedFetch<V>),
}

pub struct Coalescer<K, V> {
    inflight: Arc<Mutex<HashMap<K, SharedFetch<V>>>>,
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins the running fetch for `key`, or starts `fetch`.
    ///
    /// A fetch that finished just after the caller looked in its store is not joined, so
    /// `fetch` should look in the store again first: the finished fetch stored its value
    /// before leaving the in-flight map, so the second look finds it.
    pub fn join_or_start<F>(&self, key: K, fetch: F) -> Joined<V>
    where
        F: std::future::Future<Output = Result<V, UpstreamError>> + Send + 'static,
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
        let shared = async move {
            handle
                .await
                .unwrap_or_else(|e| Err(UpstreamError::Body(format!("the fetch task failed: {e}"))))
        }
        .boxed()
        .shared();
        map.insert(key, shared.clone());
        Joined::Started(shared)
    }
}
