"""Calls a running gateway through the client openapi-python-client generated from
openapi/openapi.json. Usage: python_check.py BASE_URL (the package must be importable)."""

import sys

from metricgate_client import Client
from metricgate_client.api.metrics import get_metricdata, get_metrics
from metricgate_client.api.operations import healthz
from metricgate_client.models import MetricCatalog, MetricData, Problem

client = Client(base_url=sys.argv[1], raise_on_unexpected_status=True)

data = get_metricdata.sync(
    client=client,
    metric="connections",
    did=123,
    from_="2024-01-15T12:00:00Z",
    to="2024-01-15T13:00:00Z",
    interval="5min",
    breachtimes=True,
    fulldevicedetails=True,
)
assert isinstance(data, MetricData), data
assert data.interval_seconds == 300, data.interval_seconds
assert data.timerange.start == 1705320000000
assert len(data.series) == 1
series = data.series[0]
assert series.metric == "connections"
assert series.device.did == 123 and series.device.hostname == "host-123"
assert len(series.points) == 12
assert all(p.value == p.in_ + p.out for p in series.points)

multi = get_metricdata.sync(
    client=client,
    metrics=["connections", "bandwidth"],
    devices=[2, 1],
    starttime="1705320000000",
    endtime="1705323600000",
    interval="1hour",
)
assert isinstance(multi, MetricData), multi
assert [(s.metric, s.device.did) for s in multi.series] == [
    ("bandwidth", 1), ("bandwidth", 2), ("connections", 1), ("connections", 2)
], [(s.metric, s.device.did) for s in multi.series]

bad = get_metricdata.sync(client=client, metric="connections", interval="7x", did=0)
assert isinstance(bad, Problem), bad
assert bad.status == 400
assert {e.parameter for e in bad.errors} == {"interval", "did"}, bad.errors

# The same question to the fleet's second appliance, `lab`: another device behind id 123.
lab = get_metricdata.sync(
    client=client,
    appliance="lab",
    metric="connections",
    did=123,
    from_="2024-01-15T12:00:00Z",
    to="2024-01-15T13:00:00Z",
    interval="5min",
    fulldevicedetails=True,
)
assert isinstance(lab, MetricData), lab
assert lab.series[0].device.hostname == "site1-host-123", lab.series[0].device.hostname
assert len(lab.series[0].points) == 12
assert [p.value for p in lab.series[0].points] != [p.value for p in series.points]

unknown = get_metricdata.sync(client=client, appliance="apac", metric="connections", did=123)
assert isinstance(unknown, Problem), unknown
assert unknown.status == 400 and [e.parameter for e in unknown.errors] == ["appliance"], unknown.errors

catalog = get_metrics.sync(client=client)
assert isinstance(catalog, MetricCatalog), catalog
assert "connections" in {m.name for m in catalog.metrics}

assert healthz.sync(client=client).status == "ok"
print("python client OK")
