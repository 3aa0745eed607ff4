//! Which appliances a caller may ask: a client proven by its key asks the appliances its
//! `[rate_limit.clients.<id>] appliances` names; every other caller asks
//! `rate_limit.anonymous_appliances` (every appliance unless the operator narrowed it).

use std::collections::HashMap;
use std::sync::Arc;

use super::identity::{Caller, Identity};
use crate::settings::{ApplianceName, RateLimitSettings};

/// The appliances a caller may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedAppliances {
    /// Every appliance the gateway fronts.
    All,
    /// Only these, in the order configured.
    Only(Arc<[ApplianceName]>),
}

impl AllowedAppliances {
    /// Whether the caller may ask the appliance named `name`.
    pub fn admits(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|n| n.as_str() == name),
        }
    }

    /// Whether the caller may ask every appliance (nothing to filter).
    pub fn is_all(&self) -> bool {
        matches!(self, Self::All)
    }

    /// The names the caller may ask, when limited.
    pub fn names(&self) -> Option<&[ApplianceName]> {
        match self {
            Self::All => None,
            Self::Only(names) => Some(names),
        }
    }
}

/// Who may ask which appliance, as configured.
#[derive(Debug, Default)]
pub struct Access {
    /// Keyed clients limited to some appliances, by id.
    clients: HashMap<Box<str>, Arc<[ApplianceName]>>,
    /// What callers without a proven key may ask; `None`: every appliance.
    anonymous: Option<Arc<[ApplianceName]>>,
}

impl Access {
    pub fn new(s: &RateLimitSettings) -> Self {
        Self {
            clients: s
                .clients
                .iter()
                .filter_map(|(id, k)| {
                    let names = k.appliances.as_ref()?;
                    Some((Box::from(id.as_str()), Arc::from(names.as_slice())))
                })
                .collect(),
            anonymous: s
                .anonymous_appliances
                .as_ref()
                .map(|names| Arc::from(names.as_slice())),
        }
    }

    /// Whether any caller is limited: when none is, nobody needs identifying for access.
    pub fn limits_anyone(&self) -> bool {
        !self.clients.is_empty() || self.anonymous.is_some()
    }

    /// What `who` may ask. Only a proven id's own list counts: an id merely claimed (no key
    /// configured) or sent without its key is treated as any caller without a key.
    pub fn of(&self, who: &Identity) -> AllowedAppliances {
        if who.is_proven()
            && let Caller::Id(id) = &who.caller
        {
            return match self.clients.get(id) {
                Some(names) => AllowedAppliances::Only(names.clone()),
                None => AllowedAppliances::All,
            };
        }
        match &self.anonymous {
            Some(names) => AllowedAppliances::Only(names.clone()),
            None => AllowedAppliances::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Proof;
    use crate::settings::{ClientKey, KeyDigest, Settings};

    fn name(n: &str) -> ApplianceName {
        ApplianceName::parse(n).unwrap()
    }

    fn who(id: &str, proof: Proof) -> Identity {
        Identity {
            caller: Caller::Id(id.into()),
            address: None,
            proof,
        }
    }

    #[test]
    fn only_a_proven_id_gets_its_own_list() {
        let mut s = Settings::defaults().rate_limit;
        s.clients.insert(
            "customer-a".into(),
            ClientKey {
                key_sha256: KeyDigest([0; 32]),
                appliances: Some(vec![name("emea")]),
            },
        );
        s.clients.insert(
            "ops".into(),
            ClientKey {
                key_sha256: KeyDigest([1; 32]),
                appliances: None,
            },
        );
        let access = Access::new(&s);
        assert!(access.limits_anyone());
        let a = access.of(&who("customer-a", Proof::Proven));
        assert!(a.admits("emea") && !a.admits("amer") && !a.is_all());
        assert!(access.of(&who("ops", Proof::Proven)).is_all());
        // Claimed, or without its key: open access, as every caller without a key has.
        assert!(access.of(&who("customer-a", Proof::Claimed)).is_all());
        assert!(
            access
                .of(&who("x", Proof::Unproven("customer-a".into())))
                .is_all()
        );

        s.anonymous_appliances = Some(vec![name("amer")]);
        let access = Access::new(&s);
        let anonymous = access.of(&who("x", Proof::Unproven("customer-a".into())));
        assert_eq!(anonymous.names(), Some(&[name("amer")][..]));
        assert!(!Access::new(&Settings::defaults().rate_limit).limits_anyone());
    }
}
