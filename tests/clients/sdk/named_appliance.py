"""darktrace-sdk pointed at a named appliance of the fleet: `host` is
http://<gateway>/darktrace/<name> instead of http://<gateway>/darktrace, and the script is
otherwise unchanged. It gets that appliance's catalog and devices, not the default's.

Usage: named_appliance.py http://127.0.0.1:PORT NAME   (darktrace-sdk on PYTHONPATH)
The gateway fronts `default` (the simulator's default estate) and NAME (a seeded estate:
other metrics and mlids, and devices named site<seed>-host-<did>).
"""

import sys

import darktrace
from darktrace import DarktraceClient

base, name = sys.argv[1].rstrip("/"), sys.argv[2]
version = getattr(darktrace, "__version__", "?")
named = DarktraceClient(host=f"{base}/darktrace/{name}", public_token="their-public", private_token="their-private")
home = DarktraceClient(host=f"{base}/darktrace", public_token="their-public", private_token="their-private")

ask = dict(metric="connections", did=123, from_=1705320000000, to=1705323600000, fulldevicedetails=True)
there = named.metricdata.get(**ask)
here = home.metricdata.get(**ask)
for answer, host in ((there, "site1-host-123"), (here, "host-123")):
    assert answer["metric"] == "connections" and answer["data"], f"{answer!r:.300}"
    got = answer["data"][0]["device"].get("hostname")
    assert got == host, (host, got)
# Device 123 is another device on each appliance: other numbers.
assert [p.get("value") for p in there["data"]] != [p.get("value") for p in here["data"]], "the same data"

catalog = named.metrics.get()
names = {m["name"] for m in catalog}
assert "connections" in names and "saasconnections" in names, sorted(names)
assert "saasconnections" not in {m["name"] for m in home.metrics.get()}
assert all(m["mlid"] > 100 for m in catalog), [m["mlid"] for m in catalog]
first = min(m["mlid"] for m in catalog)
assert named.metrics.get(metric_id=first)["mlid"] == first

print(f"named appliance OK: darktrace-sdk {version}")
