//! The simulator's deterministic synthetic data: the same question always gets the same numbers.

use std::hash::{Hash, Hasher};

use serde::Serialize;

/// (name, label, units, filtertypes) of every metric the simulator knows: the real appliance
/// names, and the seed's names so its examples run.
const METRICS: &[(&str, &str, &str, &[&str])] = &[
    (
        "connections",
        "Connections",
        "connections",
        &["Feature model", "Protocol", "Destination port"],
    ),
    (
        "externalconnections",
        "External Connections",
        "connections",
        &["Feature model", "Protocol", "Destination port"],
    ),
    (
        "internalconnections",
        "Internal Connections",
        "connections",
        &["Feature model", "Protocol", "Destination port"],
    ),
    (
        "datatransfervolume",
        "Data Transfer",
        "bytes",
        &["Feature model", "Protocol", "Destination port"],
    ),
    (
        "externaldatatransfervolume",
        "External Data Transfer",
        "bytes",
        &["Feature model", "Protocol"],
    ),
    (
        "internaldatatransfervolume",
        "Internal Data Transfer",
        "bytes",
        &["Feature model", "Protocol"],
    ),
    ("uniqueports", "Unique Ports", "ports", &["Feature model"]),
    (
        "newexternalhosts",
        "New External Hosts",
        "hosts",
        &["Feature model"],
    ),
    (
        "bandwidth",
        "Bandwidth",
        "bytes/sec",
        &["Protocol", "Destination port"],
    ),
    (
        "connection_count",
        "Connection Count",
        "count",
        &["Protocol", "Destination port"],
    ),
    ("device_activity", "Device Activity", "score", &[]),
    ("anomaly_score", "Anomaly Score", "score", &[]),
    ("protocol_usage", "Protocol Usage", "count", &["Protocol"]),
    ("cpu_usage", "CPU Usage", "percent", &[]),
    ("memory_usage", "Memory Usage", "percent", &[]),
    (
        "tcp_connections",
        "TCP Connections",
        "count",
        &["Destination port"],
    ),
    ("udp_traffic", "UDP Traffic", "bytes", &["Destination port"]),
    ("http_requests", "HTTP Requests", "count", &[]),
    ("https_requests", "HTTPS Requests", "count", &[]),
    ("threat_level", "Threat Level", "score", &[]),
    ("model_alerts", "Model Alerts", "count", &[]),
];

#[derive(Serialize)]
pub struct CatalogEntry {
    mlid: u64,
    name: &'static str,
    label: &'static str,
    set: &'static str,
    units: &'static str,
    filtertypes: &'static [&'static str],
    unitsinterval: u64,
    lengthscale: u64,
}

impl CatalogEntry {
    pub fn mlid(&self) -> u64 {
        self.mlid
    }
}

pub fn catalog() -> Vec<CatalogEntry> {
    METRICS
        .iter()
        .enumerate()
        .map(|(i, (name, label, units, filtertypes))| CatalogEntry {
            mlid: i as u64 + 1,
            name,
            label,
            set: if i < 8 { "A" } else { "C" },
            units,
            filtertypes,
            unitsinterval: 60,
            lengthscale: 1,
        })
        .collect()
}

pub fn is_known(metric: &str) -> bool {
    METRICS.iter().any(|m| m.0 == metric)
}

#[derive(Serialize)]
pub struct MetricObject<'a> {
    pub metric: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceDetails>,
    pub data: Vec<DataPoint>,
}

#[derive(Serialize)]
pub struct DataPoint {
    pub time: String,
    pub timems: i64,
    pub size: u64,
    #[serde(rename = "in")]
    pub in_: u64,
    pub out: u64,
}

#[derive(Serialize)]
pub struct BreachTimes {
    pub breachtimes: Vec<BreachTime>,
}

#[derive(Serialize)]
pub struct BreachTime {
    pub pid: u64,
    pub pbid: u64,
    pub score: f64,
    pub name: &'static str,
    pub time: i64,
}

#[derive(Serialize)]
pub struct DeviceDetails {
    did: u64,
    ip: String,
    hostname: String,
    label: String,
    macaddress: String,
    vendor: &'static str,
    os: &'static str,
    typename: &'static str,
    tags: Vec<Tag>,
}

#[derive(Serialize)]
struct Tag {
    tid: u64,
    name: &'static str,
}

pub fn device_details(did: u64) -> DeviceDetails {
    let h = hash(&("device", did));
    DeviceDetails {
        did,
        ip: format!(
            "10.{}.{}.{}",
            (did >> 16) & 255,
            (did >> 8) & 255,
            did & 255
        ),
        hostname: format!("host-{did}"),
        label: format!("Device {did}"),
        macaddress: format!(
            "00:1b:44:{:02x}:{:02x}:{:02x}",
            (h >> 16) & 255,
            (h >> 8) & 255,
            h & 255
        ),
        vendor: ["Dell Inc.", "Apple, Inc.", "Lenovo"][(h % 3) as usize],
        os: ["Windows 10", "macOS", "Linux"][(h / 3 % 3) as usize],
        typename: ["Desktop", "Laptop", "Server"][(h / 9 % 3) as usize],
        tags: vec![Tag {
            tid: 1,
            name: "corporate",
        }],
    }
}

/// Everything besides time that selects a series: the metric, the device and the filters.
#[derive(Hash)]
pub struct SeriesKey<'a> {
    pub metric: &'a str,
    pub did: Option<u64>,
    pub filters: &'a [(String, String)],
}

const MINUTE: i64 = 60_000;

/// Buckets `[floor(start), end)` of `interval_ms`, each the maximum of its minutes, as
/// appliances report them. Minutes after `now` do not exist yet.
pub fn series(
    key: &SeriesKey<'_>,
    start: i64,
    end: i64,
    interval_ms: i64,
    now: i64,
) -> Vec<DataPoint> {
    let seed = hash(key);
    let mut points = Vec::new();
    let mut t = start.div_euclid(interval_ms) * interval_ms;
    while t < end {
        let mut best: Option<(u64, u64)> = None;
        let mut m = t.div_euclid(MINUTE) * MINUTE;
        while m < t + interval_ms && m <= now {
            let h = hash(&(seed, m));
            let size = 10 + h % 990;
            let inbound = size * ((h >> 20) % 100) / 100;
            if best.is_none_or(|(s, _)| size > s) {
                best = Some((size, inbound));
            }
            m += MINUTE;
        }
        if let Some((size, inbound)) = best {
            points.push(DataPoint {
                time: format_time(t),
                timems: t,
                size,
                in_: inbound,
                out: size - inbound,
            });
        }
        t += interval_ms;
    }
    points
}

const MODELS: &[&str] = &[
    "Compromise::Beaconing Activity To External Rare",
    "Device::Anomalous Connection",
    "Anomalous Connection::Data Sent to Rare Domain",
];

/// Model breaches: a few per day, at deterministic times.
pub fn breaches(did: Option<u64>, start: i64, end: i64) -> Vec<BreachTime> {
    const HOUR: i64 = 3_600_000;
    let mut out = Vec::new();
    let mut h = start.div_euclid(HOUR) * HOUR;
    while h < end {
        let x = hash(&("breach", did, h));
        if x.is_multiple_of(5) {
            let time = h + (x >> 8) as i64 % HOUR;
            if (start..end).contains(&time) {
                out.push(BreachTime {
                    pid: 300 + x % 50,
                    pbid: 290_000 + (x >> 16) % 10_000,
                    score: ((x >> 24) % 1000) as f64 / 1000.0,
                    name: MODELS[(x >> 32) as usize % MODELS.len()],
                    time,
                });
            }
        }
        h += HOUR;
    }
    out
}

fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A stable hash (SipHash with fixed keys), so data is the same across runs and processes.
fn hash(value: &impl Hash) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6d65_7472_6963, 0x6761_7465);
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_buckets_are_the_max_of_fine_ones() {
        let key = SeriesKey {
            metric: "connections",
            did: Some(7),
            filters: &[],
        };
        let start = 1_705_320_000_000;
        let end = start + 3_600_000;
        let fine = series(&key, start, end, 300_000, i64::MAX);
        let coarse = series(&key, start, end, 3_600_000, i64::MAX);
        assert_eq!(fine.len(), 12);
        assert_eq!(coarse.len(), 1);
        assert_eq!(coarse[0].size, fine.iter().map(|p| p.size).max().unwrap());
        assert_eq!(
            series(&key, start, end, 300_000, i64::MAX)[3].size,
            fine[3].size
        );
    }

    #[test]
    fn buckets_are_floored_to_the_interval() {
        let key = SeriesKey {
            metric: "connections",
            did: None,
            filters: &[],
        };
        let p = series(&key, 1_582_900_189_000, 1_582_900_300_000, 60_000, i64::MAX);
        assert_eq!(p[0].timems, 1_582_900_140_000);
    }
}
