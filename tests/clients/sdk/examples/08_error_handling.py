try:
    # Attempt to get metric data
    metric_data = client.metricdata.get(
        metric="bandwidth",
        did=123,
        starttime=int((datetime.datetime.now() - datetime.timedelta(hours=1)).timestamp() * 1000),
        endtime=int(datetime.datetime.now().timestamp() * 1000),
        interval="5min"
    )
    # Process metric data
    data_points = metric_data.get('data', [])
    print(f"Retrieved {len(data_points)} data points")
    for point in data_points:
        timestamp = point.get('timestamp', 0)
        value = point.get('value', 0)
        time_str = datetime.datetime.fromtimestamp(timestamp / 1000).strftime('%H:%M:%S')
        print(f" {time_str}: {value}")
except requests.exceptions.HTTPError as e:
    print(f"HTTP error: {e}")
    if hasattr(e, 'response'):
        print(f"Status code: {e.response.status_code}")
        if e.response.status_code == 400:
            print("Bad request - check metric name and parameter values")
        elif e.response.status_code == 403:
            print("Access denied - check API permissions for metricdata endpoint")
        elif e.response.status_code == 404:
            print("Metric not found - verify metric name exists")
        elif e.response.status_code == 422:
            print("Invalid parameters - check time ranges and filter values")
        else:
            print(f"Response: {e.response.text}")
except Exception as e:
    print(f"Unexpected error: {e}")
