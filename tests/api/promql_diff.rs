//! Differential PromQL (#28): every query of `tests/promql/corpus.txt` is asked of the gateway
//! and of a real Prometheus (Debian's `prometheus`, 2.42) that holds the very samples the
//! gateway reads, at the same times, and the answers are compared.
//!
//! - The samples come from the gateway itself: for each resolution (1, 2, 5 and 60 min) its
//!   Prometheus API's buckets of four metrics, three devices and the network-wide series,
//!   totals and `in`/`out` parts, over 2024-01-15 00:00–13:00 UTC, with the labels it gives
//!   them (checked against the simulator's own numbers). They become OpenMetrics text,
//!   backfilled by `promtool tsdb create-blocks-from openmetrics` into a temporary TSDB that a
//!   `prometheus` on a free loopback port serves (killed on drop).
//! - A range query at step `s` reads the appliance's buckets of `s` rounded to whole minutes,
//!   so each resolution has its Prometheus: the 1-minute one answers steps of 45 and 60 s and
//!   the instant queries, the 2-minute one steps of 90 and 120 s, the 5-minute one steps of 270
//!   and 300 s, the hourly one steps of 3600 s (with a lookback of an hour, as the gateway's is the
//!   interval when that is longer than 5 min). Ranges start on a bucket and between two.
//! - The gateway's documented rules are made explicit for Prometheus, not changed in the
//!   gateway: a selector without a `did` (or device detail) matcher reads the network-wide
//!   series (`did=""`), one without `direction` the total (`direction=""`); and the gateway,
//!   like Prometheus 3, reads `x[r]` and `[r:s]` as `(t - r, t]` and the lookback as
//!   `(t - 5m, t]`, where Prometheus 2 includes `t - r`: it is sent `[r - 1ms]` and runs with
//!   a lookback 1 ms shorter, which over millisecond timestamps is the same left-open window.
//! - `rate`, `increase` and `delta` extrapolate from the range itself, so their ranges go to
//!   Prometheus unchanged and a run is only compared where no window's left edge holds a
//!   sample (there Prometheus 2's closed window and Prometheus 3's left-open one hold the same
//!   samples). Of equal values, which ones `topk`/`bottomk` keep is Prometheus' accident (Go's
//!   map order), so there the values kept at each time must agree, not their labels.
//! - Each query is identical (both refuse with the same error type, or both answer the same
//!   result type, label sets and timestamps, values within 1e-9 relative, NaN equal to NaN),
//!   refused by the gateway (`bad_data` `unsupported: …`), or WRONG. No WRONG is allowed but
//!   the gateway bugs found here and reported, marked `wrong: ` in the corpus (which must stay
//!   WRONG until fixed, when the mark goes), and the identical count only ratchets up
//!   ([`IDENTICAL_AT_LEAST`]).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app_with};
use crate::prometheus::appliance_values;

const CORPUS: &str = include_str!("../promql/corpus.txt");

/// The data: 2024-01-15 00:00 to 13:00 UTC.
const EXPORT_START: i64 = 1_705_276_800;
const EXPORT_END: i64 = 1_705_323_600;
/// The queried window, 06:00 to 12:00: queries may read 6 h before it and 1 h after it.
const START: i64 = 1_705_298_400;
const END: i64 = 1_705_320_000;
/// Instant queries: on a bucket's start, and inside it.
const INSTANTS: [i64; 2] = [1_705_309_200, 1_705_309_230];
const METRICS: &str = "connections|bandwidth|datatransfervolume|externalconnections";
const DEVICES: [u64; 3] = [123, 456, 789];
/// The corpus queries identical today: raise it as the gateway learns more PromQL.
const IDENTICAL_AT_LEAST: usize = 438;

#[tokio::test]
async fn the_gateway_answers_the_corpus_as_prometheus_does() {
    let began = Instant::now();
    let app = spawn_app_with(|s| s.prometheus.devices = DEVICES.to_vec()).await;
    app.ready().await;
    let lines: Vec<&str> = CORPUS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // `wrong: <query>`: a gateway bug found by this test and reported, which must stay WRONG
    // until fixed (then the mark goes, and the query counts as identical).
    let known_wrong: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("wrong:").map(str::trim))
        .collect();
    let corpus: Vec<&str> = lines
        .iter()
        .map(|l| l.strip_prefix("wrong:").map_or(*l, str::trim))
        .collect();
    let unique: std::collections::BTreeSet<&str> = corpus.iter().copied().collect();
    assert_eq!(unique.len(), corpus.len(), "a query is in the corpus twice");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Every (query, run) outcome, by query.
    let mut outcomes: BTreeMap<&str, Vec<(String, Outcome)>> = BTreeMap::new();
    // Runs not comparable (see `comparable`), counted for the report.
    let mut skipped = 0usize;
    for (resolution, runs) in runs() {
        let data = export(&app, resolution).await;
        let lookback_ms = 300_000.max(resolution * 1000);
        let prometheus = Prometheus::start(&data, lookback_ms - 1).await;
        let asks = corpus
            .iter()
            .flat_map(|q| runs.iter().map(move |run| (*q, *run)))
            .map(|(query, run)| {
                let (app, http, prometheus) = (&app, &http, &prometheus);
                async move {
                    if !comparable(query, run, resolution) {
                        return (query, run, Outcome::Incomparable);
                    }
                    let gateway = ask(http, &format!("{}/prometheus", app.url), query, run).await;
                    let reference = ask(http, &prometheus.url, &for_prometheus(query), run).await;
                    (query, run, classify(query, &gateway, &reference))
                }
            });
        let answered: Vec<_> = futures::stream::iter(asks).buffered(4).collect().await;
        for (query, run, outcome) in answered {
            if matches!(outcome, Outcome::Incomparable) {
                skipped += 1;
            }
            outcomes
                .entry(query)
                .or_default()
                .push((run.to_string(), outcome));
        }
    }

    let (mut identical, mut refused, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
    let (mut still_wrong, mut fixed) = (Vec::new(), Vec::new());
    for (query, runs) in &outcomes {
        if let Some((run, Outcome::Wrong(why))) =
            runs.iter().find(|(_, o)| matches!(o, Outcome::Wrong(_)))
        {
            let report = format!(
                "{query}\n    {run} (Prometheus: {})\n    {why}",
                for_prometheus(query)
            );
            if known_wrong.contains(query) {
                still_wrong.push(report);
            } else {
                wrong.push(report);
            }
        } else if known_wrong.contains(query) {
            fixed.push(*query);
        } else if let Some((_, Outcome::Refused(why))) =
            runs.iter().find(|(_, o)| matches!(o, Outcome::Refused(_)))
        {
            refused.push(format!("{query}  [{why}]"));
        } else if runs.iter().all(|(_, o)| matches!(o, Outcome::Incomparable)) {
            panic!(
                "{query}: no run can be compared (a window edge of rate, increase or delta \
                 lands on a sample at every run); choose another range"
            );
        } else {
            let samples: usize = runs
                .iter()
                .map(|(_, o)| match o {
                    Outcome::Identical(n) => *n,
                    _ => 0,
                })
                .sum();
            identical.push((*query, samples));
        }
    }
    let with_data = identical.iter().filter(|(_, n)| *n > 0).count();
    println!(
        "promql_diff: {} queries, {} runs each ({skipped} runs not comparable), {:.1} s: {} \
         identical ({with_data} with samples, {} samples compared), {} refused by the gateway, \
         {} WRONG (known gateway bugs), {} WRONG unexpected",
        outcomes.len(),
        runs_per_query(),
        began.elapsed().as_secs_f64(),
        identical.len(),
        identical.iter().map(|(_, n)| n).sum::<usize>(),
        refused.len(),
        still_wrong.len(),
        wrong.len()
    );
    println!("identical without samples (both refuse, or both find nothing):");
    for (query, _) in identical.iter().filter(|(_, n)| *n == 0) {
        println!("  {query}");
    }
    println!("refused:");
    for r in &refused {
        println!("  {r}");
    }
    println!("WRONG, known gateway bugs (marked `wrong:` in the corpus):");
    for w in &still_wrong {
        println!("  {w}");
    }
    println!("WRONG, unexpected:");
    for w in &wrong {
        println!("  {w}");
    }
    assert!(
        wrong.is_empty(),
        "{} queries answered differently from Prometheus:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        fixed.is_empty(),
        "no longer WRONG, so remove their `wrong:` mark in tests/promql/corpus.txt: {fixed:?}"
    );
    assert!(
        identical.len() >= IDENTICAL_AT_LEAST,
        "{} identical, fewer than the {IDENTICAL_AT_LEAST} of before",
        identical.len()
    );
}

/// Each resolution (s) of the data, and the runs the gateway answers from buckets of it (a
/// step rounds to whole minutes; an instant query reads minutes): range queries on the
/// buckets' starts and between them, and instant queries.
fn runs() -> Vec<(i64, Vec<Run>)> {
    let range = |start: i64, step: i64| Run::Range {
        start,
        end: END + (start - START),
        step,
    };
    let mut minutes = vec![range(START, 60), range(START + 30, 60), range(START, 45)];
    minutes.extend(INSTANTS.map(Run::Instant));
    vec![
        (60, minutes),
        (120, vec![range(START, 120), range(START, 90)]),
        (
            300,
            vec![
                range(START, 300),
                range(START + 120, 300),
                range(START, 270),
            ],
        ),
        (3600, vec![range(START, 3600)]),
    ]
}

fn runs_per_query() -> usize {
    runs().iter().map(|(_, r)| r.len()).sum()
}

/// How a query is evaluated: from start to end at a step, or at one time (all in s).
#[derive(Debug, Clone, Copy)]
enum Run {
    Range { start: i64, end: i64, step: i64 },
    Instant(i64),
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Run::Range { start, end, step } => write!(f, "range {start}..{end} step {step}s"),
            Run::Instant(t) => write!(f, "instant at {t}"),
        }
    }
}

/// The answer of the Prometheus API at `base` (…/api/v1 is appended) to `query`.
async fn ask(http: &reqwest::Client, base: &str, query: &str, run: Run) -> Value {
    let (route, params) = match run {
        Run::Range { start, end, step } => (
            "query_range",
            vec![
                ("query", query.to_owned()),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("step", step.to_string()),
            ],
        ),
        Run::Instant(t) => (
            "query",
            vec![("query", query.to_owned()), ("time", t.to_string())],
        ),
    };
    let answer = http
        .get(format!("{base}/api/v1/{route}"))
        .query(&params)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{base} answers {query}: {e}"));
    answer
        .json()
        .await
        .unwrap_or_else(|e| panic!("{base}'s answer to {query} is JSON: {e}"))
}

#[derive(Debug)]
enum Outcome {
    /// Not asked: Prometheus 2 cannot be asked this query's meaning at this run (see
    /// [`comparable`]).
    Incomparable,
    /// With the number of samples compared (none when both refused, or both found nothing).
    Identical(usize),
    /// The gateway's `unsupported: …`.
    Refused(String),
    /// What differs.
    Wrong(String),
}

fn classify(query: &str, gateway: &Value, prometheus: &Value) -> Outcome {
    let error = |v: &Value| format!("{} {}", v["errorType"], v["error"]);
    match (gateway["status"].as_str(), prometheus["status"].as_str()) {
        (Some("error"), _)
            if gateway["errorType"] == "bad_data"
                && gateway["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("unsupported")) =>
        {
            // Its first clause: what is not supported (the rest lists what is).
            let error = gateway["error"].as_str().unwrap_or_default();
            Outcome::Refused(error.split("; ").next().unwrap_or(error).to_owned())
        }
        (Some("error"), Some("error")) if gateway["errorType"] == prometheus["errorType"] => {
            Outcome::Identical(0)
        }
        (Some("error"), Some("error")) => Outcome::Wrong(format!(
            "both refuse, the gateway with {}, Prometheus with {}",
            error(gateway),
            error(prometheus)
        )),
        (Some("success"), Some("success")) => {
            match (result(&gateway["data"]), result(&prometheus["data"])) {
                (Ok(g), Ok(p)) => match difference(&g, &p) {
                    None => Outcome::Identical(g.series.iter().map(|s| s.1.len()).sum()),
                    // Of series with equal values, which `topk` keeps is Prometheus' accident
                    // (the order of a Go map): there, the values kept at each time must agree.
                    Some(_) if has_k_aggregation(query) && same_values(&g, &p) => {
                        Outcome::Identical(g.series.iter().map(|s| s.1.len()).sum())
                    }
                    Some(d) => Outcome::Wrong(d),
                },
                (Err(e), _) => Outcome::Wrong(format!("the gateway's answer: {e}")),
                (_, Err(e)) => Outcome::Wrong(format!("Prometheus' answer: {e}")),
            }
        }
        (Some("error"), _) => Outcome::Wrong(format!(
            "the gateway refuses ({}), Prometheus answers {}",
            error(gateway),
            short(&prometheus["data"])
        )),
        (_, Some("error")) => Outcome::Wrong(format!(
            "the gateway answers {}, Prometheus refuses ({})",
            short(&gateway["data"]),
            error(prometheus)
        )),
        _ => Outcome::Wrong(format!(
            "no status: gateway {}, Prometheus {}",
            short(gateway),
            short(prometheus)
        )),
    }
}

fn has_k_aggregation(query: &str) -> bool {
    query.contains("topk") || query.contains("bottomk")
}

/// Whether both answers hold the same values at each time, whatever their labels.
fn same_values(g: &Answer, p: &Answer) -> bool {
    let by_time = |a: &Answer| {
        let mut times: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (_, samples) in &a.series {
            for (t, v) in samples {
                times.entry(*t).or_default().push(*v);
            }
        }
        for values in times.values_mut() {
            values.sort_by(f64::total_cmp);
        }
        times
    };
    let (g, p) = (by_time(g), by_time(p));
    g.len() == p.len()
        && g.iter().zip(&p).all(|((tg, vg), (tp, vp))| {
            tg == tp && vg.len() == vp.len() && vg.iter().zip(vp).all(|(a, b)| same(*a, *b))
        })
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

type Labels = BTreeMap<String, String>;
/// A series as exported: its labels, and its samples as (epoch s, the gateway's value text).
type Exported = (Labels, Vec<(i64, String)>);

/// A result, whatever its type: its series by labels (a scalar is one without labels), each
/// sample as (epoch ms, value).
#[derive(Debug)]
struct Answer {
    kind: String,
    series: Vec<(Labels, Vec<(i64, f64)>)>,
}

fn result(data: &Value) -> Result<Answer, String> {
    let kind = data["resultType"]
        .as_str()
        .ok_or("no resultType")?
        .to_owned();
    let sample = |pair: &Value| -> Result<(i64, f64), String> {
        let t = pair[0].as_f64().ok_or(format!("a time: {pair}"))?;
        let v = pair[1].as_str().ok_or(format!("a value: {pair}"))?;
        Ok(((t * 1000.0).round() as i64, number(v)?))
    };
    let labels = |s: &Value| -> Result<Labels, String> {
        serde_json::from_value(s["metric"].clone()).map_err(|e| e.to_string())
    };
    let mut series = match kind.as_str() {
        "scalar" => vec![(Labels::new(), vec![sample(&data["result"])?])],
        // A string result: its text as a label, its time as the one sample.
        "string" => {
            let text = data["result"][1].as_str().ok_or("a string result")?;
            let t = data["result"][0].as_f64().ok_or("a string result's time")?;
            vec![(
                Labels::from([("string".to_owned(), text.to_owned())]),
                vec![((t * 1000.0).round() as i64, 0.0)],
            )]
        }
        "vector" => data["result"]
            .as_array()
            .ok_or("no result")?
            .iter()
            .map(|s| Ok((labels(s)?, vec![sample(&s["value"])?])))
            .collect::<Result<_, String>>()?,
        "matrix" => data["result"]
            .as_array()
            .ok_or("no result")?
            .iter()
            .map(|s| {
                let values = s["values"]
                    .as_array()
                    .ok_or("no values")?
                    .iter()
                    .map(sample)
                    .collect::<Result<_, _>>()?;
                Ok((labels(s)?, values))
            })
            .collect::<Result<_, String>>()?,
        other => return Err(format!("resultType {other}")),
    };
    series.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Answer { kind, series })
}

/// A sample value as Prometheus writes it.
fn number(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|_| format!("a number: {text}")),
    }
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The first difference between the gateway's answer `g` and Prometheus' `p`, if any.
fn difference(g: &Answer, p: &Answer) -> Option<String> {
    if g.kind != p.kind {
        return Some(format!(
            "result type {} (gateway) against {} (Prometheus)",
            g.kind, p.kind
        ));
    }
    let names = |a: &Answer| a.series.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
    if names(g) != names(p) {
        return Some(format!(
            "series {:?} (gateway) against {:?} (Prometheus)",
            names(g),
            names(p)
        ));
    }
    for ((labels, gs), (_, ps)) in g.series.iter().zip(&p.series) {
        let times = |s: &[(i64, f64)]| s.iter().map(|x| x.0).collect::<Vec<_>>();
        if times(gs) != times(ps) {
            return Some(format!(
                "{labels:?}: {} samples at {:?}… (gateway) against {} at {:?}… (Prometheus)",
                gs.len(),
                times(gs).iter().take(5).collect::<Vec<_>>(),
                ps.len(),
                times(ps).iter().take(5).collect::<Vec<_>>()
            ));
        }
        if let Some(((t, a), (_, b))) = gs.iter().zip(ps).find(|((_, a), (_, b))| !same(*a, *b)) {
            return Some(format!(
                "{labels:?} at {}: {a} (gateway) against {b} (Prometheus)",
                t / 1000
            ));
        }
    }
    None
}

/// `query` as Prometheus 2 must be asked it for the gateway's meaning: the implicit matchers
/// made explicit, and each range 1 ms shorter so that its window is `(t - r, t]`, except the
/// ranges of `rate`, `increase` and `delta`, which extrapolate from the range itself: those go
/// unchanged, and the query is only compared where no window's left edge holds a sample
/// ([`comparable`]). (A query the parser refuses goes as it is.)
fn for_prometheus(query: &str) -> String {
    match parser::parse(query) {
        Ok(mut expr) => {
            explicit(&mut expr);
            expr.to_string()
        }
        Err(_) => query.to_owned(),
    }
}

const MS: Duration = Duration::from_millis(1);

fn explicit(expr: &mut Expr) {
    match expr {
        Expr::Aggregate(a) => {
            explicit(&mut a.expr);
            if let Some(param) = a.param.as_mut() {
                explicit(param);
            }
        }
        Expr::Unary(u) => explicit(&mut u.expr),
        Expr::Binary(b) => {
            explicit(&mut b.lhs);
            explicit(&mut b.rhs);
        }
        Expr::Paren(p) => explicit(&mut p.expr),
        Expr::Subquery(s) => {
            s.range = s.range.saturating_sub(MS);
            explicit(&mut s.expr);
        }
        Expr::VectorSelector(v) => implicit_matchers(v),
        Expr::MatrixSelector(m) => {
            m.range = m.range.saturating_sub(MS);
            implicit_matchers(&mut m.vs);
        }
        Expr::Call(c) if EXTRAPOLATED.contains(&c.func.name) => {
            for a in c.args.args.iter_mut() {
                match a.as_mut() {
                    Expr::MatrixSelector(m) => implicit_matchers(&mut m.vs),
                    other => explicit(other),
                }
            }
        }
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| explicit(a)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The functions whose value depends on the range itself, not only on the samples in it.
const EXTRAPOLATED: [&str; 3] = ["rate", "increase", "delta"];

/// When an expression is evaluated: at the run's own times, or at every multiple of a
/// subquery's step.
enum Times {
    Listed(Vec<i64>),
    Multiples(i64),
}

/// Whether Prometheus 2's closed windows give the samples of Prometheus 3's left-open ones for
/// every range of `rate`, `increase` and `delta` in `query` at `run`, over data every
/// `resolution` s: no window's left edge `t - offset - r` may fall on a sample.
fn comparable(query: &str, run: Run, resolution: i64) -> bool {
    let Ok(expr) = parser::parse(query) else {
        return true;
    };
    let times = match run {
        Run::Range { start, end, step } => Times::Listed(
            (0..)
                .map(|k| start + k * step)
                .take_while(|t| *t <= end)
                .collect(),
        ),
        Run::Instant(t) => Times::Listed(vec![t]),
    };
    edges_clear(&expr, &times, resolution * 1000, run)
}

fn edges_clear(expr: &Expr, times: &Times, resolution_ms: i64, run: Run) -> bool {
    let ms = |d: Duration| d.as_millis() as i64;
    let offset = |o: &Option<parser::Offset>| match o {
        Some(parser::Offset::Pos(d)) => ms(*d),
        Some(parser::Offset::Neg(d)) => -ms(*d),
        None => 0,
    };
    let at = |a: &Option<parser::AtModifier>| -> Option<i64> {
        let (start, end) = match run {
            Run::Range { start, end, .. } => (start * 1000, end * 1000),
            Run::Instant(t) => (t * 1000, t * 1000),
        };
        match a.as_ref()? {
            parser::AtModifier::Start => Some(start),
            parser::AtModifier::End => Some(end),
            parser::AtModifier::At(t) => Some(ms(t.duration_since(std::time::UNIX_EPOCH).ok()?)),
        }
    };
    let gcd = |mut a: i64, mut b: i64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a.abs()
    };
    let clear = |m: &parser::MatrixSelector| {
        let back = offset(&m.vs.offset) + ms(m.range);
        match (at(&m.vs.at), times) {
            (Some(a), _) => (a - back).rem_euclid(resolution_ms) != 0,
            (None, Times::Listed(ts)) => ts
                .iter()
                .all(|t| (t * 1000 - back).rem_euclid(resolution_ms) != 0),
            // k * step - back is a multiple of the resolution for some k exactly when
            // gcd(step, resolution) divides back.
            (None, Times::Multiples(step)) => back.rem_euclid(gcd(*step, resolution_ms)) != 0,
        }
    };
    match expr {
        Expr::Call(c) if EXTRAPOLATED.contains(&c.func.name) => {
            c.args.args.iter().all(|a| match a.as_ref() {
                Expr::MatrixSelector(m) => clear(m),
                other => edges_clear(other, times, resolution_ms, run),
            })
        }
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .all(|a| edges_clear(a, times, resolution_ms, run)),
        Expr::Aggregate(a) => {
            edges_clear(&a.expr, times, resolution_ms, run)
                && a.param
                    .as_ref()
                    .is_none_or(|p| edges_clear(p, times, resolution_ms, run))
        }
        Expr::Unary(u) => edges_clear(&u.expr, times, resolution_ms, run),
        Expr::Binary(b) => {
            edges_clear(&b.lhs, times, resolution_ms, run)
                && edges_clear(&b.rhs, times, resolution_ms, run)
        }
        Expr::Paren(p) => edges_clear(&p.expr, times, resolution_ms, run),
        Expr::Subquery(s) => {
            let step = s.step.map_or(60_000, ms);
            edges_clear(&s.expr, &Times::Multiples(step), resolution_ms, run)
        }
        _ => true,
    }
}

/// The gateway reads the network-wide series unless a `did` or device detail matcher is
/// given, and the total unless a `direction` matcher is.
fn implicit_matchers(v: &mut VectorSelector) {
    let given = |names: &[&str]| {
        v.matchers
            .matchers
            .iter()
            .any(|m| names.contains(&m.name.as_str()))
    };
    let device = given(&["did", "hostname", "ip", "label"]);
    let direction = given(&["direction"]);
    if !device {
        v.matchers
            .matchers
            .push(Matcher::new(MatchOp::Equal, "did", ""));
    }
    if !direction {
        v.matchers
            .matchers
            .push(Matcher::new(MatchOp::Equal, "direction", ""));
    }
}

/// The samples the gateway gives at `step` (s) over the data's window, as OpenMetrics text:
/// each of its buckets stamped at its start, with the labels the gateway gives the series.
async fn export(app: &TestApp, step: i64) -> String {
    let devices = DEVICES.map(|d| d.to_string()).join("|");
    let mut series: Vec<Exported> = Vec::new();
    for selector in [
        format!("{{__name__=~\"{METRICS}\", did=~\"{devices}\", direction=~\"|in|out\"}}"),
        format!("{{__name__=~\"{METRICS}\", direction=~\"|in|out\"}}"),
    ] {
        let a = crate::prometheus::get(
            app,
            "/query_range",
            &[
                ("query", &selector),
                ("start", &EXPORT_START.to_string()),
                ("end", &EXPORT_END.to_string()),
                ("step", &step.to_string()),
            ],
        )
        .await;
        assert_eq!(a.body["status"], "success", "{selector}: {}", a.body);
        for s in a.body["data"]["result"].as_array().unwrap() {
            let labels: Labels = serde_json::from_value(s["metric"].clone()).unwrap();
            let values = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (v[0].as_i64().unwrap(), v[1].as_str().unwrap().to_owned()))
                .collect();
            series.push((labels, values));
        }
    }
    // Four metrics, for three devices and the network, each a total and two parts; every
    // bucket of the window.
    assert_eq!(series.len(), 4 * 4 * 3, "{:?}", series.iter().map(|s| &s.0));
    let buckets = (EXPORT_END - EXPORT_START) / step + 1;
    for (labels, values) in &series {
        assert_eq!(values.len() as i64, buckets, "{labels:?} at step {step}");
    }
    // The gateway's labels, and the simulator's own numbers.
    let device = series
        .iter()
        .find(|(l, _)| {
            l["__name__"] == "connections"
                && l.get("did").is_some_and(|d| d == "123")
                && !l.contains_key("direction")
        })
        .unwrap();
    let expected: Labels = [
        ("__name__", "connections"),
        ("appliance", "default"),
        ("did", "123"),
        ("hostname", "host-123"),
        ("ip", "10.0.0.123"),
        ("label", "Device 123"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(device.0, expected);
    let network = series
        .iter()
        .find(|(l, _)| l.len() == 2 && l["__name__"] == "bandwidth")
        .expect("the network-wide total has its name and appliance only");
    for ((_, values), filter) in [
        (device, "metric=connections&did=123"),
        (network, "metric=bandwidth"),
    ] {
        let own = appliance_values(
            app,
            &format!(
                "{filter}&starttime={}&endtime={}&interval={step}",
                EXPORT_START * 1000,
                (EXPORT_END + step) * 1000
            ),
            "size",
        )
        .await;
        let exported: BTreeMap<i64, f64> = values
            .iter()
            .map(|(t, v)| (*t, v.parse().unwrap()))
            .collect();
        assert_eq!(
            exported, own,
            "{filter} at step {step}: the simulator's buckets"
        );
    }
    openmetrics(&series)
}

fn openmetrics(series: &[Exported]) -> String {
    let escape = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut families: BTreeMap<&str, Vec<&Exported>> = BTreeMap::new();
    for s in series {
        families
            .entry(s.0["__name__"].as_str())
            .or_default()
            .push(s);
    }
    let mut text = String::new();
    for (name, members) in families {
        text.push_str(&format!("# TYPE {name} gauge\n"));
        for (labels, values) in members {
            let pairs: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let series = if pairs.is_empty() {
                name.to_owned()
            } else {
                format!("{name}{{{}}}", pairs.join(","))
            };
            for (t, v) in values {
                text.push_str(&format!("{series} {v} {t}\n"));
            }
        }
    }
    text.push_str("# EOF\n");
    text
}

/// A `prometheus` serving a TSDB backfilled from OpenMetrics text, on a free loopback port,
/// in a temporary directory; killed (and the directory removed) on drop.
struct Prometheus {
    url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(openmetrics: &str, lookback_ms: i64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.om");
        let tsdb = dir.path().join("tsdb");
        std::fs::write(&data, openmetrics).unwrap();
        run_bounded(
            Command::new("promtool")
                .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
                .args([&data, &tsdb]),
            Duration::from_secs(60),
        );
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global: {}\n").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--query.lookback-delta={lookback_ms}ms"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs it)");
        let prometheus = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
        };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            let ready = http.get(format!("{}/-/ready", prometheus.url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return prometheus;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "prometheus never became ready:\n{}",
            std::fs::read_to_string(prometheus.dir.path().join("prometheus.log"))
                .unwrap_or_default()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end, killing it after `limit`; panics unless it succeeded.
fn run_bounded(command: &mut Command, limit: Duration) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} starts (scripts/test.sh installs it): {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            }
            assert!(status.success(), "{command:?}: {status}: {err}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
