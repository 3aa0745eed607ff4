#!/usr/bin/env bash
# Load and soak: 60 s of mixed cache hits, cold misses, 429s and bad requests at 64 connections,
# on loopback, against the release binary and the simulator. Reports the statuses seen (only
# 200, 400 and 429 are expected; anything else fails the script) and the gateway's RSS sampled
# every 5 s.
#
#   bash bench/soak.sh [seconds=60] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-60}
CONNECTIONS=${2:-64}

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -q
BIN=${CARGO_TARGET_DIR:-target}/release/metricgate
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port); GW_PORT=$(free_port); ADMIN_PORT=$(free_port)

cat >"$WORK/soak.toml" <<TOML
[server]
listen = "127.0.0.1:$GW_PORT"
log_level = "warn"
[upstream]
url = "http://127.0.0.1:$SIM_PORT"
public_token = "demo-public-token"
private_token = "demo-private-token"
max_in_flight = 32
per_minute = 10000000
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[rate_limit]
per_client_per_minute = 100000000
burst = 10000000
per_ip_per_minute = 100000000
per_ip_burst = 10000000
[rate_limit.overrides]
limited = { per_minute = 60, burst = 5 }
TOML

$BIN simulate --listen 127.0.0.1:$SIM_PORT >"$WORK/sim.log" 2>&1 & PIDS+=($!)
$BIN serve --config "$WORK/soak.toml" >"$WORK/gw.log" 2>&1 & GW=$!; PIDS+=($GW)
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$GW_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$WORK/mix.lua" <<'LUA'
local hit = "/v1/metricdata?metric=connections&did=42&from=2024-01-15T00:00:00Z&to=2024-01-15T16:00:00Z&interval=5min"
local bad = "/v1/metricdata?metric=bad%20name&interval=7x&start_time=1"
local threads = {}
local n = 0
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function request()
  n = n + 1
  local r = n % 20
  if r < 10 then return wrk.format("GET", hit) end
  if r < 14 then
    local did = math.random(1, 1000000)
    return wrk.format("GET", "/v1/metricdata?metric=connections&from=2024-01-15T00:00:00Z&to=2024-01-15T06:00:00Z&interval=5min&did=" .. did)
  end
  if r < 17 then return wrk.format("GET", hit, { ["X-Client-Id"] = "limited" }) end
  return wrk.format("GET", bad)
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for s, c in pairs(t:get("statuses")) do total[s] = (total[s] or 0) + c end
  end
  for s, c in pairs(total) do io.write(string.format("status %d: %d\n", s, c)) end
end
LUA

rss() { awk '/VmRSS/{print $2}' /proc/$GW/status; }
: >"$WORK/rss"
( for _ in $(seq 0 5 "$DURATION"); do rss >>"$WORK/rss"; sleep 5; done ) & PIDS+=($!)
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/mix.lua" "http://127.0.0.1:$GW_PORT" | tee "$WORK/wrk.out"
rss >>"$WORK/rss"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/internal/cache" >"$WORK/cache.json"

echo "RSS (KiB) every 5 s: $(tr '\n' ' ' <"$WORK/rss")"
# What the caches count against their budgets, next to what the process holds.
python3 - "$WORK/cache.json" "$(rss)" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
s = c.get("segments") or {"entries": 0, "bytes": 0, "max_bytes": 0}
counted = (c["bytes"] + s["bytes"]) / 1024
print(f"caches count {counted:,.0f} KiB: responses {c['entries']} entries {c['bytes'] / 1024:,.0f} KiB "
      f"(budget {c['max_bytes'] / 1024:,.0f}), segments {s['entries']} entries {s['bytes'] / 1024:,.0f} KiB "
      f"(budget {s['max_bytes'] / 1024:,.0f}); RSS {int(sys.argv[2]):,} KiB = {int(sys.argv[2]) / counted:.2f}x what they count")
PY
python3 - "$WORK/rss" "$WORK/wrk.out" <<'PY'
import re, sys
rss = [int(x) for x in open(sys.argv[1]).read().split()]
after_warmup = rss[2:] if len(rss) > 3 else rss
print(f"RSS: start {rss[0]} KiB, max {max(rss)} KiB, end {rss[-1]} KiB; after 10 s warm-up the spread is {max(after_warmup) - min(after_warmup)} KiB")
text = open(sys.argv[2]).read()
statuses = {int(s): int(c) for s, c in re.findall(r"status (\d+): (\d+)", text)}
unexpected = {s: c for s, c in statuses.items() if s not in (200, 400, 429)}
print("statuses:", dict(sorted(statuses.items())), "unexpected:", unexpected or "none")
socket_errors = re.search(r"Socket errors:.*", text)
if socket_errors:
    print(socket_errors.group(0))
sys.exit(1 if unexpected or socket_errors else 0)
PY
