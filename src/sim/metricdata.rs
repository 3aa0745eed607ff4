//! `/metricdata` as an appliance of the current [`Profile`] answers it: the dialect read
//! strictly, and the answer built in the profile's shape.

use super::data;
use super::{DeviceDetails, Estate, Faults, Profile};

/// The parts of a `/metricdata` query the simulator acts on.
pub(super) struct DataQuery {
    metrics: Vec<String>,
    did: Option<u64>,
    filters: Vec<(String, String)>,
    start: Option<i64>,
    end: Option<i64>,
    interval_ms: i64,
    breachtimes: bool,
    fulldevicedetails: bool,
}

/// Parses the appliance dialect, refusing what real appliances refuse.
pub(super) fn parse_dialect(estate: &Estate, query: &str) -> Result<DataQuery, &'static str> {
    let mut q = DataQuery {
        metrics: Vec::new(),
        did: None,
        filters: Vec::new(),
        start: None,
        end: None,
        interval_ms: 60_000,
        breachtimes: false,
        fulldevicedetails: false,
    };
    let (mut from, mut to) = (None, None);
    let mut numbered = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "devices" => return Err("Unknown parameter: devices"),
            "metric" if v.contains(',') => return Err("Invalid metric"),
            "metric" => q.metrics.push(v.into_owned()),
            k if k.starts_with("metric") && k[6..].parse::<u32>().is_ok() => {
                numbered.push((k[6..].parse::<u32>().unwrap_or(0), v.into_owned()))
            }
            "did" => q.did = Some(v.parse().map_err(|_| "Invalid did")?),
            "interval" => {
                let secs: i64 = v.parse().map_err(|_| "Invalid interval")?;
                if secs <= 0 {
                    return Err("Invalid interval");
                }
                q.interval_ms = secs * 1000;
            }
            "starttime" => q.start = Some(v.parse().map_err(|_| "Invalid starttime")?),
            "endtime" => q.end = Some(v.parse().map_err(|_| "Invalid endtime")?),
            "from" => from = Some(parse_sql_time(&v).ok_or("Invalid from")?),
            "to" => to = Some(parse_sql_time(&v).ok_or("Invalid to")?),
            "breachtimes" => q.breachtimes = v == "true",
            "fulldevicedetails" => q.fulldevicedetails = v == "true",
            // Codes from `/enums`, never names.
            "protocol" | "applicationprotocol" if v.parse::<u32>().is_err() => {
                return Err(if k == "protocol" {
                    "Invalid protocol"
                } else {
                    "Invalid applicationprotocol"
                });
            }
            "ddid"
            | "odid"
            | "port"
            | "sourceport"
            | "destinationport"
            | "protocol"
            | "applicationprotocol" => q.filters.push((k.to_string(), v.into_owned())),
            _ => {}
        }
    }
    numbered.sort();
    q.metrics.extend(numbered.into_iter().map(|(_, m)| m));
    if q.start.is_none() && q.end.is_none() {
        (q.start, q.end) = (from, to);
    }
    if q.start.is_some() != q.end.is_some() {
        return Err("Time parameters must be given in pairs");
    }
    if q.metrics.is_empty() {
        return Err("No metric specified");
    }
    if let Some(bad) = q.metrics.iter().find(|m| !data::is_known(estate, m)) {
        let _ = bad;
        return Err("Unknown metric");
    }
    Ok(q)
}

fn parse_sql_time(s: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// The `/metricdata` answer to `q`, as an appliance of `profile` gives it at `now`, and how
/// many data points it holds.
pub(super) fn answer(
    estate: &Estate,
    q: &DataQuery,
    faults: &Faults,
    profile: &Profile,
    now: i64,
) -> (Vec<u8>, u64) {
    let (start, end) = match (q.start, q.end) {
        (Some(s), Some(e)) => (s, e),
        _ => (now - 3_600_000, now),
    };
    let asked = data::Asked {
        start,
        end,
        interval_ms: q.interval_ms,
    };
    let details = q
        .did
        .filter(|_| q.fulldevicedetails)
        .map(|did| data::device_details(estate, did));
    let shape = if q.fulldevicedetails {
        profile.device_details
    } else {
        DeviceDetails::Inline
    };
    let mut body = Vec::with_capacity(4096 + faults.oversized_bytes);
    if shape == DeviceDetails::Wrapped {
        body.extend_from_slice(b"{\"metricdata\":");
    }
    body.push(b'[');
    let mut array = Elements(&mut body, 0);
    if q.breachtimes {
        array.push(&data::BreachTimes {
            breachtimes: data::breaches(estate, q.did, &asked, now, profile),
        });
    }
    let kept = if faults.omit_metric {
        &q.metrics[..q.metrics.len() - 1]
    } else {
        &q.metrics[..]
    };
    let mut points = 0;
    for metric in kept {
        let key = data::SeriesKey {
            metric,
            did: q.did,
            filters: &q.filters,
        };
        let data = data::series(estate, &key, &asked, now, profile);
        points += data.len() as u64;
        array.push(&data::MetricObject {
            metric,
            device: details.as_ref().filter(|_| shape == DeviceDetails::Inline),
            data,
        });
    }
    if faults.unknown_element {
        array.raw(br#"{"novelty":{"secret":"value-not-to-log"},"weight":3}"#);
    }
    if faults.oversized_bytes > 0 {
        let mut padding = Vec::with_capacity(faults.oversized_bytes + 16);
        padding.extend_from_slice(b"{\"padding\":\"");
        padding.resize(padding.len() + faults.oversized_bytes, b'x');
        padding.extend_from_slice(b"\"}");
        array.raw(&padding);
    }
    if shape == DeviceDetails::DevicesList {
        array.push(&serde_json::json!({ "devices": &details.iter().collect::<Vec<_>>() }));
    }
    body.push(b']');
    if shape == DeviceDetails::Wrapped {
        body.extend_from_slice(b",\"devices\":");
        let _ = serde_json::to_writer(&mut body, &details.iter().collect::<Vec<_>>());
        body.push(b'}');
    }
    (body, points)
}

/// A JSON array being written: its bytes and how many elements it has.
struct Elements<'a>(&'a mut Vec<u8>, usize);

impl Elements<'_> {
    fn raw(&mut self, element: &[u8]) {
        if self.1 > 0 {
            self.0.push(b',');
        }
        self.0.extend_from_slice(element);
        self.1 += 1;
    }

    fn push(&mut self, element: &impl serde::Serialize) {
        if self.1 > 0 {
            self.0.push(b',');
        }
        let _ = serde_json::to_writer(&mut *self.0, element);
        self.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_refusals() {
        assert!(parse_dialect(&Estate::default(), "metric=connections&devices=1,2").is_err());
        assert!(parse_dialect(&Estate::default(), "metric=connections,bandwidth").is_err());
        assert!(parse_dialect(&Estate::default(), "metric=connections&interval=5min").is_err());
        assert!(parse_dialect(&Estate::default(), "metric=connections&starttime=1").is_err());
        let q = parse_dialect(
            &Estate::default(),
            "metric2=bandwidth&metric1=connections&interval=300",
        )
        .unwrap();
        assert_eq!(q.metrics, ["connections", "bandwidth"]);
        assert_eq!(q.interval_ms, 300_000);
    }
}
