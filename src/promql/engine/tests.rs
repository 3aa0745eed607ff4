//! The engine over a source of fixed rows. Prometheus' own meaning is checked side by side
//! with a real Prometheus in `tests/api/promql_diff.rs`; these pin the engine's edges.

use promql_parser::label::Matcher;
use promql_parser::parser;

use super::series::{Labels, Output, Reach, Row, Series};
use super::{Query, SeriesSource, evaluate};
use crate::promql::error::PromError;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn row(pairs: &[(&str, &str)], points: &[(i64, f64)]) -> Row {
    Row {
        labels: labels(pairs),
        points: points.to_vec(),
        reach: Reach::Lookback,
    }
}

struct Rows(Vec<Row>);

impl SeriesSource for Rows {
    fn rows(&self, matchers: &[Matcher]) -> Vec<Row> {
        self.0
            .iter()
            .filter(|r| {
                matchers
                    .iter()
                    .all(|m| m.is_match(r.labels.get(&m.name).map_or("", String::as_str)))
            })
            .cloned()
            .collect()
    }
}

fn source() -> Rows {
    Rows(vec![
        row(
            &[("__name__", "c"), ("did", "1")],
            &[(0, 1.0), (60_000, 5.0), (120_000, 3.0)],
        ),
        row(
            &[("__name__", "c"), ("did", "2")],
            &[(0, 10.0), (120_000, 30.0)],
        ),
        row(
            &[("__name__", "b"), ("did", "1")],
            &[(0, 2.0), (60_000, 2.0), (120_000, 6.0)],
        ),
    ])
}

fn run(text: &str, times: &[i64]) -> Result<Output, PromError> {
    let expr = parser::parse(text).map_err(PromError::bad_data)?;
    let query = Query {
        start: times[0],
        end: *times.last().unwrap(),
        step: if times.len() > 1 {
            times[1] - times[0]
        } else {
            0
        },
        lookback: 300_000,
        max_samples: 10_000,
    };
    evaluate(&expr, &query, &source()).map(|(o, _)| o)
}

fn vector(text: &str, times: &[i64]) -> Vec<Series> {
    match run(text, times).unwrap() {
        Output::Vector { mut series, .. } => {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            series
        }
        other => panic!("{text}: {other:?}"),
    }
}

fn values(text: &str, times: &[i64]) -> Vec<Vec<Option<f64>>> {
    vector(text, times).into_iter().map(|s| s.values).collect()
}

#[test]
fn the_newest_sample_within_the_lookback_is_each_times_value() {
    // Every 30 s from 0 to 7 min: the lookback (5 min, left-open) ends at 7 min.
    let times: Vec<i64> = (0..=14).map(|k| k * 30_000).collect();
    let v = vector("c", &times);
    let at = |s: &Series, k: &[usize]| k.iter().map(|k| s.values[*k]).collect::<Vec<_>>();
    assert_eq!(
        at(&v[0], &[0, 1, 2, 5, 13, 14]),
        [Some(1.0), Some(1.0), Some(5.0), Some(3.0), Some(3.0), None]
    );
    assert_eq!(
        at(&v[1], &[0, 2, 3, 4, 14]),
        [Some(10.0), Some(10.0), Some(10.0), Some(30.0), None]
    );
    assert_eq!(v[0].labels["__name__"], "c");
    // Offsets look back, negative ones forward; `@` fixes the time.
    assert_eq!(values("c{did=\"1\"} offset 1m", &[120_000]), [[Some(5.0)]]);
    assert_eq!(values("c{did=\"1\"} offset -1m", &[0]), [[Some(5.0)]]);
    assert_eq!(
        values("c{did=\"1\"} @ 60", &[0, 120_000]),
        [[Some(5.0), Some(5.0)]]
    );
}

#[test]
fn a_bucket_reach_reads_only_its_own_bucket() {
    let mut rows = source();
    rows.0[1].reach = Reach::Bucket(60_000);
    let expr = parser::parse("c{did=\"2\"}").unwrap();
    let query = Query {
        start: 0,
        end: 60_000,
        step: 60_000,
        lookback: 300_000,
        max_samples: 100,
    };
    let (Output::Vector { series, .. }, _) = evaluate(&expr, &query, &rows).unwrap() else {
        panic!("a vector");
    };
    assert_eq!(series[0].values, [Some(10.0), None]);
}

#[test]
fn ranges_are_left_open() {
    // At 120 s, [1m] holds only the sample at 120 s; [2m] also the one at 60 s.
    assert_eq!(
        values("count_over_time(c{did=\"1\"}[1m])", &[120_000]),
        [[Some(1.0)]]
    );
    assert_eq!(
        values("count_over_time(c{did=\"1\"}[2m])", &[120_000]),
        [[Some(2.0)]]
    );
    assert_eq!(
        values("last_over_time(c{did=\"1\"}[2m])", &[60_000]),
        [[Some(5.0)]]
    );
    assert!(
        vector("last_over_time(c[2m])", &[60_000])[0]
            .labels
            .contains_key("__name__")
    );
    assert!(
        !vector("max_over_time(c[2m])", &[60_000])[0]
            .labels
            .contains_key("__name__")
    );
}

#[test]
fn vectors_match_on_their_labels() {
    // c / b on did: only did 1 is on both sides.
    let v = vector("c / on(did) b", &[120_000]);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].labels, labels(&[("did", "1")]));
    assert_eq!(v[0].values, [Some(0.5)]);
    // Without a modifier, all labels but the name must match.
    assert_eq!(values("c + b", &[0]), [[Some(3.0)]]);
    // A comparison keeps the left side's value and name.
    let v = vector("c > b", &[60_000]);
    assert_eq!(v[0].labels["__name__"], "c");
    assert_eq!(v[0].values, [Some(5.0)]);
    // Many-to-one needs group_left; the one side must be unique.
    let e = run("c * on() b", &[0]).unwrap_err();
    assert!(matches!(e, PromError::Execution(_)), "{e}");
    let e = run("b * on() c", &[0]).unwrap_err();
    assert!(e.to_string().contains("duplicate series"), "{e}");
    let v = vector("c * on() group_left b", &[0]);
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].values, [Some(20.0)]);
}

#[test]
fn set_operators_keep_the_left_sides_series() {
    assert_eq!(vector("c and b", &[0]).len(), 1);
    assert_eq!(vector("c unless b", &[0])[0].labels["did"], "2");
    let v = vector("c or b", &[0]);
    assert_eq!(v.len(), 2, "b{{did=1}} is shadowed by c{{did=1}}: {v:?}");
    assert_eq!(vector("c or on(__name__) b", &[0]).len(), 3);
}

#[test]
fn aggregations_of_every_kind() {
    assert_eq!(values("sum(c)", &[0]), [[Some(11.0)]]);
    assert_eq!(values("stddev(c)", &[0]), [[Some(4.5)]]);
    assert_eq!(values("quantile(0.5, c)", &[0]), [[Some(5.5)]]);
    assert_eq!(values("group(c)", &[0]), [[Some(1.0)]]);
    let top = vector("topk(1, c)", &[0, 60_000]);
    assert_eq!(top.len(), 1, "did 2 is the larger at both times: {top:?}");
    assert_eq!(top[0].labels["did"], "2");
    let counted = vector("count_values(\"v\", b)", &[0]);
    assert_eq!(counted[0].labels, labels(&[("v", "2")]));
    assert_eq!(
        values("sum by (did) ({__name__=~\"b|c\"})", &[0]),
        [[Some(3.0)], [Some(10.0)]]
    );
}

#[test]
fn functions_and_subqueries() {
    // Three samples 60 s apart rising by 2 then 1: rate extrapolates to the window's edges.
    assert_eq!(
        values("changes(c{did=\"1\"}[5m])", &[120_000]),
        [[Some(2.0)]]
    );
    assert_eq!(
        values("resets(c{did=\"1\"}[5m])", &[120_000]),
        [[Some(1.0)]]
    );
    assert_eq!(
        values("idelta(c{did=\"1\"}[5m])", &[120_000]),
        [[Some(-2.0)]]
    );
    assert_eq!(
        values("max_over_time(c{did=\"1\"}[2m:1m])", &[120_000]),
        [[Some(5.0)]]
    );
    assert_eq!(values("clamp(c{did=\"1\"}, 2, 4)", &[0]), [[Some(2.0)]]);
    assert!(values("clamp(c{did=\"1\"}, 4, 2)", &[0]).is_empty());
    assert_eq!(values("round(c{did=\"2\"} / 3, 0.5)", &[0]), [[Some(3.5)]]);
    let absent = vector("absent(c{did=\"9\", x=~\"y\"})", &[0]);
    assert_eq!(absent[0].labels, labels(&[("did", "9")]));
    assert!(vector("absent(c)", &[0]).is_empty());
    let replaced = vector("label_replace(c, \"d\", \"<$1>\", \"did\", \"(.*)\")", &[0]);
    assert_eq!(replaced[0].labels["d"], "<1>");
    assert_eq!(values("timestamp(c{did=\"2\"})", &[60_000]), [[Some(0.0)]]);
    assert_eq!(values("year(vector(0))", &[0]), [[Some(1970.0)]]);
    match run("time()", &[0, 60_000]).unwrap() {
        Output::Scalar(v) => assert_eq!(v, [0.0, 60.0]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn instant_answers_keep_the_order_prometheus_gives_them() {
    let order = |text: &str| match run(text, &[0]).unwrap() {
        Output::Vector { series, ordered } => (
            series
                .iter()
                .map(|s| s.labels["did"].clone())
                .collect::<Vec<_>>(),
            ordered,
        ),
        other => panic!("{other:?}"),
    };
    assert_eq!(order("sort_desc(c)"), (vec!["2".into(), "1".into()], true));
    assert_eq!(order("sort(c)"), (vec!["1".into(), "2".into()], true));
    assert_eq!(order("topk(2, c)"), (vec!["2".into(), "1".into()], true));
    assert!(!order("c").1, "a plain vector is sorted by its labels");
}

#[test]
fn series_that_become_one_are_refused() {
    let e = run("-{did=\"1\"}", &[0]).unwrap_err();
    assert!(matches!(e, PromError::Execution(_)), "{e}");
    let e = run("max_over_time({did=\"1\"}[5m])", &[0]).unwrap_err();
    assert!(matches!(e, PromError::Execution(_)), "{e}");
}

#[test]
fn the_sample_limit_is_an_execution_error() {
    let expr = parser::parse("max_over_time(c[1h:1s])").unwrap();
    let query = Query {
        start: 0,
        end: 0,
        step: 0,
        lookback: 300_000,
        max_samples: 1_000,
    };
    let e = evaluate(&expr, &query, &source()).unwrap_err();
    assert!(e.to_string().contains("too many samples"), "{e}");
}
