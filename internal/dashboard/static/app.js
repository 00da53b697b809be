// mqmesh dashboard: plain JS, no build step. Live snapshots arrive over
// server-sent events (/api/events); actions call the JSON API.
"use strict";
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
const history = []; // {t, ready, in, out}, one per snapshot, last 300
let last = null;

function fmtAge(ms) { return ms > 0 ? (ms / 1000).toFixed(1) + "s" : "-"; }
function fmtRate(r) { return (r || 0).toFixed(1); }

function render(s) {
  last = s;
  const nodes = s.Nodes || [];
  const idcs = [...new Set(nodes.map((n) => n.IDC))];
  $("#summary").textContent = `${nodes.length} nodes in ${idcs.length} IDCs, ${s.Workers} workers — ${new Date(s.Time).toLocaleTimeString()}`;
  const maxReady = Math.max(1, ...nodes.map((n) => n.Ready));
  $("#map").innerHTML = idcs.map((idc) => {
    const cards = nodes.filter((n) => n.IDC === idc).map((n) => {
      const leases = n.LeasesLocal + n.LeasesIDC + n.LeasesOther;
      const other = leases ? n.LeasesOther / leases : 0;
      const cls = n.Err ? "node down" : (n.Alert ? "node alert" : "node");
      const tint = `background:rgba(230,120,0,${(other * 0.35).toFixed(2)})`;
      return `<div class="${cls}" data-node="${esc(n.Name)}" data-idc="${esc(n.IDC)}" style="${n.Err ? "" : tint}">
        <div class="name">${esc(n.Name)} <span class="small">${esc(n.State)}</span></div>
        <div class="ready" title="ready">${n.Ready}</div>
        <div class="bar"><div style="width:${(100 * n.Ready / maxReady).toFixed(1)}%"></div></div>
        <div class="small">leased ${n.Leased} · in ${fmtRate(n.InRate)}/s · out ${fmtRate(n.OutRate)}/s</div>
        <div class="small">ran: local ${n.LeasesLocal} · idc ${n.LeasesIDC} · other ${n.LeasesOther}</div>
        ${n.Alert ? `<div class="alerttext">${esc(n.Alert)}</div>` : ""}</div>`;
    }).join("");
    return `<div class="idc" data-idc="${esc(idc)}"><h3>${esc(idc)}</h3><div class="nodes">${cards}</div></div>`;
  }).join("");

  const qrows = [], trows = [], drows = [];
  for (const n of nodes) {
    for (const q of n.Queues || []) {
      qrows.push(`<tr><td>${esc(n.IDC)}</td><td>${esc(n.Name)}</td><td>${esc(q.Name)}</td><td>${q.Ready}</td><td>${q.Leased}</td><td>${q.Delayed}</td><td>${q.Dead}</td><td>${fmtRate(q.InRate)}</td><td>${fmtRate(q.OutRate)}</td><td>${fmtAge(q.OldestReadyMs)}</td></tr>`);
      if (q.Dead > 0) {
        const key = `${n.IDC}/${n.Name}/${q.Name}`;
        drows.push(`<tr data-dlq="${esc(key)}"><td>${esc(n.IDC)}</td><td>${esc(n.Name)}</td><td>${esc(q.Name)}</td><td class="dead">${q.Dead}</td>
          <td><button data-browse="${esc(key)}">browse</button> <button data-requeue="${esc(key)}">requeue all</button> <button data-purge="${esc(key)}">purge all</button></td></tr>`);
      }
    }
    const backends = n.Backends || [];
    if ((n.Throttles || []).length || backends.length) {
      const rows = backends.length ? backends : [null];
      for (const b of rows) {
        trows.push(`<tr><td>${esc(n.IDC)}</td><td>${esc(n.Name)}</td><td>${esc((n.Throttles || []).join(", "))}</td>` +
          (b ? `<td>${esc(b.Name)}</td><td>${fmtRate(b.Budget)}</td><td>${fmtRate(b.MeshUsage)}</td><td>${fmtRate(b.Share)}</td>` : `<td></td><td></td><td></td><td></td>`) + `</tr>`);
      }
    }
  }
  $("#queues tbody").innerHTML = qrows.join("") || `<tr><td colspan="10">no queues</td></tr>`;
  $("#throttles tbody").innerHTML = trows.join("") || `<tr><td colspan="7">no throttle active, no budgets</td></tr>`;
  $("#dlq tbody").innerHTML = drows.join("") || `<tr><td colspan="5">no dead letters</td></tr>`;

  renderLatency(s);
  const sum = (f) => nodes.reduce((a, n) => a + (n[f] || 0), 0);
  history.push({ready: sum("Ready"), in: sum("InRate"), out: sum("OutRate")});
  if (history.length > 300) history.shift();
  drawChart();
}

// Latency: the nodes' cumulative histograms, diffed against the snapshot
// of ~10 s ago, summed per queue over the mesh; quantiles interpolated in
// the bucket as Prometheus's histogram_quantile does.
const latHistory = []; // [{t, byQueue: {q: {bounds, start[], done[]}}}]
function renderLatency(s) {
  const byQueue = {};
  for (const n of s.Nodes || []) for (const l of n.Latency || []) {
    const a = byQueue[l.Queue] ||= {bounds: l.Bounds, start: l.Bounds.map(() => 0).concat([0]), done: l.Bounds.map(() => 0).concat([0])};
    (l.ScheduleToStart || []).forEach((c, i) => a.start[i] += c);
    (l.EnqueueToDone || []).forEach((c, i) => a.done[i] += c);
  }
  const now = Date.parse(s.Time);
  latHistory.push({t: now, byQueue});
  while (latHistory.length > 1 && now - latHistory[1].t >= 10000) latHistory.shift();
  const old = latHistory.length > 1 ? latHistory[0].byQueue : {}; // first snapshot: since the nodes started
  const rows = Object.keys(byQueue).sort().map((q) => {
    const a = byQueue[q], o = old[q] || {start: [], done: []};
    const d = (cur, prev) => cur.map((c, i) => c - (prev[i] || 0));
    const st = d(a.start, o.start), dn = d(a.done, o.done);
    return `<tr data-queue="${esc(q)}"><td>${esc(q)}</td><td>${quant(a.bounds, st, 0.5)}</td><td>${quant(a.bounds, st, 0.99)}</td><td>${quant(a.bounds, dn, 0.5)}</td><td>${quant(a.bounds, dn, 0.99)}</td><td>${st[st.length - 1]}</td></tr>`;
  });
  $("#latency tbody").innerHTML = rows.join("") || `<tr><td colspan="6">no queues</td></tr>`;
}

function quant(bounds, cum, q) {
  const total = cum[cum.length - 1];
  if (!total) return "-";
  const rank = q * total;
  let prevB = 0, prevC = 0;
  for (let i = 0; i < bounds.length; i++) {
    if (cum[i] >= rank) {
      const inBucket = cum[i] - prevC;
      const v = prevB + (bounds[i] - prevB) * (inBucket ? (rank - prevC) / inBucket : 1);
      return fmtSec(v);
    }
    prevB = bounds[i]; prevC = cum[i];
  }
  return "> " + fmtSec(bounds[bounds.length - 1]);
}
function fmtSec(s) { return s < 1 ? (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms" : s.toFixed(2) + " s"; }

function drawChart() {
  const c = $("#chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const line = (key, color, max) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    history.forEach((h, i) => {
      const x = c.width * i / 299, y = c.height - 4 - (c.height - 8) * h[key] / max;
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  };
  const maxR = Math.max(1, ...history.map((h) => h.ready));
  const maxRate = Math.max(1, ...history.map((h) => Math.max(h.in, h.out)));
  line("ready", "#47c", maxR); line("in", "#e90", maxRate); line("out", "#3a3", maxRate);
  g.fillStyle = "#667"; g.font = "11px sans-serif";
  g.fillText(`ready max ${maxR}`, 6, 12); g.fillText(`rate max ${maxRate.toFixed(1)}/s`, 6, 26);
}

async function api(path, body) {
  const opt = body ? {method: "POST", headers: {"Content-Type": "application/json", "X-Mqmesh": "1"}, body: JSON.stringify(body)} : {};
  const r = await fetch(path, opt);
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}

function target(key) { const [idc, node, queue] = key.split("/"); return {idc, node, queue}; }

$("#dlq").addEventListener("click", async (e) => {
  const b = e.target.closest("button"); if (!b) return;
  const out = $("#dlq-list");
  try {
    if (b.dataset.browse) {
      const t = target(b.dataset.browse);
      const j = await api(`/api/dlq?idc=${encodeURIComponent(t.idc)}&node=${encodeURIComponent(t.node)}&queue=${encodeURIComponent(t.queue)}`);
      out.innerHTML = `<table><thead><tr><th>dead id</th><th>task</th><th>reason</th><th>attempt</th><th>payload</th></tr></thead><tbody>` +
        j.tasks.map((d) => `<tr><td>${esc(d.dead_id)}</td><td>${esc(d.task_id)}</td><td>${esc(d.reason)}</td><td>${d.attempt}</td><td>${esc(d.payload)}</td></tr>`).join("") + `</tbody></table>`;
    } else if (b.dataset.purge || b.dataset.requeue) {
      const key = b.dataset.purge || b.dataset.requeue;
      const j = await api(b.dataset.purge ? "/api/dlq/purge" : "/api/dlq/requeue", target(key));
      out.innerHTML = `<p id="dlq-result">${b.dataset.purge ? "purged" : "requeued"} ${j.affected} from ${esc(key)}</p>`;
    }
  } catch (err) { out.innerHTML = `<p class="err">${esc(err.message)}</p>`; }
});

$("#trace-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const id = $("#trace-id").value.trim(), out = $("#trace-out");
  if (!id) return;
  try {
    const j = await api(`/api/trace?id=${encodeURIComponent(id)}`);
    const t0 = (j.events[0] || {}).time_unix_ms || 0;
    out.innerHTML = `<p>on ${esc(j.idc)}/${esc(j.node)}</p><table id="trace-table"><thead><tr><th>+ms</th><th>kind</th><th>attempt</th><th>worker</th><th>where</th><th>error / detail</th></tr></thead><tbody>` +
      j.events.map((ev) => `<tr><td>${(ev.time_unix_ms || 0) - t0}</td><td>${esc(ev.kind)}</td><td>${ev.attempt || ""}</td><td>${esc(ev.worker || ev.producer || "")}</td><td>${esc([ev.host, ev.worker_idc, ev.tier].filter(Boolean).join(" "))}</td><td>${esc(ev.error || ev.child || "")}</td></tr>`).join("") + `</tbody></table>`;
  } catch (err) { out.innerHTML = `<p class="err">${esc(err.message)}</p>`; }
});

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("snapshot", (e) => { $("#status").className = "status live"; render(JSON.parse(e.data)); });
  es.addEventListener("error", () => { $("#status").className = "status err"; });
}
connect();
