//! Estates: which appliance of a fleet the simulator plays. Appliances of one customer differ in
//! their catalogs (what is licensed and which ids the metrics got) and in their devices (a
//! device id names a different host on each), so a gateway in front of several must keep them
//! apart; a seeded estate lets tests and the demo run such a fleet of simulators.

use std::hash::{Hash, Hasher};

/// The default (`Estate::default()`, seed 0) is the simulator as it always was: every metric of
/// the shared list at ids 1, 2, …, and hosts `host-<did>` in `10.0.0.0/8`. Any other seed drops
/// some of the shared metrics (never `connections`, which every example asks for), adds
/// metrics of its own, numbers them from another base, and names and numbers its devices
/// otherwise; its data differ too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Estate {
    seed: u64,
}

/// Metrics only seeded estates have: (name, label, units, filtertypes), like the shared list.
pub(super) const OWN_METRICS: &[(&str, &str, &str, &[&str])] = &[
    (
        "saasconnections",
        "SaaS Connections",
        "connections",
        &["Protocol"],
    ),
    (
        "ot_writes",
        "OT Write Commands",
        "count",
        &["Destination port"],
    ),
];

impl Estate {
    /// Another appliance of the fleet; `seeded(0)` is the default one.
    pub fn seeded(seed: u64) -> Self {
        Self { seed }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub(super) fn is_default(&self) -> bool {
        self.seed == 0
    }

    /// Whether this estate's catalog has the shared metric `name`: every one on the default;
    /// about three in four on another (chosen by the seed), `connections` always.
    pub(super) fn keeps(&self, name: &str) -> bool {
        self.is_default() || name == "connections" || !self.mix(&name).is_multiple_of(4)
    }

    /// The first metric id: 1 on the default, a base of hundreds on another, so the same
    /// metric has another `mlid` on each appliance.
    pub(super) fn first_mlid(&self) -> u64 {
        if self.is_default() {
            1
        } else {
            100 * (1 + self.seed % 9) + 1
        }
    }

    /// The device `did`'s host name and address.
    pub(super) fn host(&self, did: u64) -> (String, String) {
        let (a, b, c) = ((did >> 16) & 255, (did >> 8) & 255, did & 255);
        if self.is_default() {
            (format!("host-{did}"), format!("10.{a}.{b}.{c}"))
        } else {
            // 172.16.0.0/12 by the seed: another network, other hosts behind the same ids.
            (
                format!("site{}-host-{did}", self.seed),
                format!("172.{}.{b}.{c}", 16 + (self.seed + a) % 16),
            )
        }
    }

    /// `key` with this estate mixed in: the default's hashes stay as they were, so its data
    /// are unchanged.
    pub(super) fn salt<T: Hash>(&self, key: T) -> u64 {
        if self.is_default() {
            hash(&key)
        } else {
            hash(&(self.seed, key))
        }
    }

    fn mix(&self, value: &impl Hash) -> u64 {
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.seed, 0x6573_7461_7465);
        value.hash(&mut h);
        h.finish()
    }
}

/// A stable hash (SipHash with fixed keys), so data is the same across runs and processes.
/// Here, not in `data`, so that `data` depends on estates and not the other way round.
pub(super) fn hash(value: &impl Hash) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6d65_7472_6963, 0x6761_7465);
    value.hash(&mut h);
    h.finish()
}
