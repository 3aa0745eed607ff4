// Calls a running gateway through a client generated from openapi/openapi.json
// (openapi-typescript types + openapi-fetch). Usage: node check.js BASE_URL
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

declare const process: { argv: string[] };


const client = createClient<paths>({ baseUrl: process.argv[2] });

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) {
    throw new Error(message);
  }
}

const { data, error } = await client.GET("/v1/metricdata", {
  params: {
    query: {
      metric: "connections",
      did: 123,
      from: "2024-01-15T12:00:00Z",
      to: "2024-01-15T13:00:00Z",
      interval: "5min",
    },
  },
});
assert(data && !error, `metricdata failed: ${JSON.stringify(error)}`);
// 200 has two representations (JSON, and CSV on request): narrow to the JSON one.
assert(typeof data !== "string", "a JSON answer");
assert(data.interval_seconds === 300, "interval_seconds");
assert(data.series.length === 1 && data.series[0].points.length === 12, "points");
assert(data.series[0].device?.did === 123, "device");

const many = await client.GET("/v1/metricdata", {
  params: { query: { metrics: ["connections", "bandwidth"], devices: [2, 1], starttime: "1705320000000", endtime: "1705323600000", interval: "1hour" } },
});
assert(typeof many.data !== "string" && many.data?.series.length === 4, "several metrics and devices");

const bad = await client.GET("/v1/metricdata", {
  params: { query: { metric: "connections", interval: "7x", did: 0 } },
});
assert(bad.response.status === 400, "a 400");
const names = (bad.error?.errors ?? []).map((e) => e.parameter).sort();
assert(JSON.stringify(names) === JSON.stringify(["did", "interval"]), `errors: ${names}`);

// The same question to the fleet's second appliance, `lab`: another device behind id 123.
const lab = await client.GET("/v1/metricdata", {
  params: {
    query: {
      appliance: "lab",
      metric: "connections",
      did: 123,
      from: "2024-01-15T12:00:00Z",
      to: "2024-01-15T13:00:00Z",
      interval: "5min",
      fulldevicedetails: true,
    },
  },
});
assert(lab.data && typeof lab.data !== "string", `lab failed: ${JSON.stringify(lab.error)}`);
assert(lab.data.series[0].device?.hostname === "site1-host-123", "lab's device");
const labValues = JSON.stringify(lab.data.series[0].points.map((p) => p.value));
const homeValues = JSON.stringify(data.series[0].points.map((p) => p.value));
assert(labValues !== homeValues, "lab's numbers differ from the default's");

const catalog = await client.GET("/v1/metrics");
assert(catalog.data?.metrics.some((m) => m.name === "connections"), "catalog");

console.log("typescript client OK");
