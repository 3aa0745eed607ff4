//! Profiles: the variants of appliance behaviour the vendor's guide leaves open. The simulator
//! models a family of appliances, not the gateway's assumptions, and the tests prove the
//! gateway right against each member (`POST /_sim/profile`, or [`super::Simulator::set_profile`]).

use serde::{Deserialize, Serialize};

/// Where an appliance starts its buckets. The guide only shows interval 60, where all agree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchoring {
    /// At multiples of the interval since the epoch.
    #[default]
    Epoch,
    /// At the start time, whatever it is.
    Start,
    /// At the start time floored to the minute (the guide's interval-60 example).
    Minute,
}

/// Whether `endtime` belongs to the range. The guide's full-day examples end at `23:59:59`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndRule {
    #[default]
    Exclusive,
    /// A bucket starting at `endtime` is returned too, and the minute at `endtime` counts.
    Inclusive,
}

/// What `fulldevicedetails=true` does to a `/metricdata` answer; the guide does not say, and
/// other endpoints do each of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceDetails {
    /// A `device` object inside each metric object.
    #[default]
    Inline,
    /// A separate `{"devices": […]}` element at the end of the array.
    DevicesList,
    /// The array wrapped in an object: `{"metricdata": […], "devices": […]}`.
    Wrapped,
}

/// One plausible appliance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    pub anchoring: Anchoring,
    pub end: EndRule,
    pub device_details: DeviceDetails,
    /// The appliance is this many minutes behind (busy, or restarting): minutes newer than
    /// its clock minus this have no data yet, and fill in as its clock moves on.
    pub behind_minutes: u64,
    /// The newest this many minutes of data are provisional (reported lower) and revised to
    /// their final values once they are older.
    pub revise_minutes: u64,
    /// The appliance keeps this many days of data (0: all): older minutes come back empty,
    /// as an appliance's retention drops them.
    pub retention_days: u64,
}

impl Profile {
    /// Every combination of anchoring and end rule: the bucket profiles.
    pub fn bucket_variants() -> Vec<Profile> {
        let mut out = Vec::new();
        for anchoring in [Anchoring::Epoch, Anchoring::Start, Anchoring::Minute] {
            for end in [EndRule::Exclusive, EndRule::Inclusive] {
                out.push(Profile {
                    anchoring,
                    end,
                    ..Profile::default()
                });
            }
        }
        out
    }
}
