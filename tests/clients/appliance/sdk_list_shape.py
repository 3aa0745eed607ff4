"""darktrace-sdk 0.10.1 pointed at /appliance: it speaks the appliance's dialect (metric1=…,
seconds, `from`/`to` strings, lowercase booleans) and returns the appliance's answer parsed,
as its documentation says: "list: One {"metric": ..., "data": [...]} object per requested
metric; with breachtimes the first element is a {"breachtimes": [...]} object."

Usage: sdk_list_shape.py http://127.0.0.1:PORT   (darktrace-sdk 0.10.1 on PYTHONPATH)
"""

import sys

import darktrace
from darktrace import DarktraceClient

gateway = sys.argv[1].rstrip("/") + "/appliance"
client = DarktraceClient(host=gateway, public_token="their-public", private_token="their-private")

one = client.metricdata.get(
    metric="connections", did=1, from_="2024-01-15 12:00:00", to="2024-01-15 13:00:00", interval=300
)
assert isinstance(one, list) and len(one) == 1, one
assert one[0]["metric"] == "connections" and len(one[0]["data"]) == 12, one[0]
assert [p["timems"] for p in one[0]["data"]][:2] == [1705320000000, 1705320300000], one[0]["data"][:2]

several = client.metricdata.get(
    metrics=["connections", "internaldatatransfervolume"],
    did=1,
    starttime=1705320000000,
    endtime=1705406400000,
    interval=3600,
    breachtimes=True,
)
assert list(several[0]) == ["breachtimes"], several[0]
assert [o["metric"] for o in several[1:]] == ["connections", "internaldatatransfervolume"], several
for obj in several[1:]:
    assert len(obj["data"]) == 24, (obj["metric"], len(obj["data"]))
    assert all(p["size"] == p["in"] + p["out"] for p in obj["data"])

catalog = client.metrics.get()
assert isinstance(catalog, list) and all("mlid" in m for m in catalog), catalog
assert client.metrics.get(metric_id=4)["mlid"] == 4

print(f"sdk list shape OK: darktrace-sdk {darktrace.__version__}, {len(several[0]['breachtimes'])} breaches")
