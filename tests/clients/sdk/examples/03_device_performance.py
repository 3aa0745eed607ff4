# Monitor specific device performance metrics
device_id = 123
# Get multiple performance metrics for the device
performance_data = client.metricdata.get(
    metrics=["bandwidth", "connection_count", "cpu_usage", "memory_usage"],
    did=device_id,
    starttime=int((datetime.datetime.now() - datetime.timedelta(hours=4)).timestamp() * 1000),
    endtime=int(datetime.datetime.now().timestamp() * 1000),
    interval="15min",
    fulldevicedetails=True
)
print(f"Device Performance Analysis (DID: {device_id})")
print("=" * 60)
# Extract device information
device_info = None
data = performance_data.get('data', {})
if data:
    # Get device info from first metric's first data point
    for metric_name, metric_data in data.items():
        if metric_data and len(metric_data) > 0:
            first_point = metric_data[0]
            device_info = first_point.get('device', {})
            break
if device_info:
    print(f"Device: {device_info.get('hostname', 'Unknown')} ({device_info.get('ip', 'Unknown IP')})")
    print(f"Label: {device_info.get('devicelabel', 'No label')}")
    print(f"Type: {device_info.get('devicetype', 'Unknown')}")
    print(f"OS: {device_info.get('os', 'Unknown')}")
# Analyze each metric
for metric_name, metric_data in data.items():
    if not metric_data:
        continue
    print(f"\n{metric_name.upper()} Analysis:")
    values = [point.get('value', 0) for point in metric_data if point.get('value') is not None]
    if values:
        avg_value = sum(values) / len(values)
        max_value = max(values)
        min_value = min(values)
        # Get unit from first data point
        unit = metric_data[0].get('unit', 'N/A') if metric_data else 'N/A'
        print(f" Average: {avg_value:.2f} {unit}")
        print(f" Maximum: {max_value:.2f} {unit}")
        print(f" Minimum: {min_value:.2f} {unit}")
        print(f" Data points: {len(values)}")
        # Show trend (last 4 values)
        if len(values) >= 4:
            recent_values = values[-4:]
            print(f" Recent trend: {' → '.join([f'{v:.1f}' for v in recent_values])}")
# Performance correlation analysis
if 'bandwidth' in data and 'connection_count' in data:
    print(f"\nPerformance Correlation Analysis:")
    bandwidth_values = [p.get('value', 0) for p in data['bandwidth'] if p.get('value') is not None]
    connection_values = [p.get('value', 0) for p in data['connection_count'] if p.get('value') is not None]
    if len(bandwidth_values) == len(connection_values) and len(bandwidth_values) > 0:
        # Simple correlation calculation
        correlations = []
        for i in range(len(bandwidth_values)):
            if connection_values[i] > 0:
                ratio = bandwidth_values[i] / connection_values[i]
                correlations.append(ratio)
        if correlations:
            avg_bytes_per_connection = sum(correlations) / len(correlations)
            print(f" Average bytes per connection: {avg_bytes_per_connection:,.0f}")
