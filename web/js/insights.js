/* The lead's insights: sign in with a lead's or admin's key, pick a period, read the charts (SVG, drawn here). */
"use strict";

(() => {
  const { api, el } = Tierone;
  const KEY = "tierone.insights.key";
  const SVG = "http://www.w3.org/2000/svg";
  const OUTCOMES = [
    ["confirmed", "Confirmed", "#0b7a5c"],
    ["no_recontact", "No recontact", "#4fb58f"],
    ["reopened", "Reopened", "#c4570c"],
    ["abandoned", "Abandoned", "#9aa3b5"],
    ["handed_off", "Handed off", "#3b4fd8"],
    ["resolved_by_incident", "Resolved by incident", "#7b5cd6"],
    ["pending", "Pending (72 h)", "#f0c36a"],
    ["in_progress", "In progress", "#dde2ea"],
  ];
  const $ = (id) => document.getElementById(id);
  const ui = {
    signIn: $("sign-in"), board: $("board"), who: $("who"), whoName: $("who-name"), signOut: $("sign-out"),
    keyForm: $("key-form"), keyInput: $("key-input"), keyError: $("key-error"), keySubmit: $("key-submit"),
    period: $("period"), since: $("p-since"), asOf: $("p-as-of"), note: $("period-note"), error: $("board-error"),
    month: $("a-month"), auditOpen: $("audit-open"),
  };
  let key = sessionStorage.getItem(KEY);

  // ---- drawing ---------------------------------------------------------------------------------

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function canvas(holder, width, height, label) {
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
    holder.replaceChildren(root);
    return root;
  }

  function minutes(value) {
    if (value === null || value === undefined) return "–";
    if (value < 90) return `${Math.round(value)} min`;
    const hours = value / 60;
    return hours < 48 ? `${hours.toFixed(1)} h` : `${(hours / 24).toFixed(1)} d`;
  }

  /** Horizontal bars: [{label, value, text?, color?}], longest first as given. */
  function bars(holder, rows, label, color = "#3b4fd8") {
    if (!rows.length) {
      holder.replaceChildren(el("p", "muted small", "Nothing in this period."));
      return;
    }
    const row = 24;
    const width = 600;
    const left = 190;
    const root = canvas(holder, width, rows.length * row + 6, label);
    const top = Math.max(...rows.map((r) => r.value), 1);
    rows.forEach((r, i) => {
      const y = i * row + 4;
      const w = Math.max(2, ((width - left - 90) * r.value) / top);
      root.append(svg("text", { x: left - 8, y: y + 14, "text-anchor": "end" }, r.label));
      const bar = svg("rect", { x: left, y, width: w, height: row - 8, rx: 3, fill: r.color || color });
      bar.append(svg("title", {}, `${r.label}: ${r.text || r.value}`));
      root.append(bar);
      root.append(svg("text", { x: left + w + 6, y: y + 14, class: "value" }, r.text || r.value));
    });
  }

  function timeline(holder, days) {
    if (!days.length) {
      holder.replaceChildren(el("p", "muted small", "No episodes in this period."));
      return;
    }
    const width = 600;
    const height = 220;
    const pad = { l: 34, r: 6, t: 8, b: 24 };
    const root = canvas(holder, width, height, "Episodes per day by outcome");
    const totals = days.map((d) => OUTCOMES.reduce((sum, [name]) => sum + (d[name] || 0), 0));
    const top = Math.max(...totals, 1);
    const slot = (width - pad.l - pad.r) / days.length;
    const scale = (height - pad.t - pad.b) / top;
    for (const tick of [0, Math.round(top / 2), top]) {
      const y = height - pad.b - tick * scale;
      root.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y, stroke: "#eef1f5" }));
      root.append(svg("text", { x: pad.l - 4, y: y + 4, "text-anchor": "end" }, tick));
    }
    days.forEach((d, i) => {
      let y = height - pad.b;
      for (const [name, title, color] of OUTCOMES) {
        const n = d[name] || 0;
        if (!n) continue;
        const h = n * scale;
        y -= h;
        const rect = svg("rect", { x: pad.l + i * slot + 1, y, width: Math.max(1, slot - 2), height: h, fill: color });
        rect.append(svg("title", {}, `${d.day}: ${title} ${n}`));
        root.append(rect);
      }
      if (i % Math.ceil(days.length / 8) === 0) {
        root.append(svg("text", { x: pad.l + i * slot, y: height - 6 }, d.day.slice(5)));
      }
    });
    $("legend").replaceChildren(
      ...OUTCOMES.map(([, title, color]) => {
        const item = el("li", "", title);
        const swatch = el("i");
        swatch.style.background = color;
        item.prepend(swatch);
        return item;
      }),
    );
  }

  function kpis(report) {
    const pct = (x) => `${(100 * x).toFixed(1)}%`;
    const cards = [
      ["containment", pct(report.containment_rate), "Containment (confirmed + no recontact)", true],
      ["episodes", report.episodes, "Episodes"],
      ...OUTCOMES.map(([name, title]) => [name, report[name], title]),
    ];
    $("kpis").replaceChildren(
      ...cards.map(([name, value, title, lead]) => {
        const card = el("div", lead ? "kpi lead" : "kpi");
        card.dataset.kpi = name;
        card.append(el("b", "", value), el("span", "", title));
        return card;
      }),
    );
  }

  function categories(report) {
    const head = ["Category", "Episodes", "Confirmed", "No recontact", "Reopened", "Abandoned", "Handed off",
      "Handoff rate", "Containment", "Top handoff reasons"];
    const table = $("categories");
    const tr = el("tr");
    head.forEach((h, i) => tr.append(el("th", i === head.length - 1 ? "reasons" : "", h)));
    const rows = report.categories.map((c) => {
      const row = el("tr");
      const reasons = Object.entries(c.reasons).slice(0, 3).map(([code, n]) => `${code} ${n}`).join(", ");
      for (const v of [c.category, c.episodes, c.confirmed, c.no_recontact, c.reopened, c.abandoned, c.handed_off,
        `${Math.round(100 * c.handoff_rate)}%`, `${Math.round(100 * c.containment_rate)}%`]) row.append(el("td", "", v));
      row.append(el("td", "reasons", reasons || "–"));
      return row;
    });
    table.replaceChildren(el("thead"), el("tbody"));
    table.tHead.append(tr);
    table.tBodies[0].append(...rows);
  }

  function gaps(list) {
    const holder = $("gaps");
    if (!list.length) {
      holder.replaceChildren(el("li", "muted small", "No gaps found in this period."));
      return;
    }
    holder.replaceChildren(
      ...list.map((g) => {
        const item = el("li");
        item.append(el("b", "", `${g.size} conversations`), ` · nearest runbook ${g.nearest_runbook || "none"}`);
        const examples = el("ul", "muted small");
        (g.examples || []).slice(0, 3).forEach((text) => examples.append(el("li", "", text)));
        item.append(examples);
        return item;
      }),
    );
  }

  function render(report) {
    kpis(report);
    timeline($("timeline"), report.timeline);
    const reasons = {};
    report.categories.forEach((c) => Object.entries(c.reasons).forEach(([code, n]) => (reasons[code] = (reasons[code] || 0) + n)));
    bars($("reasons"), Object.entries(reasons).sort((a, b) => b[1] - a[1]).slice(0, 10)
      .map(([code, n]) => ({ label: code, value: n })), "Handoffs by reason");
    const t = report.handoff_times;
    bars($("times"), [
      { label: "First response, median", value: t.first_response.median_minutes || 0, text: minutes(t.first_response.median_minutes), color: "#0b7a5c" },
      { label: "First response, p90", value: t.first_response.p90_minutes || 0, text: minutes(t.first_response.p90_minutes), color: "#4fb58f" },
      { label: "Resolve, median", value: t.resolve.median_minutes || 0, text: minutes(t.resolve.median_minutes) },
      { label: "Resolve, p90", value: t.resolve.p90_minutes || 0, text: minutes(t.resolve.p90_minutes), color: "#8d9af0" },
    ], "Time to first human response and to resolve");
    const s = report.sla;
    bars($("sla"), [
      { label: "First response late", value: s.first_response_breached, color: "#b42318" },
      { label: "Resolve late", value: s.resolve_breached, color: "#c4570c" },
      ...Object.entries(s.breached_by_priority).map(([p, n]) => ({ label: `${p} tickets breached`, value: n, color: "#9aa3b5" })),
    ], `SLA breaches of ${s.handoffs} handoffs`);
    bars($("didnt"), report.didnt_work.map((r) => ({ label: r.runbook_id, value: r.answers, text: `${r.answers} in ${r.episodes} episodes` })),
      "Didn't-work answers by runbook", "#c4570c");
    gaps(report.gaps);
    categories(report);
    ui.note.textContent = `${report.episodes} episodes, judged at ${report.as_of.slice(0, 16).replace("T", " ")} UTC`;
    ui.board.dataset.ready = "true";
  }

  // ---- data ------------------------------------------------------------------------------------

  async function load() {
    const params = new URLSearchParams();
    if (ui.since.value) params.set("since", ui.since.value);
    if (ui.asOf.value) params.set("as_of", `${ui.asOf.value}T23:59:59Z`);
    ui.error.hidden = true;
    try {
      render(await api("GET", `/insights?${params}`, { token: key }));
    } catch (err) {
      if (err.status === 401 || err.status === 403) return signOut(err.message);
      ui.error.textContent = err.message;
      ui.error.hidden = false;
    }
  }

  async function signIn(candidate) {
    const report = await api("GET", "/insights", { token: candidate });
    key = candidate;
    sessionStorage.setItem(KEY, key);
    ui.whoName.textContent = "Support lead";
    ui.who.hidden = false;
    ui.signIn.hidden = true;
    ui.board.hidden = false;
    render(report);
  }

  function signOut(message) {
    key = null;
    sessionStorage.removeItem(KEY);
    ui.who.hidden = true;
    ui.board.hidden = true;
    ui.signIn.hidden = false;
    ui.keyError.textContent = message || "";
    ui.keyError.hidden = !message;
  }

  ui.keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = ui.keyInput.value.trim();
    if (!candidate) return signOut("Paste your API key first.");
    ui.keySubmit.disabled = true;
    try {
      await signIn(candidate);
    } catch (err) {
      signOut(err.status === 403 ? "That key cannot read insights: it needs the lead or admin role." : err.message);
    } finally {
      ui.keySubmit.disabled = false;
    }
  });
  ui.signOut.addEventListener("click", () => signOut(""));
  ui.period.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  ui.auditOpen.addEventListener("click", async () => {
    if (!ui.month.value) {
      ui.error.textContent = "Pick the month to audit first.";
      ui.error.hidden = false;
      return;
    }
    const response = await fetch(`/audit?month=${encodeURIComponent(ui.month.value)}&format=html`, {
      headers: { Authorization: `Bearer ${key}` },
      cache: "no-store",
    });
    if (!response.ok) {
      ui.error.textContent = (await response.json()).detail || `The audit failed (${response.status}).`;
      ui.error.hidden = false;
      return;
    }
    const link = el("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = `audit-${ui.month.value}.html`;
    link.click();
  });

  if (key) signIn(key).catch((err) => signOut(err.message));
  else signOut("");
})();
