#!/usr/bin/env bash
# User-space instructions per cache hit under valgrind's callgrind: the floor (bench/floor.rs,
# sending the gateway's own hit response), the gateway, and BASELINE (an older binary) if set.
#
#   bash bench/instructions_per_hit.sh [hits=4000]
#
# Each server runs under callgrind, gets a warm-up, has its counters zeroed, then answers HITS
# identical requests on 8 keep-alive connections; the instructions it ran meanwhile (all
# threads) ÷ HITS. Counts repeat to about 0.1% between runs, so this tells whether a change did
# less work where CPU time (bench/cpu_per_request.sh) is too noisy to say. It counts neither
# the kernel's work nor what contention between cores costs: CPU time stays the figure that
# counts. Set KEEP=<dir> to keep the callgrind files (callgrind_annotate reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
HITS=${1:-4000}
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_need valgrind callgrind_control callgrind_annotate curl python3 wrk
bench_build
FLOOR=$OUT/examples/floor
QUERY="/v1/metricdata?metric=connections&did=42&from=2024-01-15T00:00:00Z&to=2024-01-15T16:00:00Z&interval=5min"

SIM_PORT=$(free_port)
start_sim "$SIM_PORT"
# The gateway's hit response, for the floor to send.
GW_PORT=$(free_port)
start_gateway plain "$GW_PORT" "$SIM_PORT"
wait_ready "$GW_PORT"
curl -fsS -o "$WORK/body" "http://127.0.0.1:$GW_PORT$QUERY"
curl -fsS -o /dev/null -D - "http://127.0.0.1:$GW_PORT$QUERY" | tr -d '\r' | tail -n +2 >"$WORK/headers.txt"
kill "$GW_PID"

# measure NAME BINARY: starts it under callgrind and prints its instructions per hit.
measure() {
    local name=$1 binary=$2 port pid out
    port=$(free_port)
    out=$WORK/callgrind.$name
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s %s "$@"\n' "$out" "$binary" >"$WORK/under-$name"
    chmod +x "$WORK/under-$name"
    if [ "$name" = floor ]; then
        "$WORK/under-$name" --listen "127.0.0.1:$port" --body "$WORK/body" --headers "$WORK/headers.txt" --workers "${WORKERS:-2}" >"$WORK/$name.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        for _ in $(seq 600); do curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.2; done
    else
        BIN=$WORK/under-$name start_gateway "$name" "$port" "$SIM_PORT"
        pid=$GW_PID
        for _ in $(seq 600); do curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && break; sleep 0.2; done
    fi
    curl -fsS -o /dev/null "http://127.0.0.1:$port$QUERY"
    wrk -t1 -c8 -d3s "http://127.0.0.1:$port$QUERY" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    python3 - "$port" "$QUERY" "$HITS" <<'PY'
import socket, sys
port, query, hits = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
request = f"GET {query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
def answer(s):
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n")[0]
    assert b" 200 " in status, status
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(65536)
for _ in range(hits // len(connections)):
    for s in connections:
        s.sendall(request)
    for s in connections:
        answer(s)
PY
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    local file total
    file=$(ls -t "$out"* | head -1)
    total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
    kill "$pid" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && cp "$file" "$KEEP/callgrind.$name"
    echo "$name $((total / HITS))"
}

: >"$WORK/results"
measure floor "$FLOOR" | tee -a "$WORK/results"
measure gateway "$BIN" | tee -a "$WORK/results"
[ -n "${BASELINE:-}" ] && measure baseline "$BASELINE" | tee -a "$WORK/results"
python3 - "$WORK/results" "$HITS" <<'PY'
import sys
n = {l.split()[0]: int(l.split()[1]) for l in open(sys.argv[1])}
print(f"user-space instructions per hit ({sys.argv[2]} hits): " + ", ".join(f"{k} {v:,}" for k, v in n.items()))
print(f"gateway/floor = {n['gateway'] / n['floor']:.3f}x" + (f", baseline/floor = {n['baseline'] / n['floor']:.3f}x, gateway/baseline = {n['gateway'] / n['baseline']:.3f}x" if 'baseline' in n else ""))
PY
