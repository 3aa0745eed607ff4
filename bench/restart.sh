#!/usr/bin/env bash
# What a restart costs the appliance, and how long a full disk tier takes to open (#29).
#
#   bash bench/restart.sh [FILL_MIB]        (BENCH_SKIP_BUILD=1 to use the release build as is)
#
# 1. Refreshes: three 24 h dashboards (connections, bandwidth and datatransfervolume of three
#    devices, /v1 at 1 min) and the provisioned Grafana dashboard (every panel, last 6 h at
#    1 min, through /prometheus), against `metricgate simulate`. Warmed, refreshed once, then
#    the gateway is killed with -9 and started again on the same cache.dir, and refreshed once
#    more: the appliance points of the refresh before and after the restart (target: equal),
#    from the simulator's own count.
# 2. Time to ready: the disk tier filled to FILL_MIB (default 1024) of settled segments (one-day
#    questions of many devices), then the gateway killed with -9 and timed from start to
#    /readyz 200 (target: under 2 s for 1 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_need curl python3
FILL_MIB=${1:-1024}
bench_build

SIM_PORT=$(free_port)
start_sim "$SIM_PORT"
CACHE="$WORK/state"
PORT=$(free_port)
gateway() {
    start_gateway gw "$PORT" "$SIM_PORT" METRICGATE__CACHE__DIR="$CACHE" \
        METRICGATE__CACHE__DISK_MAX_BYTES=$((4 * 1024 * 1024 * 1024)) \
        METRICGATE__UPSTREAM__PER_MINUTE=100000000 METRICGATE__UPSTREAM__MAX_IN_FLIGHT=64
    GW=$GW_PID
}
points() { curl -fsS "http://127.0.0.1:$SIM_PORT/_sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["points"])'; }

python3 - "$WORK/urls" <<'PY'
import json, sys, time, urllib.parse
now = int(time.time())
minute = now - now % 60
urls = []
for did in (101, 102, 103):
    for metric in ("connections", "bandwidth", "datatransfervolume"):
        urls.append(f"/v1/metricdata?metric={metric}&did={did}&starttime={(minute - 86400) * 1000}&endtime={minute * 1000}&interval=60")
dashboard = json.load(open("deploy/grafana/dashboards/darktrace.json"))
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$did", "(101|102|103)")
        q = urllib.parse.urlencode({"query": expr, "start": minute - 6 * 3600, "end": minute, "step": 60})
        urls.append(f"/prometheus/api/v1/query_range?{q}")
open(sys.argv[1], "w").write("\n".join(urls) + "\n")
PY
refresh() { while read -r u; do curl -fsS -o /dev/null "http://127.0.0.1:$PORT$u"; done <"$WORK/urls"; }

gateway
wait_ready "$PORT"
refresh
# A dashboard refreshes a minute later: live segments have expired, settled ones have not.
sleep 65
a=$(points); refresh; b=$(points)
before=$((b - a))
kill -9 "$GW"; wait "$GW" 2>/dev/null || true
t0=$(date +%s.%N); gateway; wait_ready "$PORT"; t1=$(date +%s.%N)
a=$(points); refresh; b=$(points)
after=$((b - a))
echo "refresh of 3 x 24 h dashboards + the Grafana dashboard ($(wc -l <"$WORK/urls") requests):"
echo "  appliance points, warm refresh a minute later:           $before"
echo "  appliance points, first refresh after kill -9 (at once): $after"
printf '  start to ready after the restart: %.2f s (disk tier %s)\n' "$(echo "$t1 - $t0" | bc)" "$(du -sh "$CACHE" | cut -f1)"

# Fill the disk tier with settled one-day questions until it holds FILL_MIB.
python3 - "$PORT" "$FILL_MIB" "$CACHE/segments.redb" <<'PY'
import concurrent.futures, os, sys, time, urllib.request
port, target, path = int(sys.argv[1]), int(sys.argv[2]) * 1024 * 1024, sys.argv[3]
now = int(time.time()); day = now - now % 86400 - 86400
def ask(i):
    did, back = 1000 + i % 5000, i // 5000
    start = (day - back * 86400) * 1000
    url = f"http://127.0.0.1:{port}/v1/metricdata?metric=connections&did={did}&starttime={start}&endtime={start + 86400000}&interval=60"
    urllib.request.urlopen(url).read()
i = 0
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    while os.path.getsize(path) < target:
        list(pool.map(ask, range(i, i + 400)))
        i += 400
print(f"  filled: {i} one-day questions, {os.path.getsize(path) / 2**20:.0f} MiB")
PY
kill -9 "$GW"; wait "$GW" 2>/dev/null || true
t0=$(date +%s.%N); gateway; wait_ready "$PORT"; t1=$(date +%s.%N)
printf '  start to ready with the full disk tier: %.2f s (%s)\n' "$(echo "$t1 - $t0" | bc)" "$(du -sh "$CACHE" | cut -f1)"
# The index of its entries is read in the background; lookups go to the file meanwhile.
for _ in $(seq 600); do
    curl -fsS "http://127.0.0.1:$PORT/metrics" | grep -q '^metricgate_disk_cache_indexed 1' && break
    sleep 0.1
done
t2=$(date +%s.%N)
entries=$(curl -fsS "http://127.0.0.1:$PORT/metrics" | awk '$1=="metricgate_disk_cache_entries"{print $2}')
printf '  start to every entry indexed: %.2f s (%s entries)\n' "$(echo "$t2 - $t0" | bc)" "$entries"
