#!/usr/bin/env bash
# CPU time per warm PromQL query (#28): the gateway's `/prometheus` API against a real
# Prometheus holding the very samples the gateway serves, asked the same questions.
#
#   bash bench/promql_cpu.sh [requests-per-query=200]
#
# - Starts the release gateway in demo mode (`metricgate demo`, its embedded simulator as the
#   appliance) on a free loopback port. The demo's clock is the real one: the queried window
#   is the 6 h ending END_AGO seconds (default 1200, past the 10-minute settle window, so every
#   answer is historic) before now, aligned down to the minute, at a step of 60 s.
# - Exports what the gateway serves at 1-minute resolution for the metrics the queries read
#   (three devices, DEVICES, and the network-wide series, totals and `in`/`out` parts; the
#   devices' model breaches), from 2 h before the window (subqueries and ranges read back) to
#   its end, as OpenMetrics text; backfills it with `promtool tsdb create-blocks-from
#   openmetrics` and starts Debian's `prometheus` (2.42) over that TSDB, as
#   tests/api/promql_diff.rs does (the queries rewritten for Prometheus as that test does:
#   bench/promql_cpu.py, `for_prometheus`).
# - Warms both: each query asked once of each; both must answer `success` with as many series
#   (whether the values agree too is printed, as information).
# - Then, per query (the provisioned Grafana dashboard's, `$did` as "All" of DEVICES, plus a
#   rate by device, a topk, a vector/vector division and a subquery): the same `query_range`
#   sent N times to each, CONCURRENCY (default 2) at a time over keep-alive connections from
#   one Python client (bench/promql_cpu.py; its own CPU is not counted). Each server's CPU
#   time (utime+stime of all its threads, /proc/<pid>/stat, read before and after) ÷ N.
#
# Prints, per query, µs of CPU per query for each and their ratio (the issue's target: the
# gateway at most half of Prometheus), the totals, and the appliance requests the gateway made
# during the measured phase (its `metricgate_upstream_requests_total`; the simulator's own
# counts say how many were data, the rest being the readiness probe's catalog requests).
# Exits non-zero only when a system fails to answer; the ratio is a figure, not a test.
#
# The gateway runs WORKERS (default 2) workers, log level warn, caller limits out of the way;
# the demo process also holds the simulator, whose (small) CPU is counted with the gateway's.
# BENCH_SKIP_BUILD=1 uses the binary already built; GATEWAY=<binary> runs another one.
# CLK_TCK is 100 here: a figure rests on (N × µs/query ÷ 10,000) ticks, printed too.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
CONCURRENCY=${CONCURRENCY:-2}
WORKERS=${WORKERS:-2}
DEVICES=${DEVICES:-123|456|789}
END_AGO=${END_AGO:-1200}
STEP=60
# shellcheck source=bench/lib.sh
source bench/lib.sh
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null
fi
bench_need curl python3 prometheus promtool
bench_build
GATEWAY=${GATEWAY:-$BIN}
HELPER="python3 bench/promql_cpu.py"

NOW=$(date +%s)
END=$(( (NOW - END_AGO) / 60 * 60 ))
START=$(( END - 6 * 3600 ))
EXPORT_START=$(( START - 2 * 3600 ))

# The gateway: the demo, on a free port.
GW_PORT=$(free_port)
env METRICGATE__SERVER__WORKERS="$WORKERS" \
    METRICGATE__SERVER__LOG_LEVEL=warn \
    METRICGATE__RATE_LIMIT__PER_CLIENT_PER_MINUTE=100000000 \
    METRICGATE__RATE_LIMIT__BURST=10000000 \
    METRICGATE__RATE_LIMIT__PER_IP_PER_MINUTE=100000000 \
    METRICGATE__RATE_LIMIT__PER_IP_BURST=10000000 \
    "$GATEWAY" demo --listen "127.0.0.1:$GW_PORT" >"$WORK/gw.out" 2>"$WORK/gw.log" &
GW_PID=$!
PIDS+=("$GW_PID")
wait_ready "$GW_PORT"
GW=http://127.0.0.1:$GW_PORT
for _ in $(seq 50); do grep -q 'appliance simulator' "$WORK/gw.out" && break; sleep 0.1; done
SIM=$(awk '/appliance simulator/{print $3}' "$WORK/gw.out")
[ -n "$SIM" ] || { echo "no simulator address in the demo's banner" >&2; cat "$WORK/gw.out" >&2; exit 1; }

echo "window: $(date -u -d "@$START" +%FT%TZ) to $(date -u -d "@$END" +%FT%TZ), step ${STEP}s; devices $DEVICES"
echo "queries (and as Prometheus is asked them):"
$HELPER queries deploy/grafana/dashboards/darktrace.json "($DEVICES)" "$STEP" "$WORK/queries.json"

# The samples, and Prometheus over them.
$HELPER export "$GW/prometheus" "$WORK/queries.json" "$EXPORT_START" "$END" "$DEVICES" "$WORK/data.om"
promtool tsdb create-blocks-from openmetrics -q "$WORK/data.om" "$WORK/tsdb" >"$WORK/promtool.log" 2>&1 \
    || { cat "$WORK/promtool.log" >&2; exit 1; }
echo "global: {}" >"$WORK/prometheus.yml"
PROM_PORT=$(free_port)
# The gateway's lookback is (t - 5m, t], Prometheus 2's [t - 5m, t]: 1 ms shorter is the same
# window over millisecond timestamps (as the differential test runs it).
prometheus --storage.tsdb.path="$WORK/tsdb" --config.file="$WORK/prometheus.yml" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --storage.tsdb.retention.time=100y \
    --query.lookback-delta=299999ms >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
PIDS+=("$PROM_PID")
PROM=http://127.0.0.1:$PROM_PORT
for _ in $(seq 300); do curl -fsS -o /dev/null "$PROM/-/ready" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "$PROM/-/ready" || { echo "prometheus is not ready" >&2; cat "$WORK/prometheus.log" >&2; exit 1; }
echo "$(prometheus --version 2>&1 | head -1); gateway $("$GATEWAY" --version 2>/dev/null || echo "$GATEWAY")"

echo "warm-up (series; whether the values agree):"
$HELPER warm "$GW/prometheus" "$PROM" "$WORK/queries.json" "$START" "$END" "$STEP"

# Appliance requests the gateway made (every outcome), and the simulator's own counts.
upstream() { curl -fsS "$GW/metrics" | awk '/^metricgate_upstream_requests_total/{s+=$2} END{print s+0}'; }
sim_count() { curl -fsS "$SIM/_sim/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

python3 -c 'import json,sys; [print(q["title"], q["gateway"], q["prometheus"], sep="\t") for q in json.load(open(sys.argv[1]))]' \
    "$WORK/queries.json" >"$WORK/queries.tsv"
echo "measuring: $N requests per query and system, $CONCURRENCY at a time; workers $WORKERS; CLK_TCK $HZ; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
UP0=$(upstream); DATA0=$(sim_count metricdata); CATALOG0=$(sim_count metrics)
HOST0=$(host_ticks); times >"$WORK/times0"; T0=$(date +%s.%N)
GW_TOTAL0=$(cpu_ticks "$GW_PID"); PROM_TOTAL0=$(cpu_ticks "$PROM_PID")
: >"$WORK/results"
# measure BASE QUERY PID: the server's ticks for N requests.
measure() {
    local before
    before=$(cpu_ticks "$3")
    $HELPER load "$1" "$2" "$START" "$END" "$STEP" "$N" "$CONCURRENCY" || exit 1
    echo $(( $(cpu_ticks "$3") - before ))
}
while IFS=$'\t' read -r -u 3 title gq pq; do
    g=$(measure "$GW/prometheus" "$gq" "$GW_PID")
    p=$(measure "$PROM" "$pq" "$PROM_PID")
    printf '%s\t%s\t%s\t%s\n' "$title" "$gq" "$g" "$p" >>"$WORK/results"
done 3<"$WORK/queries.tsv"
HOST1=$(host_ticks); times >"$WORK/times1"; T1=$(date +%s.%N)
GW_TOTAL1=$(cpu_ticks "$GW_PID"); PROM_TOTAL1=$(cpu_ticks "$PROM_PID")
UP1=$(upstream); DATA1=$(sim_count metricdata); CATALOG1=$(sim_count metrics)

python3 - "$WORK/results" "$N" "$HZ" <<'PY'
import sys
path, n, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [line.rstrip("\n").split("\t") for line in open(path)]
us = lambda ticks: int(ticks) * 1e6 / hz / n
width = max(len(r[1]) for r in rows)
print(f"\n{'query':<{width}}  {'gateway µs':>10}  {'Prometheus µs':>13}  {'gateway/Prometheus':>18}  {'ticks':>9}")
for title, query, g, p in rows:
    ratio = f"{us(g) / us(p):.2f}" if int(p) else "-"
    print(f"{query:<{width}}  {us(g):>10.0f}  {us(p):>13.0f}  {ratio:>18}  {g:>4}/{p:<4}")
g = sum(int(r[2]) for r in rows)
p = sum(int(r[3]) for r in rows)
print(f"{'total (' + str(len(rows)) + ' queries)':<{width}}  {g * 1e6 / hz / n:>10.0f}  {p * 1e6 / hz / n:>13.0f}  "
      f"{(g / p if p else float('nan')):>18.2f}  {g:>4}/{p:<4}")
PY
WALL=$(( HOST1 - HOST0 ))
CLIENT=$(awk -v a="$(children_secs "$WORK/times0")" -v b="$(children_secs "$WORK/times1")" -v hz="$HZ" 'BEGIN{printf "%d", (b-a)*hz}')
OTHER=$(( WALL - (GW_TOTAL1 - GW_TOTAL0) - (PROM_TOTAL1 - PROM_TOTAL0) - CLIENT ))
echo "CPU over the measured phase (ticks): gateway $((GW_TOTAL1 - GW_TOTAL0)), Prometheus $((PROM_TOTAL1 - PROM_TOTAL0)), client $CLIENT, everything else on the machine $OTHER; loadavg at end $(cut -d' ' -f1-3 /proc/loadavg)"
# "Everything else" is the machine's busy time less the servers and the client (with this
# script's curl and awk): the loopback's softirq time, and any other load. Much above a tenth
# of a core, something else ran and the figures are suspect.
awk -v o="$OTHER" -v hz="$HZ" -v a="$T0" -v b="$T1" 'BEGIN{
    c = o / hz / (b - a)
    printf "measured phase: %.1f s; other load %.2f cores\n", b - a, c
    if (c > 0.1) print "warning: other processes used more than 0.1 cores; compare only quiet runs"
}'
echo "appliance requests during the measured phase: $((UP1 - UP0)) (the gateway's metricgate_upstream_requests_total); the simulator saw $((DATA1 - DATA0)) /metricdata and $((CATALOG1 - CATALOG0)) catalog requests (readiness probes, every 5 s)"
