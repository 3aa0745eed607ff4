from darktrace import DarktraceClient
import datetime
client = DarktraceClient(
    host="https://your-darktrace-instance.com",
    public_token="your_public_token",
    private_token="your_private_token"
)
# Get bandwidth data for the last 24 hours
end_time = datetime.datetime.now()
start_time = end_time - datetime.timedelta(hours=24)
bandwidth_data = client.metricdata.get(
    metric="bandwidth",
    starttime=int(start_time.timestamp() * 1000),
    endtime=int(end_time.timestamp() * 1000),
    interval="1hour"
)
print("Bandwidth Analysis (Last 24 Hours)")
print("=" * 50)
# Analyze bandwidth trends
data_points = bandwidth_data.get('data', [])
if data_points:
    total_bandwidth = 0
    peak_bandwidth = 0
    peak_time = None
    hourly_averages = []
    for point in data_points:
        timestamp = point.get('timestamp', 0)
        value = point.get('value', 0)
        total_bandwidth += value
        hourly_averages.append(value)
        if value > peak_bandwidth:
            peak_bandwidth = value
            peak_time = datetime.datetime.fromtimestamp(timestamp / 1000)
    avg_bandwidth = total_bandwidth / len(data_points) if data_points else 0
    print(f"Total data points: {len(data_points)}")
    print(f"Average bandwidth: {avg_bandwidth:,.0f} bytes/sec")
    print(f"Peak bandwidth: {peak_bandwidth:,.0f} bytes/sec")
    if peak_time:
        print(f"Peak time: {peak_time.strftime('%Y-%m-%d %H:%M:%S')}")
    # Show hourly breakdown
    print(f"\nHourly Bandwidth Breakdown:")
    for i, point in enumerate(data_points[-12:]): # Last 12 hours
        timestamp = point.get('timestamp', 0)
        value = point.get('value', 0)
        time_str = datetime.datetime.fromtimestamp(timestamp / 1000).strftime('%H:%M')
        print(f" {time_str}: {value:,.0f} bytes/sec")
