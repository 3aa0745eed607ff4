#!/usr/bin/env bash
# Kill the lock holder mid-fetch: how long until the other replicas answer.
#
#   bash bench/kill_holder.sh [rounds=3]
#
# Three gateway processes share one redis-server and one simulator. Each round: the simulator
# answers slowly (60 s), replica 1 takes the fetch locks for a cold question and its request
# reaches the simulator, then replica 1 is killed (SIGKILL: no release, no more heartbeats) and
# the simulator is made fast again; replicas 2 and 3 are asked the same question at once. The
# figure is the time from the kill until both have answered, against the lock TTL
# (redis.lock_ttl_ms, LOCK_TTL_MS to change it). The appliance requests of the round are
# counted too (expected: the dead holder's and one more). Replica 1 is restarted between rounds.
#
# PROFILE=release builds and runs the release binary (the figure is lock timing, not CPU, so
# the debug build is the default). GATEWAY=<binary> runs another build of the gateway instead
# (an older one: set LOCK_TTL_MS= empty if it predates redis.lock_ttl_ms).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
LOCK_TTL_MS=${LOCK_TTL_MS-3000}
PROFILE=${PROFILE:-debug}

command -v redis-server >/dev/null || { echo "redis-server is needed" >&2; exit 1; }
if [ "$PROFILE" = release ]; then cargo build --release --locked -q; else cargo build --locked -q; fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/metricgate
GATEWAY=${GATEWAY:-$BIN}

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}" "${GW[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
REDIS_PORT=$(free_port); SIM_PORT=$(free_port)
PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
ADMIN=("$(free_port)" "$(free_port)" "$(free_port)")
SIM=http://127.0.0.1:$SIM_PORT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 & PIDS+=($!)
$BIN simulate --listen 127.0.0.1:$SIM_PORT >"$WORK/sim.log" 2>&1 & PIDS+=($!)

GW=("" "" "")
start() { # replica index
    env METRICGATE__SERVER__LISTEN=127.0.0.1:${PORTS[$1]} \
    METRICGATE__SERVER__WORKERS=1 \
    METRICGATE__SERVER__LOG_LEVEL=warn \
    METRICGATE__ADMIN__LISTEN=127.0.0.1:${ADMIN[$1]} \
    METRICGATE__REDIS__URL=redis://127.0.0.1:$REDIS_PORT/0 \
    ${LOCK_TTL_MS:+METRICGATE__REDIS__LOCK_TTL_MS=$LOCK_TTL_MS} \
    METRICGATE__UPSTREAM__URL=$SIM \
    METRICGATE__UPSTREAM__PUBLIC_TOKEN=demo-public-token \
    METRICGATE__UPSTREAM__PRIVATE_TOKEN=demo-private-token \
    $GATEWAY serve >>"$WORK/gw$1.log" 2>&1 &
    GW[$1]=$!
}
ready() { # replica index: ready, and sharing through Redis
    for _ in $(seq 300); do
        if curl -fsS "http://127.0.0.1:${PORTS[$1]}/readyz" >/dev/null 2>&1 &&
            curl -fsS "http://127.0.0.1:${ADMIN[$1]}/internal/limits" 2>/dev/null | grep -q '"redis":"shared"'; then
            return 0
        fi
        sleep 0.1
    done
    echo "replica $1 never became ready in shared mode" >&2; exit 1
}
faults() { curl -fsS -X POST -H 'content-type: application/json' -d "$1" "$SIM/_sim/faults" >/dev/null; }
metricdata() { curl -fsS "$SIM/_sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metricdata"])'; }

for i in 0 1 2; do start "$i"; done
for i in 0 1 2; do ready "$i"; done

TIMES=()
for round in $(seq "$ROUNDS"); do
    # A cold question each round.
    Q="/v1/metricdata?metric=connections&did=$((100 + round))&from=2024-01-15T00:00:00Z&to=2024-01-15T06:00:00Z&interval=5min"
    before=$(metricdata)
    faults '{"latency_ms": 60000}'
    curl -sS -o /dev/null "http://127.0.0.1:${PORTS[0]}$Q" 2>/dev/null &
    HOLDER_CURL=$!
    for _ in $(seq 500); do [ "$(metricdata)" -gt "$before" ] && break; sleep 0.01; done
    kill -9 "${GW[0]}"; wait "${GW[0]}" 2>/dev/null || true
    killed=$(now_ms)
    faults '{}'
    curl -fsS -o "$WORK/b.json" "http://127.0.0.1:${PORTS[1]}$Q" & B=$!
    curl -fsS -o "$WORK/c.json" "http://127.0.0.1:${PORTS[2]}$Q" & C=$!
    wait "$B"; wait "$C"
    answered=$(now_ms)
    cmp -s "$WORK/b.json" "$WORK/c.json" || { echo "replicas 2 and 3 answered differently" >&2; exit 1; }
    kill "$HOLDER_CURL" 2>/dev/null || true
    took=$((answered - killed))
    TIMES+=("$took")
    echo "round $round: both others answered $took ms after the kill (lock TTL ${LOCK_TTL_MS:-not set} ms); appliance requests this round: $(( $(metricdata) - before )) (the dead holder's and one more expected)"
    start 0; ready 0
done

SORTED=$(printf '%s\n' "${TIMES[@]}" | sort -n)
MEDIAN=$(echo "$SORTED" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
if [ -n "$LOCK_TTL_MS" ]; then
    echo "median: ${MEDIAN} ms after the kill, $(python3 -c "print(f'{$MEDIAN/$LOCK_TTL_MS:.2f}')")x the lock TTL ($LOCK_TTL_MS ms)"
else
    echo "median: ${MEDIAN} ms after the kill"
fi
