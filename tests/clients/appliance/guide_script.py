"""A script written against the vendor's API guide (Threat Visualizer 6, January 2024), as teams
write them: it signs each request itself, as the guide's "API Authentication" section shows,
sends the guide's own example requests, and reads the answers as the guide documents them.

The one edit for the gateway is the host (`https://<appliance>` becomes
`http://<gateway>/appliance`). It still signs, with the guide's example tokens: the gateway
ignores callers' signing headers and signs with its own.

Usage: guide_script.py http://127.0.0.1:PORT
"""

import datetime
import hashlib
import hmac
import re
import sys

import requests

host = sys.argv[1].rstrip("/") + "/appliance"
public_token = "118v8jecrbrtkucou5a34hsbzounohx6jce61dwy"
private_token = "7chbwad4hl4n5ok69e2edrs2ogpiqy8ldd5oozdb"


def get(request):
    """GET `request` (path and query, exactly as signed), signed as the guide shows."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    message = f"{request}\n{public_token}\n{date}".encode("ascii")
    signature = hmac.new(private_token.encode("ascii"), message, hashlib.sha1).hexdigest()
    headers = {"DTAPI-Token": public_token, "DTAPI-Date": date, "DTAPI-Signature": signature}
    response = requests.get(host + request, headers=headers, timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"{request}: {response.status_code} {response.text}")
    return response.json()


TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def check_metric(obj, name, buckets, interval_ms):
    """One metric object of the guide's /metricdata response schema."""
    assert obj["metric"] == name, obj["metric"]
    data = obj["data"]
    assert len(data) == buckets, f"{name}: {len(data)} buckets, expected {buckets}"
    for before, after in zip(data, data[1:]):
        assert after["timems"] - before["timems"] == interval_ms, (before, after)
    for point in data:
        assert TIME.match(point["time"]), point["time"]
        shown = datetime.datetime.strptime(point["time"], "%Y-%m-%d %H:%M:%S")
        shown = shown.replace(tzinfo=datetime.timezone.utc)
        assert int(shown.timestamp() * 1000) == point["timems"], point
        assert point["size"] == point["in"] + point["out"], point
    return data


# Example request 1: all connections of device 1 on 20th March 2020, hourly.
answer = get("/metricdata?did=1&metric=connections&from=2020-03-20T00:00:00&to=2020-03-20T23:59:59&interval=3600")
assert isinstance(answer, list) and len(answer) == 1, answer
check_metric(answer[0], "connections", 24, 3_600_000)

# Example request 2, with the guide's own spelling: startTime/endTime and an empty `&&`.
answer = get(
    "/metricdata?metric=internalconnections&startTime=1584694800000&endTime=1584698400000"
    "&did=1&&ddid=18&protocol=6&interval=300"
)
check_metric(answer[0], "internalconnections", 12, 300_000)

# The example response's request: breachtimes=true puts a breachtimes object first.
answer = get(
    "/metricdata?metric=externalconnections&startTime=1582900189000&endTime=1582921789000"
    "&did=1&interval=60&breachtimes=true"
)
assert list(answer[0]) == ["breachtimes"], answer[0]
for breach in answer[0]["breachtimes"]:
    assert set(breach) == {"pid", "pbid", "score", "name", "time"}, breach
    assert 0 <= breach["score"] <= 1 and 1582900189000 <= breach["time"] < 1582921789000, breach
check_metric(answer[1], "externalconnections", 361, 60_000)
breaches = len(answer[0]["breachtimes"])

# Several metrics, as the guide says: metric1=, metric2=; one object each.
answer = get("/metricdata?metric1=connections&metric2=externaldatatransfervolume&did=1&starttime=1584694800000&endtime=1584698400000&interval=600")
assert sorted(o["metric"] for o in answer) == ["connections", "externaldatatransfervolume"], answer

# /metrics and /metrics/{mlid}.
catalog = get("/metrics")
assert isinstance(catalog, list) and catalog, catalog
for metric in catalog:
    assert {"mlid", "name", "label", "units", "filtertypes", "unitsinterval", "lengthscale"} <= set(metric), metric
four = get("/metrics/4")
assert four == next(m for m in catalog if m["mlid"] == 4), four
assert get("/metrics?responsedata=name") == [{"name": m["name"]} for m in catalog]

print(f"guide script OK: 5 metricdata requests ({breaches} breaches), /metrics with {len(catalog)} metrics")
