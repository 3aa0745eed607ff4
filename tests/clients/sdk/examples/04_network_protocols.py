# Analyze network protocol metrics
protocol_metrics = ["tcp_connections", "udp_traffic", "http_requests", "https_requests"]
protocol_data = client.metricdata.get(
    metrics=protocol_metrics,
    starttime=int((datetime.datetime.now() - datetime.timedelta(hours=8)).timestamp() * 1000),
    endtime=int(datetime.datetime.now().timestamp() * 1000),
    interval="30min"
)
print("Network Protocol Analysis")
print("=" * 50)
data = protocol_data.get('data', {})
# Analyze each protocol metric
protocol_stats = {}
for metric_name, metric_data in data.items():
    if not metric_data:
        continue
    values = [point.get('value', 0) for point in metric_data if point.get('value') is not None]
    if values:
        protocol_stats[metric_name] = {
            'total': sum(values),
            'average': sum(values) / len(values),
            'peak': max(values),
            'data_points': len(values)
        }
# Display protocol statistics
for protocol, stats in sorted(protocol_stats.items(), key=lambda x: x[1]['total'], reverse=True):
    print(f"\n{protocol.upper()}:")
    print(f" Total: {stats['total']:,.0f}")
    print(f" Average: {stats['average']:,.1f}")
    print(f" Peak: {stats['peak']:,.0f}")
    print(f" Data points: {stats['data_points']}")
# Protocol distribution analysis
if protocol_stats:
    total_across_protocols = sum(stats['total'] for stats in protocol_stats.values())
    print(f"\nProtocol Distribution:")
    for protocol, stats in sorted(protocol_stats.items(), key=lambda x: x[1]['total'], reverse=True):
        percentage = (stats['total'] / total_across_protocols) * 100 if total_across_protocols > 0 else 0
        print(f" {protocol}: {percentage:.1f}% of total traffic")
