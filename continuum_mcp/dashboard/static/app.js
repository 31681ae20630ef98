"use strict";
// The dashboard's front end: plain DOM, no framework, no network beyond this server's /api.
// Every text from the API goes in through textContent (never innerHTML): memories are data.
(() => {
  const TOKEN = new URLSearchParams(location.search).get("token") || "";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const state = { offset: 0, limit: 20, query: null, mode: "hybrid" };

  function el(tag, cls, ...children) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function button(label, cls, onClick) {
    const b = el("button", cls, label);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  async function api(method, path, body) {
    const opts = { method, cache: "no-store", headers: { "X-Continuum-Token": TOKEN } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    const data = await r.json().catch(() => ({ code: "error", message: r.statusText }));
    if (!r.ok) {
      const e = new Error(data.message || r.statusText);
      e.code = data.code || "error";
      throw e;
    }
    return data;
  }

  function showError(e) {
    const box = $("error");
    box.textContent = `${e.code || "error"}: ${e.message}`;
    box.hidden = false;
  }

  function guarded(fn) {
    return async (...args) => {
      try {
        $("error").hidden = true;
        await fn(...args);
      } catch (e) {
        showError(e);
      }
    };
  }

  const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "-");
  const tagsOf = (text) => text.split(",").map((t) => t.trim()).filter(Boolean);
  const num = (v, d = 2) => (v === null || v === undefined ? "∞" : Number(v).toFixed(d));

  function tagList(tags) {
    return tags.map((t) => el("span", t.toLowerCase() === "private" ? "tag private" : "tag", t));
  }

  // ----- memories --------------------------------------------------------------------------
  function memoryCard(m, hit) {
    const li = el("li", "memory");
    li.dataset.id = m.id;
    const view = () => {
      li.replaceChildren();
      const meta = metaRow(`#${m.id}`, fmtTime(m.created_at));
      meta.append(...tagList(m.tags));
      if (hit && hit.similarity !== null && hit.similarity !== undefined) {
        meta.append(el("span", "", `similarity ${num(hit.similarity, 3)}`));
      }
      if (m.superseded_by) meta.append(el("span", "", `updated by #${m.superseded_by}`));
      const actions = el("span", "actions", button("Edit", "plain edit", edit), button("Delete", "danger delete", remove));
      meta.append(actions);
      li.append(el("div", "text", m.text), meta);
    };
    const edit = () => {
      li.replaceChildren();
      const text = el("textarea", "edit-text");
      text.rows = 3;
      text.value = m.text;
      const tags = el("input", "edit-tags");
      tags.value = m.tags.join(", ");
      const save = guarded(async () => {
        const body = {};
        if (text.value !== m.text) body.text = text.value;
        if (tags.value !== m.tags.join(", ")) body.tags = tagsOf(tags.value);
        if (Object.keys(body).length === 0) return view();
        await api("PATCH", `/api/memories/${m.id}`, body);
        await refresh();
      });
      li.append(text, el("div", "row", tags, button("Save", "save", save), button("Cancel", "plain cancel", view)));
      text.focus();
    };
    const remove = guarded(async () => {
      if (!confirm(`Delete memory #${m.id} for good?`)) return;
      await api("DELETE", `/api/memories/${m.id}`);
      await refresh();
    });
    view();
    return li;
  }

  async function loadMemories() {
    const list = $("memory-list");
    if (state.query) {
      const q = new URLSearchParams({ q: state.query, mode: state.mode, k: "20" });
      const r = await api("GET", `/api/recall?${q}`);
      list.replaceChildren(...r.hits.map((h) => memoryCard(h.memory, h)));
      $("list-info").textContent = `${r.hits.length} result(s) for “${r.query}” (${r.mode})`
        + (r.no_good_match ? ": none is really about this" : "");
      $("page-prev").disabled = $("page-next").disabled = true;
      return;
    }
    const page = await api("GET", `/api/memories?offset=${state.offset}&limit=${state.limit}`);
    list.replaceChildren(...page.memories.map((m) => memoryCard(m)));
    const shown = page.memories.length;
    $("list-info").textContent = page.total === 0 ? "No memories yet."
      : `${page.offset + 1}–${page.offset + shown} of ${page.total}, newest first`;
    $("page-prev").disabled = state.offset === 0;
    $("page-next").disabled = page.offset + shown >= page.total;
  }

  async function loadStats() {
    const s = await api("GET", "/api/stats");
    $("stats").textContent = `${s.count} memories · ${s.model_id} · ${s.data_dir}`;
  }

  async function refresh() {
    await Promise.all([loadMemories(), loadStats()]);
  }

  // ----- privacy budget plot ----------------------------------------------------------------
  function niceStep(max, ticks) {
    const raw = max / ticks;
    const p = 10 ** Math.floor(Math.log10(raw));
    return [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
  }

  function plotBudget(h) {
    const W = 520, H = 280, L = 36, R = 10, T = 12, B = 46;
    const pts = h.points.map((p) => ({
      t: Date.parse(p.at),
      w: p.window_epsilon === null ? Infinity : p.window_epsilon,
      l: p.lifetime_epsilon === null ? Infinity : p.lifetime_epsilon,
    }));
    const now = pts.length ? pts[pts.length - 1].t : Date.now();
    const spends = h.spends.map((s) => Date.parse(s.spent_at));
    const t0 = Math.min(now - h.window_days * 864e5, ...spends);
    const finite = pts.flatMap((p) => [p.w, p.l]).filter(Number.isFinite);
    const step = niceStep(Math.max(h.budget_epsilon, ...finite) * 1.1, 5);
    const ymax = step * Math.ceil((Math.max(h.budget_epsilon, ...finite) * 1.05) / step);
    const x = (t) => L + ((t - t0) / Math.max(1, now - t0)) * (W - L - R);
    const y = (v) => T + (1 - Math.min(v, ymax) / ymax) * (H - T - B);
    const root = svg("svg", { id: "budget-svg", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": "privacy budget over time", "data-points": pts.length });
    for (let v = 0; v <= ymax + 1e-9; v += step) {
      root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, String(+v.toFixed(2))));
    }
    for (let i = 0; i <= 4; i++) {
      const t = t0 + ((now - t0) * i) / 4;
      root.append(svg("text", { x: x(t), y: H - B + 16, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
        new Date(t).toLocaleDateString()));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(0), y2: y(0) }));
    root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: y(0) }));
    root.append(svg("line", { class: "budget", x1: L, x2: W - R, y1: y(h.budget_epsilon), y2: y(h.budget_epsilon) }));
    const steps = (key) => {
      let d = `M${x(t0)},${y(0)}`;
      for (const p of pts) d += ` H${x(p.t).toFixed(1)} V${y(p[key]).toFixed(1)}`;
      return d + ` H${x(now)}`;
    };
    root.append(svg("path", { id: "budget-lifetime", class: "lifetime", d: steps("l") }));
    root.append(svg("path", { id: "budget-window", class: "window", d: steps("w") }));
    for (const t of spends) {
      const p = pts.find((q) => q.t === t);
      if (p) root.append(svg("circle", { class: "spend", cx: x(t), cy: y(p.w), r: 3 }));
    }
    const legend = [["legend-window", `${h.window_days}-day rolling`], ["legend-lifetime", "lifetime"],
      ["legend-budget", `budget ε ${h.budget_epsilon}`]];
    legend.forEach(([cls, label], i) => {
      const lx = L + i * 160;
      root.append(svg("rect", { class: cls, x: lx, y: H - 14, width: 14, height: 4 }));
      root.append(svg("text", { x: lx + 20, y: H - 9 }, label));
    });
    return root;
  }

  async function loadPrivacy() {
    const h = await api("GET", "/api/privacy");
    const pct = h.window_epsilon === null ? 100 : Math.round((100 * h.window_epsilon) / h.budget_epsilon);
    $("budget-summary").textContent = h.spends.length === 0
      ? "No privacy budget spent yet: nothing of yours has entered a federation release."
      : `ε ${num(h.window_epsilon)} of ${h.budget_epsilon} used in the last ${h.window_days} days (${pct} %), `
        + `lifetime ε ${num(h.lifetime_epsilon)}; δ ${Number(h.delta).toExponential()}, ${h.mode} mode, ${h.spends.length} round(s) recorded.`;
    $("budget-plot").replaceChildren(plotBudget(h));
  }

  // ----- federation ---------------------------------------------------------------------------
  async function loadFederation() {
    const s = await api("GET", "/api/federation");
    const facts = [["joined", s.joined ? "yes" : "no"], ["instance", s.instance_id || "-"]];
    if (s.joined) {
      facts.push(["federation", s.federation_id], ["coordinator", `${s.coordinator_url}`
        + (s.coordinator_reachable === false ? " (unreachable)" : "")],
      ["mode", `${s.privacy_mode} (federation: ${s.federation_mode})`], ["level", s.contribution_level],
      ["outbox", `${s.outbox_waiting} waiting`], ["cached patterns", String(s.cached_patterns)],
      ["auto-sync", s.auto_sync.enabled ? `every ${s.auto_sync.interval_minutes} min` : "off"]);
    }
    $("federation-status").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", "", k), el("dd", "", v)]));
    if (!s.joined) {
      $("credits").textContent = s.message || "Not a member of any federation.";
      return;
    }
    try {
      const c = await api("GET", "/api/credits");
      $("credits").textContent = `credits: ${num(c.available)} available, ${num(c.pending)} pending; this month `
        + `${num(c.earned_this_month)} earned, ${num(c.spent_this_month)} spent; `
        + `${c.free_queries_left_today} free queries left today`;
    } catch (e) {
      $("credits").textContent = `credits unavailable: ${e.message}`;
    }
  }

  // A list from an API route, or one line saying why it is empty.
  async function fillList(id, path, empty, render) {
    const rows = await api("GET", path);
    $(id).replaceChildren(...(rows.length ? rows.map(render) : [el("li", "muted", empty)]));
  }

  const metaRow = (...items) => el("div", "meta", ...items.map((t) => el("span", "", t)));

  function contributionCard(c) {
    const li = el("li", "contribution", metaRow(`round ${c.round_id}`, fmtTime(c.sent_at), `${c.federation_mode} mode`,
      `${c.patterns.length} pattern(s)`));
    for (const p of c.patterns) {
      li.append(el("div", "pattern-phrases", `slot ${p.slot} · confidence ${num(p.confidence)} · `,
        ...tagList(p.phrases)));
      li.append(el("div", p.statement === null ? "muted" : "text",
        p.statement === null ? `statement not sent (${c.federation_mode} mode)` : p.statement));
      if (p.source_memory_ids.length) {
        li.append(el("div", "muted", `made from your memories ${p.source_memory_ids.map((i) => `#${i}`).join(", ")} `
          + "(the ids stay here)"));
      }
    }
    li.append(el("details", "muted", el("summary", "", "what exactly went over the wire"), c.what_leaves));
    return li;
  }

  const patternCard = (p) => el("li", "pattern", el("div", "text", p.summary),
    el("div", "pattern-phrases", ...tagList(p.phrases)),
    metaRow(`round ${p.released_at_round}`, `~${num(p.contributor_count, 1)} contributors (noisy)`,
      `${p.verification_count} verification(s)`, `▲${p.votes_up} ▼${p.votes_down}`));

  const loadContributions = () => fillList("contribution-list", "/api/contributions", "Nothing has been sent yet.",
    contributionCard);
  const loadPatterns = () => fillList("pattern-list", "/api/patterns", "No released patterns in the local cache.",
    patternCard);

  // ----- wiring -------------------------------------------------------------------------------
  $("new-form").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    const r = await api("POST", "/api/memories", { text: $("new-text").value, tags: tagsOf($("new-tags").value) });
    $("new-text").value = "";
    $("new-tags").value = "";
    state.query = null;
    state.offset = 0;
    await refresh();
    $("list-info").textContent += ` · ${r.status} #${r.memory.id}`;
  }));
  $("search-form").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    state.query = $("search-q").value.trim() || null;
    state.mode = $("search-mode").value;
    await loadMemories();
  }));
  $("search-clear").addEventListener("click", guarded(async () => {
    $("search-q").value = "";
    state.query = null;
    await loadMemories();
  }));
  $("page-prev").addEventListener("click", guarded(async () => {
    state.offset = Math.max(0, state.offset - state.limit);
    await loadMemories();
  }));
  $("page-next").addEventListener("click", guarded(async () => {
    state.offset += state.limit;
    await loadMemories();
  }));

  for (const load of [refresh, loadPrivacy, loadFederation, loadContributions, loadPatterns]) guarded(load)();
})();
