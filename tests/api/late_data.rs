//! Empty and late data are not pinned: an appliance that is behind (or restarting) answers a
//! range older than the settle window with its newest buckets missing; that answer lives only
//! as long as a live one, and a later request gets the filled-in data. An appliance that
//! revises its newest bucket is read again once the bucket is no longer live. Both paths
//! (segments and direct); the simulator runs on the gateway's clock, which the tests move.

use std::time::Duration;

use metricgate::sim::Profile;

use crate::helpers::{Answer, TestApp, spawn_app, spawn_app_with};

const MINUTE: i64 = 60_000;

async fn both_paths() -> [TestApp; 2] {
    [
        spawn_app().await,
        spawn_app_with(|s| s.segments.enabled = false).await,
    ]
}

fn times(a: &Answer) -> Vec<i64> {
    a.body["series"][0]["points"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["timestamp"].as_i64()).collect())
        .unwrap_or_default()
}

fn max_age(a: &Answer) -> i64 {
    a.header("cache-control")
        .strip_prefix("max-age=")
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test]
async fn a_behind_appliances_missing_buckets_are_filled_in_later() {
    for app in both_paths().await {
        // 30 minutes behind; the range ended 15 minutes ago (older than the 10-minute settle
        // window, so it would be "historic"), an hour long, in 5-minute buckets.
        app.sim.set_profile(Profile {
            behind_minutes: 30,
            ..Profile::default()
        });
        let now = app.clock.now_ms();
        let end = (now / (5 * MINUTE)) * 5 * MINUTE - 15 * MINUTE;
        let start = end - 60 * MINUTE;
        let q = format!(
            "/v1/metricdata?metric=connections&starttime={start}&endtime={end}&interval=5min"
        );
        let early = app.get(&q).await;
        assert_eq!(early.status, 200, "{}", early.body);
        let got = times(&early);
        assert!(got.len() < 12, "the appliance is behind: {got:?}");
        assert!(
            (0..=60).contains(&max_age(&early)),
            "a late answer is kept like a live one: {}",
            early.header("cache-control")
        );

        app.advance(Duration::from_secs(20 * 60));
        let later = app.get(&q).await;
        assert_eq!(later.status, 200);
        assert_eq!(times(&later).len(), 12, "filled in: {:?}", times(&later));
        assert_eq!(*times(&later).last().unwrap(), end - 5 * MINUTE);
        assert!(
            max_age(&later) > 3600,
            "a complete historic answer is kept long: {}",
            later.header("cache-control")
        );
    }
}

#[tokio::test]
async fn a_restarting_appliances_empty_answer_is_not_pinned() {
    for app in both_paths().await {
        app.sim.set_profile(Profile {
            behind_minutes: 24 * 60,
            ..Profile::default()
        });
        // It lost its last day; the range ended 15 minutes ago.
        let end = app.clock.now_ms() / (5 * MINUTE) * 5 * MINUTE - 15 * MINUTE;
        let start = end - 60 * MINUTE;
        let q = &format!(
            "/v1/metricdata?metric=connections&did=4&starttime={start}&endtime={end}&interval=5min&breachtimes=true"
        );
        let empty = app.get(q).await;
        assert_eq!(empty.status, 200);
        assert!(times(&empty).is_empty());
        assert!(
            (0..=60).contains(&max_age(&empty)),
            "{}",
            empty.header("cache-control")
        );
        // Back on its feet: the empty answer is gone within a live answer's lifetime.
        app.sim.set_profile(Profile::default());
        app.advance(Duration::from_secs(120));
        let full = app.get(q).await;
        assert_eq!(times(&full).len(), 12);
        assert!(max_age(&full) > 3600);
    }
}

#[tokio::test]
async fn a_revised_newest_bucket_is_read_again() {
    let mut finals = Vec::new();
    for app in both_paths().await {
        app.sim.set_profile(Profile {
            revise_minutes: 3,
            ..Profile::default()
        });
        let now = app.clock.now_ms();
        let end = now / MINUTE * MINUTE;
        let start = end - 30 * MINUTE;
        let q = format!(
            "/v1/metricdata?metric=connections&starttime={start}&endtime={end}&interval=1min"
        );
        let provisional = app.get(&q).await;
        assert_eq!(provisional.status, 200);
        assert_eq!(times(&provisional).len(), 30);
        app.advance(Duration::from_secs(15 * 60));
        let revised = app.get(&q).await;
        assert_eq!(revised.status, 200);
        let value = |a: &Answer, i: usize| a.body["series"][0]["points"][i]["value"].as_i64();
        assert!(
            value(&revised, 29) > value(&provisional, 29),
            "the newest bucket was revised up"
        );
        assert_eq!(
            value(&revised, 10),
            value(&provisional, 10),
            "older buckets are final"
        );
        finals.push((end, revised.body["series"].clone()));
    }
    // Both paths read the same revision (the ranges are one minute apart at most).
    if finals[0].0 == finals[1].0 {
        assert_eq!(finals[0].1, finals[1].1);
    }
}
