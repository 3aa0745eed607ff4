#!/usr/bin/env bash
# The issue's hostile scenarios against the release binary and the simulator, on loopback,
# with the gateway's default protection (only the callers' request limits are raised, so the
# load generator measures the cache and the appliance's protection, not its own 429s):
#
#   baseline   wrk on one cached answer
#   purge      the same, while a loop sends DELETE /internal/cache to the public port every 50 ms
#   no-cache   wrk with Cache-Control: no-cache and a fresh X-Client-Id on every request
#   cold       200 concurrent cold queries (distinct devices) against the appliance's budget
#
# For each: requests served (200), p99, and requests that reached the appliance (the
# simulator's own counters), plus the gateway's log volume for the whole run.
#
#   bash bench/hostile.sh [seconds-per-scenario=15] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
CONNECTIONS=${2:-64}

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -q
WORK=$(mktemp -d)
# A copy: the build directory may be shared, and rebuilt under us.
cp "${CARGO_TARGET_DIR:-target}/release/metricgate" "$WORK/metricgate"
BIN=$WORK/metricgate
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port); GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
GW=http://127.0.0.1:$GW_PORT
SIM=http://127.0.0.1:$SIM_PORT

cat >"$WORK/gw.toml" <<TOML
[server]
listen = "127.0.0.1:$GW_PORT"
workers = 2
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[upstream]
url = "$SIM"
public_token = "demo-public-token"
private_token = "demo-private-token"
[rate_limit]
per_client_per_minute = 100000000
burst = 10000000
per_ip_per_minute = 100000000
per_ip_burst = 10000000
TOML

$BIN simulate --listen 127.0.0.1:$SIM_PORT >"$WORK/sim.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -fsS "$SIM/_sim/stats" >/dev/null 2>&1 && break; sleep 0.1; done
# Real appliances took 40–640 ms for small requests.
curl -fsS -X POST -H 'content-type: application/json' -d '{"latency_ms": 100}' "$SIM/_sim/faults"
$BIN serve --config "$WORK/gw.toml" >"$WORK/gw.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -fsS "$GW/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

QUERY="/v1/metricdata?metric=connections&did=42&from=2024-01-15T00:00:00Z&to=2024-01-15T16:00:00Z&interval=5min"
curl -fsS -o /dev/null "$GW$QUERY"

cat >"$WORK/load.lua" <<'LUA'
-- NOCACHE=1: every request says no-cache, with a fresh client id.
local nocache = os.getenv("NOCACHE") == "1"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {}; limited = 0 end
function request()
  if nocache then
    return wrk.format("GET", nil, { ["Cache-Control"] = "no-cache",
      ["X-Client-Id"] = "rotating-" .. math.random(1, 1000000000) })
  end
  return wrk.format("GET")
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local cs = headers["Cache-Status"] or headers["cache-status"] or ""
  if string.find(cs, "no-cache-limited", 1, true) then limited = limited + 1 end
end
function done(summary, latency, requests)
  local total, lim = {}, 0
  for _, t in ipairs(threads) do
    for s, c in pairs(t:get("statuses")) do total[s] = (total[s] or 0) + c end
    lim = lim + t:get("limited")
  end
  for s, c in pairs(total) do io.write(string.format("status %d: %d\n", s, c)) end
  io.write(string.format("limited %d\n", lim))
  io.write(string.format("p99us %d\n", latency:percentile(99)))
end
LUA

appliance() { curl -fsS "$SIM/_sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
# Prints "served p99-ms other-statuses limited".
run_wrk() {
    local env=$1
    env $env wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/load.lua" "$GW$QUERY" >"$WORK/wrk.out"
    python3 - "$WORK/wrk.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
statuses = {int(s): int(c) for s, c in re.findall(r"status (\d+): (\d+)", text)}
p99 = int(re.search(r"p99us (\d+)", text).group(1)) / 1000
limited = int(re.search(r"limited (\d+)", text).group(1))
others = ",".join(f"{s}x{c}" for s, c in sorted(statuses.items()) if s != 200)
print(statuses.get(200, 0), f"{p99:.2f}", others or "none", limited)
PY
}

printf '%-10s %10s %10s %10s  %s\n' scenario served "p99 ms" appliance notes
before=$(appliance)
read -r served p99 others limited < <(run_wrk NOCACHE=0)
printf '%-10s %10s %10s %10s  %s\n' baseline "$served" "$p99" $(( $(appliance) - before )) "other statuses: $others"

before=$(appliance)
( end=$((SECONDS + DURATION)); : >"$WORK/purges"
  while [ $SECONDS -lt "$end" ]; do
      curl -s -o /dev/null -w '%{http_code}\n' -X DELETE "$GW/internal/cache" >>"$WORK/purges"; sleep 0.05
  done ) & PURGER=$!; PIDS+=($PURGER)
read -r served p99 others limited < <(run_wrk NOCACHE=0)
wait "$PURGER" || true
purges=$(sort "$WORK/purges" | uniq -c | awk '{printf "%s x%s ", $2, $1}')
printf '%-10s %10s %10s %10s  %s\n' purge "$served" "$p99" $(( $(appliance) - before )) "purge attempts: $purges"

before=$(appliance)
read -r served p99 others limited < <(run_wrk NOCACHE=1)
printf '%-10s %10s %10s %10s  %s\n' no-cache "$served" "$p99" $(( $(appliance) - before )) "no-cache-limited: $limited; other statuses: $others"

before=$(appliance)
python3 - "$GW" >"$WORK/cold.out" <<'PY'
import concurrent.futures, statistics, sys, time, urllib.error, urllib.request
gw = sys.argv[1]
def ask(did):
    url = f"{gw}/v1/metricdata?metric=connections&did={100000 + did}&from=2024-01-10T00:00:00Z&to=2024-01-10T06:00:00Z&interval=5min"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, None, time.monotonic() - started
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Retry-After"), time.monotonic() - started
with concurrent.futures.ThreadPoolExecutor(200) as pool:
    answers = list(pool.map(ask, range(200)))
served = sum(1 for s, _, _ in answers if s == 200)
busy = sorted(int(r) for s, r, _ in answers if s == 503 and r)
others = len(answers) - served - sum(1 for s, _, _ in answers if s == 503)
times = sorted(t for _, _, t in answers)
p99 = times[int(len(times) * 0.99) - 1] * 1000
advice = (f"503 x{len(busy)}, Retry-After min {busy[0]} / median {statistics.median(busy):.0f} / max {busy[-1]} s, "
          f"{len(set(busy))} distinct values" if busy else "no 503")
print(served, f"{p99:.0f}", f"{advice}; other statuses: {others}")
PY
read -r served p99 notes <"$WORK/cold.out"
printf '%-10s %10s %10s %10s  %s\n' cold "$served" "$p99" $(( $(appliance) - before )) "$notes"

metrics=$(curl -fsS "$GW/metrics")
lines() { echo "$metrics" | awk -v o="$1" '$0 ~ "metricgate_access_log_lines_total\\{outcome=\""o"\"\\}" {print $2}'; }
echo "gateway log: $(wc -c <"$WORK/gw.log") bytes for the whole run; access lines kept $(lines kept), sampled out $(lines sampled_out), over the cap $(lines over_cap)"
