"""Reads metricgate's Prometheus-compatible API with the PyPI prometheus-api-client, as a data
scientist's notebook would, and prints what it got as JSON for the Rust test to check against
the simulator's numbers.

    python3 prometheus_check.py http://127.0.0.1:8080/prometheus
"""

import json
import sys
from datetime import datetime, timezone

from prometheus_api_client import PrometheusConnect

url = sys.argv[1]
prom = PrometheusConnect(url=url, disable_ssl=True)
start = datetime(2024, 1, 15, 12, 0, tzinfo=timezone.utc)
end = datetime(2024, 1, 15, 12, 10, tzinfo=timezone.utc)

out = {
    # /api/v1/query_range
    "custom_query_range": prom.custom_query_range(
        'connections{did="123"}', start_time=start, end_time=end, step="60"
    ),
    # /api/v1/query with `connections{did='123'}[600s]` at the end: the raw buckets
    "get_metric_range_data": prom.get_metric_range_data(
        "connections", label_config={"did": "123"}, start_time=start, end_time=end
    ),
    # /api/v1/label/__name__/values
    "all_metrics": prom.all_metrics(),
    # /api/v1/query
    "custom_query": prom.custom_query(
        "sum by (direction) (bandwidth{did=\"123\", direction=~\"in|out\"})",
        params={"time": end.timestamp()},
    ),
}
print(json.dumps(out))
print("prometheus-api-client OK", file=sys.stderr)
