//! Results as Prometheus' HTTP API writes them: `{"resultType": …, "result": …}`, series
//! sorted by their labels, times in Unix seconds, values as strings.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::engine::Query;
use super::engine::series::{Labels, Output};
use super::time::{sample, seconds};

#[derive(Debug, Clone, PartialEq)]
enum Result {
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
    Vector(Vec<(Labels, i64, f64)>),
    Scalar(i64, f64),
    String(i64, String),
}

/// The `data` of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryData(Result);

impl QueryData {
    /// The engine's output as Prometheus' API gives it: a range query's series (a number is
    /// one without labels) sorted by labels, each with the times it has a value at; an
    /// instant query's vector sorted by labels unless its order is its own (`sort`, `topk`).
    pub fn new(output: Output, query: &Query) -> Self {
        let range = query.step > 0;
        let times = query.times();
        let at = query.end;
        let matrix = |mut rows: Vec<(Labels, Vec<(i64, f64)>)>| {
            rows.retain(|(_, values)| !values.is_empty());
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            Self(Result::Matrix(rows))
        };
        match output {
            Output::Scalar(values) if range => matrix(vec![(
                Labels::new(),
                times.iter().copied().zip(values).collect(),
            )]),
            Output::Scalar(values) => Self(Result::Scalar(
                at,
                values.first().copied().unwrap_or(f64::NAN),
            )),
            Output::Vector { series, .. } if range => matrix(
                series
                    .into_iter()
                    .map(|s| {
                        let values = times
                            .iter()
                            .zip(s.values)
                            .filter_map(|(t, v)| Some((*t, v?)))
                            .collect();
                        (s.labels, values)
                    })
                    .collect(),
            ),
            Output::Vector { series, ordered } => {
                let mut rows: Vec<(Labels, i64, f64)> = series
                    .into_iter()
                    .filter_map(|s| Some((s.labels, at, s.values.first().copied().flatten()?)))
                    .collect();
                if !ordered {
                    rows.sort_by(|a, b| a.0.cmp(&b.0));
                }
                Self(Result::Vector(rows))
            }
            Output::Matrix(rows) => matrix(rows),
            Output::String(s) => Self(Result::String(at, s)),
        }
    }

    /// Keeps at most `limit` series (0: all); whether any were dropped.
    pub fn truncate(&mut self, limit: usize) -> bool {
        if limit == 0 {
            return false;
        }
        match &mut self.0 {
            Result::Matrix(rows) if rows.len() > limit => rows.truncate(limit),
            Result::Vector(rows) if rows.len() > limit => rows.truncate(limit),
            _ => return false,
        }
        true
    }

    /// How many series (a scalar counts as none).
    pub fn series_count(&self) -> usize {
        match &self.0 {
            Result::Matrix(rows) => rows.len(),
            Result::Vector(rows) => rows.len(),
            Result::Scalar(..) | Result::String(..) => 0,
        }
    }

    /// The answer's series as label sets and `(epoch ms, value)` samples (a scalar is one
    /// series without labels), for callers that check numbers rather than JSON.
    pub fn samples(&self) -> Vec<(Labels, Vec<(i64, f64)>)> {
        match &self.0 {
            Result::Matrix(rows) => rows.clone(),
            Result::Vector(rows) => rows
                .iter()
                .map(|(l, t, v)| (l.clone(), vec![(*t, *v)]))
                .collect(),
            Result::Scalar(t, v) => vec![(Labels::new(), vec![(*t, *v)])],
            Result::String(..) => Vec::new(),
        }
    }
}

/// `[<unix seconds>, "<value>"]`.
struct Sample(i64, f64);

impl Serialize for Sample {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&seconds(self.0))?;
        // Most values are whole numbers: written from the stack, not a string of their own.
        let v = self.1;
        if v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
            let mut digits = itoa::Buffer::new();
            seq.serialize_element(digits.format(v as i64))?;
        } else {
            seq.serialize_element(&sample(v))?;
        }
        seq.end()
    }
}

struct MatrixRow<'a>(&'a Labels, &'a [(i64, f64)]);

impl Serialize for MatrixRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("metric", self.0)?;
        let values: Vec<Sample> = self.1.iter().map(|(t, v)| Sample(*t, *v)).collect();
        map.serialize_entry("values", &values)?;
        map.end()
    }
}

struct VectorRow<'a>(&'a Labels, i64, f64);

impl Serialize for VectorRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("metric", self.0)?;
        map.serialize_entry("value", &Sample(self.1, self.2))?;
        map.end()
    }
}

impl Serialize for QueryData {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        match &self.0 {
            Result::Matrix(rows) => {
                map.serialize_entry("resultType", "matrix")?;
                let rows: Vec<MatrixRow> = rows.iter().map(|(l, v)| MatrixRow(l, v)).collect();
                map.serialize_entry("result", &rows)?;
            }
            Result::Vector(rows) => {
                map.serialize_entry("resultType", "vector")?;
                let rows: Vec<VectorRow> =
                    rows.iter().map(|(l, t, v)| VectorRow(l, *t, *v)).collect();
                map.serialize_entry("result", &rows)?;
            }
            Result::Scalar(t, v) => {
                map.serialize_entry("resultType", "scalar")?;
                map.serialize_entry("result", &Sample(*t, *v))?;
            }
            Result::String(t, text) => {
                map.serialize_entry("resultType", "string")?;
                map.serialize_entry("result", &(seconds(*t), text))?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::promql::engine::series::Series;

    fn query(start: i64, end: i64, step: i64) -> Query {
        Query {
            start,
            end,
            step,
            lookback: 300_000,
            max_samples: 1000,
        }
    }

    #[test]
    fn results_are_written_as_prometheus_writes_them() {
        let labels: Labels = [("__name__".to_owned(), "c".to_owned())].into();
        let series = vec![Series {
            labels: labels.clone(),
            values: vec![Some(762.0), None, Some(0.5)],
        }];
        let vector = |series| Output::Vector {
            series,
            ordered: false,
        };
        let m = QueryData::new(
            vector(series.clone()),
            &query(1_705_320_000_000, 1_705_320_120_500, 60_250),
        );
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"c"},"values":[[1705320000,"762"],[1705320120.5,"0.5"]]}]}"#
        );
        let t = 1_705_320_000_000;
        let v = QueryData::new(vector(series), &query(t, t, 0));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"c"},"value":[1705320000,"762"]}]}"#
        );
        let s = QueryData::new(Output::Scalar(vec![2.0]), &query(4_000, 4_000, 0));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"resultType":"scalar","result":[4,"2"]}"#
        );
        for (v, text) in [
            (-0.0, "-0"),
            (3.0, "3"),
            (-42.0, "-42"),
            (1e15, "1000000000000000"),
            (1e21, "1000000000000000000000"),
            (0.5, "0.5"),
        ] {
            let s = QueryData::new(Output::Scalar(vec![v]), &query(4_000, 4_000, 0));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!(r#"{{"resultType":"scalar","result":[4,"{text}"]}}"#)
            );
        }
        let s = QueryData::new(Output::String("x".into()), &query(4_500, 4_500, 0));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"resultType":"string","result":[4.5,"x"]}"#
        );
    }
}
