// metricgate explorer: pick an appliance, a metric, devices and a range; see the series as a chart with the
// model breaches marked and the cache outcome; copy the same question as curl, Python or
// TypeScript. Plain JavaScript and the vendored uPlot: no build step, no network but the gateway.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const INTERVALS = { "1min": 60, "5min": 300, "15min": 900, "1hour": 3600, "1day": 86400 };
  const PRESETS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
  const COLORS = ["#2f6fde", "#e07b00", "#1f8a4c", "#8a4fb2", "#c2185b", "#00838f", "#6d4c41", "#546e7a"];
  const FILTERS = ["protocol", "port", "sourceport", "destinationport", "ddid", "odid", "applicationprotocol"];
  // Auto intervals keep a series readable: last hour at 1 min, 24 h at 5 min, 7 days at 1 hour.
  const MAX_CHART_POINTS = 400;

  // `appliances`: GET /v1/appliances; `fallback`: the one a question naming none goes to.
  const state = { catalog: new Map(), appliances: [], fallback: null, lang: "curl", plot: null, breaches: [] };

  // What the chart shows, for tests and the curious (also as data-* attributes on #chart).
  window.explorer = {
    ready: false, loading: false, url: null, status: null, cacheStatus: null, appliance: null,
    series: [], breaches: [], problem: null,
  };

  // Query values are digits, names, times and lists: keep `:` and `,` readable in the URL.
  const encode = (v) => encodeURIComponent(v).replace(/%3A/gi, ":").replace(/%2C/gi, ",");
  const queryString = (params) => params.map(([k, v]) => `${k}=${encode(v)}`).join("&");
  const iso = (ms) => new Date(ms).toISOString().replace(/\.000Z$/, "Z");
  const localInput = (ms) => new Date(ms).toISOString().slice(0, 16);
  const utcText = (ms) => new Date(ms).toISOString().slice(0, 19).replace("T", " ");

  // Time ticks in UTC, 24-hour: the date on the first tick and wherever the day changes.
  function timeTicks(u, splits) {
    let day = null;
    return splits.map((s) => {
      const t = new Date(s * 1000).toISOString();
      const hm = t.slice(11, 16);
      const d = t.slice(5, 10);
      const label = d !== day ? `${hm}\n${d}` : hm;
      day = d;
      return label;
    });
  }

  function parseDevices(text) {
    const ids = [];
    const bad = [];
    for (const part of text.split(/[\s,;]+/).filter(Boolean)) {
      if (/^[1-9][0-9]{0,15}$/.test(part)) ids.push(part);
      else bad.push(part);
    }
    // Sorted as the gateway sorts them, so the URL is the canonical question.
    const unique = [...new Set(ids)].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
    return { ids: unique, bad };
  }

  function autoInterval(rangeSecs) {
    for (const [label, secs] of Object.entries(INTERVALS)) {
      if (rangeSecs / secs <= MAX_CHART_POINTS) return label;
    }
    return "1day";
  }

  function selectedRange() {
    return document.querySelector('input[name="range"]:checked').value;
  }

  // The appliance a question names: none for the default (so a question, link or snippet for
  // the default reads as it did before the fleet), else the picked one.
  function namedAppliance() {
    const picked = $("appliance").value;
    return picked && picked !== state.fallback ? picked : null;
  }

  // `?appliance=` for the catalog and the question, when one is named.
  const applianceParam = () => (namedAppliance() ? [["appliance", namedAppliance()]] : []);

  // The form, as the gateway's parameters (in the order a person would write them).
  function question() {
    const params = [...applianceParam(), ["metric", $("metric").value]];
    const problems = [];
    const devices = parseDevices($("devices").value);
    if (devices.bad.length) problems.push(`not a device id: ${devices.bad.join(", ")}`);
    if (devices.ids.length === 1) params.push(["did", devices.ids[0]]);
    if (devices.ids.length > 1) params.push(["devices", devices.ids.join(",")]);

    const range = selectedRange();
    let interval = $("interval").value;
    if (range === "custom") {
      const from = Date.parse(`${$("from").value}:00Z`);
      const to = Date.parse(`${$("to").value}:00Z`);
      if (Number.isNaN(from) || Number.isNaN(to)) problems.push("give both ends of a custom range");
      else if (from >= to) problems.push("the custom range must start before it ends");
      else {
        if (interval === "auto") interval = autoInterval((to - from) / 1000);
        params.push(["from", iso(from)], ["to", iso(to)]);
      }
    } else {
      if (interval === "auto") interval = autoInterval(PRESETS[range]);
      // Relative to the gateway's clock and open-ended ("until now"): a copied question stays
      // "the last hour", and the segment cache fetches only what is new when it is asked again.
      params.push(["from", `now-${range}`]);
    }
    if (interval) params.push(["interval", interval]);
    for (const name of FILTERS) {
      const value = $(name).value.trim();
      if (value) params.push([name, value]);
    }
    if ($("breachtimes").checked) params.push(["breachtimes", "true"]);
    return { params, problems };
  }

  // ---- copy as -----------------------------------------------------------------------------

  function snippet(lang, params) {
    const base = window.location.origin;
    const url = `${base}/v1/metricdata?${queryString(params)}`;
    if (lang === "curl") return `curl -s '${url}'`;
    if (lang === "python") {
      const lines = params.map(([k, v]) => `        ${JSON.stringify(k)}: ${JSON.stringify(v)},`);
      return [
        "import requests",
        "",
        "response = requests.get(",
        `    ${JSON.stringify(base + "/v1/metricdata")},`,
        "    params={",
        ...lines,
        "    },",
        "    timeout=30,",
        ")",
        "response.raise_for_status()",
        "for series in response.json()[\"series\"]:",
        "    device = (series[\"device\"] or {}).get(\"did\")",
        "    print(series[\"metric\"], device, [p[\"value\"] for p in series[\"points\"]])",
      ].join("\n");
    }
    // The client generated from the gateway's OpenAPI document (openapi-typescript + openapi-fetch).
    const numeric = new Set(["did", "ddid", "odid", "port", "sourceport", "destinationport"]);
    const fields = params.map(([k, v]) => {
      const key = /^[a-z_]+$/.test(k) ? k : JSON.stringify(k);
      if (k === "devices") return `${key}: [${v.split(",").map((d) => JSON.stringify(d)).join(", ")}]`;
      if (k === "breachtimes") return `${key}: ${v === "true"}`;
      if (numeric.has(k)) return `${key}: ${Number(v)}`;
      return `${key}: ${JSON.stringify(v)}`;
    });
    return [
      `// npx openapi-typescript ${base}/openapi.json -o schema.d.ts && npm install openapi-fetch`,
      "import createClient from \"openapi-fetch\";",
      "import type { paths } from \"./schema.js\";",
      "",
      `const client = createClient<paths>({ baseUrl: ${JSON.stringify(base)} });`,
      "const { data, error } = await client.GET(\"/v1/metricdata\", {",
      "  params: {",
      "    query: {",
      ...fields.map((f) => `      ${f},`),
      "    },",
      "  },",
      "});",
      "if (error) throw new Error(error.detail);",
      "if (data && typeof data !== \"string\") {",
      "  for (const s of data.series) console.log(s.metric, s.device?.did, s.points.length);",
      "}",
    ].join("\n");
  }

  function updateSnippet() {
    const { params } = question();
    $("snippet").textContent = snippet(state.lang, params);
  }

  async function copySnippet() {
    const text = $("snippet").textContent;
    const button = $("copy");
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents($("snippet"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1600);
  }

  // ---- the form's state in the address, so a view can be shared -----------------------------

  function saveHash() {
    const h = new URLSearchParams();
    if (namedAppliance()) h.set("appliance", namedAppliance());
    h.set("metric", $("metric").value);
    h.set("devices", $("devices").value);
    h.set("range", selectedRange());
    if (selectedRange() === "custom") {
      h.set("from", $("from").value);
      h.set("to", $("to").value);
    }
    h.set("interval", $("interval").value);
    for (const name of FILTERS) if ($(name).value.trim()) h.set(name, $(name).value.trim());
    h.set("breachtimes", $("breachtimes").checked ? "1" : "0");
    history.replaceState(null, "", `#${h.toString()}`);
  }

  function loadHash() {
    const h = new URLSearchParams(window.location.hash.slice(1));
    if (h.has("devices")) $("devices").value = h.get("devices");
    const range = h.get("range");
    const radio = range && document.querySelector(`input[name="range"][value="${CSS.escape(range)}"]`);
    if (radio) radio.checked = true;
    if (h.has("from")) $("from").value = h.get("from");
    if (h.has("to")) $("to").value = h.get("to");
    if (h.has("interval")) $("interval").value = h.get("interval");
    for (const name of FILTERS) if (h.has(name)) $(name).value = h.get(name);
    if (h.has("breachtimes")) $("breachtimes").checked = h.get("breachtimes") !== "0";
    if (FILTERS.some((name) => h.has(name))) $("filters").open = true;
    return { metric: h.get("metric"), appliance: h.get("appliance") };
  }

  // ---- the appliances ------------------------------------------------------------------------

  // The picker lists what GET /v1/appliances lists; it is shown only for a fleet (one
  // appliance needs no choice). `wanted` is the address's, else the default.
  async function loadAppliances(wanted) {
    const response = await fetch("/v1/appliances", { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const listed = await response.json();
    if (!Array.isArray(listed)) return;
    state.appliances = listed;
    const fallback = listed.find((a) => a.default);
    state.fallback = fallback ? fallback.name : null;
    const select = $("appliance");
    select.replaceChildren();
    for (const a of listed) {
      const option = document.createElement("option");
      option.value = a.name;
      const name = a.label ? `${a.label} (${a.name})` : a.name;
      // "default · default" says nothing: the short form's name already says it.
      const marked = a.default && a.name !== "default" ? " · default" : "";
      option.textContent = name + marked + (a.ready ? "" : " · not ready");
      select.append(option);
    }
    const preferred = [wanted, state.fallback, listed[0] && listed[0].name]
      .find((n) => n && listed.some((a) => a.name === n));
    if (preferred) select.value = preferred;
    $("appliance-picker").hidden = listed.length < 2;
    describeAppliance();
  }

  function describeAppliance() {
    const a = state.appliances.find((x) => x.name === $("appliance").value);
    window.explorer.appliance = a ? a.name : null;
    $("appliance-info").textContent = a ? `appliance=${a.name}${a.default ? " (the default)" : ""}` : "";
  }

  // Another appliance: its own catalog (metrics and ids differ between appliances), then its
  // answer to the same question.
  async function switchAppliance() {
    describeAppliance();
    const metric = $("metric").value;
    try {
      if (await loadCatalog(metric)) await show();
    } catch (e) {
      showProblem({ title: "Cannot load the appliance's metric catalog", detail: String(e) });
    }
  }

  // ---- the catalog ---------------------------------------------------------------------------

  async function loadCatalog(wanted) {
    const query = queryString(applianceParam());
    const response = await fetch(`/v1/metrics${query ? `?${query}` : ""}`, { headers: { Accept: "application/json" } });
    const body = await response.json();
    if (!response.ok) {
      showProblem(body);
      return false;
    }
    const select = $("metric");
    select.replaceChildren();
    state.catalog.clear();
    const metrics = [...body.metrics].sort((a, b) => (a.label || a.name).localeCompare(b.label || b.name));
    for (const m of metrics) {
      state.catalog.set(m.name, m);
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.units ? `${m.label || m.name} (${m.units})` : (m.label || m.name);
      select.append(option);
    }
    const preferred = [wanted, "connections", metrics[0] && metrics[0].name].find((n) => n && state.catalog.has(n));
    if (preferred) select.value = preferred;
    describeMetric();
    return metrics.length > 0;
  }

  function describeMetric() {
    const m = state.catalog.get($("metric").value);
    if (!m) return;
    const parts = [`name ${m.name}`];
    if (m.units) parts.push(`unit ${m.units}`);
    if (m.filtertypes && m.filtertypes.length) parts.push(`filters: ${m.filtertypes.join(", ")}`);
    $("metric-info").textContent = parts.join(" · ");
  }

  // ---- the answer ----------------------------------------------------------------------------

  function showProblem(problem) {
    const box = $("problem");
    box.replaceChildren();
    const title = document.createElement("strong");
    title.textContent = problem.title || "The request failed";
    box.append(title);
    if (problem.detail) box.append(document.createTextNode(`: ${problem.detail}`));
    if (Array.isArray(problem.errors) && problem.errors.length) {
      const list = document.createElement("ul");
      for (const e of problem.errors) {
        const item = document.createElement("li");
        const name = document.createElement("code");
        name.textContent = e.parameter;
        item.append(name, document.createTextNode(` ${e.message}`));
        list.append(item);
      }
      box.append(list);
    }
    box.hidden = false;
    window.explorer.problem = problem;
  }

  function describeCache(status) {
    const badge = $("cache-badge");
    badge.className = "badge";
    if (/detail=stale/.test(status)) { badge.textContent = "stale"; badge.classList.add("stale"); }
    else if (/;\s*hit/.test(status)) { badge.textContent = "cache hit"; badge.classList.add("hit"); }
    else if (/collapsed/.test(status)) { badge.textContent = "shared fetch"; badge.classList.add("miss"); }
    else if (/fwd=/.test(status)) { badge.textContent = "fetched from the appliance"; badge.classList.add("miss"); }
    else badge.textContent = "no cache status";
    $("cache-status").textContent = status ? `Cache-Status: ${status}` : "";
  }

  function chartData(answer) {
    const times = new Set();
    for (const s of answer.series) for (const p of s.points) times.add(p.timestamp);
    const xs = [...times].sort((a, b) => a - b);
    const index = new Map(xs.map((t, i) => [t, i]));
    const ys = answer.series.map((s) => {
      const column = new Array(xs.length).fill(null);
      for (const p of s.points) column[index.get(p.timestamp)] = p.value;
      return column;
    });
    return [xs.map((t) => t / 1000), ...ys];
  }

  function breachMarkers() {
    return {
      hooks: {
        draw: [(u) => {
          if (!state.breaches.length) return;
          const { ctx } = u;
          const { top, height, left, width } = u.bbox;
          ctx.save();
          ctx.strokeStyle = "#d1343a";
          ctx.fillStyle = "#d1343a";
          ctx.lineWidth = Math.max(1, devicePixelRatio);
          ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
          for (const b of state.breaches) {
            const x = u.valToPos(b.time / 1000, "x", true);
            if (x < left || x > left + width) continue;
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            const r = 5 * devicePixelRatio;
            ctx.beginPath();
            ctx.moveTo(x - r, top);
            ctx.lineTo(x + r, top);
            ctx.lineTo(x, top + r * 1.6);
            ctx.closePath();
            ctx.fill();
          }
          ctx.restore();
        }],
      },
    };
  }

  function draw(answer) {
    const chart = $("chart");
    if (state.plot) { state.plot.destroy(); state.plot = null; }
    chart.replaceChildren();
    const unit = (answer.series[0] && answer.series[0].unit) || "";
    const metric = state.catalog.get(answer.query.metrics[0]);
    const series = [{ label: "time (UTC)" }];
    answer.series.forEach((s, i) => {
      series.push({
        label: s.device ? `did ${s.device.did}` : s.metric,
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        spanGaps: false,
        points: { show: false },
      });
    });
    const opts = {
      title: metric ? `${metric.label || metric.name}${unit ? ` (${unit})` : ""}` : answer.query.metrics.join(", "),
      width: Math.max(320, chart.clientWidth - 8),
      height: 360,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      series,
      axes: [{ values: timeTicks, size: 50 }, { label: unit, size: 70 }],
      scales: { x: { time: true } },
      plugins: [breachMarkers()],
      legend: { live: true },
    };
    state.plot = new uPlot(opts, chartData(answer), chart);
  }

  function listBreaches(breaches) {
    const box = $("breach-list");
    const body = box.querySelector("tbody");
    body.replaceChildren();
    for (const b of breaches) {
      const row = document.createElement("tr");
      const cells = [utcText(b.time), b.model || "", b.score == null ? "" : String(b.score), b.did == null ? "" : String(b.did)];
      cells.forEach((text, i) => {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (i === 1) cell.className = "breach-model";
        row.append(cell);
      });
      body.append(row);
    }
    box.hidden = breaches.length === 0;
  }

  async function show(event) {
    if (event) event.preventDefault();
    const { params, problems } = question();
    updateSnippet();
    $("problem").hidden = true;
    window.explorer.problem = null;
    if (problems.length) {
      showProblem({ title: "Check the form", detail: problems.join("; ") });
      return;
    }
    saveHash();
    const url = `/v1/metricdata?${queryString(params)}`;
    const chart = $("chart");
    chart.dataset.state = "loading";
    $("show").disabled = true;
    window.explorer.loading = true;
    window.explorer.url = url;
    const started = performance.now();
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      const took = Math.round(performance.now() - started);
      const body = await response.json();
      const cacheStatus = response.headers.get("Cache-Status") || "";
      window.explorer.status = response.status;
      window.explorer.cacheStatus = cacheStatus;
      if (!response.ok) {
        showProblem(body);
        chart.dataset.state = "error";
        $("outcome").hidden = true;
        return;
      }
      state.breaches = body.breaches || [];
      draw(body);
      listBreaches(state.breaches);
      describeCache(cacheStatus);
      const age = response.headers.get("Age");
      const id = response.headers.get("X-Request-Id");
      const points = body.series.reduce((n, s) => n + s.points.filter((p) => p.value !== null).length, 0);
      $("timing").textContent = `${points} points · ${state.breaches.length} breaches · ${took} ms` +
        (age ? ` · age ${age} s` : "") + (id ? ` · request ${id}` : "");
      $("outcome").hidden = false;
      window.explorer.series = body.series.map((s) => ({
        metric: s.metric,
        did: s.device ? s.device.did : null,
        unit: s.unit,
        timestamps: s.points.map((p) => p.timestamp),
        values: s.points.map((p) => p.value),
      }));
      window.explorer.breaches = state.breaches;
      chart.dataset.points = String(points);
      chart.dataset.series = String(body.series.length);
      chart.dataset.breaches = String(state.breaches.length);
      chart.dataset.state = "drawn";
    } catch (e) {
      showProblem({ title: "The gateway did not answer", detail: String(e) });
      chart.dataset.state = "error";
    } finally {
      $("show").disabled = false;
      window.explorer.loading = false;
    }
  }

  // ---- wiring --------------------------------------------------------------------------------

  function syncRange() {
    $("custom").hidden = selectedRange() !== "custom";
    updateSnippet();
  }

  async function start() {
    const now = Date.now();
    $("from").value = localInput(now - 86400 * 1000);
    $("to").value = localInput(now);
    $("devices").value = "123, 456";
    const wanted = loadHash();
    syncRange();
    try {
      await loadAppliances(wanted.appliance);
    } catch (_) {
      // A gateway without the listing: the picker stays hidden and questions name none.
    }
    $("query").addEventListener("submit", show);
    $("query").addEventListener("input", updateSnippet);
    $("query").addEventListener("change", (e) => {
      if (e.target.name === "range") syncRange();
      if (e.target.id === "metric") describeMetric();
      if (e.target.id === "appliance") {
        switchAppliance();
        return;
      }
      updateSnippet();
    });
    for (const tab of document.querySelectorAll(".tabs [data-lang]")) {
      tab.addEventListener("click", () => {
        state.lang = tab.dataset.lang;
        for (const t of document.querySelectorAll(".tabs [data-lang]")) {
          t.setAttribute("aria-selected", String(t === tab));
        }
        updateSnippet();
      });
    }
    $("copy").addEventListener("click", copySnippet);
    window.addEventListener("resize", () => {
      if (state.plot) state.plot.setSize({ width: Math.max(320, $("chart").clientWidth - 8), height: 360 });
    });
    try {
      if (await loadCatalog(wanted.metric)) {
        updateSnippet();
        await show();
      }
    } catch (e) {
      showProblem({ title: "Cannot load the metric catalog", detail: String(e) });
    }
    window.explorer.ready = true;
  }

  start();
})();
