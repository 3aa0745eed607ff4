"""Runs the seed's darktrace-sdk examples, as written, against a running gateway.

The examples in examples/ are the seed's code with its indentation restored. The only edit is
the one every user makes, done here at load time: `host` becomes the gateway's /darktrace URL.
The tokens stay the seed's placeholders, since the gateway ignores callers' signing.

Usage: run_seed_examples.py http://127.0.0.1:PORT   (darktrace-sdk on PYTHONPATH)
"""

import contextlib
import io
import pathlib
import re
import sys
import traceback

import darktrace
import requests

gateway = sys.argv[1].rstrip("/") + "/darktrace"
examples = sorted((pathlib.Path(__file__).parent / "examples").glob("*.py"))
# The seed's error-handling example names `requests` without importing it.
namespace = {"__name__": "__main__", "requests": requests}
outputs = {}
after = {}  # the names each example left, before later ones reuse them
failures = []
for path in examples:
    source = path.read_text()
    for placeholder in ("https://your-darktrace-instance.com", "https://your-darktrace-instance"):
        source = source.replace(f'"{placeholder}"', repr(gateway))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, str(path), "exec"), namespace)
    except Exception:
        failures.append(f"{path.name} raised:\n{traceback.format_exc()}")
    outputs[path.stem] = out.getvalue()
    after[path.stem] = dict(namespace)
    print(f"--- {path.name}\n{out.getvalue()}")


def check(condition, message):
    if not condition:
        failures.append(message)


def count(pattern, text):
    return [int(n) for n in re.findall(pattern, text)]


# The calls of the get() section: each shape the seed documents.
ns = after["01_get_calls"]
check(sorted(ns["multi_metrics"]["data"]) == ["bandwidth", "connection_count", "device_activity"],
      f"multi_metrics: {ns['multi_metrics'].get('data')!r:.300}")
check(ns["device_metrics"]["data"][0]["device"].get("hostname") == "host-123",
      f"device_metrics: {ns['device_metrics']!r:.300}")
check(ns["protocol_metrics"]["metric"] == "protocol_usage" and ns["protocol_metrics"]["data"],
      f"protocol_metrics: {ns['protocol_metrics']!r:.300}")
check(all("breaches" in p for p in ns["breach_metrics"]["data"]) and ns["breach_metrics"]["data"],
      f"breach_metrics: {ns['breach_metrics']!r:.300}")
check([v["device_id"] for v in ns["multi_device"]["data"][0]["values"]] == ["123", "456", "789"],
      f"multi_device: {ns['multi_device']!r:.300}")
# The scripts' own output.
check(all(n >= 24 for n in count(r"Total data points: (\d+)", outputs["02_bandwidth_analysis"]))
      and "Peak bandwidth" in outputs["02_bandwidth_analysis"], "bandwidth analysis")
perf = outputs["03_device_performance"]
check("Device: host-123 (10.0.0.123)" in perf and "Label: Device 123" in perf, "device details")
for metric in ("BANDWIDTH", "CONNECTION_COUNT", "CPU_USAGE", "MEMORY_USAGE"):
    check(f"{metric} Analysis:" in perf, f"{metric} in device performance")
check("Average bytes per connection" in perf, "correlation")
for metric in ("TCP_CONNECTIONS", "UDP_TRAFFIC", "HTTP_REQUESTS", "HTTPS_REQUESTS"):
    check(f"{metric}:" in outputs["04_network_protocols"], f"{metric} in protocol analysis")
security = outputs["05_security_breaches"]
check(sum(count(r"Associated breaches: (\d+)", security)) > 0, "breaches in 12 hours")
check("Recent breaches:" in security and "Overall trend" in security, "security trend")
for did in ("123", "456", "789"):
    check(f"Device {did}:" in outputs["06_multi_device"], f"device {did} compared")
for label in ("1MIN", "15MIN", "1HOUR"):
    check(f"{label} Interval:" in outputs["07_time_intervals"], f"{label} interval")
check(count(r"Retrieved (\d+) data points", outputs["08_error_handling"]) != []
      and "error" not in outputs["08_error_handling"].lower(), "error-handling example")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"seed examples OK: {len(examples)} scripts, darktrace-sdk {darktrace.__version__}")
