#!/usr/bin/env bash
# Cold storms against the appliance's budget: many cold, distinct questions at once from a few
# callers, in real time. Two scenarios, each on a fresh simulator (100 ms an answer) and gateway:
#
#   default    upstream.per_minute = 120 (callers: a burst of 18, then 1.5 a second),
#              200 questions from 10 callers
#   small      upstream.per_minute = 12 (callers: a burst of 1, then one every 6 s),
#              40 questions from 4 callers
#
# For each: the share answered within 30 s (Grafana's timeout) and refused on the first try,
# the spread of the refusals' Retry-After, then every refused caller coming back when its
# Retry-After says (up to RETURNS times), and what the appliance saw: the most requests in any
# 60 s (the simulator's counters, sampled every 0.25 s) against upstream.per_minute.
#
#   bash bench/cold_storm.sh                  # builds the release binary first
#   BENCH_SKIP_BUILD=1 BASELINE=<older metricgate binary> bash bench/cold_storm.sh
#
# BASELINE runs the same scenarios against an older binary too; RETURNS=0 skips the returns.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_need curl python3
bench_build
RETURNS=${RETURNS:-3}

# scenario NAME BINARY LABEL PER_MINUTE QUESTIONS CALLERS
scenario() {
    local name=$1 bin=$2 label=$3 per_minute=$4 questions=$5 callers=$6
    local sim gw
    sim=$(free_port); gw=$(free_port)
    BIN=$bin start_sim "$sim"
    for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$sim/_sim/stats" >/dev/null 2>&1 && break; sleep 0.1; done
    # Real appliances took 40–640 ms for small requests.
    curl -fsS -X POST -H 'content-type: application/json' -d '{"latency_ms": 100}' \
        "http://127.0.0.1:$sim/_sim/faults" >/dev/null
    BIN=$bin start_gateway "$name" "$gw" "$sim" \
        METRICGATE__UPSTREAM__PER_MINUTE="$per_minute" \
        METRICGATE__RATE_LIMIT__TRUSTED_PROXIES=127.0.0.1/32
    local gw_pid=$GW_PID sim_pid=$SIM_PID
    wait_ready "$gw"
    echo "== $name ($label): upstream.per_minute = $per_minute, $questions cold questions from $callers callers at once"
    python3 - "http://127.0.0.1:$gw" "http://127.0.0.1:$sim" "$per_minute" "$questions" "$callers" "$RETURNS" <<'PY'
import concurrent.futures, json, statistics, sys, threading, time, urllib.error, urllib.request
gw, sim = sys.argv[1], sys.argv[2]
per_minute, questions, callers, returns = (int(a) for a in sys.argv[3:7])
GRAFANA_TIMEOUT = 30

def ask(i):
    """Question i from caller i % callers: (status, Retry-After, seconds taken)."""
    url = (f"{gw}/v1/metricdata?metric=connections&did={100000 + i}"
           "&from=2024-01-10T00:00:00Z&to=2024-01-10T06:00:00Z&interval=5min")
    req = urllib.request.Request(url, headers={"X-Forwarded-For": f"10.0.0.{1 + i % callers}"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return r.status, None, time.monotonic() - started
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Retry-After"), time.monotonic() - started

def sim_stats():
    with urllib.request.urlopen(f"{sim}/_sim/stats", timeout=5) as r:
        s = json.load(r)
    return s["requests"], s["metricdata"]

samples, stop = [], threading.Event()
def sample():
    while not stop.is_set():
        samples.append((time.monotonic(), *sim_stats()))
        time.sleep(0.25)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
time.sleep(0.5)
t0 = time.monotonic()

def life(i):
    """Asks, then comes back when told, up to `returns` times: (first answer, tries, answered at)."""
    first = ask(i)
    status, retry_after, _ = first
    tries = 1
    while status == 503 and retry_after and tries <= returns:
        time.sleep(int(retry_after))
        status, retry_after, _ = ask(i)
        tries += 1
    return first, tries, (time.monotonic() - t0) if status == 200 else None

with concurrent.futures.ThreadPoolExecutor(questions) as pool:
    lives = list(pool.map(life, range(questions)))
time.sleep(1)
stop.set()
sampler.join()

firsts = [f for f, _, _ in lives]
answered = [t for s, _, t in firsts if s == 200]
refused = [(int(r), t) for s, r, t in firsts if s == 503 and r]
others = len(firsts) - len(answered) - len(refused)
pct = lambda n: f"{n} ({100 * n / questions:.1f}%)"
print(f"first try: answered {pct(len(answered))}, "
      f"{pct(sum(1 for t in answered if t <= GRAFANA_TIMEOUT))} within {GRAFANA_TIMEOUT} s"
      + (f" (median {statistics.median(answered):.1f} s, slowest {max(answered):.1f} s)" if answered else "")
      + f"; refused {pct(len(refused))}: {sum(1 for _, t in refused if t < 1)} at once, "
      + f"{sum(1 for _, t in refused if t >= 1)} after waiting; other {others}")
if refused:
    told = sorted(r for r, _ in refused)
    print(f"Retry-After of the refused: min {told[0]} / median {statistics.median(told):.0f} / max {told[-1]} s, "
          f"{len(set(told))} distinct values for {len(told)} refusals")
if returns:
    by_tries = {}
    for (s, _, _), tries, at in lives:
        if at is not None and s != 200:
            by_tries[tries - 1] = by_tries.get(tries - 1, 0) + 1
    never = sum(1 for _, _, at in lives if at is None)
    done = max((at for _, _, at in lives if at is not None), default=0)
    print("coming back when told: answered on return "
          + (", ".join(f"#{k}: {v}" for k, v in sorted(by_tries.items())) or "-")
          + f"; never {never}; all answered {done:.0f} s after the storm")
# The most requests in any 60 s: from the sample just before a window to the last one in it.
most_all = most_data = 0
for i, (ti, ri, di) in enumerate(samples):
    inside = [s for s in samples[i + 1:] if s[0] - ti <= 60]
    if inside:
        most_all = max(most_all, inside[-1][1] - ri)
        most_data = max(most_data, inside[-1][2] - di)
print(f"appliance: most requests in any 60 s {most_all} (of upstream.per_minute {per_minute}; "
      f"{most_data} of them /metricdata); {samples[-1][1] - samples[0][1]} in all over "
      f"{samples[-1][0] - samples[0][0]:.0f} s")
PY
    local metrics
    metrics=$(curl -fsS "http://127.0.0.1:$gw/metrics")
    echo "$metrics" | awk '/^metricgate_upstream_queue_(refused_total|wait_seconds_(count|sum))/ {printf "  %s %s\n", $1, $2}'
    kill "$gw_pid" "$sim_pid" 2>/dev/null || true
    wait "$gw_pid" "$sim_pid" 2>/dev/null || true
}

# A copy of each binary: the build directory may be shared, and rebuilt under us.
cp "$BIN" "$WORK/metricgate"
runs=("$WORK/metricgate" "this build")
if [ -n "${BASELINE:-}" ]; then
    cp "$BASELINE" "$WORK/baseline"
    runs+=("$WORK/baseline" "baseline")
fi
for ((k = 0; k < ${#runs[@]}; k += 2)); do
    scenario default "${runs[k]}" "${runs[k + 1]}" 120 200 10
    scenario small "${runs[k]}" "${runs[k + 1]}" 12 40 4
done
