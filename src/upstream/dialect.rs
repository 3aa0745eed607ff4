//! [`MetricQuery`] → the path-and-query strings an appliance accepts (its real dialect).
//!
//! Every value here is digits or `[A-Za-z0-9_.:-]`, so no percent-encoding is needed and the
//! signed text is exactly the wire text.

use std::fmt::Write;

use crate::query::MetricQuery;

/// The metric catalog.
pub const CATALOG: &str = "/metrics";

/// The appliance's enumerated types: the codes its protocol filters take.
pub const ENUMS: &str = "/enums";

/// The instance's own description: its software version, label and uuid.
pub const STATUS: &str = "/status";

/// One appliance request: the path and query to sign and send, and the device it asks about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApplianceRequest {
    pub path_and_query: String,
    pub device: Option<u64>,
}

/// The appliance requests that answer `query`: one per device (appliances reject `devices=`),
/// or one with no device filter. `now_ms` closes a range left open by the caller.
pub fn requests(query: &MetricQuery, now_ms: i64) -> Vec<ApplianceRequest> {
    if query.devices().is_empty() {
        return vec![request(query, None, now_ms)];
    }
    query
        .devices()
        .iter()
        .map(|did| request(query, Some(*did), now_ms))
        .collect()
}

fn request(q: &MetricQuery, device: Option<u64>, now_ms: i64) -> ApplianceRequest {
    let mut s = String::with_capacity(160);
    s.push_str("/metricdata?");
    // A lone metric goes as `metric=`; several as `metric1=…&metric2=…`, because a
    // comma-joined `metric=` returns unrelated data on real appliances.
    if let [one] = q.metrics() {
        let _ = write!(s, "metric={one}");
    } else {
        for (i, name) in q.metrics().iter().enumerate() {
            let sep = if i == 0 { "" } else { "&" };
            let _ = write!(s, "{sep}metric{}={name}", i + 1);
        }
    }
    let mut num = |name: &str, value: Option<u64>| {
        if let Some(v) = value {
            let _ = write!(s, "&{name}={v}");
        }
    };
    num("did", device);
    num("ddid", q.ddid());
    num("odid", q.odid());
    num("port", q.port().map(u64::from));
    num("sourceport", q.sourceport().map(u64::from));
    num("destinationport", q.destinationport().map(u64::from));
    num("protocol", q.protocol().map(u64::from));
    num(
        "applicationprotocol",
        q.applicationprotocol().map(u64::from),
    );
    // Appliances want times in pairs. Both ends are bucket boundaries, so every anchoring
    // rule (the epoch, the start time, the start's minute) gives the same buckets, and each
    // edge bucket is asked for whole; an appliance whose end is inclusive adds one bucket
    // beyond, which normalize trims with everything else outside the caller's range.
    if let Some(start) = q.starttime() {
        let end = q.endtime().unwrap_or(now_ms);
        let start = q.bucket_of(start);
        let end = q.boundary_at_or_after(end).max(start + q.interval_ms());
        let _ = write!(s, "&starttime={start}&endtime={end}");
    }
    let _ = write!(s, "&interval={}", q.interval_seconds());
    if q.breachtimes() {
        s.push_str("&breachtimes=true");
    }
    if q.fulldevicedetails() {
        s.push_str("&fulldevicedetails=true");
    }
    ApplianceRequest {
        path_and_query: s,
        device,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{AnyMetric, parse};
    use crate::settings::Settings;

    fn wire(raw: &str) -> Vec<String> {
        let q = parse(
            raw,
            &Settings::defaults().query,
            &AnyMetric,
            1_705_330_000_000,
        )
        .unwrap();
        requests(&q, 1_705_330_000_000)
            .into_iter()
            .map(|r| r.path_and_query)
            .collect()
    }

    #[test]
    fn translation_rules() {
        assert_eq!(
            wire(
                "metric=bandwidth&did=123&from=1705320000000&to=1705323600000&interval=5min&protocol=tcp&breachtimes=1&fulldevicedetails=false"
            ),
            [
                "/metricdata?metric=bandwidth&did=123&protocol=6&starttime=1705320000000&endtime=1705323600000&interval=300&breachtimes=true"
            ]
        );
        assert_eq!(
            wire("metrics=b,a&starttime=2024-01-15 12:00:00"),
            [
                "/metricdata?metric1=a&metric2=b&starttime=1705320000000&endtime=1705330020000&interval=60"
            ]
        );
        // Unaligned ends are widened to bucket boundaries.
        assert_eq!(
            wire("metric=a&from=2024-01-15T12:02:30Z&to=2024-01-15T12:58:10Z&interval=15min"),
            ["/metricdata?metric=a&starttime=1705320000000&endtime=1705323600000&interval=900"]
        );
        assert_eq!(
            wire("metric=x&devices=456,123"),
            [
                "/metricdata?metric=x&did=123&interval=60",
                "/metricdata?metric=x&did=456&interval=60"
            ]
        );
    }
}
