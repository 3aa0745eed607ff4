//! Cold storms queue fairly instead of failing fast: callers' requests that find the
//! appliance's budget spent wait their turn, round robin across callers, and are answered as
//! tokens come; those whose turn cannot come within `upstream.queue_wait_secs` are told when
//! their own place would come, each a different time; the appliance never sees more than its
//! budget, and prefetching waits for the callers. All on the gateway's manual clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use metricgate::settings::Settings;

use crate::helpers::{Answer, TestApp, series_value, spawn_app_with};

const Q: &str =
    "/v1/metricdata?metric=connections&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z";
const MINUTE: i64 = 60_000;

/// A gateway whose appliance budget is 12 a minute: 11 for callers, a burst of 1, then one
/// every 6 s. Callers are told apart by the address the test, a trusted proxy, forwards.
async fn gateway(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(|s| {
        s.upstream.per_minute = 12;
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        adjust(s);
    })
    .await;
    app.ready().await;
    app
}

/// Caller `caller`'s cold question about device `did`, and the gateway's clock when answered.
async fn ask(app: &TestApp, did: u32, caller: u8, answered: &AtomicUsize) -> (u32, Answer, i64) {
    let from = format!("10.0.0.{caller}");
    let a = app
        .get_with(&format!("{Q}&did={did}"), &[("x-forwarded-for", &from)])
        .await;
    answered.fetch_add(1, Ordering::SeqCst);
    (did, a, app.clock.now_ms())
}

/// Polls (real time, bounded) until `done` holds: for a test that must know where requests
/// stand before it moves the clock.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..5_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never: {what}");
}

fn did_of(path: &str) -> u32 {
    path.split('&')
        .find_map(|kv| kv.strip_prefix("did="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no did in {path}"))
}

fn retry_after(a: &Answer) -> u64 {
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body["type"], "urn:metricgate:problem:appliance-busy");
    a.header("retry-after").parse().expect("a Retry-After")
}

async fn metrics(app: &TestApp) -> String {
    app.get_text("/metrics").await
}

#[tokio::test]
async fn one_callers_backlog_does_not_starve_another_callers_question() {
    let app = gateway(|s| s.upstream.queue_wait_secs = std::num::NonZero::new(60).unwrap()).await;
    let before = app.upstream_metricdata();
    let answered = AtomicUsize::new(0);
    // A dashboard's eight cold panels: one goes at once, seven wait (6 s apart).
    let backlog = join_all((1..=8).map(|did| ask(&app, did, 1, &answered)));
    let other = async {
        app.wait_for_guard(|g| g["waiting_for_budget"] == 7).await;
        ask(&app, 100, 2, &answered).await
    };
    let drive = async {
        app.wait_for_guard(|g| g["waiting_for_budget"] == 8 && g["waiting_callers"] == 2)
            .await;
        for k in 2..=9 {
            app.advance(Duration::from_secs(6));
            wait_until("the next turn answered", || {
                answered.load(Ordering::SeqCst) == k
            })
            .await;
        }
    };
    let (backlog, other, ()) = tokio::join!(backlog, other, drive);
    for (did, a, _) in backlog.iter().chain([&other]) {
        assert_eq!(a.status, 200, "{did}: {}", a.body);
    }
    let order: Vec<u32> = app
        .upstream_queries()
        .iter()
        .rev()
        .take(9)
        .rev()
        .map(|q| did_of(q))
        .collect();
    // The burst's one, the dashboard's next, then the other caller's: before six of the
    // dashboard's eight panels.
    assert_eq!(order[2], 100, "{order:?}");
    assert_eq!(other.2 - backlog.iter().map(|b| b.2).min().unwrap(), 12_000);
    assert_eq!(app.upstream_metricdata(), before + 9);
}

#[tokio::test]
async fn a_cold_storm_is_answered_as_tokens_come_and_the_rest_told_their_own_time() {
    // The issue's case: 40 cold questions at 12 a minute, waits of 30 s (the default).
    let app = gateway(|_| {}).await;
    let t0 = app.clock.now_ms();
    let before = app.upstream_metricdata();
    let answered = AtomicUsize::new(0);
    let storm = join_all((1..=40).map(|did| ask(&app, did, 1, &answered)));
    let drive = async {
        // One goes at once and five wait (their tokens come within 30 s); the other 34
        // cannot be served in time and are told so at once.
        app.wait_for_guard(|g| g["waiting_for_budget"] == 5).await;
        wait_until("35 answered", || answered.load(Ordering::SeqCst) == 35).await;
        for k in 1..=5 {
            app.advance(Duration::from_secs(6));
            wait_until("the next waiter answered", || {
                answered.load(Ordering::SeqCst) == 35 + k
            })
            .await;
        }
    };
    let (storm, ()) = tokio::join!(storm, drive);
    let mut served: Vec<i64> = storm
        .iter()
        .filter(|(_, a, _)| a.status == 200)
        .map(|(_, _, at)| (at - t0) / 1000)
        .collect();
    served.sort_unstable();
    assert_eq!(
        served,
        [0, 6, 12, 18, 24, 30],
        "answered as tokens came, not refused"
    );
    let refused: Vec<_> = storm.iter().filter(|(_, a, _)| a.status != 200).collect();
    assert!(
        refused.iter().all(|(_, _, at)| *at == t0),
        "nobody refused after waiting"
    );
    // Each told a later time than the one before, a token (6 s) apart, from when the budget
    // would reach the first place past the queue.
    let mut told: Vec<u64> = refused.iter().map(|(_, a, _)| retry_after(a)).collect();
    told.sort_unstable();
    let expected: Vec<u64> = (0..34).map(|k| 36 + 6 * k).collect();
    assert_eq!(told, expected);
    assert_eq!(app.upstream_metricdata(), before + 6);
    let text = metrics(&app).await;
    let value = |series: &str| series_value(&text, series);
    assert_eq!(
        value(r#"metricgate_upstream_queue_refused_total{reason="full"}"#),
        34.0
    );
    assert_eq!(
        value(r#"metricgate_upstream_queue_refused_total{reason="timeout"}"#),
        0.0
    );
    assert_eq!(
        value(r#"metricgate_upstream_queue_wait_seconds_count{outcome="sent"}"#),
        5.0
    );
    assert_eq!(
        value(r#"metricgate_upstream_queue_wait_seconds_sum{outcome="sent"}"#),
        90.0
    );
    assert_eq!(value("metricgate_upstream_queue_waiting"), 0.0);
}

#[tokio::test]
async fn requests_pushed_back_by_other_callers_are_told_their_own_places_when_their_wait_is_up() {
    let app = gateway(|_| {}).await;
    let t0 = app.clock.now_ms();
    let answered = AtomicUsize::new(0);
    // A dashboard's six panels: one at once, five waiting, the last due at 30 s.
    let backlog = join_all((1..=6).map(|did| ask(&app, did, 1, &answered)));
    // Two more callers, one question each: each goes ahead of the dashboard's tail.
    let others = async {
        app.wait_for_guard(|g| g["waiting_for_budget"] == 5).await;
        let second = ask(&app, 100, 2, &answered);
        let third = async {
            app.wait_for_guard(|g| g["waiting_for_budget"] == 6).await;
            ask(&app, 101, 3, &answered).await
        };
        tokio::join!(second, third)
    };
    let drive = async {
        app.wait_for_guard(|g| g["waiting_for_budget"] == 7).await;
        for k in 1..=5 {
            app.advance(Duration::from_secs(6));
            wait_until("the next turn answered", || {
                answered.load(Ordering::SeqCst) > k
            })
            .await;
        }
    };
    let (backlog, (second, third), ()) = tokio::join!(backlog, others, drive);
    let at = |x: &(u32, Answer, i64)| (x.2 - t0) / 1000;
    assert_eq!((second.1.status, at(&second)), (200, 12));
    assert_eq!((third.1.status, at(&third)), (200, 18));
    let mut dashboard: Vec<(u16, i64)> = backlog.iter().map(|b| (b.1.status, at(b))).collect();
    dashboard.sort_unstable();
    assert_eq!(
        dashboard,
        [
            (200, 0),
            (200, 6),
            (200, 24),
            (200, 30),
            (503, 30),
            (503, 30)
        ]
    );
    // The two whose 30 s were up together are told their own places: the next token (6 s)
    // and the one after.
    let mut told: Vec<u64> = backlog
        .iter()
        .filter(|b| b.1.status == 503)
        .map(|b| retry_after(&b.1))
        .collect();
    told.sort_unstable();
    assert_eq!(told, [6, 12]);
    let text = metrics(&app).await;
    assert_eq!(
        series_value(
            &text,
            r#"metricgate_upstream_queue_refused_total{reason="timeout"}"#
        ),
        2.0
    );
    assert_eq!(
        series_value(
            &text,
            r#"metricgate_upstream_queue_wait_seconds_sum{outcome="refused"}"#
        ),
        60.0
    );
}

/// Caller `caller`'s question about `did`, from a task: its status and `Retry-After`.
async fn ask_from_task(http: reqwest::Client, url: String, did: u32, caller: u8) -> (u16, u64) {
    let r = http
        .get(format!("{url}{Q}&did={did}"))
        .header("x-forwarded-for", format!("10.0.0.{caller}"))
        .send()
        .await
        .expect("gateway answers");
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (r.status().as_u16(), retry_after)
}

#[tokio::test]
async fn callers_coming_back_when_told_are_answered_and_the_appliance_never_sees_more_than_its_budget()
 {
    // The catalog due every minute: each of its probes also owes an `/enums`.
    let app =
        gateway(|s| s.upstream.catalog_refresh_secs = std::num::NonZero::new(60).unwrap()).await;
    // Four callers, ten cold questions each, all at once; each refused question is asked
    // again when its Retry-After says.
    struct Question {
        did: u32,
        caller: u8,
        due_ms: i64,
        refused: u32,
        task: Option<tokio::task::JoinHandle<(u16, u64)>>,
    }
    let mut questions: Vec<Question> = (0..40)
        .map(|i| Question {
            did: 1 + i,
            caller: 1 + (i % 4) as u8,
            due_ms: app.clock.now_ms(),
            refused: 0,
            task: None,
        })
        .collect();
    let mut answered = 0;
    // The appliance's /metricdata count at each second.
    let t0 = app.clock.now_ms();
    let mut seen = vec![app.upstream_metricdata()];
    // Everything the appliance was asked, from the gateway's start (its first probe, at this
    // same instant of the clock) on.
    let mut everything = vec![0];
    for _ in 0..600 {
        let now = app.clock.now_ms();
        for q in questions
            .iter_mut()
            .filter(|q| q.task.is_none() && q.due_ms <= now)
        {
            q.task = Some(tokio::spawn(ask_from_task(
                app.http.clone(),
                app.url.clone(),
                q.did,
                q.caller,
            )));
        }
        // Until every question asked is answered or waits its turn.
        for _ in 0..2_500 {
            let running = questions
                .iter()
                .filter(|q| q.task.as_ref().is_some_and(|t| !t.is_finished()))
                .count();
            let limits = app.admin_get("/internal/limits").await;
            if limits.body["appliance"]["waiting_for_budget"] == running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for q in questions.iter_mut() {
            if q.task.as_ref().is_some_and(|t| t.is_finished())
                && let Some(task) = q.task.take()
            {
                match task.await.expect("the task ran") {
                    (200, _) => {
                        answered += 1;
                        q.due_ms = i64::MAX;
                    }
                    (503, secs) => {
                        assert!(secs >= 1);
                        q.refused += 1;
                        q.due_ms = now + i64::try_from(secs).unwrap() * 1000;
                    }
                    (status, _) => panic!("{status}"),
                }
            }
        }
        seen.push(app.upstream_metricdata());
        everything.push(app.sim.stats.snapshot().requests);
        if answered == 40 {
            break;
        }
        app.advance_and_settle(Duration::from_secs(1)).await;
    }
    assert_eq!(answered, 40, "everyone answered in the end");
    // Told their own times, callers coming back found their token: nobody twice refused.
    let refused: Vec<u32> = questions.iter().map(|q| q.refused).collect();
    assert!(refused.iter().all(|r| *r <= 1), "{refused:?}");
    // The callers' 11 a minute at most, in any 60 s.
    let most = seen
        .windows(61)
        .map(|w| w[60] - w[0])
        .max()
        .unwrap_or(seen[seen.len() - 1] - seen[0]);
    assert!(most <= 11, "{most} in one minute");
    // And with the probes (a catalog every minute; its `/enums` takes a callers' token),
    // the 12 of `upstream.per_minute`.
    let most = everything
        .windows(61)
        .map(|w| w[60] - w[0])
        .max()
        .unwrap_or(0);
    assert!(most <= 12, "{most} in one minute");
    // The probes alone keep to their share, one a minute: a catalog's `/enums` waits for
    // the next probe.
    let probes: Vec<u64> = everything.iter().zip(&seen).map(|(a, d)| a - d).collect();
    let most = probes.windows(61).map(|w| w[60] - w[0]).max().unwrap_or(0);
    assert!(most <= 1, "probes: {most} in one minute");
    let asked = everything[everything.len() - 1];
    let data = seen[seen.len() - 1];
    assert!(asked - data >= 4, "the probes went on: {asked} requests");
    // And about as long as the budget needs: the burst's one, then one each 6 s (234 s),
    // and a few turns more when callers that arrived later went ahead of requests already
    // waiting, which then waited in vain and were told a time after everyone else.
    let seconds = (app.clock.now_ms() - t0) / 1000;
    assert!((234..=258).contains(&seconds), "{seconds} s");
}

fn window(now: i64) -> String {
    format!(
        "/v1/metricdata?metric=connections&starttime={}&endtime={now}&interval=5min&did=7",
        now - 24 * 60 * MINUTE
    )
}

#[tokio::test]
async fn prefetching_takes_no_token_while_callers_wait() {
    let app = gateway(|_| {}).await;
    // 40 s past a 5-minute boundary: refreshes a minute apart stay in one bucket.
    let t0 = (app.clock.now_ms().div_euclid(5 * MINUTE) + 1) * 5 * MINUTE + 40_000;
    app.clock.set(t0);
    // A dashboard refreshing every minute: its next refresh is due at t0 + 2 min, and its
    // tail would be prefetched 5 s before.
    assert_eq!(app.get(&window(t0)).await.status, 200);
    app.advance(Duration::from_secs(60));
    assert_eq!(app.get(&window(t0 + MINUTE)).await.status, 200);
    app.advance_and_settle(Duration::from_secs(50)).await;
    let before = app.upstream_metricdata();
    // Then a storm from another caller: one goes at once, four wait (6 s apart).
    let answered = AtomicUsize::new(0);
    let storm = join_all((1..=5).map(|did| ask(&app, did, 2, &answered)));
    let drive = async {
        app.wait_for_guard(|g| g["waiting_for_budget"] == 4).await;
        // The prefetch falls due (and is tried again each second) while they wait.
        app.advance_and_settle(Duration::from_secs(5)).await;
        let deferred = series_value(
            &metrics(&app).await,
            r#"metricgate_prefetches_total{outcome="deferred"}"#,
        );
        assert!(deferred >= 1.0, "the prefetch was due");
        for k in 1..=4 {
            app.advance_and_settle(Duration::from_secs(1)).await;
            wait_until("the next waiter answered", || {
                answered.load(Ordering::SeqCst) == 1 + k
            })
            .await;
            app.advance_and_settle(Duration::from_secs(5)).await;
        }
    };
    let (storm, ()) = tokio::join!(storm, drive);
    assert!(storm.iter().all(|(_, a, _)| a.status == 200));
    let text = metrics(&app).await;
    assert_eq!(
        series_value(&text, "metricgate_prefetch_upstream_requests_total"),
        0.0,
        "no prefetch while callers waited"
    );
    assert_eq!(
        app.upstream_metricdata(),
        before + 5,
        "the callers' five only"
    );
}
