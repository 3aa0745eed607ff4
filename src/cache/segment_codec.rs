//! The segment's compact, versioned encoding, for tiers that keep bytes (Redis now, a disk
//! later): varints, delta-coded timestamps, numbers tagged as JSON had them; never JSON.

use serde_json::Number;

use super::freshness::Deadlines;
use super::segment::Segment;
use crate::normalize::{Breach, Device, Point, Series};

/// The encoding's version, its first byte: a tier drops (as missing) what another version
/// wrote, so replicas of two releases never misread each other's segments.
const VERSION: u8 = 2;

/// The compact form of a segment.
pub(super) fn encode(segment: &Segment) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + segment.bytes / 4));
    w.0.push(VERSION);
    let d = &segment.deadlines;
    for n in [
        d.stored_at,
        d.fresh_until,
        d.stale_while_revalidate_until,
        d.stale_if_error_until,
        segment.settled_until,
    ] {
        w.signed(n);
    }
    w.unsigned(segment.series.len() as u64);
    for s in &segment.series {
        w.string(&s.metric);
        w.opt_string(s.unit.as_deref());
        match &s.device {
            None => w.0.push(0),
            Some(device) => {
                w.0.push(1);
                w.unsigned(device.did);
                for field in [
                    &device.ip,
                    &device.hostname,
                    &device.label,
                    &device.macaddress,
                    &device.vendor,
                    &device.os,
                    &device.typename,
                ] {
                    w.opt_string(field.as_deref());
                }
                match &device.tags {
                    None => w.0.push(0),
                    Some(tags) => {
                        w.0.push(1);
                        w.unsigned(tags.len() as u64);
                        for tag in tags {
                            w.string(tag);
                        }
                    }
                }
            }
        }
        w.unsigned(s.points.len() as u64);
        let mut previous = 0i64;
        for p in &s.points {
            w.signed(p.timestamp.wrapping_sub(previous));
            previous = p.timestamp;
            w.number(p.value.as_ref());
            w.number(p.in_.as_ref());
            w.number(p.out.as_ref());
        }
    }
    w.unsigned(segment.breaches.len() as u64);
    for b in &segment.breaches {
        w.signed(b.time);
        w.opt_string(b.model.as_deref());
        match b.score {
            None => w.0.push(0),
            Some(score) => {
                w.0.push(1);
                w.0.extend_from_slice(&score.to_le_bytes());
            }
        }
        for n in [b.pbid, b.pid, b.did] {
            match n {
                None => w.0.push(0),
                Some(n) => {
                    w.0.push(1);
                    w.unsigned(n);
                }
            }
        }
        w.opt_string(b.id.as_deref());
    }
    w.0
}

/// The segment `bytes` hold, or `None` for bytes of another version, cut short, or malformed.
pub(super) fn decode(bytes: &[u8]) -> Option<Segment> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let deadlines = Deadlines {
        stored_at: r.signed()?,
        fresh_until: r.signed()?,
        stale_while_revalidate_until: r.signed()?,
        stale_if_error_until: r.signed()?,
    };
    let settled_until = r.signed()?;
    let count = r.len()?;
    let mut series = Vec::with_capacity(count);
    for _ in 0..count {
        let metric = r.string()?;
        let unit = r.opt_string()?;
        let device = match r.byte()? {
            0 => None,
            _ => Some(Device {
                did: r.unsigned()?,
                ip: r.opt_string()?,
                hostname: r.opt_string()?,
                label: r.opt_string()?,
                macaddress: r.opt_string()?,
                vendor: r.opt_string()?,
                os: r.opt_string()?,
                typename: r.opt_string()?,
                tags: match r.byte()? {
                    0 => None,
                    _ => {
                        let n = r.len()?;
                        let mut tags = Vec::with_capacity(n);
                        for _ in 0..n {
                            tags.push(r.string()?);
                        }
                        Some(tags)
                    }
                },
            }),
        };
        let n = r.len()?;
        let mut points = Vec::with_capacity(n);
        let mut previous = 0i64;
        for _ in 0..n {
            let timestamp = previous.wrapping_add(r.signed()?);
            previous = timestamp;
            points.push(Point {
                timestamp,
                value: r.number()?,
                in_: r.number()?,
                out: r.number()?,
            });
        }
        series.push(Series {
            appliance: None,
            metric,
            unit,
            device,
            points,
        });
    }
    let n = r.len()?;
    let mut breaches = Vec::with_capacity(n);
    for _ in 0..n {
        let time = r.signed()?;
        let model = r.opt_string()?;
        let score = match r.byte()? {
            0 => None,
            _ => Some(f64::from_le_bytes(r.take(8)?.try_into().ok()?)),
        };
        let mut opt = || -> Option<Option<u64>> {
            Some(match r.byte()? {
                0 => None,
                _ => Some(r.unsigned()?),
            })
        };
        let (pbid, pid, did) = (opt()?, opt()?, opt()?);
        breaches.push(Breach {
            appliance: None,
            time,
            model,
            score,
            pbid,
            pid,
            did,
            id: r.opt_string()?,
        });
    }
    if !r.0.is_empty() {
        return None;
    }
    // Prefetched or not where it was fetched: this replica did not prefetch it.
    Some(Segment::new(
        series,
        breaches,
        deadlines,
        settled_until,
        None,
    ))
}

struct Writer(Vec<u8>);

impl Writer {
    fn unsigned(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn signed(&mut self, n: i64) {
        self.unsigned(((n << 1) ^ (n >> 63)) as u64);
    }

    fn string(&mut self, s: &str) {
        self.unsigned(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.string(s);
            }
        }
    }

    /// A JSON number as it was: unsigned, signed or floating.
    fn number(&mut self, n: Option<&Number>) {
        match n {
            None => self.0.push(0),
            Some(n) => {
                if let Some(u) = n.as_u64() {
                    self.0.push(1);
                    self.unsigned(u);
                } else if let Some(i) = n.as_i64() {
                    self.0.push(2);
                    self.signed(i);
                } else {
                    self.0.push(3);
                    self.0
                        .extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
                }
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn unsigned(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn signed(&mut self) -> Option<i64> {
        let n = self.unsigned()?;
        Some(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    /// A count, never more than the bytes left could hold.
    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.unsigned()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }

    fn string(&mut self) -> Option<String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        Some(match self.byte()? {
            0 => None,
            _ => Some(self.string()?),
        })
    }

    fn number(&mut self) -> Option<Option<Number>> {
        Some(match self.byte()? {
            0 => None,
            1 => Some(Number::from(self.unsigned()?)),
            2 => Some(Number::from(self.signed()?)),
            _ => Some(Number::from_f64(f64::from_le_bytes(
                self.take(8)?.try_into().ok()?,
            ))?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_survive_the_compact_round_trip() {
        let series = vec![Series {
            appliance: None,
            metric: "connections".into(),
            unit: Some("connections".into()),
            device: Some(Device {
                tags: Some(vec!["a".into(), "é".into()]),
                hostname: Some("host".into()),
                ..Device::bare(42)
            }),
            points: vec![
                Point {
                    timestamp: 1_705_320_000_000,
                    value: Some(Number::from(14)),
                    in_: Some(Number::from(-3)),
                    out: Number::from_f64(2.5),
                },
                Point {
                    timestamp: 1_705_320_300_000,
                    value: None,
                    in_: None,
                    out: None,
                },
            ],
        }];
        let breaches = vec![Breach {
            appliance: None,
            time: 1_705_320_060_000,
            model: Some("Device / Anomalous Activity".into()),
            score: Some(0.95),
            pbid: Some(7),
            pid: None,
            did: Some(42),
            id: None,
        }];
        let deadlines = Deadlines {
            stored_at: 1,
            fresh_until: 2,
            stale_while_revalidate_until: 3,
            stale_if_error_until: -4,
        };
        let segment = Segment::new(series, breaches, deadlines, 5, None);
        let bytes = encode(&segment);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.series, segment.series);
        assert_eq!(back.breaches, segment.breaches);
        assert_eq!(back.deadlines, segment.deadlines);
        assert_eq!(back.settled_until, 5);
        assert!(bytes.len() < 150, "compact: {} bytes", bytes.len());
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(b"").is_none());
        let mut other_version = bytes.clone();
        other_version[0] = VERSION + 1;
        assert!(decode(&other_version).is_none());
    }
}
