/* The desk's Incidents view: open incidents with live affected counts; claim, update, resolve, detach. */
"use strict";

(() => {
  const { api, el, localTime } = Tierone;
  const KEY = "tierone.desk.key"; // the key desk.js keeps for this tab
  const POLL_MS = 2000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    desk: $("desk"),
    list: $("incident-list"),
    meta: $("incidents-meta"),
    empty: $("incidents-empty"),
    error: $("incidents-error"),
  };
  const cards = new Map(); // incident id -> its card's live parts, kept so a draft survives each poll
  let timer = null;

  function call(method, path, body) {
    return api(method, path, { token: sessionStorage.getItem(KEY), body });
  }

  async function poll() {
    clearTimeout(timer);
    if (sessionStorage.getItem(KEY) && !ui.desk.hidden) {
      try {
        render(await call("GET", "/incidents?status=open"));
        ui.error.hidden = true;
      } catch (err) {
        ui.error.textContent = `Incidents could not be loaded: ${err.message}`;
        ui.error.hidden = false;
      }
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function render(incidents) {
    ui.meta.textContent = incidents.length ? `${incidents.length} open` : "";
    ui.empty.hidden = incidents.length > 0;
    const seen = new Set();
    for (const incident of incidents) {
      seen.add(incident.id);
      let card = cards.get(incident.id);
      if (!card) {
        card = build(incident);
        cards.set(incident.id, card);
        ui.list.append(card.root);
      }
      fill(card, incident);
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.root.remove();
        cards.delete(id);
      }
    }
  }

  function button(text, className, onClick) {
    const b = el("button", `btn ${className}`, text);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function build(incident) {
    const id = incident.id;
    const root = el("li", "incident card");
    root.dataset.incident = id;
    const head = el("div", "incident-head");
    const title = el("h3", "incident-title");
    const affected = el("span", "affected");
    affected.setAttribute("aria-live", "polite");
    head.append(el("span", "incident-id", id), title, affected);
    const facts = el("p", "incident-facts muted small");
    const known = el("p", "incident-known small");
    const attached = el("ul", "attached");
    attached.setAttribute("aria-label", `Conversations attached to ${id}`);
    const form = el("form", "incident-form");
    const label = el("label", "small", "Message to every affected customer (chat or email, once each)");
    const text = el("textarea");
    text.id = `incident-text-${id}`;
    label.htmlFor = text.id;
    const notice = el("p", "small");
    notice.setAttribute("role", "status");
    const claim = button("Claim", "btn-quiet", () => act(card, "claim"));
    const update = button("Post update", "btn-primary", () => act(card, "update", { text: text.value }));
    const resolve = button("Resolve", "btn-quiet", () => act(card, "resolve", { text: text.value }));
    const actions = el("div", "incident-actions");
    actions.append(update, resolve, claim);
    form.append(label, text, actions, notice);
    form.addEventListener("submit", (e) => e.preventDefault());
    root.append(head, facts, known, attached, form);
    const card = { id, root, title, affected, facts, known, attached, text, notice, claim, buttons: [claim, update, resolve] };
    return card;
  }

  function fill(card, incident) {
    card.title.textContent = incident.title;
    card.affected.textContent = `${incident.affected} affected`;
    const first = incident.first_report_at ? localTime(incident.first_report_at) : "—";
    const last = incident.last_report_at ? localTime(incident.last_report_at) : "—";
    const holder = incident.claimed_by ? ` · claimed by ${incident.claimed_by}` : "";
    card.facts.textContent = `${incident.category || "category unknown"} · first report ${first} · last ${last}${holder}`;
    const latest = incident.updates[incident.updates.length - 1];
    card.known.textContent = latest ? `Customers were told: ${latest.text}` : "";
    card.claim.hidden = Boolean(incident.claimed_by);
    const ids = incident.conversations.map((c) => c.conversation_id);
    const shown = [...card.attached.children].map((li) => li.dataset.conversation);
    if (ids.join() !== shown.join()) {
      card.attached.replaceChildren(
        ...ids.map((cid) => {
          const li = el("li", "", cid);
          li.dataset.conversation = cid;
          li.append(button("Detach", "btn-quiet", () => act(card, "detach", { conversation_id: cid })));
          return li;
        }),
      );
    }
  }

  async function act(card, verb, body) {
    for (const b of card.buttons) b.disabled = true;
    card.notice.textContent = "";
    try {
      await call("POST", `/incidents/${encodeURIComponent(card.id)}/${verb}`, body);
      if (verb === "update" || verb === "resolve") card.text.value = "";
      card.notice.textContent = { claim: "Claimed.", update: "Update sent.", resolve: "Resolved.", detach: "Detached." }[verb];
    } catch (err) {
      card.notice.textContent = err.message;
    } finally {
      for (const b of card.buttons) b.disabled = false;
    }
    poll();
  }

  poll();
})();
