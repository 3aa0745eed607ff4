//! What was decoded from one or more appliance answers, merged, before it becomes one
//! [`MetricData`](super::MetricData).

use std::collections::{BTreeMap, BTreeSet};

use super::{Breach, Device, Series};

/// What was decoded from one or more answers, before it is assembled into [`MetricData`].
#[derive(Default)]
pub(crate) struct Collected {
    pub(super) series: BTreeMap<(String, Option<u64>), Series>,
    pub(super) breaches: Vec<Breach>,
    /// Device details given apart from the series (`fulldevicedetails=true`).
    pub(super) devices: Vec<Device>,
    /// What the answer held that no known shape explains, described by its keys.
    pub(super) unknown: Vec<String>,
    /// Metrics the part being decoded holds.
    pub(super) seen: BTreeSet<String>,
}

impl Collected {
    pub(crate) fn series_mut(&mut self, metric: &str, device: Option<Device>) -> &mut Series {
        if !self.seen.contains(metric) {
            self.seen.insert(metric.to_owned());
        }
        let did = device.as_ref().map(|d| d.did);
        let entry = self
            .series
            .entry((metric.to_owned(), did))
            .or_insert_with(|| Series {
                appliance: None,
                metric: metric.to_owned(),
                unit: None,
                device: None,
                points: Vec::new(),
            });
        // Keep the most detailed device description seen.
        if let Some(d) = device
            && entry
                .device
                .as_ref()
                .is_none_or(|old| detail(old) < detail(&d))
        {
            entry.device = Some(d);
        }
        entry
    }

    pub(crate) fn add_breach(&mut self, breach: Breach) {
        self.breaches.push(breach);
    }

    pub(crate) fn add_device(&mut self, device: Device) {
        self.devices.push(device);
    }

    /// Records a part of the answer of no known shape (`what` names keys, never values).
    pub(crate) fn unknown(&mut self, what: String) {
        self.unknown.push(what);
    }

    /// Gives each series the most detailed description of its device given apart.
    pub(super) fn attach_devices(&mut self) {
        for device in std::mem::take(&mut self.devices) {
            for ((_, did), series) in self.series.iter_mut() {
                if *did == Some(device.did)
                    && series
                        .device
                        .as_ref()
                        .is_none_or(|old| detail(old) < detail(&device))
                {
                    series.device = Some(device.clone());
                }
            }
        }
    }
}

fn detail(d: &Device) -> usize {
    [
        &d.ip,
        &d.hostname,
        &d.label,
        &d.macaddress,
        &d.vendor,
        &d.os,
        &d.typename,
    ]
    .iter()
    .filter(|f| f.is_some())
    .count()
        + usize::from(d.tags.is_some())
}
