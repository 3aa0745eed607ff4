//! The appliances behind the gateway, by name. Each has its own client (tokens, TLS, budget,
//! breaker), catalog, readiness probe, caches and prefetching, so one appliance down, slow or
//! refusing the gateway never slows or fails questions to another. A reload swaps the set:
//! requests keep the appliance they picked until they finish.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cache::PurgeReach;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::fetch::MetricSource;
use crate::health::{self, ApplianceHealth};
use crate::query::PurgeFilter;
use crate::redis::SharedState;
use crate::service::MetricService;
use crate::settings::{ApplianceName, ApplianceSettings, DEFAULT_NAME, Settings, UpstreamSettings};
use crate::telemetry::GatewayMetrics;
use crate::upstream::ApplianceClient;

/// One appliance and everything the gateway keeps for it.
pub struct Appliance {
    pub name: ApplianceName,
    pub label: Option<String>,
    pub settings: UpstreamSettings,
    pub client: ApplianceClient,
    pub catalog: Arc<Catalog>,
    pub health: Arc<ApplianceHealth>,
    pub service: MetricService,
    /// Its probe, prefetching and purge follower: stopped when it leaves the fleet.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// What its `/status` said of its version, and when it was last asked.
    about: std::sync::Mutex<About>,
}

#[derive(Default)]
struct About {
    version: Option<String>,
    asked_ms: Option<i64>,
}

/// What every appliance is built with besides its own settings.
#[derive(Clone)]
pub struct Parts {
    pub metrics: Arc<GatewayMetrics>,
    pub shared: Option<Arc<SharedState>>,
    pub clock: Clock,
}

impl Appliance {
    /// Builds the appliance and starts its background work (a Tokio runtime is needed).
    pub fn start(
        settings: &Settings,
        appliance: &ApplianceSettings,
        parts: &Parts,
    ) -> Result<Arc<Self>, String> {
        let name = &appliance.name;
        // The short form keeps the keys and files it had before fleets, so replicas of an
        // older version and a disk tier written by one go on being shared.
        let short_form = name.as_str() == DEFAULT_NAME && settings.upstream_is_appliance;
        let shared = parts.shared.as_ref().map(|s| {
            if short_form {
                s.clone()
            } else {
                s.scoped(&format!("appliance:{name}"))
            }
        });
        let mut own = settings.clone();
        if !short_form {
            own.cache.dir = own
                .cache
                .dir
                .map(|d| d.join("appliances").join(name.as_str()));
        }
        let clock = parts.clock.clone();
        let client = ApplianceClient::new(
            name.as_str(),
            &appliance.upstream,
            parts.metrics.clone(),
            shared.clone(),
            clock.clone(),
        )
        .map_err(|e| format!("appliance {name}: {e}"))?;
        let catalog = Arc::new(Catalog::new(clock.clone()));
        let health = Arc::new(ApplianceHealth::default());
        let service = MetricService::new(
            &own,
            MetricSource::new(client.clone(), catalog.clone()),
            catalog.clone(),
            &parts.metrics,
            shared.clone(),
            clock.clone(),
        );
        let me = Arc::new(Self {
            name: name.clone(),
            label: appliance.label.clone(),
            settings: appliance.upstream.clone(),
            client,
            catalog,
            health,
            service,
            tasks: std::sync::Mutex::default(),
            about: std::sync::Mutex::default(),
        });
        let weak = Arc::downgrade(&me);
        let mut tasks = vec![tokio::spawn(health::probe_loop(
            me.health.clone(),
            me.catalog.clone(),
            me.client.clone(),
            me.settings.clone(),
            clock.clone(),
            shared,
            clock.worker(),
        ))];
        if let Some(purges) = me.service.cluster_purges() {
            let weak = weak.clone();
            tasks.push(tokio::spawn(purges.follow(move |filter| {
                let weak = weak.clone();
                async move {
                    if let Some(me) = weak.upgrade() {
                        me.service.purge(&filter, PurgeReach::Local).await;
                    }
                }
            })));
        }
        tasks.push(tokio::spawn({
            let weak = weak.clone();
            async move {
                if let Some(me) = weak.upgrade() {
                    me.service.run_prefetch().await;
                }
            }
        }));
        // Answers made before the catalog arrived lack units; dropped when it does. Readiness
        // waits for this, so a balancer's first callers never see an answer purged under them.
        tasks.push(tokio::spawn({
            let catalog = me.catalog.clone();
            async move {
                catalog.arrived().await;
                if let Some(me) = weak.upgrade() {
                    let purged = me
                        .service
                        .purge(&PurgeFilter::default(), PurgeReach::Memory)
                        .await;
                    if purged.purged + purged.segments > 0 {
                        tracing::info!(
                            appliance = %me.name,
                            purged.purged,
                            purged.segments,
                            "metric catalog arrived; dropped answers made without its units"
                        );
                    }
                }
                catalog.settle();
            }
        }));
        if let Ok(mut held) = me.tasks.lock() {
            *held = tasks;
        }
        Ok(me)
    }

    /// Stops its background work (it left the fleet, or was started anew); requests that
    /// hold it finish.
    fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }

    /// The appliance's software version, as its `/status` last said; `None` until known.
    /// Asked in the background, at most once per catalog refresh period and only when
    /// someone wants it (a listing), in the gateway's own lane of the callers' budget: the
    /// probes' share stays one request a probe.
    pub fn version(self: &Arc<Self>, now_ms: i64) -> Option<String> {
        let every_ms = (self.settings.catalog_refresh_secs.get() as i64).saturating_mul(1000);
        let Ok(mut about) = self.about.lock() else {
            return None;
        };
        if about.asked_ms.is_none_or(|t| now_ms - t >= every_ms) {
            about.asked_ms = Some(now_ms);
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                let Some(me) = me.upgrade() else { return };
                let answer = me
                    .client
                    .get(
                        crate::upstream::dialect::STATUS,
                        None,
                        &crate::upstream::Lane::gateway(),
                    )
                    .await;
                let version = answer.ok().and_then(|body| {
                    let status: serde_json::Value = serde_json::from_slice(&body).ok()?;
                    status["version"].as_str().map(str::to_owned)
                });
                if let (Some(version), Ok(mut about)) = (version, me.about.lock()) {
                    about.version = Some(version);
                }
            });
        }
        about.version.clone()
    }

    /// Whether the catalog is in and answers made without it are gone.
    pub fn is_settled(&self) -> bool {
        self.catalog.get().is_some() && self.catalog.is_settled()
    }
}

/// The appliances by name, and the one a question without `appliance=` goes to.
#[derive(Clone)]
pub struct Members {
    pub by_name: BTreeMap<ApplianceName, Arc<Appliance>>,
    pub default: Option<Arc<Appliance>>,
}

/// Why no appliance was picked: what the caller asked for, and the choices it has.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PickError {
    #[error("no appliance is named {asked:?}; the choices: {}", choices.join(", "))]
    Unknown { asked: String, choices: Vec<String> },
    #[error("several appliances and none is the default: name one ({})", choices.join(", "))]
    NoDefault { choices: Vec<String> },
}

pub struct Fleet {
    members: ArcSwap<Members>,
}

impl Fleet {
    /// Starts every appliance of `settings`.
    pub fn start(settings: &Settings, parts: &Parts) -> Result<Self, String> {
        let members = Self::members(settings, parts, &BTreeMap::new())?;
        Ok(Self {
            members: ArcSwap::from_pointee(members),
        })
    }

    /// The members `settings` name, keeping those in `keep` whose settings are unchanged.
    fn members(
        settings: &Settings,
        parts: &Parts,
        keep: &BTreeMap<ApplianceName, Arc<Appliance>>,
    ) -> Result<Members, String> {
        let mut by_name = BTreeMap::new();
        for a in settings.fleet() {
            let kept = keep
                .get(&a.name)
                .filter(|old| same(&old.settings, &a.upstream) && old.label == a.label);
            let appliance = match kept {
                Some(old) => old.clone(),
                None => Appliance::start(settings, &a, parts)?,
            };
            by_name.insert(a.name.clone(), appliance);
        }
        let default = settings
            .default_appliance()
            .and_then(|name| by_name.get(&name).cloned());
        Ok(Members { by_name, default })
    }

    /// Puts `settings`' appliances in force: new ones start, removed ones stop once the
    /// requests holding them finish, changed ones (URL, tokens, TLS, budget) start anew.
    /// What changed, by name.
    pub fn reload(&self, settings: &Settings, parts: &Parts) -> Result<FleetChange, String> {
        let old = self.members.load_full();
        let next = Self::members(settings, parts, &old.by_name)?;
        let mut change = FleetChange::default();
        for (name, a) in &next.by_name {
            match old.by_name.get(name) {
                None => change.added.push(name.to_string()),
                Some(o) if !Arc::ptr_eq(o, a) => change.changed.push(name.to_string()),
                Some(_) => {}
            }
        }
        change.removed = old
            .by_name
            .keys()
            .filter(|n| !next.by_name.contains_key(*n))
            .map(ToString::to_string)
            .collect();
        self.members.store(Arc::new(next.clone()));
        for (name, o) in &old.by_name {
            if !next.by_name.get(name).is_some_and(|a| Arc::ptr_eq(a, o)) {
                o.stop();
            }
        }
        Ok(change)
    }

    /// The appliance `asked` names, or the default when `None`.
    pub fn pick(&self, asked: Option<&str>) -> Result<Arc<Appliance>, PickError> {
        self.with_picked(asked, Arc::clone)
    }

    /// `f` of the appliance `asked` names (else the default), borrowed: the hit path takes no
    /// reference count, whose shared cache line every worker's core would write.
    pub fn with_picked<T>(
        &self,
        asked: Option<&str>,
        f: impl FnOnce(&Arc<Appliance>) -> T,
    ) -> Result<T, PickError> {
        let members = self.members.load();
        let found = match asked {
            Some(name) => members.by_name.get(name),
            None => members.default.as_ref(),
        };
        if let Some(appliance) = found {
            return Ok(f(appliance));
        }
        let choices = members.by_name.keys().map(ToString::to_string).collect();
        Err(match asked {
            Some(name) => PickError::Unknown {
                asked: name.to_owned(),
                choices,
            },
            None => PickError::NoDefault { choices },
        })
    }

    /// The default appliance, else any (for what has to name one: the gateway's readiness).
    pub fn default_or_first(&self) -> Option<Arc<Appliance>> {
        let members = self.members.load();
        members
            .default
            .clone()
            .or_else(|| members.by_name.values().next().cloned())
    }

    pub fn all(&self) -> Vec<Arc<Appliance>> {
        self.members.load().by_name.values().cloned().collect()
    }
}

/// What a reload did to the fleet.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FleetChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Started anew with new settings (URL, tokens, TLS, budget, timeouts).
    pub changed: Vec<String>,
}

impl FleetChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Whether two appliances' settings would build the same client (the private token and the
/// CA file's certificates compared too).
fn same(a: &UpstreamSettings, b: &UpstreamSettings) -> bool {
    use secrecy::ExposeSecret;
    let text = |s: &UpstreamSettings| serde_json::to_string(s).unwrap_or_default();
    text(a) == text(b) && a.private_token.expose_secret() == b.private_token.expose_secret()
}
