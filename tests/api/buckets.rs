//! Buckets whatever the appliance's alignment: against every bucket profile of the simulator
//! (anchored at the epoch, the start or the start's minute; end exclusive or inclusive), random
//! unaligned ranges at random intervals get the same answer through the segment path and the
//! direct path, and that answer keeps the contract: epoch-aligned buckets from the one holding
//! the start up to the (exclusive) end.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use metricgate::sim::{Anchoring, EndRule, Profile};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// 2024-01-01T00:00:00Z and 2024-03-01T00:00:00Z: well in the past, so nothing is live.
const FROM: i64 = 1_704_067_200_000;
const UNTIL: i64 = 1_709_251_200_000;
const DAY: i64 = 86_400_000;

fn intervals() -> impl Strategy<Value = u64> {
    prop_oneof![
        proptest::sample::select(vec![
            60_u64, 120, 300, 420, 900, 3_600, 5_400, 7_200, 86_400, 604_800, 2_592_000
        ]),
        (1_u64..=1_440).prop_map(|minutes| minutes * 60),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    start: i64,
    end: i64,
    interval: u64,
    breachtimes: bool,
    did: Option<u64>,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        FROM..UNTIL,
        1_i64..i64::MAX,
        intervals(),
        any::<bool>(),
        proptest::option::of(1_u64..50),
    )
        .prop_map(|(start, length, interval, breachtimes, did)| {
            // At most 150 buckets and 40 days: every request stays small for the simulator.
            let longest = (interval as i64 * 1000 * 150).min(40 * DAY);
            Case {
                start,
                end: start + 1 + length % longest,
                interval,
                breachtimes,
                did,
            }
        })
}

fn path(c: &Case) -> String {
    let mut p = format!(
        "/v1/metricdata?metric=connections&starttime={}&endtime={}&interval={}",
        c.start, c.end, c.interval
    );
    if c.breachtimes {
        p.push_str("&breachtimes=true");
    }
    if let Some(did) = c.did {
        p.push_str(&format!("&did={did}"));
    }
    p
}

/// One case against every profile: both paths, fetched afresh, give one answer.
async fn check(segmented: &TestApp, direct: &TestApp, c: &Case) -> Result<(), TestCaseError> {
    let path = path(c);
    let interval_ms = c.interval as i64 * 1000;
    let mut reference: Option<serde_json::Value> = None;
    for profile in Profile::bucket_variants() {
        let mut answers = Vec::new();
        for app in [segmented, direct] {
            app.sim.set_profile(profile.clone());
            app.sim.stats.reset();
            let a = app.get_with(&path, &[("cache-control", "no-cache")]).await;
            prop_assert_eq!(a.status, 200, "{:?} {}: {}", profile, path, a.body);
            // What reached the appliance: bucket boundaries at both ends, every time.
            let sent = app.upstream_queries();
            prop_assert!(!sent.is_empty(), "{}: nothing reached the appliance", path);
            for q in &sent {
                for name in ["starttime", "endtime"] {
                    let value: i64 = q
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| TestCaseError::fail(format!("no {name} in {q}")))?;
                    prop_assert_eq!(value.rem_euclid(interval_ms), 0, "{} in {}", name, q);
                }
            }
            answers.push(a.body);
        }
        prop_assert_eq!(
            &answers[0],
            &answers[1],
            "{:?} {}: the segment path and the direct path differ",
            profile,
            path
        );
        let answer = answers.swap_remove(0);
        let first = c.start.div_euclid(interval_ms) * interval_ms;
        let times: Vec<i64> = answer["series"][0]["points"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["timestamp"].as_i64()).collect())
            .unwrap_or_default();
        prop_assert!(!times.is_empty(), "{}: no points", path);
        prop_assert_eq!(times[0], first, "{:?} {}", profile, path);
        prop_assert!(
            times
                .iter()
                .all(|t| t.rem_euclid(interval_ms) == 0 && (first..c.end).contains(t)),
            "{:?} {}: {:?}",
            profile,
            path,
            times
        );
        let breaches = answer["breaches"].as_array().cloned().unwrap_or_default();
        prop_assert!(
            breaches
                .iter()
                .filter_map(|b| b["time"].as_i64())
                .all(|t| (c.start..c.end).contains(&t)),
            "{}: a breach outside the range",
            path
        );
        match &reference {
            None => reference = Some(answer),
            Some(r) => prop_assert_eq!(
                r,
                &answer,
                "{:?} {}: another appliance profile gave another answer",
                profile,
                path
            ),
        }
    }
    Ok(())
}

#[test]
fn every_appliance_alignment_gives_the_same_buckets_on_both_paths() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (segmented, direct) = runtime.block_on(async {
        (
            spawn_app().await,
            spawn_app_with(|s| s.segments.enabled = false).await,
        )
    });
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&cases(), |c| {
        runtime.block_on(check(&segmented, &direct, &c))
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[tokio::test]
async fn an_unaligned_hour_at_interval_15min_under_each_profile() {
    // 12:02:30 to 12:58:10 at 15 minutes: buckets 12:00, 12:15, 12:30, 12:45, each whole.
    let (segmented, direct) = (
        spawn_app().await,
        spawn_app_with(|s| s.segments.enabled = false).await,
    );
    let path = "/v1/metricdata?metric=connections&from=2024-01-15T12:02:30Z&to=2024-01-15T12:58:10Z&interval=15min";
    let mut bodies = Vec::new();
    for anchoring in [Anchoring::Epoch, Anchoring::Start, Anchoring::Minute] {
        for end in [EndRule::Exclusive, EndRule::Inclusive] {
            for app in [&segmented, &direct] {
                app.sim.set_profile(Profile {
                    anchoring,
                    end,
                    ..Profile::default()
                });
                let a = app.get_with(path, &[("cache-control", "no-cache")]).await;
                assert_eq!(a.status, 200, "{}", a.body);
                let times: Vec<i64> = a.body["series"][0]["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["timestamp"].as_i64().unwrap())
                    .collect();
                assert_eq!(
                    times,
                    [
                        1_705_320_000_000,
                        1_705_320_900_000,
                        1_705_321_800_000,
                        1_705_322_700_000
                    ],
                    "{anchoring:?} {end:?}"
                );
                bodies.push(a.body);
            }
        }
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let sent = direct.upstream_queries();
    assert!(
        sent.iter()
            .all(|q| q.contains("&starttime=1705320000000&endtime=1705323600000&")),
        "{sent:?}"
    );
}

#[tokio::test]
async fn intervals_are_whole_minutes() {
    let app = spawn_app().await;
    for interval in ["90", "61", "150s"] {
        let a = app
            .get(&format!(
                "/v1/metricdata?metric=connections&interval={interval}"
            ))
            .await;
        assert_eq!(a.status, 400, "{interval}");
        assert_eq!(a.bad_parameters(), ["interval"]);
        assert!(
            a.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("whole number of minutes"),
            "{}",
            a.body
        );
    }
    assert_eq!(app.upstream_metricdata(), 0);
}
