/* The L2 desk: sign in with a key, watch the queue with live SLA countdowns, work one ticket. */
"use strict";

(() => {
  const { api, appendRich, el, localTime, clock } = Tierone;
  const KEY = "tierone.desk.key";
  const QUEUE_POLL_MS = 4000;
  const PACKET_POLL_MS = 3000;

  const REASONS = {
    no_runbook_fits: "No runbook fits what the customer asked.",
    tier2_runbook: "The matching runbook is tier 2: L2 handles it.",
    customer_requested_human: "The customer asked for a person.",
    negative_sentiment: "The customer is upset.",
    escalation_keyword: "The message mentions something that always goes to a person.",
    steps_exhausted: "Every step of the runbook was tried without success.",
    step_failed: "The same step failed twice.",
    tool_failed: "A tool the pack declares answered an error; its HTTP status is in the attempts.",
    verification_failed: "The customer could not verify their identity.",
    identity_not_provided: "The customer did not give the email address on the account.",
    time_limit: "The conversation ran past its time limit.",
    turn_limit: "The conversation ran past its turn limit.",
    unclear_response: "The customer's answers stayed unclear.",
  };
  const STATUS_LABEL = { queued: "Queued", claimed: "Claimed", resolved: "Resolved", returned: "Returned to bot" };
  const ROLE_LABEL = { customer: "Customer", bot: "Bot", technician: "Technician", system: "System" };

  const $ = (id) => document.getElementById(id);
  const ui = {
    signIn: $("sign-in"),
    keyForm: $("key-form"),
    keyInput: $("key-input"),
    keyError: $("key-error"),
    keySubmit: $("key-submit"),
    who: $("who"),
    whoName: $("who-name"),
    signOut: $("sign-out"),
    desk: $("desk"),
    filters: $("filters"),
    fStatus: $("f-status"),
    fPriority: $("f-priority"),
    fCategory: $("f-category"),
    queue: $("queue"),
    queueMeta: $("queue-meta"),
    queueEmpty: $("queue-empty"),
    queueError: $("queue-error"),
    pane: $("packet"),
    placeholder: $("packet-placeholder"),
    view: $("packet-view"),
  };

  let key = sessionStorage.getItem(KEY);
  let me = null;
  let tickets = [];
  const categories = new Set();
  let queueTimer = null;
  let packetTimer = null;
  let selected = null; // packet id shown on the right
  let detail = null; // its last detail answer
  let parts = null; // live parts of the packet view

  // ---- signing in ------------------------------------------------------------------------------

  async function signIn(candidate) {
    me = await api("GET", "/me", { token: candidate });
    key = candidate;
    sessionStorage.setItem(KEY, key);
    ui.whoName.textContent = `${me.name} · ${me.role === "admin" ? "Admin" : "L2 technician"}`;
    ui.who.hidden = false;
    ui.signIn.hidden = true;
    ui.desk.hidden = false;
    pollQueue();
    route();
  }

  function signOut(message) {
    key = null;
    me = null;
    sessionStorage.removeItem(KEY);
    clearTimeout(queueTimer);
    clearTimeout(packetTimer);
    selected = null;
    ui.who.hidden = true;
    ui.desk.hidden = true;
    ui.signIn.hidden = false;
    ui.keyError.textContent = message || "";
    ui.keyError.hidden = !message;
    ui.keyInput.value = "";
    ui.keyInput.focus();
  }

  ui.keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = ui.keyInput.value.trim();
    if (!candidate) {
      ui.keyError.textContent = "Paste your API key first.";
      ui.keyError.hidden = false;
      return;
    }
    ui.keySubmit.disabled = true;
    try {
      await signIn(candidate);
    } catch (err) {
      const why =
        err.status === 401
          ? "That key was not recognised. Check it, or ask an admin for a new one."
          : err.status === 403
            ? "That key cannot open the desk: it needs the l2 or admin role."
            : err.message;
      ui.keyError.textContent = why;
      ui.keyError.hidden = false;
    } finally {
      ui.keySubmit.disabled = false;
    }
  });

  ui.signOut.addEventListener("click", () => signOut(""));

  /** Every call to the desk API; a refused key signs the technician out with the reason. */
  async function call(method, path, body) {
    try {
      return await api(method, path, { token: key, body });
    } catch (err) {
      if (err.status === 401) signOut(`Signed out: ${err.message}`);
      throw err;
    }
  }

  // ---- SLA countdowns --------------------------------------------------------------------------

  function flagOf(ticket, remaining) {
    if (ticket.status === "resolved" || ticket.status === "returned") return "done";
    if (ticket.breached || (ticket.at_risk && remaining < 0)) return "breached";
    if (ticket.at_risk) return "at-risk";
    return "";
  }

  function countdownText(remaining, flag, status) {
    if (flag === "done") return STATUS_LABEL[status] || status;
    return remaining >= 0 ? `due in ${clock(remaining)}` : `${clock(remaining)} overdue`;
  }

  function tick() {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-due]")) {
      const remaining = (Date.parse(node.dataset.due) - now) / 1000;
      const ticket = tickets.find((t) => t.packet_id === node.dataset.packet) || JSON.parse(node.dataset.ticket || "{}");
      const flag = flagOf(ticket, remaining);
      node.textContent = countdownText(remaining, flag, ticket.status);
      node.className = `countdown${flag ? ` is-${flag}` : ""}`;
      const row = node.closest(".ticket");
      if (row) {
        row.classList.toggle("is-at-risk", flag === "at-risk");
        row.classList.toggle("is-breached", flag === "breached");
        const label = row.querySelector(".flag");
        if (label) {
          label.hidden = flag !== "at-risk" && flag !== "breached";
          label.textContent = flag === "breached" ? "Breached" : "At risk";
          label.className = `flag badge ${flag === "breached" ? "badge-danger" : "badge-warn"}`;
        }
      }
    }
  }
  setInterval(tick, 1000);

  // ---- the queue -------------------------------------------------------------------------------

  function queuePath() {
    const params = new URLSearchParams({ status: ui.fStatus.value });
    if (ui.fPriority.value) params.set("priority", ui.fPriority.value);
    if (ui.fCategory.value) params.set("category", ui.fCategory.value);
    return `/handoffs?${params}`;
  }

  let queueAsk = 0; // only the latest request's answer is shown, whatever order answers arrive in

  async function pollQueue() {
    clearTimeout(queueTimer);
    if (!key) return;
    const ask = ++queueAsk;
    try {
      const answer = await call("GET", queuePath());
      if (ask !== queueAsk) return;
      tickets = answer;
      ui.queueError.hidden = true;
      renderQueue();
    } catch (err) {
      if (!key || ask !== queueAsk) return;
      ui.queueError.textContent = `Couldn't refresh the queue: ${err.message}`;
      ui.queueError.hidden = false;
    }
    queueTimer = setTimeout(pollQueue, QUEUE_POLL_MS);
  }

  function updateCategories() {
    for (const t of tickets) if (t.category) categories.add(t.category);
    const current = ui.fCategory.value;
    const have = new Set([...ui.fCategory.options].map((o) => o.value));
    for (const c of [...categories].sort()) {
      if (!have.has(c)) ui.fCategory.append(new Option(c, c));
    }
    ui.fCategory.value = current;
  }

  function renderQueue() {
    updateCategories();
    const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.packet : null;
    const items = tickets.map((t) => {
      const li = document.createElement("li");
      const a = el("a", "ticket");
      a.href = `#/${encodeURIComponent(t.packet_id)}`;
      a.dataset.packet = t.packet_id;
      if (t.packet_id === selected) a.setAttribute("aria-current", "true");

      const top = el("div", "ticket-top");
      top.append(el("span", `badge badge-${t.priority}`, t.priority), el("span", "ticket-id", t.packet_id));
      const due = el("span", "countdown");
      due.dataset.due = t.first_response_due;
      due.dataset.packet = t.packet_id;
      due.title = `First response due ${localTime(t.first_response_due)}`;
      top.append(due);

      const meta = el("div", "ticket-meta");
      const st = el("span", `badge ${t.status === "claimed" ? "badge-ok" : "badge-soft"}`);
      st.textContent = t.status === "claimed" && t.claimed_by ? `Claimed by ${t.claimed_by}` : STATUS_LABEL[t.status] || t.status;
      const flag = el("span", "flag badge badge-warn", "At risk");
      flag.hidden = true;
      meta.append(st, flag);
      meta.append(
        el("span", null, t.category || "uncategorised"),
        el("span", null, t.channel),
        el("span", null, `sentiment: ${t.sentiment_label}`),
        el("span", null, `opened ${localTime(t.created_at)}`),
      );
      a.append(top, el("div", "ticket-summary", t.summary || "(no summary)"), meta);
      li.append(a);
      return li;
    });
    ui.queue.replaceChildren(...items);
    ui.queueEmpty.hidden = tickets.length > 0;
    const now = new Date();
    ui.queueMeta.textContent = `${tickets.length} ticket${tickets.length === 1 ? "" : "s"} · updated ${now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })}`;
    tick();
    if (focusedId) {
      const again = ui.queue.querySelector(`[data-packet="${CSS.escape(focusedId)}"]`);
      if (again) again.focus();
    }
  }

  ui.filters.addEventListener("change", () => pollQueue());
  ui.filters.addEventListener("submit", (e) => e.preventDefault());

  // ---- one ticket ------------------------------------------------------------------------------

  function route() {
    const match = location.hash.match(/^#\/(.+)$/);
    const id = match ? decodeURIComponent(match[1]) : null;
    if (id && key) openPacket(id);
  }
  window.addEventListener("hashchange", route);

  async function openPacket(id) {
    clearTimeout(packetTimer);
    if (id !== selected) {
      selected = id;
      detail = null;
      parts = null;
      ui.view.replaceChildren();
      for (const a of ui.queue.querySelectorAll(".ticket")) {
        if (a.dataset.packet === id) a.setAttribute("aria-current", "true");
        else a.removeAttribute("aria-current");
      }
    }
    await pollPacket(true);
  }

  let packetAsk = 0;

  async function pollPacket(first) {
    clearTimeout(packetTimer);
    const id = selected;
    if (!id || !key) return;
    const ask = ++packetAsk;
    try {
      const next = await call("GET", `/handoffs/${encodeURIComponent(id)}`);
      if (id !== selected || ask !== packetAsk) return;
      detail = next;
      if (!parts) buildPacket(next);
      updatePacket(next);
      if (first) ui.pane.focus();
    } catch (err) {
      if (id !== selected || !key || ask !== packetAsk) return;
      if (!parts) {
        ui.placeholder.hidden = true;
        ui.view.hidden = false;
        ui.view.replaceChildren(el("div", "error", `Couldn't open ${id}: ${err.message}`));
        ui.view.firstChild.setAttribute("role", "alert");
        return;
      }
    }
    packetTimer = setTimeout(() => pollPacket(false), PACKET_POLL_MS);
  }

  function card(title, className) {
    const section = el("section", `card${className ? ` ${className}` : ""}`);
    section.append(el("h3", null, title));
    return section;
  }

  function kv(pairs) {
    const dl = el("dl", "kv");
    for (const [k, v] of pairs) {
      if (v === undefined) continue;
      dl.append(el("dt", null, k));
      const dd = el("dd");
      if (v instanceof Node) dd.append(v);
      else dd.textContent = v === null || v === "" ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v);
      dl.append(dd);
    }
    return dl;
  }

  function humanKey(k) {
    return String(k).replace(/_/g, " ");
  }

  function buildPacket(d) {
    const p = d.packet;
    ui.placeholder.hidden = true;
    ui.view.hidden = false;

    // Head: id, priority, status, summary, due times.
    const head = el("header", "packet-head");
    const title = el("div", "packet-title");
    const h2 = el("h2", null, p.packet_id);
    const status = el("span", "badge badge-soft");
    title.append(el("span", `badge badge-${p.sla.priority}`, `Priority ${p.sla.priority}`), h2, status);
    const due = el("div", "due-row");
    const first = el("span");
    first.append("First response by ", el("strong", null, localTime(p.sla.first_response_due)), " · ");
    const firstCountdown = el("span", "countdown");
    firstCountdown.dataset.due = p.sla.first_response_due;
    firstCountdown.dataset.packet = p.packet_id;
    first.append(firstCountdown);
    const resolve = el("span");
    resolve.append("Resolve by ", el("strong", null, localTime(p.sla.resolve_due)));
    due.append(
      first,
      resolve,
      el("span", null, `Opened ${localTime(p.created_at)} via ${p.channel}`),
      el("span", null, `Conversation ${p.conversation_id}`),
    );
    head.append(title, el("p", "packet-summary", p.summary || "(no summary)"), due);

    const notice = el("div", "notice");
    notice.setAttribute("role", "alert");
    notice.hidden = true;
    const actions = el("div", "actions");
    actions.setAttribute("aria-label", "Actions");

    // Hypothesis and why it came to L2.
    const hyp = card("Working hypothesis", "wide");
    // Runbook notes come hard-wrapped: join wrapped lines, keep paragraph breaks.
    hyp.append(el("p", "hypothesis", (p.hypothesis || "—").replace(/([^\n])\n(?!\n)/g, "$1 ")));

    const why = card("Why it was handed off");
    const reasons = el("div", "reasons");
    for (const code of p.reason_codes || []) {
      const r = el("div", "reason");
      r.append(el("code", null, code));
      if (REASONS[code]) r.append(el("span", null, REASONS[code]));
      reasons.append(r);
    }
    if (!(p.reason_codes || []).length) reasons.append(el("p", "muted", "No reason recorded."));
    const senti = el("div", "sentiment");
    const meter = el("span", "meter");
    meter.setAttribute("role", "img");
    meter.setAttribute("aria-label", `Sentiment ${p.sentiment.score.toFixed(2)} on a scale from -1 to 1`);
    const needle = el("i");
    needle.style.left = `${((Math.max(-1, Math.min(1, p.sentiment.score)) + 1) / 2) * 100}%`;
    meter.append(needle);
    senti.append(el("span", null, "Sentiment:"), el("strong", null, p.sentiment.label), meter, el("span", "muted", p.sentiment.score.toFixed(2)));
    why.append(reasons, senti);

    // The customer as the tools saw them.
    const cust = card("Customer");
    const c = p.customer || {};
    const verified = el("span", `badge ${c.verified ? "badge-ok" : "badge-warn"}`, c.verified ? "✓ Verified" : "Not verified");
    cust.append(
      kv([
        ["Identity", verified],
        ["Verified at", c.verified ? localTime(c.verified_at) : undefined],
        ["Email given", c.email],
        ["Account", c.account_id],
      ]),
    );
    const account = c.account_state || null;
    if (account && Object.keys(account).length) {
      cust.append(el("h3", "sub", "Account state"));
      cust.append(kv(Object.entries(account).map(([k, v]) => [humanKey(k), v])));
    } else {
      cust.append(el("p", "muted small", "The tools never looked up an account in this conversation."));
    }

    // Routing.
    const routing = card("Routing");
    const started = p.started_runbook_id && p.started_runbook_id !== p.runbook_id ? [["Started with", p.started_runbook_id]] : [];
    const slots = Object.entries(p.slots || {}).map(([k, v]) => [`slot ${humanKey(k)}`, v]);
    routing.append(kv([["Category", p.category], ["Runbook", p.runbook_id], ...started, ...slots]));
    const cands = el("ol", "candidates");
    cands.setAttribute("aria-label", "Runbook candidates with scores");
    for (const cand of p.runbook_candidates || []) {
      const li = el("li", cand.runbook_id === p.runbook_id ? "is-chosen" : "");
      const bar = el("span", "bar");
      const fill = el("i");
      fill.style.width = `${Math.max(0, Math.min(1, cand.score)) * 100}%`;
      bar.append(fill);
      li.append(el("span", "name", cand.runbook_id), bar, el("span", "score", cand.score.toFixed(2)));
      cands.append(li);
    }
    if ((p.runbook_candidates || []).length) routing.append(cands);

    // What was tried.
    const tried = card("What the bot tried");
    const list = el("ol", "attempts");
    for (const a of p.attempts || []) {
      const failed = a.kind === "tool" && a.ok === false;
      const li = el("li", `attempt ${a.kind === "tool" ? (a.ok ? "is-ok" : failed ? "is-failed" : "") : ""}`);
      const mark = el("span", "mark", a.kind === "tool" ? (a.ok ? "✓" : failed ? "✗" : "•") : String((a.step || 0) + 1));
      mark.setAttribute("aria-hidden", "true");
      const body = el("div");
      const name =
        a.kind === "tool"
          ? `Tool ${a.tool}: ${a.ok ? "succeeded" : failed ? "failed" : "ran"}`
          : a.kind === "answer"
            ? `Answer to step ${(a.step || 0) + 1}: ${a.outcome}`
            : `Step ${(a.step || 0) + 1} shown to the customer`;
      body.append(el("div", "title", name));
      const when = el("span", "muted small", localTime(a.at));
      body.firstChild.append(" ", when);
      // A step's own detail only repeats its title.
      if (a.detail && !(a.kind === "step" && /^step shown/i.test(a.detail))) body.append(el("div", "detail", a.detail));
      const pairs = [];
      for (const [k, v] of Object.entries(a.args || {})) pairs.push([`arg ${humanKey(k)}`, v]);
      for (const [k, v] of Object.entries(a.result || {})) pairs.push([humanKey(k), v]);
      if (pairs.length) body.append(kv(pairs));
      li.append(mark, body);
      list.append(li);
    }
    if ((p.attempts || []).length) tried.append(list);
    else tried.append(el("p", "muted", "Nothing was tried before the handoff."));

    // The live conversation, and the reply box for whoever holds the claim.
    const convo = card("Conversation (redacted, live)", "wide");
    const transcript = el("ol", "transcript");
    transcript.setAttribute("aria-label", "Transcript");
    transcript.setAttribute("aria-live", "polite");
    convo.append(transcript);
    const reply = el("form", "reply-form");
    reply.hidden = true;
    const label = el("label", null, "Reply to the customer");
    label.htmlFor = "reply-text";
    const textarea = el("textarea");
    textarea.id = "reply-text";
    textarea.required = true;
    textarea.placeholder = "Your reply goes to the customer's chat or email.";
    const row = el("div", "row");
    const sendBtn = el("button", "btn btn-primary", "Send reply");
    sendBtn.type = "submit";
    row.append(sendBtn);
    reply.append(label, textarea, row);
    reply.addEventListener("submit", (e) => {
      e.preventDefault();
      sendReply();
    });
    textarea.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) reply.requestSubmit();
    });
    convo.append(reply);

    const history = card("History", "wide");
    const events = el("ol", "events");
    history.append(events);

    const grid = el("div", "grid");
    grid.append(hyp, why, cust, routing, tried, convo, history);
    ui.view.replaceChildren(head, notice, actions, grid);
    parts = { status, notice, actions, transcript, reply, textarea, sendBtn, events, seqs: new Set(), actionKey: "", createdAt: Date.parse(p.created_at), dividerShown: false };
  }

  function showNotice(kind, text) {
    parts.notice.className = `notice is-${kind}`;
    parts.notice.textContent = text;
    parts.notice.hidden = !text;
  }

  function mine(d) {
    return d.status === "claimed" && me && d.claimed_by === me.name;
  }

  function updatePacket(d) {
    parts.status.textContent = d.status === "claimed" && d.claimed_by ? `Claimed by ${d.claimed_by}` : STATUS_LABEL[d.status] || d.status;
    parts.status.className = `badge ${d.status === "claimed" ? "badge-ok" : "badge-soft"}`;
    const countdown = ui.view.querySelector(".packet-head .countdown");
    if (countdown) {
      const listed = tickets.find((t) => t.packet_id === d.packet.packet_id);
      countdown.dataset.ticket = JSON.stringify({ status: d.status, at_risk: listed ? listed.at_risk : false, breached: listed ? listed.breached : false });
    }

    // Actions change only with the status or the claim, so a half-written note survives a refresh.
    const actionKey = `${d.status}|${d.claimed_by || ""}`;
    if (actionKey !== parts.actionKey) {
      parts.actionKey = actionKey;
      renderActions(d);
    }
    parts.reply.hidden = !mine(d);

    for (const line of d.transcript || []) addTranscriptLine(line);

    parts.events.replaceChildren(
      ...(d.events || []).map((e) => {
        const li = el("li");
        const t = el("time", null, localTime(e.at));
        t.dateTime = e.at;
        li.append(t, el("b", null, e.actor), el("span", null, e.action));
        if (e.note) li.append(el("span", "muted", `“${e.note}”`));
        return li;
      }),
    );
    tick();
  }

  function addTranscriptLine(line) {
    if (parts.seqs.has(line.seq)) return;
    parts.seqs.add(line.seq);
    const at = Date.parse(line.at);
    if (!parts.dividerShown && at > parts.createdAt && line.role !== "bot") {
      parts.dividerShown = true;
      parts.transcript.append(el("li", "line role-system", "— handed off to L2; everything below came after —"));
    }
    const li = el("li", `line role-${line.role}${at > parts.createdAt ? " is-after" : ""}`);
    const who = el("span", "who");
    const role = ROLE_LABEL[line.role] || line.role;
    who.append(el("b", null, line.author && line.role !== "system" ? `${role} ${line.author}` : role));
    who.append(` · ${localTime(line.at)} · ${line.channel}`);
    const text = el("span", "text");
    appendRich(text, line.text);
    li.append(who, text);
    parts.transcript.append(li);
    parts.transcript.scrollTop = parts.transcript.scrollHeight;
  }

  function renderActions(d) {
    const bar = parts.actions;
    bar.replaceChildren();
    if (d.status === "queued" || (d.status === "claimed" && !mine(d))) {
      const claim = el("button", "btn btn-primary", "Claim ticket");
      claim.type = "button";
      claim.addEventListener("click", () => act(claim, "claim", null));
      bar.append(claim);
      if (d.status === "claimed") {
        bar.append(el("span", "muted", `${d.claimed_by} holds this ticket; only they can reply.`));
      } else {
        bar.append(el("span", "muted", "Claim it to reply; the bot goes quiet while you hold it."));
      }
    } else if (mine(d)) {
      bar.append(el("span", "badge badge-ok", "You hold this ticket"));
      bar.append(el("span", "spacer"));
      const resolve = el("button", "btn btn-ok", "Resolve…");
      resolve.type = "button";
      resolve.addEventListener("click", () => noteForm("resolve", "Resolve", "Resolution note", true));
      const back = el("button", "btn btn-quiet", "Return to bot…");
      back.type = "button";
      back.addEventListener("click", () => noteForm("return", "Return to bot", "Why it goes back to the bot", false));
      bar.append(resolve, back);
    } else {
      bar.append(el("span", "muted", d.status === "resolved" ? "Resolved. Nothing left to do." : "Returned to the bot; it answers the customer again."));
    }
  }

  function noteForm(action, verb, labelText, required) {
    const bar = parts.actions;
    const form = el("form", "note-form");
    const id = `note-${action}`;
    const label = el("label", null, labelText + (required ? "" : " (optional)"));
    label.htmlFor = id;
    const text = el("textarea");
    text.id = id;
    text.required = required;
    const teach = action === "resolve" ? teachFields() : null;
    const row = el("div", "row");
    const cancel = el("button", "btn btn-quiet", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => {
      parts.actionKey = "";
      updatePacket(detail);
    });
    const go = el("button", action === "resolve" ? "btn btn-ok" : "btn btn-primary", verb);
    go.type = "submit";
    row.append(cancel, go);
    form.append(label, text, ...(teach ? [teach.node] : []), row);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (required && !text.value.trim()) {
        showNotice("conflict", "Write a resolution note first: the next person to read this ticket needs it.");
        text.focus();
        return;
      }
      const lesson = teach ? teach.lesson() : {};
      if (lesson === null) return;
      act(go, action, { note: text.value.trim(), ...lesson });
    });
    bar.replaceChildren(form);
    text.focus();
  }

  // "Could the bot have handled this?": the resolution teaches the bot (POST …/resolve's lesson fields).
  function teachFields() {
    const box = el("fieldset", "teach");
    box.append(el("legend", null, "Could the bot have handled this?"));
    const choices = [["no", "No, it needed a person"], ["runbook", "Yes, with this runbook"], ["new", "Yes, with a runbook we lack"]];
    const radios = {};
    for (const [value, text] of choices) {
      const label = el("label", "teach-choice");
      const radio = el("input");
      Object.assign(radio, { type: "radio", name: "teach", value, checked: value === "no", id: `teach-choice-${value}` });
      label.append(radio, ` ${text}`);
      box.append(label);
      radios[value] = radio;
    }
    const pick = el("select");
    pick.id = "teach-runbook";
    pick.setAttribute("aria-label", "The runbook that could have handled it");
    pick.append(el("option", null, "Loading runbooks…"));
    call("GET", "/runbooks").then((runbooks) => {
      pick.replaceChildren(...runbooks.map((rb) => Object.assign(el("option", null, `${rb.title} (${rb.id})`), { value: rb.id })));
    }).catch((err) => pick.replaceChildren(el("option", null, `Could not load runbooks: ${err.message}`)));
    const title = Object.assign(el("input"), { id: "teach-title", placeholder: "Title of the missing runbook", ariaLabel: "Title of the missing runbook" });
    const steps = Object.assign(el("textarea"), { id: "teach-steps", placeholder: "The steps that solved it, one a line", ariaLabel: "Steps of the missing runbook" });
    const more = { runbook: [pick], new: [title, steps] };
    const show = () => {
      for (const [value, nodes] of Object.entries(more)) for (const n of nodes) n.hidden = !radios[value].checked;
    };
    for (const radio of Object.values(radios)) radio.addEventListener("change", show);
    box.append(pick, title, steps);
    show();
    const lesson = () => {
      if (radios.runbook.checked) return { bot_could_have: { runbook_id: pick.value } };
      if (!radios.new.checked) return {};
      const lines = steps.value.split("\n").map((line) => line.trim()).filter(Boolean);
      if (title.value.trim().length < 3 || !lines.length) {
        showNotice("conflict", "Give the missing runbook a title and at least one step.");
        return null;
      }
      return { new_runbook: { title: title.value.trim(), steps: lines } };
    };
    return { node: box, lesson };
  }

  async function act(button, action, body) {
    const id = selected;
    button.disabled = true;
    showNotice("", "");
    try {
      const out = await call("POST", `/handoffs/${encodeURIComponent(id)}/${action}`, body || undefined);
      const done = { claim: "You hold this ticket now; the bot stays quiet.", resolve: "Resolved.", return: "Returned to the bot." };
      const taught = out && out.suggestion_id ? ` Thanks: ${out.suggestion_id} goes to the runbook authors.` : "";
      showNotice("info", done[action] + taught);
    } catch (err) {
      showNotice("conflict", err.status === 409 ? `Conflict: ${err.message}` : err.message);
    } finally {
      button.disabled = false;
      parts.actionKey = "";
      await pollPacket(false);
      pollQueue();
    }
  }

  async function sendReply() {
    const text = parts.textarea.value.trim();
    if (!text) {
      showNotice("conflict", "Write a reply first.");
      parts.textarea.focus();
      return;
    }
    parts.sendBtn.disabled = true;
    try {
      const out = await call("POST", `/handoffs/${encodeURIComponent(selected)}/reply`, { text });
      if (out && out.line) addTranscriptLine(out.line);
      parts.textarea.value = "";
      showNotice("", "");
    } catch (err) {
      showNotice("conflict", err.status === 409 ? `Conflict: ${err.message}` : err.message);
    } finally {
      parts.sendBtn.disabled = false;
      parts.textarea.focus();
    }
  }

  // ---- start -----------------------------------------------------------------------------------

  if (key) {
    signIn(key).catch((err) => signOut(err.status === 401 ? "Your key was refused; sign in again." : err.message));
  } else {
    signOut("");
  }
})();
