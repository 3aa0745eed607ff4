//! The upstream shapes, as typed serde structs.
//!
//! One permissive point type covers them all: the appliance's `{time, timems, size, in, out}`
//! and the seed's `{timestamp, value, device, breaches, values}`. Unknown fields are ignored;
//! a body with none of the fields that make a shape is refused.
//!
//! `fulldevicedetails=true` may add a `{"devices": […]}` element to the array, or wrap the
//! array in an object beside a `devices` list (as other endpoints do); both are read, and the
//! devices attached to their series. An array element, or a wrapper's field, of no known shape
//! is never dropped silently: it is recorded (by its keys, never its values) for a warning.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Number;

use super::AnswerError;
use super::{Breach, Collected, Device, Point};

/// An element of the appliance's array: a metric object, the leading `breachtimes` object,
/// or a `devices` list.
#[derive(Deserialize)]
struct ArrayElement {
    breachtimes: Option<Vec<InBreach>>,
    devices: Option<Vec<InDevice>>,
    metric: Option<String>,
    data: Option<Vec<InPoint>>,
    device: Option<InDevice>,
    unit: Option<String>,
    units: Option<String>,
}

/// The seed's object shapes, and `{"error": …}`.
#[derive(Deserialize)]
struct ObjectBody {
    error: Option<String>,
    metric: Option<String>,
    unit: Option<String>,
    data: Option<ObjectData>,
    device: Option<InDevice>,
    breachtimes: Option<Vec<InBreach>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ObjectData {
    Points(Vec<InPoint>),
    ByMetric(BTreeMap<String, Vec<InPoint>>),
}

#[derive(Deserialize)]
struct InPoint {
    timems: Option<i64>,
    timestamp: Option<i64>,
    size: Option<Number>,
    value: Option<Number>,
    #[serde(rename = "in")]
    in_: Option<Number>,
    out: Option<Number>,
    unit: Option<String>,
    device: Option<InDevice>,
    breaches: Option<Vec<InBreach>>,
    values: Option<Vec<DeviceValue>>,
}

#[derive(Deserialize)]
struct DeviceValue {
    device_id: Id,
    value: Option<Number>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(u64),
    Text(String),
}

impl Id {
    fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Number(n) => Some(*n),
            Id::Text(t) => t.parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct InDevice {
    did: Option<Id>,
    ip: Option<String>,
    hostname: Option<String>,
    label: Option<String>,
    devicelabel: Option<String>,
    macaddress: Option<String>,
    vendor: Option<String>,
    os: Option<String>,
    typename: Option<String>,
    devicetype: Option<String>,
    tags: Option<Vec<Tag>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Tag {
    Name(String),
    Object { name: String },
}

#[derive(Deserialize)]
struct InBreach {
    time: Option<i64>,
    name: Option<String>,
    model_name: Option<String>,
    score: Option<f64>,
    pbid: Option<u64>,
    pid: Option<u64>,
    did: Option<u64>,
    breach_id: Option<Id>,
}

fn bad(reason: impl Into<String>) -> AnswerError {
    AnswerError::UnknownShape {
        reason: reason.into(),
        cause: None,
    }
}

fn bad_json(what: &str, e: serde_json::Error) -> AnswerError {
    AnswerError::UnknownShape {
        reason: format!("{what}: {e}"),
        cause: Some(std::sync::Arc::new(e)),
    }
}

/// Decodes one answer into `out`. `asked_device` is the `did` the request carried.
pub(super) fn decode(
    body: &[u8],
    asked_device: Option<u64>,
    out: &mut Collected,
) -> Result<(), AnswerError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            let elements: Vec<ArrayElement> =
                serde_json::from_slice(body).map_err(|e| bad_json("array", e))?;
            decode_elements(elements, asked_device, out, || {
                serde_json::from_slice::<Vec<Keys>>(body).unwrap_or_default()
            })
        }
        Some(b'{') => {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body).map_err(|e| bad_json("object", e))?;
            if object.contains_key("devices")
                && !object.contains_key("data")
                && !object.contains_key("error")
            {
                return decode_wrapped(object, asked_device, out);
            }
            let object: ObjectBody = serde_json::from_value(serde_json::Value::Object(object))
                .map_err(|e| bad_json("object", e))?;
            decode_object(object, asked_device, out)
        }
        _ => Err(bad("the body is not a JSON array or object")),
    }
}

/// The keys of an element, for a warning that never shows its values.
type Keys = BTreeMap<String, serde::de::IgnoredAny>;

/// The array's elements into `out`; `keys` reads every element's keys again, only when one
/// of them has no known shape.
fn decode_elements(
    elements: Vec<ArrayElement>,
    asked_device: Option<u64>,
    out: &mut Collected,
    keys: impl FnOnce() -> Vec<Keys>,
) -> Result<(), AnswerError> {
    let mut unknown = Vec::new();
    for (i, element) in elements.into_iter().enumerate() {
        if !decode_array_element(element, asked_device, out)? {
            unknown.push(i);
        }
    }
    if !unknown.is_empty() {
        let keys = keys();
        for i in unknown {
            let names: Vec<&str> = keys
                .get(i)
                .map(|k| k.keys().map(String::as_str).collect())
                .unwrap_or_default();
            out.unknown(format!(
                "an array element with keys [{}]",
                names
                    .iter()
                    .map(|k| crate::query::shown(k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// `{"<list>": [elements], "devices": [...]}`: the answer wrapped beside device details.
fn decode_wrapped(
    object: serde_json::Map<String, serde_json::Value>,
    asked_device: Option<u64>,
    out: &mut Collected,
) -> Result<(), AnswerError> {
    let mut lists = 0;
    for (key, value) in object {
        if key == "devices" {
            let devices: Vec<InDevice> =
                serde_json::from_value(value).map_err(|e| bad_json("devices", e))?;
            add_devices(devices, out)?;
            continue;
        }
        match value {
            serde_json::Value::Array(items) => {
                lists += 1;
                let keys: Vec<Keys> = items
                    .iter()
                    .map(|item| {
                        item.as_object()
                            .map(|o| {
                                o.keys()
                                    .map(|k| (k.clone(), serde::de::IgnoredAny))
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect();
                let elements: Vec<ArrayElement> =
                    serde_json::from_value(serde_json::Value::Array(items))
                        .map_err(|e| bad_json(&format!("`{}`", crate::query::shown(&key)), e))?;
                decode_elements(elements, asked_device, out, || keys)?;
            }
            _ => out.unknown(format!(
                "a field `{}` beside the device details",
                crate::query::shown(&key)
            )),
        }
    }
    if lists == 0 {
        return Err(bad(
            "an object with `devices` but no list of metric objects",
        ));
    }
    Ok(())
}

fn add_devices(devices: Vec<InDevice>, out: &mut Collected) -> Result<(), AnswerError> {
    for d in devices {
        if let Some(device) = device_for(Some(d), None)? {
            out.add_device(device);
        }
    }
    Ok(())
}

/// One array element into `out`; `false` when it has no known shape.
fn decode_array_element(
    e: ArrayElement,
    asked_device: Option<u64>,
    out: &mut Collected,
) -> Result<bool, AnswerError> {
    let mut known = false;
    if let Some(list) = e.breachtimes {
        known = true;
        for b in list {
            out.add_breach(breach(b, asked_device)?);
        }
    }
    if let Some(devices) = e.devices {
        known = true;
        add_devices(devices, out)?;
    }
    match (e.metric, e.data) {
        (Some(metric), Some(points)) => {
            let device = device_for(e.device, asked_device)?;
            let unit = e.unit.or(e.units);
            add_points(out, &metric, device, unit, points, asked_device)?;
            Ok(true)
        }
        (None, None) => Ok(known),
        (Some(_), None) => Err(bad("a metric object has no `data`")),
        (None, Some(_)) => Err(bad("a `data` list has no `metric`")),
    }
}

fn decode_object(
    o: ObjectBody,
    asked_device: Option<u64>,
    out: &mut Collected,
) -> Result<(), AnswerError> {
    if let Some(message) = o.error {
        return Err(AnswerError::Reported(message.chars().take(300).collect()));
    }
    if let Some(list) = o.breachtimes {
        for b in list {
            out.add_breach(breach(b, asked_device)?);
        }
    }
    match o.data {
        Some(ObjectData::Points(points)) => {
            let metric = o
                .metric
                .ok_or_else(|| bad("an object with a `data` list has no `metric`"))?;
            let device = device_for(o.device, asked_device)?;
            add_points(out, &metric, device, o.unit, points, asked_device)
        }
        Some(ObjectData::ByMetric(map)) => {
            for (metric, points) in map {
                let device = device_for(None, asked_device)?;
                add_points(out, &metric, device, None, points, asked_device)?;
            }
            Ok(())
        }
        None => Err(bad("an object with neither `data` nor `error`")),
    }
}

fn add_points(
    out: &mut Collected,
    metric: &str,
    device: Option<Device>,
    unit: Option<String>,
    points: Vec<InPoint>,
    asked_device: Option<u64>,
) -> Result<(), AnswerError> {
    let no_points = points.is_empty();
    for p in points {
        let timestamp = p
            .timems
            .or(p.timestamp)
            .ok_or_else(|| bad("a point has neither `timems` nor `timestamp`"))?;
        if let Some(list) = p.breaches {
            let did = p
                .device
                .as_ref()
                .and_then(|d| d.did.as_ref()?.as_u64())
                .or(asked_device);
            for b in list {
                out.add_breach(breach(b, did)?);
            }
        }
        // The seed's multi-device shape: one value per device per timestamp.
        if let Some(values) = p.values {
            for v in values {
                let did = v
                    .device_id
                    .as_u64()
                    .ok_or_else(|| bad("a `values` entry has a non-numeric `device_id`"))?;
                let series = out.series_mut(metric, Some(Device::bare(did)));
                series.points.push(Point {
                    timestamp,
                    value: v.value,
                    in_: None,
                    out: None,
                });
            }
            continue;
        }
        let point_device = match p.device {
            Some(d) => device_for(Some(d), asked_device)?,
            None => device.clone(),
        };
        let series = out.series_mut(metric, point_device);
        if series.unit.is_none() {
            series.unit = p.unit.or_else(|| unit.clone());
        }
        series.points.push(Point {
            timestamp,
            value: p.value.or(p.size),
            in_: p.in_,
            out: p.out,
        });
    }
    if no_points {
        // A metric with no points still gets its (empty) series.
        let series = out.series_mut(metric, device);
        if series.unit.is_none() {
            series.unit = unit;
        }
    }
    Ok(())
}

fn device_for(given: Option<InDevice>, asked: Option<u64>) -> Result<Option<Device>, AnswerError> {
    let Some(d) = given else {
        return Ok(asked.map(Device::bare));
    };
    let did = match &d.did {
        Some(id) => Some(
            id.as_u64()
                .ok_or_else(|| bad("a device has a non-numeric `did`"))?,
        ),
        None => asked,
    };
    let Some(did) = did else {
        return Ok(None);
    };
    Ok(Some(Device {
        did,
        ip: d.ip,
        hostname: d.hostname,
        label: d.label.or(d.devicelabel),
        macaddress: d.macaddress,
        vendor: d.vendor,
        os: d.os,
        typename: d.typename.or(d.devicetype),
        tags: d.tags.map(|tags| {
            tags.into_iter()
                .map(|t| match t {
                    Tag::Name(n) | Tag::Object { name: n } => n,
                })
                .collect()
        }),
    }))
}

fn breach(b: InBreach, did: Option<u64>) -> Result<Breach, AnswerError> {
    Ok(Breach {
        appliance: None,
        time: b.time.ok_or_else(|| bad("a breach has no `time`"))?,
        model: b.name.or(b.model_name),
        score: b.score,
        pbid: b.pbid,
        pid: b.pid,
        did: b.did.or(did),
        id: b.breach_id.map(|id| match id {
            Id::Number(n) => n.to_string(),
            Id::Text(t) => t,
        }),
    })
}
