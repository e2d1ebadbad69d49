"use strict";
// creditgym trajectory viewer. Every text from the data is set with textContent (never
// innerHTML), so observations, actions and model output render as text.
(function () {
  const t0 = performance.now();
  const SVGNS = "http://www.w3.org/2000/svg";
  const EPS = 1e-9;
  let D;

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "text") e.textContent = String(v);
        else if (k === "cls") e.className = v;
        else if (k === "title") e.title = String(v);
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, String(v));
      }
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function sv(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  const str = (i) => (i === null || i === undefined || i < 0 ? "" : D.strings[i]);
  const sgn = (v) => (v === null || v === undefined ? null : v > EPS ? 1 : v < -EPS ? -1 : 0);
  const fmt = (v, d = 2) => (v === null || v === undefined ? "–" : (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(d));

  // ------------------------------------------------------------------ colour scale
  const NEG = [[247, 247, 247], [244, 165, 130], [178, 24, 43]];
  const POS = [[247, 247, 247], [146, 197, 222], [33, 102, 172]];
  function mix(a, b, f) { return a.map((x, i) => Math.round(x + (b[i] - x) * f)); }
  function colour(v, limit) {
    if (v === null || v === undefined || !(limit > 0)) return null;
    const t = Math.max(-1, Math.min(1, v / limit));
    const ramp = t < 0 ? NEG : POS;
    const a = Math.abs(t);
    const c = a < 0.5 ? mix(ramp[0], ramp[1], a * 2) : mix(ramp[1], ramp[2], (a - 0.5) * 2);
    return { bg: `rgb(${c[0]},${c[1]},${c[2]})`, fg: a > 0.62 ? "#fff" : "#1d2530" };
  }
  function paint(cell, v, limit) {
    const c = colour(v, limit);
    if (c) { cell.style.background = c.bg; cell.style.color = c.fg; }
  }
  function wonColour(f) {
    const c = mix([176, 58, 46], [30, 132, 73], f);
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  // ------------------------------------------------------------------ state
  const state = {
    group: 0, on: new Set(), diffA: "", diffB: "", disagree: false,
    node: null, sortKey: null, sortDir: 1, step: null, traj: null, tokMethod: null,
  };
  let columns = [];        // advantage columns: {key, label, values, spans, limit, isRef}
  let view = { x: 0, y: 0, w: 1, h: 1 };

  function steps() { return D.steps; }
  function groupRows(g) {
    const grp = D.groups[g];
    const out = [];
    for (let i = grp.start; i < grp.end; i++) out.push(i);
    return out;
  }

  // ------------------------------------------------------------------ header, controls
  function renderMeta() {
    const m = D.meta;
    const box = document.getElementById("meta");
    const kv = (k, v) => box.append(el("span", { cls: "kv" }, k + " ", el("b", { text: v })));
    kv("source", m.source);
    kv("kind", m.kind_label);
    kv("iteration", String(m.iteration));
    kv("env", m.env_id);
    if (m.trained) kv("trained", m.trained);
    if (m.scale_note) kv("scale", m.scale_note);
    if (m.policy_versions) kv("policy versions", m.policy_versions);
    if (m.check) box.append(el("span", { cls: "kv " + (m.check.ok ? "check-ok" : "check-bad"), text: m.check.text }));
  }

  function renderControls() {
    const sel = document.getElementById("group");
    D.groups.forEach((g, i) => {
      const won = g.trajectories.filter((t) => t.won).length;
      sel.append(el("option", { value: i, text: `${g.index}: ${g.task_id} · ${g.trajectories.length} traj · ${won} won · ${g.end - g.start} steps` }));
    });
    sel.value = String(state.group);
    sel.addEventListener("change", () => { state.group = +sel.value; state.node = null; state.step = null; state.traj = null; renderGroup(); });

    const box = document.getElementById("methods");
    const unavailable = [];
    for (const c of allColumns()) {
      const input = el("input", { type: "checkbox", "data-method": c.key });
      input.checked = state.on.has(c.key);
      input.addEventListener("change", () => {
        if (input.checked) state.on.add(c.key); else state.on.delete(c.key);
        label.classList.toggle("off", !input.checked);
        renderTable();
        renderDetail();
      });
      const label = el("label", { cls: (c.trained ? "trained " : "") + (state.on.has(c.key) ? "" : "off"), title: c.note || c.label }, input, c.label);
      box.append(label);
    }
    for (const m of D.methods) {
      if (m.available) continue;
      box.append(el("label", { cls: "unavailable", title: m.reason, "data-unavailable": m.name }, m.name));
      unavailable.push(m);
    }
    const ua = document.getElementById("unavailable");
    for (const m of unavailable) ua.append(el("span", { cls: "ua", text: `${m.name} unavailable: ${m.reason}` }));

    const a = document.getElementById("diff-a"), b = document.getElementById("diff-b");
    a.append(el("option", { value: "", text: "(none)" }));
    b.append(el("option", { value: "", text: "(none)" }));
    for (const c of allColumns()) {
      a.append(el("option", { value: c.key, text: c.label }));
      b.append(el("option", { value: c.key, text: c.label }));
    }
    a.addEventListener("change", () => { state.diffA = a.value; renderTable(); });
    b.addEventListener("change", () => { state.diffB = b.value; renderTable(); });
    const dis = document.getElementById("disagree");
    dis.addEventListener("change", () => { state.disagree = dis.checked; renderTable(); });

    const scale = document.getElementById("scale");
    scale.append(scaleBar("advantage", D.meta.limit));
    if (D.reference && D.reference.available) scale.append(scaleBar(D.reference.short, D.reference.limit));
  }

  function scaleBar(name, limit) {
    const canvas = el("canvas", { width: 140, height: 12 });
    const ctx = canvas.getContext("2d");
    for (let x = 0; x < 140; x++) {
      const c = colour((x / 139 * 2 - 1) * limit, limit);
      ctx.fillStyle = c.bg;
      ctx.fillRect(x, 0, 1, 12);
    }
    return el("span", { cls: "ctl" }, el("span", { cls: "ctl-title", text: name }),
      el("span", { cls: "tick", text: fmt(-limit) }), canvas, el("span", { cls: "tick", text: fmt(limit) }));
  }

  function allColumns() {
    const cols = [];
    for (const m of D.methods) {
      if (!m.available) continue;
      cols.push({ key: m.name, label: m.label, values: m.values, spans: m.spans, limit: D.meta.limit, trained: m.trained, note: m.note });
    }
    if (D.reference && D.reference.available) {
      cols.push({ key: "@ref", label: D.reference.short, values: D.reference.values, spans: null, limit: D.reference.limit, isRef: true, note: D.reference.label });
    }
    return cols;
  }

  // ------------------------------------------------------------------ table
  function rowSigns(i) {
    let pos = 0, neg = 0, zero = 0;
    for (const c of columns) {
      const s = sgn(c.values[i]);
      if (s === 1) pos++; else if (s === -1) neg++; else if (s === 0) zero++;
    }
    return { pos, neg, zero, mixed: pos > 0 && neg > 0 };
  }
  function diffValue(i) {
    if (!state.diffA || !state.diffB) return null;
    const a = colByKey(state.diffA), b = colByKey(state.diffB);
    if (!a || !b) return null;
    const x = a.values[i], y = b.values[i];
    return x === null || y === null || x === undefined || y === undefined ? null : x - y;
  }
  function colByKey(k) { return allColumns().find((c) => c.key === k); }

  function visibleRows() {
    const S = steps();
    let rows = groupRows(state.group);
    if (state.node !== null) rows = rows.filter((i) => S.node[i] === state.node);
    if (state.disagree) rows = rows.filter((i) => rowSigns(i).mixed);
    if (state.sortKey) {
      const key = sortValue(state.sortKey);
      rows.sort((p, q) => {
        const a = key(p), b = key(q);
        if (a === b) return p - q;
        if (a === null) return 1;
        if (b === null) return -1;
        return (a < b ? -1 : 1) * state.sortDir;
      });
    }
    return rows;
  }
  function sortValue(k) {
    const S = steps();
    const simple = {
      traj: (i) => S.traj[i], t: (i) => S.t[i], pv: (i) => S.pv[i], obs: (i) => str(S.obs[i]),
      action: (i) => str(S.action[i]), valid: (i) => S.valid[i], reward: (i) => S.reward[i],
      diff: (i) => diffValue(i), signs: (i) => { const s = rowSigns(i); return s.mixed ? -Math.min(s.pos, s.neg) : s.pos - s.neg; },
    };
    if (simple[k]) return simple[k];
    const c = colByKey(k);
    return (i) => (c.values[i] === undefined ? null : c.values[i]);
  }

  function renderTable() {
    columns = allColumns().filter((c) => state.on.has(c.key));
    const S = steps();
    const thead = document.querySelector("#steps thead");
    const tbody = document.querySelector("#steps tbody");
    thead.replaceChildren();
    tbody.replaceChildren();
    const heads = [["traj", "traj", ""], ["t", "t", "num"], ["pv", "policy", "num"], ["obs", "observation", ""],
      ["action", "action", ""], ["valid", "valid", ""], ["reward", "reward", "num"]];
    for (const c of columns) heads.push([c.key, c.label, "num" + (c.isRef ? " ref" : "")]);
    if (state.diffA && state.diffB) heads.push(["diff", `${shortLabel(state.diffA)} − ${shortLabel(state.diffB)}`, "num"]);
    heads.push(["signs", "signs", ""]);
    const tr = el("tr");
    for (const [key, label, cls] of heads) {
      const th = el("th", { cls: cls + (state.sortKey === key ? (state.sortDir > 0 ? " sorted-asc" : " sorted-desc") : ""), "data-key": key, text: label,
        title: key === "pv" ? "policy_version: the policy iteration that sampled the step" : key === "signs" ? "sign agreement of the shown columns" : null });
      th.addEventListener("click", () => {
        if (state.sortKey === key) state.sortDir = -state.sortDir; else { state.sortKey = key; state.sortDir = 1; }
        renderTable();
      });
      tr.append(th);
    }
    thead.append(tr);
    const rows = visibleRows();
    const grp = D.groups[state.group];
    const frag = document.createDocumentFragment();
    for (const i of rows) {
      const traj = grp.trajectories[S.traj[i]];
      const row = el("tr", { "data-step": i, cls: (traj.won ? "won" : "lost") + (state.step === i ? " selected" : "") });
      row.append(el("td", { cls: "tj", text: "T" + S.traj[i], title: traj.won ? "won" : "lost" }));
      row.append(el("td", { cls: "num", text: S.t[i] }));
      row.append(el("td", { cls: "num", text: S.pv[i] === null ? "–" : S.pv[i] }));
      const obs = str(S.obs[i]);
      row.append(el("td", { cls: "obs", text: obs, title: obs }));
      const act = str(S.action[i]);
      row.append(el("td", { cls: "act" + (S.valid[i] ? "" : " invalid"), text: act, title: act }));
      row.append(el("td", { cls: S.valid[i] ? "" : "invalid", text: S.valid[i] ? "✓" : "✗" }));
      row.append(el("td", { cls: "num", text: S.reward[i] === 0 ? "0" : String(+S.reward[i].toFixed(3)) }));
      for (const c of columns) {
        const v = c.values[i];
        const td = el("td", { cls: "num adv" + (v === null || v === undefined ? " na" : ""), text: fmt(v), title: v === null || v === undefined ? (c.isRef ? "not in the model (e.g. an invalid action)" : "no value") : `${c.label}: ${v}` });
        paint(td, v, c.limit);
        row.append(td);
      }
      if (state.diffA && state.diffB) {
        const v = diffValue(i);
        const td = el("td", { cls: "num adv", text: fmt(v) });
        paint(td, v, D.meta.limit);
        row.append(td);
      }
      const s = rowSigns(i);
      row.append(el("td", { cls: s.mixed ? "sign-mixed" : "sign-ok", text: s.mixed ? `✗ ${s.pos}+ ${s.neg}−` : s.pos ? "✓ +" : s.neg ? "✓ −" : "0",
        title: `${s.pos} positive, ${s.neg} negative, ${s.zero} zero` }));
      row.addEventListener("click", () => selectStep(i));
      frag.append(row);
    }
    tbody.append(frag);
    const total = grp.end - grp.start;
    document.getElementById("rowcount").textContent = `${rows.length} of ${total} steps shown`;
    document.getElementById("rowcount").dataset.rows = String(rows.length);
    const note = document.getElementById("filter-note");
    note.replaceChildren();
    if (state.node !== null) {
      note.append(`steps taken in node ${state.node} `, el("button", { type: "button", text: "show all", onclick: () => { state.node = null; renderGraph(); renderTable(); } }));
    }
  }
  function shortLabel(k) { const c = colByKey(k); return c ? c.label.replace(" (trained)", "") : k; }

  // ------------------------------------------------------------------ graph
  function renderGraph() {
    const G = D.groups[state.group].graph;
    const svg = document.getElementById("graph");
    svg.replaceChildren();
    const defs = sv("defs");
    svg.append(defs);
    const gEdges = sv("g"), gNodes = sv("g"), gLabels = sv("g");
    svg.append(gEdges, gNodes, gLabels);
    const trajEdges = state.traj === null ? null : new Set(G.traj_edges[state.traj]);
    const trajNodes = state.traj === null ? null : new Set(G.traj_nodes[state.traj]);
    const labelEdges = G.edges.length <= 120;
    const S = steps();
    const stepEdge = state.step === null ? null : S.edge[state.step];
    const stepNode = state.step === null ? null : S.node[state.step];
    for (const e of G.edges) {
      const hl = trajEdges && trajEdges.has(e.id);
      const faded = trajEdges && !hl;
      const width = Math.min(1 + 1.3 * Math.log2(e.count), 7) + (hl ? 1.5 : 0);
      const col = hl ? "#1d2530" : wonColour(e.won / e.count);
      const p = e.points;
      let d = `M${p[0][0]},${p[0][1]}`;
      if (p.length >= 4 && (p.length - 1) % 3 === 0) {
        for (let k = 1; k + 2 < p.length; k += 3) d += ` C${p[k][0]},${p[k][1]} ${p[k + 1][0]},${p[k + 1][1]} ${p[k + 2][0]},${p[k + 2][1]}`;
      } else {
        for (let k = 1; k < p.length; k++) d += ` L${p[k][0]},${p[k][1]}`;
      }
      const path = sv("path", { d, class: "edge" + (faded ? " faded" : "") + (hl ? " hl" : ""), stroke: col, "stroke-width": width, "data-edge": e.id });
      const title = sv("title");
      const listed = e.actions ? "\n" + e.actions.map((a) => "· " + truncate(str(a), 60)).join("\n") + (e.actions.length >= 20 ? "\n…" : "") : "";
      title.textContent = `${str(e.action)}${listed}\n×${e.count} (${e.won} by won trajectories)\ntrajectories: ${e.trajectories.map((t) => "T" + t).join(" ")}`;
      path.append(title);
      gEdges.append(path);
      const tip = e.tip || shortenedTip(G, e);
      if (tip) {
        const last = p[p.length - 1];
        const from = e.tip ? last : p[p.length - 2] || p[0];
        gEdges.append(arrow(from, tip, col, faded));
      }
      const chosen = stepEdge !== null && stepEdge === e.id;
      const loop = e.source === e.target;
      if ((labelEdges && e.count > 1 && !faded && !loop) || chosen) {
        const mid = p[Math.floor(p.length / 2)];
        const lab = sv("text", { x: mid[0], y: mid[1] - 4, class: "elabel" + (chosen ? " chosen" : "") });
        lab.textContent = chosen ? truncate(str(S.action[state.step]), 28) : "×" + e.count;
        gLabels.append(lab);
      }
    }
    for (const n of G.nodes) {
      const faded = trajNodes && !trajNodes.has(n.id);
      const fill = n.kind === "chain" ? "#ffffff" : n.won_ends && !n.lost_ends ? "#a9dfbf" : n.lost_ends && !n.won_ends ? "#f5b7b1" : n.won_ends ? "#f9e79f" : "#e5e8ec";
      let shape;
      const cls = "node" + (n.start ? " start" : "") + (faded ? " faded" : "") + (state.node === n.id || stepNode === n.id ? " selected" : "");
      if (n.kind === "chain") {
        shape = sv("rect", { x: n.x - n.w / 2, y: n.y - n.h / 2, width: n.w, height: n.h, rx: 5, fill, class: cls, "stroke-dasharray": "3 2", "data-node": n.id });
      } else {
        shape = sv("circle", { cx: n.x, cy: n.y, r: n.w / 2, fill, class: cls, "data-node": n.id });
      }
      const title = sv("title");
      title.textContent = nodeTitle(n);
      shape.append(title);
      shape.addEventListener("click", (ev) => { ev.stopPropagation(); selectNode(n.id); });
      gNodes.append(shape);
      const text = n.kind === "chain" ? `⋯${n.states.length}` : n.visits >= 2 ? String(n.visits) : "";
      if (text) {
        const lab = sv("text", { x: n.x, y: n.y, class: "nlabel" });
        lab.textContent = text;
        gLabels.append(lab);
      }
    }
    const note = document.getElementById("graph-note");
    const drawn = G.nodes.length;
    note.textContent = `${drawn} nodes drawn (${G.nodes.filter((n) => n.kind === "chain").length} chains) for ${G.raw_nodes} states, ${G.edges.length} edges; ` +
      (G.hidden_states ? `${G.hidden_states} states visited once${G.top_k_applied ? " or outside the top " + D.meta.top_k : ""} are inside chains; ` : "") + `layout: ${G.engine}`;
    note.dataset.nodes = String(drawn);
    applyView();
  }
  function shortenedTip(G, e) {
    if (e.points.length < 2) return null;
    const n = G.nodes[e.target];
    const a = e.points[e.points.length - 2], b = e.points[e.points.length - 1];
    const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1;
    const r = n.kind === "chain" ? Math.max(n.w, n.h) / 2 : n.w / 2;
    return [b[0] - dx / len * r, b[1] - dy / len * r];
  }
  function arrow(from, tip, col, faded) {
    const dx = tip[0] - from[0], dy = tip[1] - from[1], len = Math.hypot(dx, dy) || 1;
    const ux = dx / len, uy = dy / len, s = 7;
    const bx = tip[0] - ux * s, by = tip[1] - uy * s;
    const pts = `${tip[0]},${tip[1]} ${bx - uy * s * 0.45},${by + ux * s * 0.45} ${bx + uy * s * 0.45},${by - ux * s * 0.45}`;
    return sv("polygon", { points: pts, fill: col, class: "arrow" + (faded ? " faded" : "") });
  }
  function nodeTitle(n) {
    const head = n.kind === "chain" ? `${n.states.length} states, each visited once on this run` : "state";
    const keys = n.states.slice(0, 6).map((s) => str(s)).join("\n") + (n.states.length > 6 ? `\n… ${n.states.length - 6} more` : "");
    return `${head}\n${keys}\nvisits ${n.visits} · starts ${n.start} · won ends ${n.won_ends} · lost ends ${n.lost_ends}`;
  }
  function truncate(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  function renderTrajectories() {
    const box = document.getElementById("trajectories");
    box.replaceChildren();
    const grp = D.groups[state.group];
    for (const t of grp.trajectories) {
      const chip = el("button", { type: "button", cls: "traj-chip " + (t.won ? "won" : "lost") + (state.traj === t.index ? " active" : ""), "data-traj": t.index,
        text: `T${t.index} ${t.won ? "won" : "lost"} · ${t.end - t.start} steps · R ${+t.ret.toFixed(2)}`, title: "highlight this trajectory's path" });
      chip.addEventListener("click", () => { state.traj = state.traj === t.index ? null : t.index; renderTrajectories(); renderGraph(); });
      box.append(chip);
    }
    box.append(el("span", { cls: "legend" }, "edges:", el("i"), "won", el("i"), "lost", " · node number = visits, ⋯n = chain of n states"));
    const legends = box.querySelectorAll(".legend i");
    legends[0].style.background = wonColour(1);
    legends[1].style.background = wonColour(0);
  }

  // ------------------------------------------------------------------ pan & zoom
  function fitView(readable) {
    const G = D.groups[state.group].graph;
    const wrap = document.getElementById("graph-wrap");
    const W = wrap.clientWidth || 800, H = wrap.clientHeight || 400, pad = 20;
    const gw = G.width + 2 * pad, gh = G.height + 2 * pad;
    const scale = Math.min(W / gw, H / gh, 1.25);  // small graphs are not blown up
    if (readable && scale < 0.5) {
      // Too wide to read whole: start at the left (the start state) at a readable zoom.
      const w = W / 0.5, h = H / 0.5;
      const starts = G.nodes.filter((n) => n.start);
      const cy = starts.length ? starts.reduce((a, n) => a + n.y, 0) / starts.length : G.height / 2;
      view = { x: -pad, y: Math.max(-pad, Math.min(cy - h / 2, G.height + pad - h)), w, h };
    } else {
      view = { x: -pad - (W / scale - gw) / 2, y: -pad - (H / scale - gh) / 2, w: W / scale, h: H / scale };
    }
    applyView();
  }
  function applyView() {
    document.getElementById("graph").setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
  }
  function setupPanZoom() {
    const wrap = document.getElementById("graph-wrap");
    const svg = document.getElementById("graph");
    wrap.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const r = svg.getBoundingClientRect();
      const fx = (ev.clientX - r.left) / r.width, fy = (ev.clientY - r.top) / r.height;
      const k = Math.exp(ev.deltaY * 0.0015);
      const px = view.x + fx * view.w, py = view.y + fy * view.h;
      view.w *= k; view.h *= k;
      view.x = px - fx * view.w; view.y = py - fy * view.h;
      applyView();
    }, { passive: false });
    let drag = null;
    wrap.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y }; wrap.classList.add("dragging"); });
    window.addEventListener("mousemove", (ev) => {
      if (!drag) return;
      const r = svg.getBoundingClientRect();
      view.x = drag.vx - (ev.clientX - drag.x) * view.w / r.width;
      view.y = drag.vy - (ev.clientY - drag.y) * view.h / r.height;
      applyView();
    });
    window.addEventListener("mouseup", () => { drag = null; wrap.classList.remove("dragging"); });
    document.getElementById("zoom-reset").addEventListener("click", () => fitView(false));
  }

  // ------------------------------------------------------------------ detail panel
  function selectStep(i) {
    state.step = i;
    state.traj = steps().traj[i];
    renderTrajectories();
    renderGraph();
    for (const r of document.querySelectorAll("#steps tbody tr")) r.classList.toggle("selected", +r.dataset.step === i);
    renderDetail();
  }
  function selectNode(id) {
    state.node = state.node === id ? null : id;
    state.step = null;
    renderGraph();
    renderTable();
    renderDetail();
  }

  function renderDetail() {
    const body = document.getElementById("detail-body");
    const title = document.getElementById("detail-title");
    body.replaceChildren();
    title.textContent = "";
    if (state.step === null && state.node !== null) return renderNodeDetail(body, title);
    if (state.step === null) { body.append(el("p", { cls: "hint", text: "Click a row of the table, or a node of the graph." })); return; }
    const S = steps(), i = state.step;
    title.textContent = `T${S.traj[i]} · step ${S.t[i]} · policy version ${S.pv[i] === null ? "–" : S.pv[i]}`;
    const info = el("table");
    const add = (k, v) => info.append(el("tr", null, el("td", { text: k }), el("td", { text: v })));
    add("action", str(S.action[i]));
    add("valid", S.valid[i] ? "yes" : "no (invalid-action penalty applies)");
    add("reward", String(S.reward[i]));
    add("state", str(S.state[i]));
    body.append(info);
    const adv = el("div", { cls: "advs" });
    for (const c of allColumns()) {
      const v = c.values[i];
      const chip = el("span", { cls: "adv-chip", title: c.note || c.label }, el("span", { cls: "k", text: c.label.replace(" (trained)", "") }), el("span", { cls: "v", text: fmt(v, 3) }));
      paint(chip.lastChild, v, c.limit);
      adv.append(chip);
    }
    body.append(el("h3", { text: "Advantages" }), adv);
    const tok = D.tokens[String(i)];
    if (tok) body.append(tokenStrip(i, tok));
    body.append(el("h3", { text: "Observation" }), el("pre", { cls: "obs-full", text: str(S.obs[i]) }));
    if (S.text[i] >= 0 && str(S.text[i]) && str(S.text[i]) !== str(S.action[i])) body.append(el("h3", { text: "Model output" }), el("pre", { text: str(S.text[i]) }));
  }

  function renderNodeDetail(body, title) {
    const G = D.groups[state.group].graph;
    const n = G.nodes[state.node];
    title.textContent = `node ${n.id} · ${n.kind} · ${n.visits} visits`;
    body.append(el("h3", { text: n.kind === "chain" ? `${n.states.length} states, visited once` : "State key" }));
    body.append(el("pre", { text: n.states.slice(0, 12).map(str).join("\n") + (n.states.length > 12 ? `\n… ${n.states.length - 12} more` : "") }));
    const S = steps();
    const rows = groupRows(state.group).filter((i) => S.node[i] === n.id);
    const byAction = new Map();
    for (const i of rows) {
      const a = str(S.action[i]);
      if (!byAction.has(a)) byAction.set(a, []);
      byAction.get(a).push(i);
    }
    const cols = allColumns().filter((c) => state.on.has(c.key));
    const t = el("table");
    t.append(el("tr", null, el("td", { text: "action" }), el("td", { text: "n" }), ...cols.map((c) => el("td", { text: c.label }))));
    for (const [a, idx] of byAction) {
      const tr = el("tr", null, el("td", { text: a }), el("td", { text: idx.length }));
      for (const c of cols) {
        const vals = idx.map((i) => c.values[i]).filter((v) => v !== null && v !== undefined);
        const mean = vals.length ? vals.reduce((x, y) => x + y, 0) / vals.length : null;
        const td = el("td", { text: fmt(mean) });
        paint(td, mean, c.limit);
        tr.append(td);
      }
      t.append(tr);
    }
    body.append(el("h3", { text: "Actions taken here (mean advantage)" }), t);
  }

  const SPAN_COLOURS = { switch: "#8e44ad", subgoal: "#16a085", action: "#e67e22" };
  function tokenValues(c, i, tok) {
    const n = tok.tok.length;
    const base = c.values[i];
    const out = new Array(n).fill(base === undefined ? null : base);
    if (c.spans && tok.spans) {
      for (const [name, ranges] of Object.entries(tok.spans)) {
        const sp = c.spans[name];
        if (!sp) continue;
        for (const [a, b] of ranges) for (let k = Math.max(0, a); k < Math.min(n, b); k++) out[k] = sp[i];
      }
    }
    return out;
  }
  function tokenStrip(i, tok) {
    const wrap = el("div", { cls: "token-strip" });
    const choices = allColumns().filter((c) => !c.isRef);
    if (tok.adv) choices.unshift({ key: "@dump", label: "dumped (trained on)", values: null, limit: D.meta.limit });
    if (!state.tokMethod || !choices.find((c) => c.key === state.tokMethod)) {
      state.tokMethod = tok.adv ? "@dump" : (choices.find((c) => c.trained) || choices[0] || {}).key;
    }
    const sel = el("select", { id: "tok-method" });
    for (const c of choices) sel.append(el("option", { value: c.key, text: c.label }));
    sel.value = state.tokMethod || "";
    sel.addEventListener("change", () => { state.tokMethod = sel.value; renderDetail(); });
    wrap.append(el("h3", null, `Tokens (${tok.tok.length}) · advantage of `, sel));
    const c = choices.find((x) => x.key === state.tokMethod);
    const vals = !c ? new Array(tok.tok.length).fill(null) : c.key === "@dump" ? tok.adv : tokenValues(c, i, tok);
    const spanOf = new Array(tok.tok.length).fill(null);
    if (tok.spans) for (const [name, ranges] of Object.entries(tok.spans)) for (const [a, b] of ranges) for (let k = a; k < b && k < spanOf.length; k++) spanOf[k] = name;
    if (tok.spans && Object.keys(tok.spans).length) {
      const lg = el("div", { cls: "tok-legend", text: "spans: " });
      for (const name of Object.keys(tok.spans)) { const s = el("span", { text: name }); s.style.borderColor = SPAN_COLOURS[name] || "#777"; lg.append(s); }
      wrap.append(lg);
    }
    wrap.append(el("div", { cls: "tok-legend", text: "each token: text · advantage · sampler log-prob" + (tok.ent ? " · entropy" : "") }));
    const strip = el("div", { cls: "tokens" });
    for (let k = 0; k < tok.tok.length; k++) {
      const text = str(tok.tok[k]).replace(/ /g, "·").replace(/\n/g, "↵").replace(/\t/g, "⇥");
      const lp = tok.lp ? tok.lp[k] : null, en = tok.ent ? tok.ent[k] : null;
      const card = el("span", { cls: "tok", "data-token": k,
        title: `token ${k} · id ${tok.ids[k]}\nadvantage ${vals[k]}\nsampler log-prob ${lp}\nentropy ${en === null ? "not recorded" : en}${spanOf[k] ? "\nspan " + spanOf[k] : ""}` },
        el("span", { cls: "t", text: text || "∅" }), el("span", { cls: "n", text: fmt(vals[k]) }),
        el("span", { cls: "n", text: lp === null ? "–" : lp.toFixed(2) }));
      if (tok.ent) card.append(el("span", { cls: "n", text: en === null ? "–" : en.toFixed(2) }));
      paint(card, vals[k], D.meta.limit);
      if (spanOf[k]) card.style.borderBottomColor = SPAN_COLOURS[spanOf[k]] || "#777";
      strip.append(card);
    }
    wrap.append(strip);
    return wrap;
  }

  // ------------------------------------------------------------------ top level
  function renderGroup() {
    renderTrajectories();
    renderGraph();
    fitView(true);
    renderTable();
    renderDetail();
  }

  function main() {
    D = JSON.parse(document.getElementById("viewer-data").textContent);
    for (const c of allColumns()) if (c.trained || c.isRef || D.meta.default_on.includes(c.key)) state.on.add(c.key);
    renderMeta();
    renderControls();
    setupPanZoom();
    renderGroup();
    const now = performance.now();
    window.__viewer = { ready: true, firstRenderMs: now, scriptMs: now - t0, frameMs: null };
    requestAnimationFrame(() => { window.__viewer.frameMs = performance.now(); });
  }

  try {
    main();
  } catch (err) {
    const box = document.getElementById("error");
    box.hidden = false;
    box.textContent = "The viewer failed: " + (err && err.stack ? err.stack : err);
    window.__viewer = { ready: false, error: String(err) };
    throw err;
  }
})();
