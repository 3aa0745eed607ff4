# Shared by the bench scripts (sourced, not run): a scratch folder cleaned up on exit, free
# ports, the simulator and gateways started the same way every time, readiness, and CPU
# accounting from /proc.
#
# After sourcing: WORK (scratch folder), PIDS (killed on exit; append what you start), BIN (the
# release binary, once bench_build has run) and HZ (clock ticks per second).

bench_need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required (apt-get install nginx-light wrk curl python3 redis-server valgrind)" >&2; exit 1; }
    done
}

# Builds the release binaries (nice'd: the machine is shared), honouring CARGO_TARGET_DIR;
# BENCH_SKIP_BUILD=1 uses the binaries already built (e.g. to re-run on a quieter machine).
bench_build() {
    [ -n "${BENCH_SKIP_BUILD:-}" ] || nice -n "${BUILD_NICE:-15}" cargo build --release --locked --examples --bins -q
    OUT=${CARGO_TARGET_DIR:-target}/release
    BIN=$OUT/metricgate
}

WORK=$(mktemp -d)
PIDS=()
HZ=$(getconf CLK_TCK)
bench_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -f "$WORK/nginx.conf" ] && nginx -p "$WORK" -c nginx.conf -s stop 2>/dev/null || true
    rm -rf "$WORK"
}
trap bench_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_sim PORT: the appliance simulator; its pid in SIM_PID.
start_sim() {
    $BIN simulate --listen "127.0.0.1:$1" >"$WORK/sim.log" 2>&1 &
    SIM_PID=$!
    PIDS+=("$SIM_PID")
}

# start_gateway NAME PORT SIM_PORT [VAR=value...]: a gateway with WORKERS workers, log level
# warn, caller limits out of the benchmark's way (rate limiting still runs on every request)
# and the admin endpoints on a port of their own; more settings as METRICGATE__* assignments.
# Its pid in GW_PID, its admin port in GW_ADMIN_PORT; its log in $WORK/NAME.log.
start_gateway() {
    local name=$1 port=$2 sim=$3
    shift 3
    GW_ADMIN_PORT=$(free_port)
    env METRICGATE__SERVER__LISTEN="127.0.0.1:$port" \
        METRICGATE__SERVER__WORKERS="${WORKERS:-2}" \
        METRICGATE__SERVER__LOG_LEVEL=warn \
        METRICGATE__RATE_LIMIT__PER_CLIENT_PER_MINUTE=100000000 \
        METRICGATE__RATE_LIMIT__BURST=10000000 \
        METRICGATE__RATE_LIMIT__PER_IP_PER_MINUTE=100000000 \
        METRICGATE__RATE_LIMIT__PER_IP_BURST=10000000 \
        METRICGATE__ADMIN__LISTEN="127.0.0.1:$GW_ADMIN_PORT" \
        METRICGATE__UPSTREAM__URL="http://127.0.0.1:$sim" \
        METRICGATE__UPSTREAM__PUBLIC_TOKEN=demo-public-token \
        METRICGATE__UPSTREAM__PRIVATE_TOKEN=demo-private-token \
        "$@" "$BIN" serve >"$WORK/$name.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
}

# wait_ready PORT: ready, not just alive (answers made before the metric catalog arrives differ:
# unit null).
wait_ready() {
    local _
    for _ in $(seq 300); do curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz" 2>/dev/null && break; sleep 0.1; done
    curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz" || { echo "the gateway on port $1 is not ready" >&2; exit 1; }
}

# header URL NAME: a response header's value.
header() { curl -fsS -o /dev/null -D - "$1" | tr -d '\r' | awk -F': ' -v h="$2" 'tolower($1)==h{print $2}'; }

# utime+stime in clock ticks (fields 14 and 15 of /proc/<pid>/stat; the command name, field 2,
# may hold spaces, so count from after its closing parenthesis), summed over the pids given.
cpu_ticks() {
    local p total=0 rest
    for p in "$@"; do
        rest=$(sed 's/^.*) //' "/proc/$p/stat")
        total=$((total + $(awk '{print $12 + $13}' <<<"$rest")))
    done
    echo "$total"
}

# Busy clock ticks of the whole machine (every CPU, steal included) from /proc/stat.
host_ticks() { awk '$1=="cpu"{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }

# CPU seconds of this shell's reaped children, from the builtin `times` output saved in $1 (run
# `times` in this shell, not in a command substitution, which would report its own children).
children_secs() { awk 'NR==2{t=0; for(i=1;i<=2;i++){split($i,a,/[ms]/); t+=a[1]*60+a[2]}; print t}' "$1"; }

# nginx_cache_conf PORT GATEWAY_PORT: $WORK/nginx.conf for nginx with proxy_cache on PORT in
# front of the gateway (WORKERS workers, access_log off), as both hit benchmarks compare it;
# start it with `nginx -p "$WORK" -c nginx.conf`.
nginx_cache_conf() {
    local port=$1 gateway=$2
    mkdir -p "$WORK/cache" "$WORK/logs"
    # nginx workers drop to an unprivileged user: let them use the cache folder.
    chmod 755 "$WORK"; chmod 777 "$WORK/cache"
    cat >"$WORK/nginx.conf" <<NGINX
worker_processes ${WORKERS:-2};
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    proxy_cache_path $WORK/cache levels=1:2 keys_zone=mg:16m max_size=256m inactive=1h use_temp_path=off;
    upstream gateway { server 127.0.0.1:$gateway; keepalive 64; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache mg;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
}
NGINX
}
