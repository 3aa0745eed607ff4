//! Results as Prometheus' HTTP API writes them: `{"resultType": …, "result": …}`, series
//! sorted by their labels, times in Unix seconds, values as strings.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::time::{sample, seconds};

/// One series of a vector: a value (or none) per evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// A labelled series: its values by bucket start.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub labels: Labels,
    pub points: BTreeMap<i64, f64>,
    pub reach: Reach,
}

/// Which sample a time reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// The newest within the lookback, as Prometheus reads a metric.
    Lookback,
    /// Only the bucket holding the time: a breach marks its own bucket, not the minutes after.
    Bucket,
}

/// A series' labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// `{a="1", b="2"}`, for messages.
pub(crate) fn labels_text(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[derive(Debug, Clone, PartialEq)]
enum Result {
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
    Vector(Vec<(Labels, i64, f64)>),
    Scalar(i64, f64),
}

/// The `data` of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryData(Result);

impl QueryData {
    pub(crate) fn matrix(times: &[i64], series: Vec<Series>) -> Self {
        let mut rows: Vec<(Labels, Vec<(i64, f64)>)> = series
            .into_iter()
            .map(|s| {
                let values = times
                    .iter()
                    .zip(s.values)
                    .filter_map(|(t, v)| Some((*t, v?)))
                    .collect::<Vec<_>>();
                (s.labels, values)
            })
            .filter(|(_, values)| !values.is_empty())
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Self(Result::Matrix(rows))
    }

    /// A range vector's raw buckets at `time`: those starting in `(time - range, time]`, at
    /// their own times, labels kept.
    pub(crate) fn raw(rows: &[Row], time: i64, range_ms: i64) -> Self {
        let mut out: Vec<(Labels, Vec<(i64, f64)>)> = rows
            .iter()
            .map(|row| {
                let values = row
                    .points
                    .range(time.saturating_sub(range_ms).saturating_add(1)..=time)
                    .map(|(t, v)| (*t, *v))
                    .collect::<Vec<_>>();
                (row.labels.clone(), values)
            })
            .filter(|(_, values)| !values.is_empty())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Self(Result::Matrix(out))
    }

    /// A range query of a number: one series without labels, the number at every step.
    pub(crate) fn scalar_matrix(times: &[i64], value: f64) -> Self {
        Self(Result::Matrix(vec![(
            Labels::new(),
            times.iter().map(|t| (*t, value)).collect(),
        )]))
    }

    pub(crate) fn vector(time: i64, series: Vec<Series>) -> Self {
        let mut rows: Vec<(Labels, i64, f64)> = series
            .into_iter()
            .filter_map(|s| Some((s.labels, time, s.values.first().copied().flatten()?)))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Self(Result::Vector(rows))
    }

    pub(crate) fn scalar(time: i64, value: f64) -> Self {
        Self(Result::Scalar(time, value))
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
            Result::Scalar(..) => 0,
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
        }
    }
}

/// `[<unix seconds>, "<value>"]`.
struct Sample(i64, f64);

impl Serialize for Sample {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&seconds(self.0))?;
        seq.serialize_element(&sample(self.1))?;
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
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_written_as_prometheus_writes_them() {
        let labels: Labels = [("__name__".to_owned(), "c".to_owned())].into();
        let series = vec![Series {
            labels: labels.clone(),
            values: vec![Some(762.0), None, Some(0.5)],
        }];
        let m = QueryData::matrix(
            &[1_705_320_000_000, 1_705_320_060_000, 1_705_320_120_500],
            series.clone(),
        );
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"c"},"values":[[1705320000,"762"],[1705320120.5,"0.5"]]}]}"#
        );
        let v = QueryData::vector(1_705_320_000_000, series);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"c"},"value":[1705320000,"762"]}]}"#
        );
        let s = QueryData::scalar(4_000, 2.0);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"resultType":"scalar","result":[4,"2"]}"#
        );
    }
}
