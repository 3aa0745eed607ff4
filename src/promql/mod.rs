//! PromQL over Darktrace metrics, for Grafana's built-in Prometheus data source: the whole
//! language for float samples, parsed by `promql-parser`, planned into `/metricdata`
//! questions ([`MetricQuery`], validated by the same builder and limits as `/v1`) and
//! evaluated by a pure engine ([`engine`]) over their normalized answers. No HTTP here:
//! `api/prometheus` extracts and answers, the use case fetches.
//!
//! The request path: [`parse`] → [`plan`] (the engine's hints → [`select`]'s questions) →
//! the use case fetches → [`engine`] evaluates → [`value`] serializes.
//!
//! The mapping: every series has an `appliance` label, the name of the appliance it came from
//! (a selector's matchers on it pick the appliances it reads; without any it reads them all).
//! A metric name is the catalog's name; labels are the appliance's filters
//! (`did`, `ddid`, `odid`, `port`, `sourceport`, `destinationport`, `protocol`,
//! `applicationprotocol`), `direction` (`in`/`out`) for the parts of a value, and the device's
//! `hostname`, `ip` and `label` where known. A query at step `s` asks the appliance for
//! buckets of `s` rounded to whole minutes; the value at time `t` is the bucket holding `t`.
//! Model breaches are the series [`BREACH_METRIC`].

mod engine;
mod error;
mod listing;
mod parse;
mod plan;
mod select;
pub mod time;
mod value;

use std::cell::OnceCell;
use std::collections::BTreeMap;

pub use engine::series::{Labels, METRIC_NAME};
pub use error::PromError;
pub use listing::{Appliances, Listing, Metadata, label_names, label_values, metadata, series};
pub use parse::format;
pub use plan::{At, Plan};
pub use value::QueryData;

use crate::normalize::{Device, MetricInfo};
use crate::query::MetricNames;
use crate::settings::QueryLimits;

/// The label naming the appliance a series came from: every series has it, and a selector's
/// matchers on it pick the appliances it reads.
pub const APPLIANCE: &str = "appliance";

/// The series of model breaches: one per breach, its value the breach's score.
pub const BREACH_METRIC: &str = "darktrace_model_breach";

/// What planning needs to know besides the query: the limits, the appliance's catalog and
/// the devices the gateway knows of.
pub struct Context<'a> {
    pub limits: &'a QueryLimits,
    /// The catalog's names, as `/v1`'s parser checks them.
    pub names: &'a dyn MetricNames,
    /// The catalog's metrics; empty while it is not known.
    pub metrics: &'a [MetricInfo],
    pub devices: &'a KnownDevices<'a>,
    pub now_ms: i64,
    /// The most samples one query may hold at once.
    pub max_samples: usize,
}

/// The devices the gateway knows of (seen in cached answers, or configured), looked up only
/// when a query needs them: most name their devices.
pub struct KnownDevices<'a> {
    load: Box<dyn Fn() -> Vec<Device> + 'a>,
    loaded: OnceCell<BTreeMap<u64, Device>>,
}

impl<'a> KnownDevices<'a> {
    pub fn new(load: impl Fn() -> Vec<Device> + 'a) -> Self {
        Self {
            load: Box::new(load),
            loaded: OnceCell::new(),
        }
    }

    /// By id; of several descriptions of one device, the most detailed.
    pub fn get(&self) -> &BTreeMap<u64, Device> {
        self.loaded.get_or_init(|| {
            let mut by_id: BTreeMap<u64, Device> = BTreeMap::new();
            for device in (self.load)() {
                match by_id.get(&device.did) {
                    Some(known) if detail(known) >= detail(&device) => {}
                    _ => {
                        by_id.insert(device.did, device);
                    }
                }
            }
            by_id
        })
    }
}

fn detail(d: &Device) -> usize {
    [&d.hostname, &d.ip, &d.label]
        .iter()
        .filter(|f| f.is_some())
        .count()
}
