# Analyze security metrics with breach correlation
security_metrics = client.metricdata.get(
    metrics=["anomaly_score", "threat_level", "model_alerts"],
    did=123,
    starttime=int((datetime.datetime.now() - datetime.timedelta(hours=12)).timestamp() * 1000),
    endtime=int(datetime.datetime.now().timestamp() * 1000),
    interval="10min",
    breachtimes=True
)
print("Security Metrics Analysis with Breach Correlation")
print("=" * 70)
data = security_metrics.get('data', {})
# Analyze security trends
for metric_name, metric_data in data.items():
    if not metric_data:
        continue
    print(f"\n{metric_name.upper()} Analysis:")
    # Extract values and breach information
    values = []
    breach_count = 0
    breach_times = []
    for point in metric_data:
        value = point.get('value')
        if value is not None:
            values.append(value)
        # Check for breaches
        breaches = point.get('breaches', [])
        if breaches:
            breach_count += len(breaches)
            for breach in breaches:
                breach_times.append({
                    'time': breach.get('time'),
                    'model': breach.get('model_name'),
                    'score': breach.get('score')
                })
    if values:
        avg_value = sum(values) / len(values)
        max_value = max(values)
        min_value = min(values)
        print(f" Average score: {avg_value:.3f}")
        print(f" Maximum score: {max_value:.3f}")
        print(f" Minimum score: {min_value:.3f}")
        print(f" Associated breaches: {breach_count}")
        # High-risk periods
        high_risk_threshold = 0.8 # Adjust based on your environment
        high_risk_count = sum(1 for v in values if v > high_risk_threshold)
        if high_risk_count > 0:
            print(f" High-risk periods (>{high_risk_threshold}): {high_risk_count}")
    # Breach details
    if breach_times:
        print(f" Recent breaches:")
        for breach in sorted(breach_times, key=lambda x: x.get('time', 0), reverse=True)[:5]:
            breach_time = datetime.datetime.fromtimestamp(breach.get('time', 0) / 1000)
            model_name = breach.get('model', 'Unknown')
            score = breach.get('score', 0)
            print(f" {breach_time.strftime('%H:%M:%S')} - {model_name} (Score: {score:.3f})")
# Security trend analysis
if 'anomaly_score' in data:
    anomaly_data = data['anomaly_score']
    print(f"\nSecurity Trend Analysis:")
    # Calculate rolling average for trend
    window_size = 6 # 1 hour window with 10-minute intervals
    rolling_averages = []
    for i in range(len(anomaly_data) - window_size + 1):
        window_values = [
            anomaly_data[j].get('value', 0)
            for j in range(i, i + window_size)
            if anomaly_data[j].get('value') is not None
        ]
        if window_values:
            rolling_averages.append(sum(window_values) / len(window_values))
    if len(rolling_averages) >= 2:
        trend_direction = "increasing" if rolling_averages[-1] > rolling_averages[0] else "decreasing"
        trend_magnitude = abs(rolling_averages[-1] - rolling_averages[0])
        print(f" Overall trend: {trend_direction}")
        print(f" Trend magnitude: {trend_magnitude:.3f}")
        if rolling_averages[-1] > 0.7:
            print(f" ⚠️ Current risk level: HIGH")
        elif rolling_averages[-1] > 0.4:
            print(f" ⚠️ Current risk level: MEDIUM")
        else:
            print(f" ✅ Current risk level: LOW")
