//! Redis, shared by gateway replicas: the L2 cache, cross-replica locks, and the GCRA scripts
//! behind global caller limits and the shared appliance budget.
//!
//! Every call has a timeout. Any failure switches this replica to embedded mode (local cache
//! and limits), and a background ping switches it back when Redis answers again: no request
//! fails because Redis is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script};
use tokio::sync::RwLock;

use crate::settings::RedisSettings;
use crate::telemetry::GatewayMetrics;

/// GCRA in one atomic step, on Redis' clock. KEYS[1]: the bucket; ARGV[1]: ms between
/// cells; ARGV[2]: burst. Returns {allowed, remaining, retry_after_ms, reset_ms}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + period
local allow_at = new_tat - period * burst
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return {1, math.floor((now + period * burst - new_tat) / period), 0, new_tat - now}
";

/// Settles a caller's lease (see `limits::leases`): charges the requests a replica served
/// since its last settlement to the shared GCRA bucket, and returns the bucket's theoretical
/// arrival time (TAT, ms) for the replica to decide on until the next one. The same key and
/// TAT as [`GCRA`], on the gateway's clock (replicas' clocks agree to NTP's few ms; a test's
/// manual clock drives every replica). KEYS[1]: the bucket; ARGV[1]: now (ms); ARGV[2]: ms
/// between cells; ARGV[3]: requests to charge (0: read only).
const SETTLE: &str = r"
local now = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if n > 0 then
  tat = tat + n * period
  redis.call('SET', KEYS[1], tat, 'PX', tat - now + 1000)
end
return tat
";

/// Deletes a lock only while it still holds the owner's token: a holder whose lock expired
/// and was taken by another replica must not delete that replica's lock. KEYS[1]: the lock;
/// ARGV[1]: the token. Returns 1 when deleted.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Extends a lock only while it still holds the owner's token (a holder's heartbeat).
/// KEYS[1]: the lock; ARGV[1]: the token; ARGV[2]: the new TTL in ms. Returns 1 when renewed.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Stores an entry and names it in index sets (one per metric and per device it answers), so a
/// filtered purge can find it: entry names are hashes. An index is a sorted set scored by its
/// members' expiry (Redis' clock), pruned of expired names on every insert, and lives as long
/// as its longest-lived member: it never holds more than the live entries. KEYS[1]: the
/// entry; KEYS[2..]: its index sets; ARGV[1]: the value; ARGV[2]: the TTL in ms.
const SET_INDEXED: &str = r"
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
";

/// Deletes the entries named in every one of the index sets KEYS (one set, or the
/// intersection of a metric's and a device's), and forgets them there. Returns how many
/// entries went (names of entries that had expired already are not counted).
const PURGE_INDEXED: &str = r"
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
if #KEYS > 1 then
  local both = {}
  for _, m in ipairs(members) do
    if redis.call('ZSCORE', KEYS[2], m) then
      both[#both + 1] = m
    end
  end
  members = both
end
local deleted = 0
for i = 1, #members, 1000 do
  local last = math.min(i + 999, #members)
  deleted = deleted + redis.call('DEL', unpack(members, i, last))
  for _, set in ipairs(KEYS) do
    redis.call('ZREM', set, unpack(members, i, last))
  end
end
return deleted
";

/// Announces a purge: the next generation, its filter kept for followers that missed the
/// message, and the message. KEYS[1]: the generation counter; ARGV[1]: the prefix of the
/// filters' keys; ARGV[2]: the filter; ARGV[3]: how long filters are kept, ms; ARGV[4]: the
/// channel. Returns {generation, subscribers that got the message}.
const ANNOUNCE: &str = r"
local g = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[1] .. g, ARGV[2], 'PX', ARGV[3])
local told = redis.call('PUBLISH', ARGV[4], g)
return {g, told}
";

/// One entry to store with [`SharedState::set_indexed_many`].
pub struct IndexedEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub ttl_ms: u64,
    /// The index sets that name it.
    pub index: Vec<String>,
}

/// Outcome of a GCRA check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub allowed: bool,
    pub remaining: u32,
    pub retry_after_ms: u64,
    pub reset_ms: u64,
}

/// Redis under one key prefix: the gateway's own (`redis.prefix`), or an appliance's within
/// it ([`SharedState::scoped`]), over one connection.
pub struct SharedState {
    link: Arc<Link>,
    prefix: String,
}

impl std::ops::Deref for SharedState {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.link
    }
}

/// The connection and its scripts, shared by every prefix.
pub struct Link {
    client: redis::Client,
    connection: RwLock<Option<ConnectionManager>>,
    up: AtomicBool,
    timeout: Duration,
    pub lock_ms: u64,
    pub lock_ttl_ms: u64,
    gcra: Script,
    settle: Script,
    release: Script,
    renew: Script,
    purge_indexed: Script,
    announce: Script,
    metrics: Arc<GatewayMetrics>,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// `None` when no Redis is configured (embedded mode). Never fails on an unreachable
    /// Redis: the keeper task connects when it can.
    pub fn new(
        settings: &RedisSettings,
        metrics: Arc<GatewayMetrics>,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let client = redis::Client::open(url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
        metrics.track_redis();
        Ok(Some(Arc::new(Self {
            prefix: settings.prefix.clone(),
            link: Arc::new(Link {
                client,
                connection: RwLock::new(None),
                up: AtomicBool::new(false),
                timeout: Duration::from_millis(settings.timeout_ms.get()),
                lock_ms: settings.lock_ms.get(),
                lock_ttl_ms: settings.lock_ttl_ms,
                gcra: Script::new(GCRA),
                settle: Script::new(SETTLE),
                release: Script::new(RELEASE),
                renew: Script::new(RENEW),
                purge_indexed: Script::new(PURGE_INDEXED),
                announce: Script::new(ANNOUNCE),
                metrics,
            }),
        })))
    }

    /// The same Redis under `scope` within this prefix: what one appliance keeps there
    /// (budgets, probes, cached answers, purges) never meets another's.
    pub fn scoped(&self, scope: &str) -> Arc<Self> {
        Arc::new(Self {
            link: self.link.clone(),
            prefix: format!("{}:{scope}", self.prefix),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    fn mark(&self, up: bool, why: &str) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(
                    "redis is back: shared mode (cache, locks and limits shared by replicas)"
                );
            } else {
                tracing::warn!(
                    reason = why,
                    "redis unavailable: embedded mode (local cache and limits)"
                );
            }
        }
        self.metrics.redis_up.set(i64::from(up));
    }

    /// Connects, and pings every second, switching between shared and embedded mode.
    pub async fn keep(self: Arc<Self>) {
        loop {
            let has_connection = self.connection.read().await.is_some();
            if !has_connection {
                let connecting = tokio::time::timeout(
                    self.timeout.max(Duration::from_secs(1)),
                    self.client.get_connection_manager(),
                )
                .await;
                match connecting {
                    Ok(Ok(c)) => *self.connection.write().await = Some(c),
                    Ok(Err(e)) => self.mark(false, &e.to_string()),
                    Err(_) => self.mark(false, "connect timed out"),
                }
            }
            if self.connection.read().await.is_some() {
                let pong: Option<String> = self.call(redis::cmd("PING"), true).await;
                if pong.is_some() {
                    self.mark(true, "");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Runs `cmd` within the timeout; `None` (and embedded mode) on any failure. While Redis
    /// is down only the keeper's pings (`probe`) try it, so requests do not wait on it.
    async fn call<T: FromRedisValue>(&self, cmd: redis::Cmd, probe: bool) -> Option<T> {
        if !probe && !self.is_up() {
            return None;
        }
        let mut conn = self.connection.read().await.clone()?;
        self.timed(cmd.query_async::<T>(&mut conn)).await
    }

    /// Awaits one Redis reply within the timeout; a failure switches to embedded mode.
    async fn timed<T>(
        &self,
        reply: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.timeout, reply).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.mark(false, &e.to_string());
                None
            }
            Err(_) => {
                self.mark(false, "timed out");
                None
            }
        }
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.call::<Option<Vec<u8>>>(cmd, false).await.flatten()
    }

    /// `GET`, telling a missing key (`Some(None)`) from Redis out of reach (`None`).
    pub async fn get_checked(&self, key: &str) -> Option<Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.call::<Option<Vec<u8>>>(cmd, false).await
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: u64) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl_ms.max(1));
        let _: Option<()> = self.call(cmd, false).await;
    }

    /// Many keys in one `MGET`: one reply per key (`None` for a missing one), or `None`
    /// when Redis is out of reach.
    pub async fn mget(&self, keys: &[String]) -> Option<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        cmd.arg(keys);
        self.call::<Vec<Option<Vec<u8>>>>(cmd, false).await
    }

    /// `SET key value PX ttl` for each entry, pipelined: one round trip for all of them.
    pub async fn set_many(&self, entries: &[(String, Vec<u8>, u64)]) {
        if entries.is_empty() || !self.is_up() {
            return;
        }
        let Some(mut conn) = self.connection.read().await.clone() else {
            return;
        };
        let mut pipe = redis::pipe();
        for (key, value, ttl_ms) in entries {
            pipe.cmd("SET")
                .arg(key)
                .arg(value.as_slice())
                .arg("PX")
                .arg((*ttl_ms).max(1))
                .ignore();
        }
        let _: Option<()> = self.timed(pipe.query_async::<()>(&mut conn)).await;
    }

    /// Stores each entry with its TTL and names it in its index sets, pipelined: one round
    /// trip for all of them.
    pub async fn set_indexed_many(&self, entries: &[IndexedEntry]) {
        if entries.is_empty() || !self.is_up() {
            return;
        }
        let Some(mut conn) = self.connection.read().await.clone() else {
            return;
        };
        let mut pipe = redis::pipe();
        for e in entries {
            // EVAL, not EVALSHA: a pipeline cannot load a missing script on the way.
            pipe.cmd("EVAL")
                .arg(SET_INDEXED)
                .arg(1 + e.index.len())
                .arg(&e.key)
                .arg(&e.index)
                .arg(e.value.as_slice())
                .arg(e.ttl_ms.max(1))
                .ignore();
        }
        let _: Option<()> = self.timed(pipe.query_async::<()>(&mut conn)).await;
    }

    /// Deletes the entries every one of `index` names (see [`IndexedEntry::index`]); how many
    /// went.
    pub async fn purge_indexed(&self, index: &[String]) -> u64 {
        if index.is_empty() || !self.is_up() {
            return 0;
        }
        let Some(mut conn) = self.connection.read().await.clone() else {
            return 0;
        };
        let mut invocation = self.purge_indexed.prepare_invoke();
        for key in index {
            invocation.key(key);
        }
        self.timed(invocation.invoke_async::<u64>(&mut conn))
            .await
            .unwrap_or(0)
    }

    /// Announces a purge (`filter`, as text) on `channel`: its generation and how many
    /// subscribers got the message at once. Filters are kept `keep_ms` for followers that
    /// missed it.
    pub async fn announce(
        &self,
        counter: &str,
        filters: &str,
        filter: &str,
        keep_ms: u64,
        channel: &str,
    ) -> Option<(u64, u64)> {
        if !self.is_up() {
            return None;
        }
        let mut conn = self.connection.read().await.clone()?;
        let mut invocation = self.announce.key(counter);
        invocation
            .arg(filters)
            .arg(filter)
            .arg(keep_ms.max(1))
            .arg(channel);
        self.timed(invocation.invoke_async::<(u64, u64)>(&mut conn))
            .await
    }

    /// A connection subscribed to `channel`, or `None` while Redis is out of reach.
    pub async fn subscribe(&self, channel: &str) -> Option<redis::aio::PubSub> {
        if !self.is_up() {
            return None;
        }
        let mut pubsub = tokio::time::timeout(
            self.timeout.max(Duration::from_secs(1)),
            self.client.get_async_pubsub(),
        )
        .await
        .ok()?
        .ok()?;
        self.timed(pubsub.subscribe(channel)).await?;
        Some(pubsub)
    }

    /// `SET key value NX PX ttl`: whether this caller set it (`None` when Redis is out of
    /// reach). For claims that are never released, only outlived.
    pub async fn set_nx(&self, key: &str, value: &[u8], ttl_ms: u64) -> Option<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1));
        self.call::<Option<String>>(cmd, false)
            .await
            .map(|reply| reply.is_some())
    }

    /// `SET key token NX PX ttl` with a new random token: `Some(Some(token))` when this
    /// caller holds the lock, `Some(None)` when another does, `None` when Redis is out of reach.
    pub async fn try_lock(&self, key: &str, ttl_ms: u64) -> Option<Option<String>> {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1));
        self.call::<Option<String>>(cmd, false)
            .await
            .map(|reply| reply.map(|_| token))
    }

    pub async fn exists(&self, key: &str) -> Option<bool> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(key);
        self.call::<i64>(cmd, false).await.map(|n| n > 0)
    }

    /// Releases `key` if it still holds `token`; whether it did.
    pub async fn unlock(&self, key: &str, token: &str) -> bool {
        if !self.is_up() {
            return false;
        }
        let Some(mut conn) = self.connection.read().await.clone() else {
            return false;
        };
        let mut invocation = self.release.key(key);
        invocation.arg(token);
        self.timed(invocation.invoke_async::<i64>(&mut conn))
            .await
            .is_some_and(|n| n == 1)
    }

    /// Extends `key` to `ttl_ms` if it still holds `token`; whether it did (a holder whose
    /// lock lapsed and was taken by another stops renewing).
    pub async fn renew(&self, key: &str, token: &str, ttl_ms: u64) -> bool {
        if !self.is_up() {
            return false;
        }
        let Some(mut conn) = self.connection.read().await.clone() else {
            return false;
        };
        let mut invocation = self.renew.key(key);
        invocation.arg(token).arg(ttl_ms.max(1));
        self.timed(invocation.invoke_async::<i64>(&mut conn))
            .await
            .is_some_and(|n| n == 1)
    }

    /// Deletes every key of `kind` under this gateway's prefix (SCAN, not KEYS, so Redis
    /// keeps serving meanwhile); how many went.
    pub async fn delete_kind(&self, kind: &str) -> u64 {
        let pattern = format!("{}:{kind}:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500);
            let Some((next, keys)) = self.call::<(u64, Vec<String>)>(scan, false).await else {
                return deleted;
            };
            if !keys.is_empty() {
                let mut del = redis::cmd("DEL");
                del.arg(&keys);
                deleted += self.call::<u64>(del, false).await.unwrap_or(0);
            }
            if next == 0 {
                return deleted;
            }
            cursor = next;
        }
    }

    /// One GCRA step for `key`: a burst of `burst`, one cell every `period_ms`.
    pub async fn gcra(&self, key: &str, period_ms: u64, burst: u32) -> Option<Gcra> {
        if !self.is_up() {
            return None;
        }
        let mut conn = self.connection.read().await.clone()?;
        let mut invocation = self.gcra.key(key);
        invocation.arg(period_ms.max(1)).arg(burst.max(1));
        let (allowed, remaining, retry, reset) = self
            .timed(invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn))
            .await?;
        Some(Gcra {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u32,
            retry_after_ms: retry.max(0) as u64,
            reset_ms: reset.max(0) as u64,
        })
    }

    /// Charges `charge` requests to the GCRA bucket `key` (one cell every `period_ms`) at
    /// `now_ms`, in one atomic step; the bucket's TAT afterwards (ms), or `None` when Redis
    /// is out of reach.
    pub async fn settle(&self, key: &str, now_ms: i64, period_ms: u64, charge: u32) -> Option<i64> {
        if !self.is_up() {
            return None;
        }
        let mut conn = self.connection.read().await.clone()?;
        let mut invocation = self.settle.key(key);
        invocation.arg(now_ms).arg(period_ms.max(1)).arg(charge);
        self.timed(invocation.invoke_async::<i64>(&mut conn)).await
    }
}
