# Compare metrics across multiple devices
device_ids = ["123", "456", "789"] # Replace with actual device IDs
multi_device_data = client.metricdata.get(
    metric="bandwidth",
    devices=device_ids,
    starttime=int((datetime.datetime.now() - datetime.timedelta(hours=6)).timestamp() * 1000),
    endtime=int(datetime.datetime.now().timestamp() * 1000),
    interval="30min",
    fulldevicedetails=True
)
print(f"Multi-Device Bandwidth Comparison")
print("=" * 60)
data_points = multi_device_data.get('data', [])
if data_points:
    # Aggregate data by device
    device_stats = {}
    for point in data_points:
        timestamp = point.get('timestamp', 0)
        values = point.get('values', [])
        for device_value in values:
            device_id = device_value.get('device_id')
            value = device_value.get('value', 0)
            if device_id not in device_stats:
                device_stats[device_id] = {
                    'values': [],
                    'total': 0,
                    'count': 0
                }
            device_stats[device_id]['values'].append(value)
            device_stats[device_id]['total'] += value
            device_stats[device_id]['count'] += 1
    # Calculate statistics and compare
    print(f"Device Bandwidth Statistics:")
    for device_id, stats in sorted(device_stats.items()):
        values = stats['values']
        if values:
            avg_bandwidth = stats['total'] / stats['count']
            max_bandwidth = max(values)
            min_bandwidth = min(values)
            print(f"\n Device {device_id}:")
            print(f" Average: {avg_bandwidth:,.0f} bytes/sec")
            print(f" Maximum: {max_bandwidth:,.0f} bytes/sec")
            print(f" Minimum: {min_bandwidth:,.0f} bytes/sec")
            print(f" Data points: {len(values)}")
    # Identify top consumers
    if device_stats:
        top_consumer = max(device_stats.items(), key=lambda x: x[1]['total'])
        print(f"\n Top bandwidth consumer: Device {top_consumer[0]}")
        print(f" Total consumption: {top_consumer[1]['total']:,.0f} bytes")
