from darktrace import DarktraceClient
client = DarktraceClient(
    host="https://your-darktrace-instance",
    public_token="YOUR_PUBLIC_TOKEN",
    private_token="YOUR_PRIVATE_TOKEN"
)
# Access the metricdata module
metricdata = client.metricdata
