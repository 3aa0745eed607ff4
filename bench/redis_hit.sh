#!/usr/bin/env bash
# CPU time per cache hit in Redis mode against embedded mode, in one run, on loopback: what
# sharing state through Redis costs a hit (#18: target <= 1.3x).
#
#   bash bench/redis_hit.sh [seconds-per-round=8] [rounds=3]
#
# Two gateways on one simulator, the same settings but one has redis.url (a fresh
# redis-server, no persistence): CPU time (utime+stime from /proc/<pid>/stat, all threads) read
# before and after `wrk -t1 -c64` on the same cached question, divided by the requests wrk
# completed; for Redis mode the gateway's plus redis-server's. wrk's own CPU is not counted. Also
# the Redis commands per request (INFO stats, total_commands_processed; Lua scripts' own GET
# and SET count too). Rounds alternate the two, each preceded once by a WARMUP-second
# (default 2) unmeasured run. Other load changes CPU per request, so the script warns when other
# processes used more than 0.05 cores during a round: compare only runs without that warning.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
ROUNDS=${2:-3}
WARMUP=${WARMUP:-2}
CONNECTIONS=64
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_need wrk curl python3 redis-server redis-cli
bench_build

SIM_PORT=$(free_port); EMBEDDED_PORT=$(free_port); SHARED_PORT=$(free_port); REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
start_sim "$SIM_PORT"
start_gateway embedded "$EMBEDDED_PORT" "$SIM_PORT"; EMBEDDED_PID=$GW_PID
start_gateway shared "$SHARED_PORT" "$SIM_PORT" METRICGATE__REDIS__URL="redis://127.0.0.1:$REDIS_PORT/0"
SHARED_PID=$GW_PID; SHARED_ADMIN=$GW_ADMIN_PORT
wait_ready "$EMBEDDED_PORT"; wait_ready "$SHARED_PORT"
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$SHARED_ADMIN/internal/limits" | grep -q '"redis":"shared"' && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$SHARED_ADMIN/internal/limits" | grep -q '"redis":"shared"' || { echo "the Redis-mode gateway is not in shared mode" >&2; exit 1; }

# A 16-hour series at 5 minutes: about 12 KB of JSON (the body of bench/cache_hit.sh).
QUERY="/v1/metricdata?metric=connections&did=42&from=2024-01-15T00:00:00Z&to=2024-01-15T16:00:00Z&interval=5min"
curl -fsS "http://127.0.0.1:$EMBEDDED_PORT$QUERY" -o "$WORK/body.embedded"
curl -fsS "http://127.0.0.1:$SHARED_PORT$QUERY" -o "$WORK/body.shared"
cmp -s "$WORK/body.embedded" "$WORK/body.shared" || { echo "the two modes answer different bytes" >&2; exit 1; }
echo "body: $(wc -c <"$WORK/body.embedded") bytes, identical in both modes; Cache-Status: embedded $(header "http://127.0.0.1:$EMBEDDED_PORT$QUERY" cache-status), redis $(header "http://127.0.0.1:$SHARED_PORT$QUERY" cache-status)"
echo "workers: ${WORKERS:-2} each; wrk -t1 -c$CONNECTIONS -d${DURATION}s; $ROUNDS rounds; rate_limit.lease default; CLK_TCK $HZ; loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"

redis_commands() { redis-cli -p "$REDIS_PORT" INFO stats | tr -d '\r' | awk -F: '$1=="total_commands_processed"{print $2}'; }

# run URL SECONDS PID...: prints "requests server-ticks wrk-secs host-ticks redis-commands".
run() {
    local url=$1 secs=$2; shift 2
    local before after host0 host1 wrk0 wrk1 requests cmd0 cmd1
    cmd0=$(redis_commands)
    before=$(cpu_ticks "$@")
    host0=$(host_ticks)
    times >"$WORK/times0"
    wrk -t1 -c$CONNECTIONS -d"${secs}s" "$url" >"$WORK/wrk.out"
    times >"$WORK/times1"
    host1=$(host_ticks)
    after=$(cpu_ticks "$@")
    cmd1=$(redis_commands)
    wrk0=$(children_secs "$WORK/times0")
    wrk1=$(children_secs "$WORK/times1")
    if grep -qE "Non-2xx|Socket errors" "$WORK/wrk.out"; then cat "$WORK/wrk.out" >&2; echo "errors during the run" >&2; exit 1; fi
    requests=$(awk '/requests in/{print $1}' "$WORK/wrk.out")
    echo "$requests $((after - before)) $(awk -v a="$wrk0" -v b="$wrk1" 'BEGIN{print b-a}') $((host1 - host0)) $((cmd1 - cmd0))"
}

declare -A URL=(
    [embedded]="http://127.0.0.1:$EMBEDDED_PORT$QUERY"
    [redis]="http://127.0.0.1:$SHARED_PORT$QUERY"
)
pids_of() {
    case $1 in
        embedded) echo "$EMBEDDED_PID" ;;
        redis) echo "$SHARED_PID $REDIS_PID" ;;
    esac
}
MODES=(embedded redis)
for m in "${MODES[@]}"; do
    # shellcheck disable=SC2046
    run "${URL[$m]}" "$WARMUP" $(pids_of "$m") >/dev/null
done

printf '%-6s %-9s %10s %9s %9s %9s %9s %11s %10s\n' round mode requests "req/s" server wrk other "cpu us/req" "redis cmd"
printf '%-6s %-9s %10s %9s %9s %9s %9s %11s %10s\n' "" "" "" "" cores cores cores "" "per req"
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    for m in "${MODES[@]}"; do
        # shellcheck disable=SC2046
        out=$(run "${URL[$m]}" "$DURATION" $(pids_of "$m"))
        read -r requests ticks wrk_secs host commands <<<"$out"
        python3 - "$round" "$m" "$requests" "$ticks" "$wrk_secs" "$host" "$HZ" "$DURATION" "$commands" <<'PY' | tee -a "$WORK/results"
import sys
rnd, mode, requests, ticks, wrk, host, hz, secs, commands = sys.argv[1:]
requests, hz, secs = int(requests), int(hz), float(secs)
cpu = int(ticks) / hz
other = int(host) / hz - cpu - float(wrk)
print(f"{rnd:<6} {mode:<9} {requests:>10} {requests / secs:>9.0f} {cpu / secs:>9.2f} "
      f"{float(wrk) / secs:>9.2f} {other / secs:>9.2f} {cpu * 1e6 / requests:>11.2f} "
      f"{int(commands) / requests:>10.4f}")
PY
    done
done
echo "Cache-Status after: redis $(header "http://127.0.0.1:$SHARED_PORT$QUERY" cache-status); loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/results" <<'PY'
import statistics, sys
us, rps, other = {}, {}, 0.0
for line in open(sys.argv[1]):
    f = line.split()
    us.setdefault(f[1], []).append(float(f[7]))
    rps.setdefault(f[1], []).append(float(f[3]))
    other = max(other, float(f[6]))
m = {s: statistics.median(v) for s, v in us.items()}
r = {s: statistics.median(v) for s, v in rps.items()}
print("median cpu us/request: " + ", ".join(f"{s} {m[s]:.2f}" for s in m))
print(f"ratio redis/embedded CPU per hit = {m['redis']/m['embedded']:.2f}x (target <= 1.3x); "
      f"throughput redis/embedded = {r['redis']/r['embedded']:.2f}x")
if other > 0.05:
    print(f"warning: up to {other:.2f} cores used by other processes during a round; figures are suspect")
PY
