#!/usr/bin/env python3
"""The Python half of bench/promql_cpu.sh (standard library only): the queries, the export of
the gateway's samples as OpenMetrics text, the warm-up check, and the HTTP client that sends
the measured requests. The shell script starts the servers and reads their CPU time.

    promql_cpu.py queries DASHBOARD DEVICES STEP OUT.json   the measured queries, both forms
    promql_cpu.py export GATEWAY QUERIES.json START END OUT.om
    promql_cpu.py warm GATEWAY PROMETHEUS QUERIES.json START END STEP
    promql_cpu.py load BASE QUERY START END STEP N CONCURRENCY

GATEWAY is the gateway's `/prometheus` URL, PROMETHEUS and BASE a Prometheus API root
(`http://127.0.0.1:PORT`); times in epoch seconds.
"""

import http.client
import json
import re
import sys
import threading
import urllib.parse

# The gateway's breach series: one sample per breach, which marks only its own bucket.
BREACH = "darktrace_model_breach"
# Selector labels the gateway reads as "one device" (else the network-wide series) and as
# "one part" (else the total); see tests/api/promql_diff.rs, `implicit_matchers`.
DEVICE_LABELS = {"did", "hostname", "ip", "label"}
# Functions whose value depends on the range itself (extrapolation): their ranges go to
# Prometheus unchanged, as the differential test sends them.
EXTRAPOLATED = {"rate", "increase", "delta"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = GROUPING | {"bool", "offset", "and", "or", "unless", "inf", "nan", "start", "end"}


# --- PromQL, as Prometheus 2 must be asked it -----------------------------------------------

def tokens(text):
    """(kind, text) pairs, whitespace kept, so that the query can be written back as it was."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            j = i
            while j < len(text) and text[j].isspace():
                j += 1
            out.append(("ws", text[i:j]))
        elif c == "{":
            j, quote = i + 1, None
            while j < len(text) and (quote or text[j] != "}"):
                if quote and text[j] == "\\":
                    j += 1
                elif text[j] == quote:
                    quote = None
                elif not quote and text[j] in "\"'`":
                    quote = text[j]
                j += 1
            j += 1
            out.append(("braces", text[i:j]))
        elif c == "[":
            j = text.index("]", i) + 1
            out.append(("range", text[i:j]))
        elif c in "\"'`":
            j = i + 1
            while text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(("string", text[i:j]))
        elif c.isalpha() or c in "_:":
            m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", text[i:])
            j = i + m.end()
            out.append(("ident", text[i:j]))
        elif c.isdigit() or c == ".":
            m = re.match(r"(?:\d+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_])", text[i:])
            kind = "duration" if m else "number"
            m = m or re.match(r"[0-9.]+(?:[eE][+-]?[0-9]+)?", text[i:])
            j = i + m.end()
            out.append((kind, text[i:j]))
        else:
            j = i + 1
            out.append((c, c))
        i = j
    return out


def duration_ms(text):
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
             "w": 604_800_000, "y": 31_536_000_000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert "".join(n + u for n, u in parts) == text, f"duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def matcher_names(braces):
    return set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", braces))


def for_prometheus(query, step_s):
    """`query` as Prometheus 2 must be asked it for the gateway's meaning (mirroring
    `for_prometheus` in tests/api/promql_diff.rs): `did=""` and `direction=""` where the
    selector leaves them out; each range and subquery range 1 ms shorter, as the gateway's
    windows are left-open, except the ranges of rate/increase/delta. And one thing the test
    never asks: the breach series mark only their own bucket, which Prometheus' lookback cannot
    say, so a breach selector becomes `last_over_time(…[step - 1ms])`, which drops the name.

    Returns (query, metric names read, whether a name was dropped)."""
    toks = tokens(query)
    significant = [i for i, (k, _) in enumerate(toks) if k != "ws"]
    after = {a: b for a, b in zip(significant, significant[1:])}
    before = {b: a for a, b in zip(significant, significant[1:])}
    out, names, dropped = list(toks), set(), False
    stack = []  # per open parenthesis: the function's name, "group" for a label list, or None
    for i in significant:
        kind, text = toks[i]
        prev = toks[before[i]] if i in before else (None, None)
        nxt = toks[after[i]] if i in after else (None, None)
        if kind == "(":
            if prev[0] == "ident" and prev[1] in GROUPING:
                stack.append("group")
            elif prev[0] == "ident":
                stack.append(prev[1])
            else:
                stack.append(None)
            continue
        if kind == ")":
            stack.pop()
            continue
        if kind == "range" and ":" in text:  # a subquery: [range:step]
            rng, sub_step = text[1:-1].split(":", 1)
            out[i] = ("range", f"[{duration_ms(rng) - 1}ms:{sub_step}]")
            continue
        in_group = bool(stack) and stack[-1] == "group"
        # An identifier is a metric's name unless it is a keyword, a label of a grouping list,
        # or a function or aggregation (followed by its parenthesis or its grouping).
        is_name = (kind == "ident" and text not in KEYWORDS and nxt[0] != "(" and not in_group
                   and nxt[1] not in GROUPING and prev[1] not in ("offset", "@"))
        bare = kind == "braces" and prev[0] != "ident"
        if not (is_name or bare):
            continue
        # A selector: `name`, `name{…}` or `{…}`, perhaps followed by a range.
        name = text if is_name else None
        at_braces = after.get(i) if is_name and nxt[0] == "braces" else (i if bare else None)
        braces = toks[at_braces][1] if at_braces is not None else "{}"
        if name is None:
            m = re.search(r'__name__\s*=\s*"([^"]*)"', braces)
            name = m.group(1) if m else None
        given = matcher_names(braces)
        extra = []
        if not given & DEVICE_LABELS:
            extra.append('did=""')
        if "direction" not in given:
            extra.append('direction=""')
        inner = braces[1:-1].strip()
        written = "{" + ", ".join(([inner] if inner else []) + extra) + "}"
        last = at_braces if at_braces is not None else i
        if at_braces is None:
            out[i] = ("ident", text + written)
        else:
            out[at_braces] = ("braces", written)
        if name:
            names.add(name)
        rng_at = after.get(last)
        if rng_at is not None and toks[rng_at][0] == "range" and ":" not in toks[rng_at][1]:
            if not (stack and stack[-1] in EXTRAPOLATED):
                out[rng_at] = ("range", f"[{duration_ms(toks[rng_at][1][1:-1]) - 1}ms]")
        elif name == BREACH:
            first = i
            out[first] = ("ident", "last_over_time(" + out[first][1])
            out[last] = (out[last][0], out[last][1] + f"[{step_s * 1000 - 1}ms])")
            dropped = True
    return "".join(t for _, t in out), names, dropped


def dashboard_queries(path, devices):
    """The provisioned dashboard's queries (panels, then annotations), `$did` as Grafana
    interpolates "All" (as bench/grafana.rs reads them)."""
    dashboard = json.load(open(path))
    queries = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if "expr" in target:
                queries.append((panel["title"], target["expr"].replace("$did", devices)))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            queries.append((f"annotation: {annotation['name']}",
                            annotation["expr"].replace("$did", devices)))
    return queries


def cmd_queries(dashboard, devices, step, out):
    d = f'did=~"{devices}"'
    queries = dashboard_queries(dashboard, devices) + [
        ("rate by device", f"sum by (did) (rate(bandwidth{{{d}}}[5m]))"),
        ("topk", f"topk(1, sum by (did) (rate(bandwidth{{{d}}}[5m])))"),
        ("vector / vector", f"datatransfervolume{{{d}}} / connections{{{d}}}"),
        ("subquery", f"max_over_time(sum(connections{{{d}}})[1h:5m])"),
    ]
    rows, seen = [], set()
    for title, query in queries:
        # The breach query is both a panel and the annotations: measured once.
        if query in seen:
            continue
        seen.add(query)
        prometheus, names, dropped = for_prometheus(query, int(step))
        rows.append({"title": title, "gateway": query, "prometheus": prometheus,
                     "metrics": sorted(names), "dropped_name": dropped})
    json.dump(rows, open(out, "w"), indent=1)
    for r in rows:
        print(f"  {r['gateway']}\n    Prometheus: {r['prometheus']}")


# --- HTTP ------------------------------------------------------------------------------------

def split(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port, u.path.rstrip("/")


def get(url, path, params, timeout=60):
    host, port, prefix = split(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.request("GET", f"{prefix}{path}?{urllib.parse.urlencode(params)}")
    r = conn.getresponse()
    body = r.read()
    conn.close()
    try:
        return r.status, json.loads(body)
    except ValueError:
        return r.status, {"status": "error", "error": body[:300].decode(errors="replace")}


def query_range(url, query, start, end, step):
    return get(url, "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step})


# --- export ----------------------------------------------------------------------------------

def cmd_export(gateway, queries_path, start, end, devices, out):
    """The samples the gateway serves at 1-minute resolution over [start, end], each stamped at
    its own time (as `export` and `openmetrics` in tests/api/promql_diff.rs write them)."""
    queries = json.load(open(queries_path))
    names = sorted({n for q in queries for n in q["metrics"]})
    buckets = [n for n in names if n != BREACH]
    alternation = "|".join(buckets)
    selectors = [
        (f'{{__name__=~"{alternation}", did=~"{devices}", direction=~"|in|out"}}',
         len(buckets) * len(devices.split("|")) * 3),
        (f'{{__name__=~"{alternation}", direction=~"|in|out"}}', len(buckets) * 3),
    ]
    if BREACH in names:
        selectors.append((f'{BREACH}{{did=~"{devices}"}}', None))
    series = []
    for selector, expected in selectors:
        status, body = query_range(gateway, selector, start, end, 60)
        if status != 200 or body.get("status") != "success":
            sys.exit(f"export {selector}: HTTP {status}: {body}")
        result = body["data"]["result"]
        if expected is not None and len(result) != expected:
            sys.exit(f"export {selector}: {len(result)} series, expected {expected}")
        for s in result:
            if expected is not None and len(s["values"]) != (end - start) // 60 + 1:
                sys.exit(f"export {s['metric']}: {len(s['values'])} samples over the window")
            series.append((s["metric"], s["values"]))

    def escape(v):
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    families = {}
    for labels, values in series:
        families.setdefault(labels["__name__"], []).append((labels, values))
    samples = 0
    with open(out, "w") as f:
        for name in sorted(families):
            f.write(f"# TYPE {name} gauge\n")
            for labels, values in families[name]:
                pairs = [f'{k}="{escape(v)}"' for k, v in sorted(labels.items()) if k != "__name__"]
                head = f"{name}{{{','.join(pairs)}}}" if pairs else name
                for t, v in values:
                    f.write(f"{head} {v} {t}\n")
                    samples += 1
        f.write("# EOF\n")
    print(f"exported {len(series)} series, {samples} samples ({', '.join(names)}) "
          f"from {start} to {end}")


# --- warm-up ---------------------------------------------------------------------------------

def same(a, b):
    if a == b:
        return True
    x, y = float(a), float(b)
    if x != x and y != y:
        return True
    return abs(x - y) <= 1e-9 * max(abs(x), abs(y))


def compare(g, p, drop_name):
    """'identical', or what differs first (a figure for the reader: not a failure)."""
    def keyed(result):
        out = {}
        for s in result:
            labels = dict(s["metric"])
            if drop_name:
                labels.pop("__name__", None)
            out[json.dumps(labels, sort_keys=True)] = s["values"]
        return out
    gs, ps = keyed(g), keyed(p)
    if gs.keys() != ps.keys():
        return "label sets differ"
    for k, gv in gs.items():
        pv = ps[k]
        if [t for t, _ in gv] != [t for t, _ in pv]:
            return f"timestamps differ ({k})"
        bad = sum(1 for (_, a), (_, b) in zip(gv, pv) if not same(a, b))
        if bad:
            return f"values differ at {bad} of {len(gv)} times of {k}"
    return "identical"


def cmd_warm(gateway, prometheus, queries_path, start, end, step):
    """Each query once on each system: both must succeed with as many series."""
    failed = False
    for q in json.load(open(queries_path)):
        gs, g = query_range(gateway, q["gateway"], start, end, step)
        ps, p = query_range(prometheus, q["prometheus"], start, end, step)
        g_ok, p_ok = g.get("status") == "success", p.get("status") == "success"
        if not (g_ok and p_ok):
            failed = True
            print(f"FAILED {q['gateway']}: gateway HTTP {gs} {g.get('error', '')}; "
                  f"Prometheus HTTP {ps} {p.get('error', '')}")
            continue
        gn, pn = len(g["data"]["result"]), len(p["data"]["result"])
        if gn != pn:
            failed = True
            print(f"FAILED {q['gateway']}: {gn} series from the gateway, {pn} from Prometheus")
            continue
        print(f"  {gn:>3} series, {compare(g['data']['result'], p['data']['result'], q['dropped_name'])}: "
              f"{q['title']}")
    sys.exit(1 if failed else 0)


# --- load ------------------------------------------------------------------------------------

def cmd_load(base, query, start, end, step, n, concurrency):
    """N GET query_range requests, CONCURRENCY at a time on keep-alive connections; every
    answer must be a 200 `success`."""
    host, port, prefix = split(base)
    path = f"{prefix}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": query, "start": start, "end": end, "step": step})
    lock = threading.Lock()
    left = [n]
    errors = []

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                if left[0] == 0 or errors:
                    break
                left[0] -= 1
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200 or not body.startswith(b'{"status":"success"'):
                with lock:
                    errors.append(f"HTTP {r.status}: {body[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"{base}: {errors[0]}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "queries":
        cmd_queries(*args)
    elif cmd == "export":
        gateway, queries, start, end, devices, out = args
        cmd_export(gateway, queries, int(start), int(end), devices, out)
    elif cmd == "warm":
        gateway, prometheus, queries, start, end, step = args
        cmd_warm(gateway, prometheus, queries, int(start), int(end), int(step))
    elif cmd == "load":
        base, query, start, end, step, n, concurrency = args
        cmd_load(base, query, start, end, step, int(n), int(concurrency))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
