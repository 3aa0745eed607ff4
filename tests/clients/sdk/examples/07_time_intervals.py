# Analyze metrics with different time intervals
metric_name = "connection_count"
device_id = 123
# Define different intervals to compare
intervals = ["1min", "15min", "1hour"]
interval_data = {}
for interval in intervals:
    data = client.metricdata.get(
        metric=metric_name,
        did=device_id,
        starttime=int((datetime.datetime.now() - datetime.timedelta(hours=3)).timestamp() * 1000),
        endtime=int(datetime.datetime.now().timestamp() * 1000),
        interval=interval
    )
    interval_data[interval] = data.get('data', [])
print(f"Time Interval Analysis: {metric_name}")
print("=" * 60)
# Compare data granularity and patterns
for interval, data in interval_data.items():
    if data:
        values = [point.get('value', 0) for point in data if point.get('value') is not None]
        print(f"\n{interval.upper()} Interval:")
        print(f" Data points: {len(values)}")
        if values:
            avg_value = sum(values) / len(values)
            max_value = max(values)
            min_value = min(values)
            print(f" Average: {avg_value:.1f}")
            print(f" Range: {min_value:.1f} - {max_value:.1f}")
            # Calculate variance to understand data volatility
            variance = sum((x - avg_value) ** 2 for x in values) / len(values)
            std_dev = variance ** 0.5
            print(f" Volatility (std dev): {std_dev:.2f}")
            # Show recent trend
            if len(values) >= 3:
                recent_values = values[-3:]
                print(f" Recent trend: {' → '.join([f'{v:.1f}' for v in recent_values])}")
# Recommend optimal interval based on analysis
print(f"\nInterval Recommendation:")
print(f" • Use 1min for real-time monitoring and immediate response")
print(f" • Use 15min for operational monitoring and trend analysis")
print(f" • Use 1hour for capacity planning and long-term trends")
