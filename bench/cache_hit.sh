#!/usr/bin/env bash
# Cache-hit throughput and p99 latency: metricgate against nginx proxy_cache serving the same
# bytes, in one run, on loopback. Reports ratios, since this machine is shared and noisy.
#
#   bash bench/cache_hit.sh [seconds-per-round] [rounds]
#
# Both servers get the same number of worker processes/threads (WORKERS, default 2) and wrk
# the same load: 64 connections, 2 threads. Rounds alternate nginx and metricgate.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-3}
WORKERS=${WORKERS:-2}
CONNECTIONS=64

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_need nginx wrk curl python3
bench_build

SIM_PORT=$(free_port); GW_PORT=$(free_port); NGINX_PORT=$(free_port)

start_sim "$SIM_PORT"
start_gateway gw "$GW_PORT" "$SIM_PORT"

nginx_cache_conf "$NGINX_PORT" "$GW_PORT"
nginx -p "$WORK" -c nginx.conf

# A 16-hour series at 5 minutes: about 12 KB of JSON.
QUERY="/v1/metricdata?metric=connections&did=42&from=2024-01-15T00:00:00Z&to=2024-01-15T16:00:00Z&interval=5min"
wait_ready "$GW_PORT"
GW_BYTES=$(curl -fsS "http://127.0.0.1:$GW_PORT$QUERY" | wc -c)
NG_BYTES=$(curl -fsS "http://127.0.0.1:$NGINX_PORT$QUERY" | wc -c)
NG_STATUS=$(curl -fsS -o /dev/null -D - "http://127.0.0.1:$NGINX_PORT$QUERY" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache-status"{print $2}')
GW_STATUS=$(curl -fsS -o /dev/null -D - "http://127.0.0.1:$GW_PORT$QUERY" | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-status"{print $2}')
echo "body: metricgate $GW_BYTES bytes, nginx $NG_BYTES bytes; nginx X-Cache-Status: $NG_STATUS; metricgate Cache-Status: $GW_STATUS"
[ "$GW_BYTES" = "$NG_BYTES" ] || { echo "bodies differ"; exit 1; }
[ "$NG_STATUS" = "HIT" ] || { echo "nginx is not serving from its cache"; exit 1; }

# Prints "requests/s p99-ms".
measure() {
    wrk -t2 -c$CONNECTIONS -d"${DURATION}s" --latency "$1" >"$WORK/wrk.out"
    local rps p99
    rps=$(awk '/^Requests\/sec/{print $2}' "$WORK/wrk.out")
    p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$WORK/wrk.out")
    if grep -q "Non-2xx" "$WORK/wrk.out"; then echo "non-2xx answers during the run" >&2; exit 1; fi
    echo "$rps $p99"
}

printf '%-6s %-11s %12s %10s\n' round server "requests/s" "p99 ms"
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    read -r nr np < <(measure "http://127.0.0.1:$NGINX_PORT$QUERY")
    printf '%-6s %-11s %12s %10s\n' "$round" nginx "$nr" "$np"
    read -r gr gp < <(measure "http://127.0.0.1:$GW_PORT$QUERY")
    printf '%-6s %-11s %12s %10s\n' "$round" metricgate "$gr" "$gp"
    echo "$nr $np $gr $gp" >>"$WORK/results"
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
nr, np_, gr, gp = (statistics.median(c) for c in zip(*rows))
print(f"median: nginx {nr:.0f} req/s p99 {np_:.2f} ms; metricgate {gr:.0f} req/s p99 {gp:.2f} ms")
print(f"throughput ratio metricgate/nginx = {gr/nr:.2f}x (target >= 1.2); p99 ratio = {gp/np_:.2f} (target <= 1.0)")
PY
