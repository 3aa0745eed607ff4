# Get basic metric data
bandwidth_data = metricdata.get(
    metric="bandwidth",
    starttime=1705320000000,
    endtime=1705323600000
)
# Get multiple metrics at once
multi_metrics = metricdata.get(
    metrics=["bandwidth", "connection_count", "device_activity"],
    did=123,
    interval="5min"
)
# Get device-specific metric data
device_metrics = metricdata.get(
    metric="device_activity",
    did=123,
    from_=1705320000000,
    to=1705323600000,
    fulldevicedetails=True
)
# Get network protocol metrics
protocol_metrics = metricdata.get(
    metric="protocol_usage",
    protocol="tcp",
    destinationport=443,
    interval="1hour"
)
# Get metrics with breach correlation
breach_metrics = metricdata.get(
    metric="anomaly_score",
    did=123,
    breachtimes=True,
    interval="15min"
)
# Get metrics for multiple devices
multi_device = metricdata.get(
    metric="bandwidth",
    devices=["123", "456", "789"],
    interval="1hour"
)
