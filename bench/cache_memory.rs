//! What the caches hold on the heap against what their budgets count. The gateway runs in this
//! process (against the simulator, on loopback) under a counting allocator; a few thousand
//! distinct cold questions fill its caches, and the growth of live heap bytes is set against
//! the growth of the bytes `/internal/cache` reports. Allocator overhead (what RSS adds on top
//! of live bytes) is not in this figure; `bench/soak.sh` shows RSS.
//!
//!     cargo bench --bench cache_memory

use std::alloc::{GlobalAlloc, Layout, System};
use std::num::NonZero;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::join_all;
use metricgate::settings::Settings;
use metricgate::sim::Simulator;
use metricgate::startup::Application;
use serde_json::Value;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PUBLIC: &str = "bench-public";
const PRIVATE: &str = "bench-private";
/// Distinct questions per run: enough that per-entry costs dominate.
const QUESTIONS: u64 = 4_000;

/// (responses, response and index bytes, segments, segment bytes)
async fn counted(http: &reqwest::Client, url: &str) -> (u64, u64, u64, u64) {
    let r: Value = http
        .get(format!("{url}/internal/cache"))
        .send()
        .await
        .expect("report")
        .json()
        .await
        .expect("JSON");
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    (
        n(&r["entries"]),
        n(&r["bytes"]) + n(&r["index_bytes"]),
        n(&r["segments"]["entries"]),
        n(&r["segments"]["bytes"]),
    )
}

/// Live heap growth ÷ counted growth, for `QUESTIONS` cold questions like the soak's.
async fn measure(segments: bool) {
    let sim = Simulator::spawn("127.0.0.1:0", PUBLIC, PRIVATE).expect("simulator");
    let mut settings = Settings::for_upstream(&sim.url(), PUBLIC, PRIVATE).expect("valid settings");
    settings.server.listen = ([127, 0, 0, 1], 0).into();
    settings.server.workers = 1;
    settings.segments.enabled = segments;
    settings.rate_limit.per_client_per_minute = NonZero::new(100_000_000).unwrap();
    settings.rate_limit.burst = NonZero::new(10_000_000).unwrap();
    settings.rate_limit.per_ip_per_minute = NonZero::new(100_000_000).unwrap();
    settings.rate_limit.per_ip_burst = NonZero::new(10_000_000).unwrap();
    settings.upstream.per_minute = 100_000_000;
    settings.upstream.max_in_flight = NonZero::new(64).unwrap();
    settings.admin.listen = Some(([127, 0, 0, 1], 0).into());
    let app = Application::build(settings).await.expect("gateway");
    let url = format!("http://127.0.0.1:{}", app.port());
    let admin = format!(
        "http://127.0.0.1:{}",
        app.admin_port().expect("an admin listener")
    );
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let ask = |did: u64| {
        let http = http.clone();
        let url = format!(
            "{url}/v1/metricdata?metric=connections&from=2024-01-15T00:00:00Z&to=2024-01-15T06:00:00Z&interval=5min&did={did}"
        );
        async move {
            let r = http.get(url).send().await.expect("answer");
            assert_eq!(r.status().as_u16(), 200);
            r.bytes().await.expect("body");
        }
    };
    // Warm up connection pools, buffers and the catalog before the baseline.
    for chunk in (1..=200).collect::<Vec<_>>().chunks(16) {
        join_all(chunk.iter().map(|d| ask(*d))).await;
    }
    let before = counted(&http, &admin).await;
    let live_before = LIVE.load(Ordering::Relaxed);
    for chunk in (1_000..1_000 + QUESTIONS).collect::<Vec<_>>().chunks(16) {
        join_all(chunk.iter().map(|d| ask(*d))).await;
    }
    let after = counted(&http, &admin).await;
    let live = LIVE.load(Ordering::Relaxed) - live_before;
    let counted_bytes = (after.1 - before.1) + (after.3 - before.3);
    println!(
        "segments {:<3}  {} responses, {} segments added; counted {:>7} KiB, live heap {:>7} KiB: {:.2}x ({} live bytes per question)",
        if segments { "on" } else { "off" },
        after.0 - before.0,
        after.2 - before.2,
        counted_bytes / 1024,
        live / 1024,
        live as f64 / counted_bytes.max(1) as f64,
        live as u64 / QUESTIONS
    );
}

#[tokio::main]
async fn main() {
    println!(
        "{QUESTIONS} distinct cold questions (6 h at 5 min, one device each), live heap growth against the bytes the caches count"
    );
    measure(false).await;
    measure(true).await;
}
