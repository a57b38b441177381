// The service's page: polls the JSON API once a second and redraws the tables.
// Everything from the API is inserted as text (textContent), never as HTML.
"use strict";

function cell(row, text, className) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text); else td.textContent = text ?? "";
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function humanBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function cacheLink(name) {
  const a = document.createElement("a");
  a.href = `/cache?name=${encodeURIComponent(name)}`;
  a.textContent = name;
  return a;
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function jobRow(job, root) {
  const tr = document.createElement("tr");
  tr.id = `job-${job.id}`;
  tr.dataset.state = job.state;
  cell(tr, job.id);
  cell(tr, job.state, `state state-${job.state}`);
  const name = job.cache.startsWith(root) ? job.cache.slice(root.length).replace(/^\/+/, "") : job.cache;
  cell(tr, cacheLink(name));
  const p = job.progress || {};
  if (job.state === "running" && p.inputs_total) {
    const bar = document.createElement("progress");
    bar.max = p.inputs_total; bar.value = p.inputs_done;
    const box = document.createElement("span");
    box.append(bar, ` ${p.inputs_done}/${p.inputs_total} inputs, ${p.shards_done}/${p.shards_total} shards`);
    cell(tr, box);
  } else {
    cell(tr, job.state === "running" ? "starting…" : "");
  }
  cell(tr, job.eta_s == null ? "" : `${Math.round(job.eta_s)} s`);
  if (job.state === "failed") {
    cell(tr, job.error, "error");
  } else if (job.report) {
    const r = job.report;
    const why = Object.entries(r.rejected_by_reason || {}).map(([k, v]) => `${k}: ${v}`).join("; ");
    cell(tr, `inputs ${r.inputs} = baked ${r.baked} + rejected ${r.rejected}` +
      (r.up_to_date ? " (already up to date)" : "") + (why ? ` — ${why}` : ""));
  } else {
    cell(tr, job.watch ? `watching every ${job.watch.interval_s} s` : "");
  }
  return tr;
}

async function datakilnJobsPage() {
  const health = document.getElementById("health");
  let root = "";
  const shown = { jobs: null, caches: null };
  async function refresh() {
    try {
      const [status, jobs, caches] = await Promise.all([
        getJSON("/health"), getJSON("/jobs"), getJSON("/caches")]);
      root = status.root || root;
      health.textContent = `service up; jobs: ` +
        Object.entries(status.jobs).map(([k, v]) => `${v} ${k}`).join(", ");
      // Redraw a table only when its data changed, so rows stay put while nothing happens.
      const jobsText = JSON.stringify(jobs), cachesText = JSON.stringify(caches);
      if (jobsText !== shown.jobs) {
        shown.jobs = jobsText;
        const jobBody = document.querySelector("#jobs tbody");
        jobBody.replaceChildren(...jobs.slice().reverse().map((j) => jobRow(j, root)));
      }
      if (cachesText === shown.caches) return;
      shown.caches = cachesText;
      const cacheBody = document.querySelector("#caches tbody");
      cacheBody.replaceChildren(...caches.map((c) => {
        const tr = document.createElement("tr");
        tr.dataset.name = c.name;
        cell(tr, cacheLink(c.name));
        cell(tr, c.modality); cell(tr, c.rows); cell(tr, c.version);
        cell(tr, humanBytes(c.size_bytes)); cell(tr, c.created);
        return tr;
      }));
    } catch (err) {
      health.textContent = `cannot reach the service: ${err.message}`;
    }
  }
  await refresh();
  setInterval(refresh, 1000);
}

async function datakilnCachePage() {
  const name = new URLSearchParams(location.search).get("name") || "";
  const path = name.split("/").map(encodeURIComponent).join("/");
  document.getElementById("title").textContent = name;
  try {
    const info = await getJSON(`/caches/${path}`);
    const c = info.counts;
    document.getElementById("summary").textContent =
      `${info.modality} cache, version ${info.version}, created ${info.created}: ` +
      `inputs ${c.inputs} = baked ${c.baked} + rejected ${c.rejected}; key ${info.cache_key.slice(0, 16)}…`;
    document.getElementById("summary").className = "";
    document.querySelector("#fields tbody").replaceChildren(...Object.entries(info.fields).map(([k, f]) => {
      const tr = document.createElement("tr");
      cell(tr, k); cell(tr, f.dtype); cell(tr, JSON.stringify(f.shape));
      cell(tr, humanBytes(f.on_disk_bytes)); cell(tr, humanBytes(f.in_memory_bytes));
      return tr;
    }));
    const classes = Object.entries(info.classes || {});
    if (classes.length) {
      const el = document.getElementById("classes");
      el.className = "";
      el.textContent = classes.map(([k, v]) => `${k} (${v})`).join(", ");
    }
    document.querySelector("#rejected tbody").replaceChildren(
      ...Object.entries(info.rejected || {}).map(([reason, r]) => {
        const tr = document.createElement("tr");
        tr.className = "rejected-reason";
        cell(tr, reason); cell(tr, r.count); cell(tr, (r.examples || []).join(", "));
        return tr;
      }));
    const img = document.getElementById("preview");
    img.src = `/caches/${path}/preview.png`;
  } catch (err) {
    document.getElementById("summary").textContent = `cannot load ${name}: ${err.message}`;
  }
}
