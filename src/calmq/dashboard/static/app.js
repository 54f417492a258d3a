// calmq dashboard: a small hash-routed page over the JSON API (docs/dashboard.md).
// No framework and nothing fetched from elsewhere. Data only ever reaches the page as
// text nodes and attributes (never innerHTML), charts are inline SVG built here.
"use strict";

(function () {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const CSRF = meta("calmq-csrf");
  const READ_ONLY = meta("calmq-read-only") === "true";
  const HAS_LOGOUT = meta("calmq-logout") === "true";
  const REFRESH_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const STATES = ["ready", "scheduled", "running", "dead"];

  // --- DOM helpers ------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  // Replace an element's children (nested arrays and null allowed, like h()).
  function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const fmtNum = (n) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString() : n.toFixed(1));
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return `${fmtNum(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${(ms / 60000).toFixed(1)} min`;
  }
  function fmtTime(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  function fmtAgo(ms) {
    if (ms < 1500) return "just now";
    if (ms < 90000) return `${Math.round(ms / 1000)} s ago`;
    if (ms < 5400000) return `${Math.round(ms / 60000)} min ago`;
    return `${(ms / 3600000).toFixed(1)} h ago`;
  }
  function fmtDuration(ms) {
    if (ms < 90000) return `${Math.max(0, Math.round(ms / 1000))} s`;
    if (ms < 5400000) return `${Math.round(ms / 60000)} min`;
    if (ms < 172800000) return `${(ms / 3600000).toFixed(1)} h`;
    return `${(ms / 86400000).toFixed(1)} days`;
  }
  const link = (route, params, text) => h("a", { href: hrefFor(route, params) }, text);
  function hrefFor(route, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) query.set(k, v);
    const qs = query.toString();
    return `#/${route}${qs ? "?" + qs : ""}`;
  }
  function toast(text, bad) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.className = bad ? "show bad" : "show";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.className = ""; }, 4000);
  }

  // --- API ----------------------------------------------------------------------------
  async function handle(response) {
    if (response.status === 401 && HAS_LOGOUT) {
      window.location.href = "login";
      throw new Error("logged out");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
    return data;
  }
  async function get(path, params) {
    const qs = new URLSearchParams(params || {}).toString();
    return handle(await fetch(`api/${path}${qs ? "?" + qs : ""}`, { credentials: "same-origin", cache: "no-store" }));
  }
  async function post(path, body) {
    const response = await fetch(`api/${path}`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify(body || {}),
    });
    return handle(response);
  }
  async function act(label, path, body, after) {
    try {
      const result = await post(path, body);
      toast(`${label}: ${describe(result)}`);
      if (after) await after(result);
    } catch (err) {
      toast(`${label} failed: ${err.message}`, true);
    }
  }
  function describe(result) {
    if ("replayed" in result) return `${result.replayed} job(s) replayed`;
    if ("purged" in result) return `${result.purged} job(s) deleted`;
    if ("outcome" in result) return result.outcome.replace("_", " ");
    if ("paused" in result) return result.paused ? "paused" : "running";
    return "done";
  }

  // --- charts -------------------------------------------------------------------------
  function sparkline(values, cls, title) {
    const w = 120, hgt = 28;
    const svg = s("svg", { class: `spark ${cls}`, width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img" });
    svg.append(s("title", {}, title));
    if (values.length < 2) {
      svg.append(s("line", { x1: 0, y1: hgt - 2, x2: w, y2: hgt - 2, class: "empty" }));
      return svg;
    }
    const max = Math.max(...values, 1e-9);
    const step = w / (values.length - 1);
    const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 4)).toFixed(1)}`);
    svg.append(s("polyline", { points: pts.join(" ") }));
    return svg;
  }

  function lineChart(title, series, unit) {
    const W = 420, H = 170, L = 52, R = 10, T = 12, B = 24;
    const all = series.flatMap((x) => x.points);
    const box = h("figure", { class: "chart" }, h("figcaption", {}, title));
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    box.append(svg);
    if (all.length < 2) {
      svg.append(s("text", { x: W / 2, y: H / 2, class: "nodata", "text-anchor": "middle" },
        "collecting samples…"));
      return box;
    }
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
    const maxV = Math.max(...all.map((p) => p[1]), 0) || 1;
    const x = (t) => L + ((t - t0) / Math.max(t1 - t0, 1)) * (W - L - R);
    const y = (v) => T + (1 - v / maxV) * (H - T - B);
    for (const frac of [0, 0.5, 1]) {
      const yy = y(maxV * frac);
      svg.append(s("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "grid" }));
      svg.append(s("text", { x: L - 6, y: yy + 4, "text-anchor": "end", class: "axis" }, unit(maxV * frac)));
    }
    const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    svg.append(s("text", { x: L, y: H - 6, class: "axis" }, clock(t0)));
    svg.append(s("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" }, clock(t1)));
    for (const line of series) {
      if (line.points.length < 1) continue;
      const pts = line.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      svg.append(s("polyline", { points: pts, class: `series ${line.cls}` }));
    }
    box.append(h("div", { class: "legend" },
      series.map((line) => h("span", { class: `key ${line.cls}` }, line.name))));
    return box;
  }

  // --- views ------------------------------------------------------------------------
  // Each view: mount(el, params) builds the parts that hold user input once; refresh()
  // redraws the data (called every REFRESH_MS while the view is shown).
  const views = {};

  views.queues = {
    mount(el) {
      this.el = el;
      el.append(h("h1", {}, "Queues"));
      this.cards = h("div", { class: "cards" });
      this.table = h("div", { class: "table-wrap" });
      this.charts = h("div", { class: "charts" });
      el.append(this.cards, this.table, this.charts);
    },
    async refresh() {
      const [ov, metrics] = await Promise.all([get("overview"), get("metrics")]);
      const samples = metrics.samples;
      const last = samples[samples.length - 1];
      const rate = last ? last.rates.succeeded + last.rates.retried + last.rates.dead : 0;
      const lat = (last && last.latency) || {};
      fill(this.cards,
        card("Queues", ov.queues.length),
        card("Workers", ov.workers_alive),
        card("Throughput", `${fmtNum(rate)} jobs/s`),
        card("Wait p50 / p99", `${fmtMs(lat.wait_p50_ms)} / ${fmtMs(lat.wait_p99_ms)}`),
        card("Run p50 / p99", `${fmtMs(lat.run_p50_ms)} / ${fmtMs(lat.run_p99_ms)}`));
      fill(this.table, queueTable(ov.queues, samples));
      const series = (key, cls, name, pick) => ({
        name, cls, points: samples.filter((x) => pick(x) !== undefined).map((x) => [x.t_ms, pick(x)]),
      });
      fill(this.charts,
        lineChart("Throughput (jobs/s, all workers)", [
          series("s", "s1", "succeeded", (x) => x.rates.succeeded),
          series("r", "s2", "retried", (x) => x.rates.retried),
          series("d", "s3", "dead", (x) => x.rates.dead)], (v) => fmtNum(v)),
        lineChart("Wait time (ready → claimed)", [
          series("p50", "s1", "p50", (x) => x.latency.wait_p50_ms),
          series("p99", "s3", "p99", (x) => x.latency.wait_p99_ms)], fmtMs),
        lineChart("Run time", [
          series("p50", "s1", "p50", (x) => x.latency.run_p50_ms),
          series("p99", "s3", "p99", (x) => x.latency.run_p99_ms)], fmtMs));
      document.getElementById("store").textContent = ov.store;
    },
  };

  function card(label, value) {
    return h("div", { class: "card" }, h("div", { class: "card-label" }, label), h("div", { class: "card-value" }, value));
  }

  function queueTable(queues, samples) {
    if (!queues.length) return h("p", { class: "muted" }, "No queues yet: enqueue a job and it shows up here.");
    const head = h("tr", {}, h("th", {}, "Queue"), STATES.map((st) => h("th", { class: "num" }, st)),
      h("th", {}, "Depth"),
      h("th", { title: "jobs/s finished by the workers serving this queue (a worker serving several queues counts for each)" }, "Workers' throughput"), h("th", {}, "Status"), READ_ONLY ? null : h("th", {}, ""));
    const rows = queues.map((q) => {
      const history = samples.map((x) => x.queues[q.queue]).filter(Boolean);
      const depth = history.map((x) => x.ready + x.scheduled + x.running);
      const through = history.map((x) => x.throughput);
      const nowRate = through.length ? through[through.length - 1] : 0;
      const status = q.paused ? h("span", { class: "badge warn" }, "paused") : h("span", { class: "badge ok" }, "active");
      const bound = q.max_ready ? h("span", { class: "muted small" }, ` max ${q.max_ready} (${q.overflow})`) : null;
      const toggle = READ_ONLY ? null : h("td", {}, h("button", {
        type: "button", class: "small", "data-action": q.paused ? "resume" : "pause",
        onclick: () => act(q.paused ? "Resume" : "Pause", q.paused ? "queues/resume" : "queues/pause",
          { queue: q.queue }, () => route.refresh()),
      }, q.paused ? "Resume" : "Pause"));
      return h("tr", { "data-queue": q.queue },
        h("td", {}, link("jobs", { queue: q.queue }, q.queue)),
        STATES.map((st) => h("td", { class: "num", "data-state": st },
          st === "dead" && q.dead ? link("dead", { queue: q.queue }, q.dead) :
            st === "dead" ? q.dead : link("jobs", { queue: q.queue, state: st }, q[st]))),
        h("td", {}, sparkline(depth, "depth", "ready + scheduled + running")),
        h("td", {}, sparkline(through, "rate", "jobs/s by the workers serving this queue"),
          h("span", { class: "small muted" }, ` ${fmtNum(nowRate)}/s`)),
        h("td", {}, status, bound), toggle);
    });
    return h("table", { class: "grid", id: "queues" }, h("thead", {}, head), h("tbody", {}, rows));
  }

  function jobRows(jobs, opts) {
    return jobs.map((j) => h("tr", { "data-job": j.id },
      opts.select ? h("td", {}, h("input", {
        type: "checkbox", "aria-label": `select ${j.id}`, checked: opts.select.has(key(j)),
        onchange: (e) => { if (e.target.checked) opts.select.add(key(j)); else opts.select.delete(key(j)); },
      })) : null,
      h("td", { class: "mono" }, link("job", { queue: j.queue, id: j.id }, j.id)),
      opts.queue ? h("td", {}, j.queue) : null,
      h("td", {}, j.task),
      opts.finished ? null : h("td", {}, h("span", { class: `state ${j.state}` }, j.state)),
      h("td", { class: "num" }, `${j.attempt}/${j.max_attempts}`),
      h("td", {}, fmtTime(opts.finished ? j.finished_at_ms : j.run_at_ms || j.enqueued_at_ms)),
      h("td", { class: "error-cell" }, j.error || ""),
      opts.actions ? h("td", { class: "actions" }, opts.actions(j)) : null));
  }
  const key = (j) => `${j.queue}\u0000${j.id}`;

  views.jobs = {
    mount(el, params) {
      this.params = { queue: params.queue || "", state: params.state || "ready", task: params.task || "", offset: Number(params.offset || 0) };
      el.append(h("h1", {}, "Jobs"));
      this.queueSelect = h("select", { name: "queue", "aria-label": "queue" });
      this.stateSelect = h("select", { name: "state", "aria-label": "state" },
        STATES.map((st) => h("option", { value: st, selected: st === this.params.state }, st)));
      this.taskInput = h("input", { name: "task", placeholder: "task name contains…", value: this.params.task });
      const browse = h("form", { class: "filters", onsubmit: (e) => {
        e.preventDefault();
        location.hash = hrefFor("jobs", { queue: this.queueSelect.value, state: this.stateSelect.value, task: this.taskInput.value.trim() });
      } }, this.queueSelect, this.stateSelect, this.taskInput, h("button", { type: "submit" }, "Show"));
      this.idInput = h("input", { name: "id", placeholder: "job id", class: "mono", "aria-label": "job id" });
      const search = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); this.search(); } },
        this.idInput, h("button", { type: "submit" }, "Find by id"));
      this.found = h("div", {});
      this.list = h("div", { class: "table-wrap" });
      this.pager = h("div", { class: "pager" });
      el.append(h("div", { class: "toolbar" }, browse, search), this.found, this.list, this.pager);
    },
    async search() {
      const id = this.idInput.value.trim();
      if (!id) return;
      const data = await get("search", { id }).catch((err) => { toast(err.message, true); return null; });
      if (!data) return;
      if (data.jobs.length === 1) { location.hash = hrefFor("job", { queue: data.jobs[0].queue, id }); return; }
      fill(this.found, data.jobs.length
        ? h("table", { class: "grid" }, h("tbody", {}, jobRows(data.jobs, { queue: true })))
        : h("p", { class: "muted" }, `No job with id ${id}.`));
    },
    async refresh() {
      const ov = await get("overview");
      const queue = this.params.queue || (ov.queues[0] && ov.queues[0].queue) || "";
      if (this.queueSelect.options.length !== ov.queues.length) {
        fill(this.queueSelect, ...ov.queues.map((q) => h("option", { value: q.queue, selected: q.queue === queue }, q.queue)));
      }
      if (!queue) { fill(this.list, h("p", { class: "muted" }, "No queues yet.")); return; }
      const p = this.params;
      const data = await get("jobs", { queue, state: p.state, task: p.task, offset: p.offset, limit: 50 });
      const cancellable = (j) => !READ_ONLY && ["ready", "scheduled", "running"].includes(j.state);
      const body = jobRows(data.jobs, {
        actions: (j) => cancellable(j) ? h("button", { type: "button", class: "small danger",
          onclick: () => act("Cancel", "jobs/cancel", { queue: j.queue, id: j.id }, () => route.refresh()) }, "Cancel") : null,
      });
      fill(this.list, data.jobs.length ? h("table", { class: "grid", id: "jobs" },
        h("thead", {}, h("tr", {}, ["Id", "Task", "State", "Attempt", p.state === "scheduled" ? "Runs at" : "Enqueued / due", "Error", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, body)) : h("p", { class: "muted" }, `No ${p.state} jobs in ${queue}${p.task ? ` for tasks matching “${p.task}”` : ""}.`));
      const nav = [];
      if (p.offset > 0) nav.push(link("jobs", { ...p, queue, offset: Math.max(0, p.offset - 50) }, "← Newer / earlier"));
      if (data.next_offset !== null) nav.push(link("jobs", { ...p, queue, offset: data.next_offset }, "Next →"));
      fill(this.pager, ...nav);
    },
  };

  views.job = {
    mount(el, params) {
      this.params = params;
      this.el = el;
      this.body = h("div", {});
      el.append(h("p", {}, link("jobs", { queue: params.queue }, `← jobs of ${params.queue || "?"}`)), this.body);
    },
    async refresh() {
      const j = await get("job", { queue: this.params.queue, id: this.params.id });
      const rows = [
        ["Id", j.id], ["Queue", j.queue], ["Task", j.task],
        ["State", h("span", { class: `state ${j.state}` }, j.state)],
        ["Attempts", `${j.attempt} of ${j.max_attempts}`], ["Priority", j.priority],
        ["Enqueued", fmtTime(j.enqueued_at_ms)], ["Run at", fmtTime(j.run_at_ms)],
        ["Finished", fmtTime(j.finished_at_ms)], ["Payload", `${j.payload_bytes} bytes`],
      ];
      const actions = [];
      if (!READ_ONLY && ["ready", "scheduled", "running"].includes(j.state)) {
        actions.push(h("button", { type: "button", class: "danger", onclick: () => act("Cancel", "jobs/cancel", { queue: j.queue, id: j.id }, () => route.refresh()) }, "Cancel job"));
      }
      if (!READ_ONLY && j.state === "dead") {
        actions.push(h("button", { type: "button", onclick: () => act("Replay", "dead/replay", { queue: j.queue, ids: [j.id] }, () => route.refresh()) }, "Replay"));
        actions.push(h("button", { type: "button", class: "danger", onclick: () => {
          if (confirm(`Delete dead job ${j.id} for good?`)) act("Delete", "dead/purge", { queue: j.queue, ids: [j.id] }, () => { location.hash = hrefFor("dead", {}); });
        } }, "Delete"));
      }
      const args = j.arguments
        ? [h("h2", {}, "Arguments"), h("pre", { class: "code" }, JSON.stringify(j.arguments, null, 2))]
        : [h("h2", {}, "Payload (raw)"), j.decode_error ? h("p", { class: "error-text" }, j.decode_error) : null,
          h("pre", { class: "code" }, j.raw_payload)];
      fill(this.body,
        h("h1", { class: "mono" }, j.task, h("span", { class: "muted small" }, ` ${j.id}`)),
        actions.length ? h("div", { class: "toolbar" }, actions) : null,
        h("table", { class: "kv" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))),
        ...args,
        j.error ? [h("h2", {}, "Error"), h("pre", { class: "code error" }, j.error)] : [],
        j.traceback ? [h("h2", {}, "Traceback"), h("pre", { class: "code" }, j.traceback)] : []);
    },
  };

  views.dead = {
    mount(el, params) {
      this.params = params;
      this.selected = new Set();
      el.append(h("h1", {}, "Dead letters"));
      this.summary = h("p", { class: "muted" });
      const bulk = (label, path, all) => h("button", {
        type: "button", class: path === "dead/purge" ? "danger" : "", "data-bulk": `${path}${all ? "-all" : ""}`,
        onclick: () => this.bulk(label, path, all),
      }, label);
      this.toolbar = READ_ONLY ? null : h("div", { class: "toolbar" },
        bulk("Replay selected", "dead/replay", false), bulk("Delete selected", "dead/purge", false),
        h("span", { class: "spacer" }),
        bulk("Replay all", "dead/replay", true), bulk("Delete all", "dead/purge", true));
      this.list = h("div", { class: "table-wrap" });
      el.append(this.summary, this.toolbar, this.list);
    },
    async bulk(label, path, all) {
      const queue = this.params.queue || null;
      if (all) {
        const where = queue ? `queue ${queue}` : "every queue";
        if (!confirm(`${label}: every dead job in ${where}?`)) return;
        await act(label, path, { queue, all: true }, () => route.refresh());
        this.selected.clear();
        return;
      }
      if (!this.selected.size) { toast("Select jobs first", true); return; }
      const byQueue = {};
      for (const k of this.selected) {
        const [q, id] = k.split("\u0000");
        (byQueue[q] = byQueue[q] || []).push(id);
      }
      if (path === "dead/purge" && !confirm(`Delete ${this.selected.size} dead job(s) for good?`)) return;
      for (const [q, ids] of Object.entries(byQueue)) await act(label, path, { queue: q, ids });
      this.selected.clear();
      await route.refresh();
    },
    async refresh() {
      const params = { limit: 200 };
      if (this.params.queue) params.queue = this.params.queue;
      const data = await get("dead", params);
      const shown = new Set(data.jobs.map(key));
      for (const k of [...this.selected]) if (!shown.has(k)) this.selected.delete(k);
      fill(this.summary, `${data.total} dead job(s)${data.queue ? ` in ${data.queue}` : " in all queues"}`,
        data.total > data.jobs.length ? `, newest ${data.jobs.length} shown` : "",
        data.queue ? [" · ", link("dead", {}, "all queues")] : "");
      if (!data.jobs.length) { fill(this.list, h("p", { class: "muted" }, "No dead jobs.")); return; }
      const all = h("input", { type: "checkbox", "aria-label": "select all",
        checked: data.jobs.every((j) => this.selected.has(key(j))), onchange: (e) => {
        for (const j of data.jobs) { if (e.target.checked) this.selected.add(key(j)); else this.selected.delete(key(j)); }
        route.refresh();
      } });
      const actions = READ_ONLY ? null : (j) => [
        h("button", { type: "button", class: "small", "data-action": "replay", onclick: () => act("Replay", "dead/replay", { queue: j.queue, ids: [j.id] }, () => route.refresh()) }, "Replay"),
        h("button", { type: "button", class: "small danger", "data-action": "delete", onclick: () => {
          if (confirm(`Delete dead job ${j.id} for good?`)) act("Delete", "dead/purge", { queue: j.queue, ids: [j.id] }, () => route.refresh());
        } }, "Delete")];
      fill(this.list, h("table", { class: "grid", id: "dead" },
        h("thead", {}, h("tr", {}, READ_ONLY ? null : h("th", {}, all), ["Id", "Queue", "Task", "Attempts", "Died", "Error"].map((t) => h("th", {}, t)), READ_ONLY ? null : h("th", {}, ""))),
        h("tbody", {}, jobRows(data.jobs, { queue: true, finished: true, select: READ_ONLY ? null : this.selected, actions }))));
    },
  };

  views.workers = {
    mount(el) {
      el.append(h("h1", {}, "Workers"));
      this.list = h("div", { class: "table-wrap" });
      el.append(this.list);
    },
    async refresh() {
      const data = await get("workers");
      if (!data.workers.length) { fill(this.list, h("p", { class: "muted" }, "No live workers (none has sent a heartbeat lately).")); return; }
      const head = ["Worker", "Host", "PID", "Queues", "Concurrency", "Running", "Last seen", "Up for", "Done (ok / retried / dead)", "Wait p50 / p99", "Run p50 / p99", "Versions"];
      const rows = data.workers.map((w) => {
        const st = w.stats || {};
        const versions = Object.entries(w.versions).map(([k, v]) => `${k} ${v}`).join(", ");
        return h("tr", { "data-worker": w.id },
          h("td", { class: "mono" }, w.id), h("td", {}, w.host), h("td", { class: "num" }, w.pid),
          h("td", {}, w.queues.join(", ")), h("td", { class: "num" }, `${w.concurrency} (${w.pool})`),
          h("td", { class: "num", title: w.running.join("\n") }, w.running.length),
          h("td", {}, fmtAgo(data.now_ms - w.seen_at_ms)),
          h("td", { title: `since ${fmtTime(w.started_at_ms)}` }, w.started_at_ms ? fmtDuration(data.now_ms - w.started_at_ms) : "–"),
          h("td", { class: "num" }, `${fmtNum(st.succeeded || 0)} / ${fmtNum(st.retried || 0)} / ${fmtNum(st.dead || 0)}`),
          h("td", { class: "num" }, `${fmtMs(st.wait_p50_ms)} / ${fmtMs(st.wait_p99_ms)}`),
          h("td", { class: "num" }, `${fmtMs(st.run_p50_ms)} / ${fmtMs(st.run_p99_ms)}`),
          h("td", { class: "small wrap" }, versions));
      });
      fill(this.list, h("table", { class: "grid", id: "workers" },
        h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))), h("tbody", {}, rows)));
    },
  };

  // --- router -----------------------------------------------------------------------
  const route = {
    current: null,
    generation: 0,
    name: null,
    busy: null,
    go() {
      const [path, qs] = (location.hash.replace(/^#\/?/, "") || "queues").split("?");
      const name = views[path] ? path : "queues";
      const params = Object.fromEntries(new URLSearchParams(qs || ""));
      const el = document.getElementById("view");
      fill(el);
      this.generation += 1;
      this.name = name;
      this.current = Object.create(views[name]);
      this.current.mount(el, params);
      for (const a of document.querySelectorAll("nav a")) {
        const active = a.dataset.view === name || (name === "job" && a.dataset.view === "jobs");
        a.classList.toggle("active", active);
      }
      this.refresh();
    },
    async refresh() {
      const view = this.current, generation = this.generation;
      if (this.busy === generation) return; // the previous refresh of this view still runs
      this.busy = generation;
      try {
        await view.refresh();
        document.body.classList.remove("offline");
      } catch (err) {
        if (generation === this.generation) {
          document.body.classList.add("offline");
          toast(err.message, true);
        }
      } finally {
        if (this.busy === generation) this.busy = null;
      }
    },
  };

  if (READ_ONLY) document.getElementById("mode").hidden = false;
  const logout = document.getElementById("logout");
  if (HAS_LOGOUT) {
    logout.hidden = false;
    logout.addEventListener("click", async () => {
      await fetch("logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } }).catch(() => null);
      window.location.href = "login";
    });
  }
  window.addEventListener("hashchange", () => route.go());
  // A job's detail does not change under the reader's eyes; the lists do.
  setInterval(() => { if (!document.hidden && route.name !== "job") route.refresh(); }, REFRESH_MS);
  route.go();
})();
