#!/usr/bin/env bash
# CPU time per cache hit: metricgate against nginx proxy_cache in front of it and against a
# floor (bare actix-web answering the same bytes, bench/floor.rs), on loopback.
#
#   bash bench/cpu_per_request.sh [seconds-per-round=10] [rounds=3]
#
# For each round and server: the server's CPU time (utime+stime from /proc/<pid>/stat, all
# threads; for nginx the master, worker and cache manager processes) read before and after
# `wrk -t1 -c64`, divided by the requests wrk completed. wrk's own CPU is not counted. Other load
# changes CPU per request (servers batch more when the machine is busy, and the ratios move
# too), so the script warns when other processes used more than 0.05 cores: only compare runs
# without that warning, and ratios rather than absolute figures across machines.
#
# BASELINE=<an older metricgate binary> adds it as a fourth server ("baseline"), measured in the
# same rounds: the previous commit's figure from the same run.
#
# All servers get WORKERS (default 2) workers; rounds alternate floor, nginx, gateway,
# each preceded once by a WARMUP-second (default 2) unmeasured run. Cargo runs under
# `nice -n BUILD_NICE` (default 15); CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-3}
WORKERS=${WORKERS:-2}
WARMUP=${WARMUP:-2}
CONNECTIONS=64
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_need nginx wrk curl python3
bench_build
FLOOR=$OUT/examples/floor

SIM_PORT=$(free_port); GW_PORT=$(free_port); NGINX_PORT=$(free_port); FLOOR_PORT=$(free_port); BASE_PORT=$(free_port)

start_sim "$SIM_PORT"
start_gateway gw "$GW_PORT" "$SIM_PORT"
BASE_PID=
if [ -n "${BASELINE:-}" ]; then
    # The same settings as the gateway's, run from the older binary.
    SAVED_BIN=$BIN SAVED_GW_PID=$GW_PID
    BIN=$BASELINE start_gateway base "$BASE_PORT" "$SIM_PORT"
    BASE_PID=$GW_PID BIN=$SAVED_BIN GW_PID=$SAVED_GW_PID
fi

nginx_cache_conf "$NGINX_PORT" "$GW_PORT"

# A 16-hour series at 5 minutes: about 12 KB of JSON (the body of bench/cache_hit.sh).
QUERY="/v1/metricdata?metric=connections&did=42&from=2024-01-15T00:00:00Z&to=2024-01-15T16:00:00Z&interval=5min"
wait_ready "$GW_PORT"
curl -fsS "http://127.0.0.1:$GW_PORT$QUERY" -o "$WORK/body"
# The floor sends the gateway's hit headers too (fixed values): the same bytes on the wire.
curl -fsS -o /dev/null -D "$WORK/headers" "http://127.0.0.1:$GW_PORT$QUERY"
tr -d '\r' <"$WORK/headers" | tail -n +2 >"$WORK/headers.txt"
nginx -p "$WORK" -c nginx.conf
$FLOOR --listen 127.0.0.1:$FLOOR_PORT --body "$WORK/body" --headers "$WORK/headers.txt" --workers "$WORKERS" >"$WORK/floor.log" 2>&1 & FLOOR_PID=$!; PIDS+=($FLOOR_PID)
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$FLOOR_PORT/" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.1; done
NGINX_MASTER=$(cat "$WORK/nginx.pid")

# Fill nginx's cache, then check that all three send the same bytes and nginx its cached copy.
curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT$QUERY"
check_same() {
    local name=$1 url=$2
    curl -fsS "$url" -o "$WORK/body.$name"
    cmp -s "$WORK/body" "$WORK/body.$name" || { echo "$name: $(wc -c <"$WORK/body.$name") bytes differ from the gateway's first answer ($(wc -c <"$WORK/body") bytes)" >&2; exit 1; }
}
check_same gateway "http://127.0.0.1:$GW_PORT$QUERY"
check_same nginx "http://127.0.0.1:$NGINX_PORT$QUERY"
check_same floor "http://127.0.0.1:$FLOOR_PORT$QUERY"
if [ -n "$BASE_PID" ]; then
    for _ in $(seq 300); do curl -fsS -o /dev/null "http://127.0.0.1:$BASE_PORT/readyz" 2>/dev/null && break; sleep 0.1; done
    curl -fsS -o /dev/null "http://127.0.0.1:$BASE_PORT$QUERY"
    check_same baseline "http://127.0.0.1:$BASE_PORT$QUERY"
fi
check_hit() {
    local s
    s=$(header "http://127.0.0.1:$NGINX_PORT$QUERY" x-cache-status)
    [ "$s" = "HIT" ] || { echo "nginx is not serving from its cache (X-Cache-Status: $s)" >&2; exit 1; }
}
check_hit
head_bytes() { curl -fsS -o /dev/null -D - "$1" | wc -c; }
echo "body: $(wc -c <"$WORK/body") bytes, sha256 $(sha256sum "$WORK/body" | cut -c1-16), identical from floor, nginx, gateway"
echo "response head bytes: floor $(head_bytes "http://127.0.0.1:$FLOOR_PORT$QUERY"), nginx $(head_bytes "http://127.0.0.1:$NGINX_PORT$QUERY"), gateway $(head_bytes "http://127.0.0.1:$GW_PORT$QUERY")"
echo "nginx X-Cache-Status: HIT; gateway Cache-Status: $(header "http://127.0.0.1:$GW_PORT$QUERY" cache-status)"
echo "workers: $WORKERS each; wrk -t1 -c$CONNECTIONS -d${DURATION}s; $ROUNDS rounds; CLK_TCK $HZ; loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# The nginx processes that serve: the master, its workers and the cache manager (the cache
# loader runs once, a minute after start, and exits).
nginx_pids() {
    local p
    echo "$NGINX_MASTER"
    for p in $(pgrep -P "$NGINX_MASTER"); do
        grep -qa 'cache loader' "/proc/$p/cmdline" 2>/dev/null || echo "$p"
    done
}
# run URL SECONDS PID...: wrk against URL; prints "requests server-ticks wrk-secs host-ticks",
# the server's ticks summed over the PIDs, the host's over the whole machine.
run() {
    local url=$1 secs=$2; shift 2
    local before after host0 host1 wrk0 wrk1 requests
    before=$(cpu_ticks "$@")
    host0=$(host_ticks)
    times >"$WORK/times0"
    wrk -t1 -c$CONNECTIONS -d"${secs}s" "$url" >"$WORK/wrk.out"
    times >"$WORK/times1"
    host1=$(host_ticks)
    after=$(cpu_ticks "$@")
    wrk0=$(children_secs "$WORK/times0")
    wrk1=$(children_secs "$WORK/times1")
    if grep -qE "Non-2xx|Socket errors" "$WORK/wrk.out"; then cat "$WORK/wrk.out" >&2; echo "errors during the run" >&2; exit 1; fi
    requests=$(awk '/requests in/{print $1}' "$WORK/wrk.out")
    echo "$requests $((after - before)) $(awk -v a="$wrk0" -v b="$wrk1" 'BEGIN{print b-a}') $((host1 - host0))"
}

declare -A URL=(
    [floor]="http://127.0.0.1:$FLOOR_PORT$QUERY"
    [nginx]="http://127.0.0.1:$NGINX_PORT$QUERY"
    [gateway]="http://127.0.0.1:$GW_PORT$QUERY"
    [baseline]="http://127.0.0.1:$BASE_PORT$QUERY"
)
pids_of() {
    case $1 in
        floor) echo "$FLOOR_PID" ;;
        nginx) nginx_pids ;;
        gateway) echo "$GW_PID" ;;
        baseline) echo "$BASE_PID" ;;
    esac
}
SERVERS=(floor nginx gateway)
[ -n "$BASE_PID" ] && SERVERS+=(baseline)

for s in "${SERVERS[@]}"; do
    # shellcheck disable=SC2046
    run "${URL[$s]}" "$WARMUP" $(pids_of "$s") >/dev/null
done

# "other" is what the rest of the machine used meanwhile: busy time minus the server and wrk
# (interrupts taken while idle land there too). Much above 0.05 cores, something else ran.
printf '%-6s %-8s %10s %9s %9s %9s %9s %11s\n' round server requests "req/s" server wrk other "cpu us/req"
printf '%-6s %-8s %10s %9s %9s %9s %9s %11s\n' "" "" "" "" cores cores cores ""
: >"$WORK/results"
GW_DURING_NGINX=0
for round in $(seq "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
        gw_before=$(cpu_ticks "$GW_PID")
        # shellcheck disable=SC2046
        out=$(run "${URL[$s]}" "$DURATION" $(pids_of "$s"))
        read -r requests ticks wrk_secs host <<<"$out"
        [ "$s" = nginx ] && GW_DURING_NGINX=$((GW_DURING_NGINX + $(cpu_ticks "$GW_PID") - gw_before))
        python3 - "$round" "$s" "$requests" "$ticks" "$wrk_secs" "$host" "$HZ" "$DURATION" <<'PY' | tee -a "$WORK/results"
import sys
rnd, server, requests, ticks, wrk, host, hz, secs = sys.argv[1:]
requests, hz, secs = int(requests), int(hz), float(secs)
cpu = int(ticks) / hz
other = int(host) / hz - cpu - float(wrk)
print(f"{rnd:<6} {server:<8} {requests:>10} {requests / secs:>9.0f} {cpu / secs:>9.2f} "
      f"{float(wrk) / secs:>9.2f} {other / secs:>9.2f} {cpu * 1e6 / requests:>11.2f}")
PY
    done
done
check_hit
echo "gateway CPU during the nginx rounds: $GW_DURING_NGINX ticks (nginx answered from its cache); loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/results" <<'PY'
import statistics, sys
QUIET = 0.05  # cores of other load a round may see and still count as quiet
us, other, rounds = {}, 0.0, {}
for line in open(sys.argv[1]):
    f = line.split()
    us.setdefault(f[1], []).append(float(f[7]))
    other = max(other, float(f[6]))
    rounds.setdefault(f[0], {})[f[1]] = (float(f[7]), float(f[6]))
m = {s: statistics.median(v) for s, v in us.items()}
print("median cpu us/request: " + ", ".join(f"{s} {m[s]:.2f}" for s in m))
print(f"ratios: gateway/floor = {m['gateway']/m['floor']:.2f}x, gateway/nginx = {m['gateway']/m['nginx']:.2f}x")
if "baseline" in m:
    print(f"baseline (BASELINE binary): baseline/floor = {m['baseline']/m['floor']:.2f}x, gateway/baseline = {m['gateway']/m['baseline']:.2f}x")
# Each round's gateway against the floor measured seconds before it: slow drifts of the
# machine cancel out. A round is quiet when neither run saw more than QUIET cores of other load.
def paired(server):
    all_, quiet = [], []
    for r in rounds.values():
        if server in r and "floor" in r:
            ratio = r[server][0] / r["floor"][0]
            all_.append(ratio)
            if max(r[server][1], r["floor"][1]) <= QUIET:
                quiet.append(ratio)
    return all_, quiet
for server in [s for s in ("gateway", "baseline") if s in m]:
    all_, quiet = paired(server)
    line = (f"{server}/floor per round: " + " ".join(f"{x:.2f}" for x in all_)
            + f"; median {statistics.median(all_):.2f}x")
    if quiet:
        line += f", over the {len(quiet)} quiet rounds {statistics.median(quiet):.2f}x"
    print(line)
if other > QUIET:
    print(f"warning: up to {other:.2f} cores used by other processes during a round; figures are suspect")
PY
