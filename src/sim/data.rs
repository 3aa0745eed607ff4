//! The simulator's deterministic synthetic data: the same question always gets the same numbers.

use std::hash::Hash;

use serde::Serialize;

use super::estate::{Estate, OWN_METRICS, hash};
use super::profile::{Anchoring, EndRule, Profile};

/// One catalog row: (name, label, units, filtertypes).
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// (name, label, units, filtertypes) of every metric the simulator knows: the real appliance
/// names, and the seed's names so its examples run.
const METRICS: &[Metric] = &[
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

/// The metrics `estate` knows, in catalog order: the shared ones it keeps, then its own.
fn metrics(estate: &Estate) -> impl Iterator<Item = &'static Metric> + '_ {
    let own = if estate.is_default() {
        &[][..]
    } else {
        OWN_METRICS
    };
    METRICS
        .iter()
        .filter(|m| estate.keeps(m.0))
        .chain(own.iter())
}

pub fn catalog(estate: &Estate) -> Vec<CatalogEntry> {
    let first = estate.first_mlid();
    metrics(estate)
        .enumerate()
        .map(|(i, (name, label, units, filtertypes))| CatalogEntry {
            mlid: first + i as u64,
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

pub fn is_known(estate: &Estate, metric: &str) -> bool {
    metrics(estate).any(|m| m.0 == metric)
}

#[derive(Serialize)]
pub struct MetricObject<'a> {
    pub metric: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a DeviceDetails>,
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

pub fn device_details(estate: &Estate, did: u64) -> DeviceDetails {
    let h = estate.salt(("device", did));
    let (hostname, ip) = estate.host(did);
    DeviceDetails {
        did,
        ip,
        hostname,
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

/// What one `/metricdata` request asked for, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub start: i64,
    pub end: i64,
    pub interval_ms: i64,
}

impl Asked {
    /// Whether `t` is inside the range, as `profile` reads its end.
    fn inside(&self, t: i64, profile: &Profile) -> bool {
        match profile.end {
            EndRule::Exclusive => t < self.end,
            EndRule::Inclusive => t <= self.end,
        }
    }
}

/// The newest minute the appliance has data for, at `now`.
fn newest_minute(now: i64, profile: &Profile) -> i64 {
    now.saturating_sub((profile.behind_minutes as i64).saturating_mul(MINUTE))
}

/// Buckets of `asked.interval_ms`, anchored as `profile` says, each the maximum of its
/// minutes inside the asked range, as appliances report them. Minutes the appliance has no
/// data for yet (after `now`, or later than it is behind) are left out, and a bucket without
/// any is not reported.
pub fn series(
    estate: &Estate,
    key: &SeriesKey<'_>,
    asked: &Asked,
    now: i64,
    profile: &Profile,
) -> Vec<DataPoint> {
    let seed = estate.salt(key);
    let interval = asked.interval_ms;
    let newest = newest_minute(now, profile);
    let provisional_after =
        newest.saturating_sub((profile.revise_minutes as i64).saturating_mul(MINUTE));
    let first_minute = asked.start.div_euclid(MINUTE) * MINUTE;
    // Older than the retention: gone from the appliance.
    let oldest = match profile.retention_days {
        0 => i64::MIN,
        days => now.saturating_sub((days as i64).saturating_mul(86_400_000)),
    };
    let mut points = Vec::new();
    let mut t = match profile.anchoring {
        Anchoring::Epoch => asked.start.div_euclid(interval) * interval,
        Anchoring::Start => asked.start,
        Anchoring::Minute => first_minute,
    };
    while asked.inside(t, profile) {
        let mut best: Option<(u64, u64)> = None;
        let mut m = (t.div_euclid(MINUTE) * MINUTE).max(first_minute);
        while m < t + interval && asked.inside(m, profile) && m <= newest {
            if m < oldest {
                m += MINUTE;
                continue;
            }
            let h = hash(&(seed, m));
            let mut size = 10 + h % 990;
            if m > provisional_after {
                size /= 2;
            }
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
        t += interval;
    }
    points
}

/// Application protocols by the appliance's code: the guide's BITTORRENT (1053) and a few
/// common ones. Codes differ between appliances; the gateway learns them from `/enums`.
pub const APPLICATION_PROTOCOLS: &[(u32, &str)] = &[
    (1, "Unknown"),
    (1001, "HTTP"),
    (1002, "HTTPS"),
    (1003, "SMTP"),
    (1004, "DNS"),
    (1005, "SSH"),
    (1006, "FTP"),
    (1007, "SMB"),
    (1008, "RDP"),
    (1009, "SSL/TLS"),
    (1010, "IMAP"),
    (1011, "POP3"),
    (1053, "BITTORRENT"),
];

/// `GET /enums`, in the guide's shape: categories by readable name, each a list of
/// `{code, name}` with the codes as strings.
pub fn enums(estate: &Estate) -> serde_json::Value {
    let list = |items: &[(&str, &str)]| {
        items
            .iter()
            .map(|(code, name)| serde_json::json!({"code": code, "name": name}))
            .collect::<Vec<_>>()
    };
    let protocols: Vec<serde_json::Value> = APPLICATION_PROTOCOLS
        .iter()
        .map(|(code, name)| serde_json::json!({"code": code.to_string(), "name": name}))
        .collect();
    serde_json::json!({
        "Country": list(&[("0", "Unknown"), ("AD", "Andorra"), ("GB", "United Kingdom")]),
        "Matching metrics": metrics(estate).map(|m| serde_json::json!({"code": m.0, "name": m.1})).collect::<Vec<_>>(),
        "Protocol": list(&[("1", "ICMP"), ("6", "TCP"), ("17", "UDP")]),
        "Application protocol": protocols,
        "Internal source device type": [
            {"code": "0", "name": "None", "hidden": true},
            {"code": "2", "name": "Laptop"}
        ],
    })
}

const MODELS: &[&str] = &[
    "Compromise::Beaconing Activity To External Rare",
    "Device::Anomalous Connection",
    "Anomalous Connection::Data Sent to Rare Domain",
];

/// Model breaches: a few per day, at deterministic times, none newer than the appliance's
/// data.
pub fn breaches(
    estate: &Estate,
    did: Option<u64>,
    asked: &Asked,
    now: i64,
    profile: &Profile,
) -> Vec<BreachTime> {
    const HOUR: i64 = 3_600_000;
    let newest = newest_minute(now, profile);
    let mut out = Vec::new();
    let mut h = asked.start.div_euclid(HOUR) * HOUR;
    while asked.inside(h, profile) {
        let x = estate.salt(("breach", did, h));
        if x.is_multiple_of(5) {
            let time = h + (x >> 8) as i64 % HOUR;
            if time >= asked.start && asked.inside(time, profile) && time <= newest {
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: SeriesKey<'static> = SeriesKey {
        metric: "connections",
        did: Some(7),
        filters: &[],
    };

    fn asked(start: i64, end: i64, interval_ms: i64) -> Asked {
        Asked {
            start,
            end,
            interval_ms,
        }
    }

    #[test]
    fn coarse_buckets_are_the_max_of_fine_ones() {
        let start = 1_705_320_000_000;
        let end = start + 3_600_000;
        let p = Profile::default();
        let fine = series(
            &Estate::default(),
            &KEY,
            &asked(start, end, 300_000),
            i64::MAX,
            &p,
        );
        let coarse = series(
            &Estate::default(),
            &KEY,
            &asked(start, end, 3_600_000),
            i64::MAX,
            &p,
        );
        assert_eq!(fine.len(), 12);
        assert_eq!(coarse.len(), 1);
        assert_eq!(coarse[0].size, fine.iter().map(|p| p.size).max().unwrap());
    }

    #[test]
    fn buckets_are_floored_to_the_interval() {
        let p = series(
            &Estate::default(),
            &KEY,
            &asked(1_582_900_189_000, 1_582_900_300_000, 60_000),
            i64::MAX,
            &Profile::default(),
        );
        assert_eq!(p[0].timems, 1_582_900_140_000);
    }

    #[test]
    fn profiles_anchor_and_end_differently_on_unaligned_ranges() {
        // 12:02:30 to 13:00, hourly buckets.
        let a = asked(1_705_320_150_000, 1_705_323_600_000, 3_600_000);
        let times = |anchoring, end| {
            let profile = Profile {
                anchoring,
                end,
                ..Profile::default()
            };
            series(&Estate::default(), &KEY, &a, i64::MAX, &profile)
                .iter()
                .map(|p| p.timems)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            times(Anchoring::Epoch, EndRule::Exclusive),
            [1_705_320_000_000]
        );
        assert_eq!(
            times(Anchoring::Start, EndRule::Exclusive),
            [1_705_320_150_000]
        );
        assert_eq!(
            times(Anchoring::Minute, EndRule::Exclusive),
            [1_705_320_120_000]
        );
        assert_eq!(
            times(Anchoring::Epoch, EndRule::Inclusive),
            [1_705_320_000_000, 1_705_323_600_000]
        );
    }

    #[test]
    fn a_behind_appliance_fills_in_later_and_revises_its_newest_minutes() {
        let start = 1_705_320_000_000;
        let a = asked(start, start + 600_000, 60_000);
        let now = start + 600_000;
        let behind = Profile {
            behind_minutes: 3,
            ..Profile::default()
        };
        assert_eq!(series(&Estate::default(), &KEY, &a, now, &behind).len(), 8);
        assert_eq!(
            series(&Estate::default(), &KEY, &a, now + 180_000, &behind).len(),
            10
        );
        let revising = Profile {
            revise_minutes: 2,
            ..Profile::default()
        };
        let early = series(&Estate::default(), &KEY, &a, start + 540_000, &revising);
        let late = series(&Estate::default(), &KEY, &a, start + 900_000, &revising);
        assert!(
            early[9].size < late[9].size,
            "the newest minute is revised up"
        );
        assert_eq!(early[6].size, late[6].size, "older minutes are final");
    }

    #[test]
    fn a_seeded_estate_is_another_appliance() {
        let (home, lab) = (Estate::default(), Estate::seeded(1));
        let names = |e: &Estate| catalog(e).iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(&home).len(), METRICS.len());
        assert_eq!(catalog(&home)[0].mlid, 1);
        assert!(names(&lab).contains(&"connections"));
        assert!(names(&lab).contains(&"saasconnections"));
        assert!(!names(&home).contains(&"saasconnections"));
        assert!(names(&lab).len() < METRICS.len() + OWN_METRICS.len());
        assert!(catalog(&lab)[0].mlid > 100);
        assert!(!is_known(&home, "ot_writes") && is_known(&lab, "ot_writes"));
        let hour = asked(1_705_320_000_000, 1_705_323_600_000, 300_000);
        let p = Profile::default();
        let sizes = |e: &Estate| {
            series(e, &KEY, &hour, i64::MAX, &p)
                .iter()
                .map(|d| d.size)
                .collect::<Vec<_>>()
        };
        assert_ne!(sizes(&home), sizes(&lab));
        assert_ne!(
            device_details(&home, 7).hostname,
            device_details(&lab, 7).hostname
        );
    }
}
