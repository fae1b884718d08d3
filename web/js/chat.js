/* The customer chat: one conversation, kept in localStorage, live through the SSE stream. */
"use strict";

(() => {
  const { api, appendRich, el, localTime } = Tierone;
  const STORE = "tierone.chat";
  const SUGGESTIONS = ["I forgot my password", "My account is locked", "Is the service down?", "My VPN keeps disconnecting"];

  const $ = (id) => document.getElementById(id);
  const ui = {
    scroller: $("scroller"),
    messages: $("messages"),
    typing: $("typing"),
    banner: $("handoff-banner"),
    presence: $("presence"),
    presenceText: $("presence-text"),
    error: $("error"),
    form: $("composer"),
    input: $("composer-input"),
    send: $("send"),
    copy: $("copy-link"),
    restart: $("new-conversation"),
  };

  let conv = null; // {id, token}
  let lastSeq = 0;
  const seen = new Map(); // seq -> <li>
  let pending = null; // the customer's own message, shown until the server's copy arrives
  let status = "bot";
  let handoff = null;
  let technician = null;
  let stream = null;
  let retryDelay = 1000;
  let retryTimer = null;
  let welcome = null;
  let unanswered = null; // {text, id} of a message whose answer never came; a resend reuses its id

  /** An id for one customer message, so a resend after a lost answer is not played twice. */
  function messageId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---- storage ---------------------------------------------------------------------------------

  function loadStored() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.get("c") && params.get("t")) {
      const fromLink = { id: params.get("c"), token: params.get("t") };
      saveStored(fromLink);
      // The token is the customer's key to the conversation: keep it out of the address bar and history.
      history.replaceState(null, "", location.pathname);
      return fromLink;
    }
    try {
      const stored = JSON.parse(localStorage.getItem(STORE) || "null");
      if (stored && typeof stored.id === "string" && typeof stored.token === "string") return stored;
    } catch (err) {
      /* an unreadable entry counts as none */
    }
    return null;
  }

  function saveStored(value) {
    if (value) localStorage.setItem(STORE, JSON.stringify(value));
    else localStorage.removeItem(STORE);
  }

  function shareLink() {
    return `${location.origin}/chat#c=${encodeURIComponent(conv.id)}&t=${encodeURIComponent(conv.token)}`;
  }

  // ---- rendering -------------------------------------------------------------------------------

  function nearBottom() {
    const s = ui.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }

  function scrollDown() {
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
  }

  function initials(name) {
    const parts = String(name || "Support").trim().split(/\s+/);
    return (parts[0][0] + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
  }

  function botAvatar() {
    const span = el("span", "avatar avatar-bot");
    span.setAttribute("aria-hidden", "true");
    const img = document.createElement("img");
    img.src = "/static/favicon.svg";
    img.alt = "";
    img.width = 20;
    img.height = 20;
    span.append(img);
    return span;
  }

  function messageItem(role, text, at, author, shown) {
    const li = el("li", `msg msg-${role}`);
    if (role === "system") {
      const notice = el("p", "notice", text);
      li.append(notice);
      return li;
    }
    const body = el("div", "msg-body");
    const bubble = el("div", "bubble");
    // What this tab's customer typed stays as typed here; the stored copy has personal data redacted.
    if (shown !== undefined && shown !== text) {
      bubble.append(shown);
      bubble.title = "Stored with personal details hidden";
    } else appendRich(bubble, text);
    const meta = el("div", "meta");
    const who = el("span", "who");
    if (role === "customer") who.textContent = "You";
    else if (role === "technician") who.textContent = `${author || "Support"} · Support technician`;
    else who.textContent = "Assistant";
    meta.append(who);
    if (at) meta.append(` · ${localTime(at)}`);
    body.append(bubble, meta);
    if (role === "bot") li.append(botAvatar());
    if (role === "technician") {
      const avatar = el("span", "avatar avatar-tech", initials(author));
      avatar.setAttribute("aria-hidden", "true");
      li.append(avatar);
    }
    li.append(body);
    return li;
  }

  function addLine(line) {
    if (!line || typeof line.seq !== "number" || seen.has(line.seq)) return;
    hideWelcome();
    const stick = nearBottom();
    let typed;
    if (line.role === "customer" && pending) {
      typed = pending.dataset.typed;
      pending.remove();
      pending = null;
    }
    if (line.role === "technician" && line.author) technician = line.author;
    const li = messageItem(line.role, line.text, line.at, line.author, typed);
    li.dataset.seq = String(line.seq);
    li.dataset.role = line.role;
    // Lines normally arrive in order; one that arrives late goes to its place.
    let before = null;
    if (line.seq < lastSeq) {
      for (const [seq, node] of seen) {
        if (seq > line.seq && (!before || seq < Number(before.dataset.seq))) before = node;
      }
    }
    ui.messages.insertBefore(li, before || (pending && pending.parentNode === ui.messages ? pending : null));
    seen.set(line.seq, li);
    lastSeq = Math.max(lastSeq, line.seq);
    if (line.role !== "customer") ui.typing.hidden = true;
    if (stick || line.role === "customer") scrollDown();
  }

  function showPending(text) {
    hideWelcome();
    pending = messageItem("customer", text, new Date().toISOString(), null);
    pending.classList.add("is-pending");
    pending.dataset.typed = text;
    pending.setAttribute("aria-hidden", "true"); // announced once the server has it
    ui.messages.append(pending);
    scrollDown();
  }

  function showWelcome() {
    if (welcome) return;
    welcome = el("section", "welcome");
    welcome.setAttribute("aria-labelledby", "welcome-title");
    const img = document.createElement("img");
    img.src = "/static/favicon.svg";
    img.alt = "";
    img.width = 48;
    img.height = 48;
    const title = el("h2", null, "Hi, how can we help?");
    title.id = "welcome-title";
    const text = el(
      "p",
      null,
      "Our virtual assistant solves most account and IT problems in a few minutes, and passes you to a person whenever it can't.",
    );
    const chips = el("div", "suggestions");
    for (const s of SUGGESTIONS) {
      const chip = el("button", "suggestion", s);
      chip.type = "button";
      chip.addEventListener("click", () => {
        ui.input.value = s;
        ui.form.requestSubmit();
      });
      chips.append(chip);
    }
    welcome.append(img, title, text, chips);
    ui.scroller.insertBefore(welcome, ui.messages);
  }

  function hideWelcome() {
    if (welcome) {
      welcome.remove();
      welcome = null;
    }
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = !message;
  }

  // ---- status and the handoff banner -----------------------------------------------------------

  const ICON_PERSON =
    '<svg class="banner-icon" viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="8" r="4" fill="currentColor"/><path d="M4 21c0-4.4 3.6-7 8-7s8 2.6 8 7" fill="currentColor"/></svg>';
  const ICON_CHECK =
    '<svg class="banner-icon" viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="10" fill="currentColor"/><path d="m7.5 12.5 3 3 6-6.5" stroke="#fff" stroke-width="2.2" fill="none" stroke-linecap="round"/></svg>';

  function setBanner(kind, iconSvg, title, details) {
    ui.banner.className = `banner is-${kind}`;
    ui.banner.replaceChildren();
    const icon = document.createElement("template");
    icon.innerHTML = iconSvg; // a constant of this file, never data
    const body = el("div", "banner-body");
    body.append(el("strong", null, title));
    if (details.length) {
      const meta = el("div", "banner-meta");
      for (const d of details) meta.append(el("span", null, d));
      body.append(meta);
    }
    ui.banner.append(icon.content, body);
    ui.banner.hidden = false;
  }

  function applyStatus(next, nextHandoff, nextTechnician) {
    const stick = nearBottom(); // the banner takes room from the messages: keep the latest in view
    status = next || "bot";
    if (nextHandoff !== undefined) handoff = nextHandoff;
    if (nextTechnician) technician = nextTechnician;
    ui.presence.className = `brand-status is-${status}`;
    if (status === "queued") {
      ui.presenceText.textContent = "Waiting for a support technician";
      const details = [];
      if (handoff && handoff.packet_id) details.push(`Ticket ${handoff.packet_id}`);
      if (handoff && handoff.priority) details.push(`Priority ${handoff.priority}`);
      if (handoff && handoff.first_response_due) {
        details.push(`A technician will reply by ${localTime(handoff.first_response_due)} (your time)`);
      }
      details.push("You can keep writing here; it all goes to your ticket.");
      setBanner("queued", ICON_PERSON, "We've passed your conversation to a person.", details);
    } else if (status === "claimed") {
      const name = technician || "A support technician";
      ui.presenceText.textContent = `${name} from support is here`;
      const details = handoff && handoff.packet_id ? [`Ticket ${handoff.packet_id}`] : [];
      details.push("They can see everything you've told us so far.");
      setBanner("claimed", ICON_PERSON, `${name} has joined the conversation.`, details);
    } else if (status === "resolved") {
      ui.presenceText.textContent = "Resolved";
      const details = handoff && handoff.packet_id ? [`Ticket ${handoff.packet_id}`] : [];
      details.push("Write again any time if something else comes up.");
      setBanner("resolved", ICON_CHECK, "This conversation is resolved.", details);
    } else {
      ui.presenceText.textContent = "Virtual assistant · replies in seconds";
      ui.banner.hidden = true;
    }
    if (stick) scrollDown();
  }

  // ---- the live stream -------------------------------------------------------------------------

  function connect() {
    if (!conv) return;
    clearTimeout(retryTimer);
    if (stream) stream.close();
    const url = `/conversations/${encodeURIComponent(conv.id)}/events?token=${encodeURIComponent(conv.token)}&after=${lastSeq}`;
    const source = new EventSource(url);
    stream = source;
    source.addEventListener("open", () => {
      retryDelay = 1000;
      ui.presence.classList.remove("is-offline");
    });
    source.addEventListener("line", (event) => addLine(JSON.parse(event.data)));
    source.addEventListener("status", (event) => {
      const data = JSON.parse(event.data);
      applyStatus(data.status, data.handoff, data.technician);
    });
    source.addEventListener("error", () => {
      // Reconnect ourselves, from the last line we have, with a growing pause.
      source.close();
      if (stream !== source) return;
      stream = null;
      ui.presence.classList.add("is-offline");
      retryTimer = setTimeout(async () => {
        try {
          await refresh();
          connect();
        } catch (err) {
          if (err.status === 404 || err.status === 401) forget(err.message);
          else retryTimer = setTimeout(connect, retryDelay);
        }
      }, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15000);
    });
  }

  function streamOpen() {
    return stream && stream.readyState === EventSource.OPEN;
  }

  // ---- loading and sending ---------------------------------------------------------------------

  async function refresh() {
    const view = await api("GET", `/conversations/${encodeURIComponent(conv.id)}`, { token: conv.token });
    for (const line of view.transcript || []) addLine(line);
    applyStatus(view.status, view.handoff || null, null);
    return view;
  }

  function forget(reason) {
    if (stream) stream.close();
    stream = null;
    clearTimeout(retryTimer);
    conv = null;
    saveStored(null);
    ui.copy.hidden = true;
    ui.restart.hidden = true;
    if (reason) showError(`We couldn't open that conversation: ${reason} You can start a new one below.`);
    showWelcome();
  }

  function reset() {
    if (stream) stream.close();
    stream = null;
    clearTimeout(retryTimer);
    conv = null;
    saveStored(null);
    seen.clear();
    lastSeq = 0;
    pending = null;
    technician = null;
    ui.messages.replaceChildren();
    ui.copy.hidden = true;
    ui.restart.hidden = true;
    showError("");
    applyStatus("bot", null, null);
    showWelcome();
    ui.input.focus();
  }

  async function open() {
    ui.copy.hidden = false;
    ui.restart.hidden = false;
    try {
      await refresh();
      connect();
    } catch (err) {
      if (err.status === 404 || err.status === 401) forget(err.message);
      else {
        showError(err.message);
        connect();
      }
    }
  }

  function setBusy(busy) {
    ui.input.disabled = busy;
    ui.send.disabled = busy;
    ui.form.setAttribute("aria-busy", String(busy));
  }

  async function send(text) {
    showError("");
    setBusy(true);
    showPending(text);
    ui.input.value = "";
    grow();
    if (status !== "claimed") ui.typing.hidden = false;
    scrollDown();
    const clientMessageId = unanswered && unanswered.text === text ? unanswered.id : messageId();
    try {
      if (!conv) {
        const created = await api("POST", "/conversations", { body: { channel: "chat" } });
        conv = { id: created.conversation_id, token: created.token };
        saveStored(conv);
        ui.copy.hidden = false;
        ui.restart.hidden = false;
        connect();
      }
      const turn = await api("POST", `/conversations/${encodeURIComponent(conv.id)}/messages`, {
        token: conv.token,
        body: { text, client_message_id: clientMessageId },
      });
      unanswered = null;
      if (turn.status) applyStatus(turn.status, turn.handoff === undefined ? handoff : turn.handoff, null);
      // The stream normally delivers the lines; without it, read them back.
      if (!streamOpen()) await refresh();
    } catch (err) {
      if (pending) pending.remove();
      pending = null;
      ui.input.value = text; // nothing the customer typed is lost
      // No answer, or the server failed: the message may have been taken, so a resend keeps its id.
      unanswered = err.status === 0 || err.status >= 500 ? { text, id: clientMessageId } : null;
      grow();
      showError(err.message);
      if (conv && (err.status === 404 || err.status === 401)) forget(err.message);
    } finally {
      ui.typing.hidden = true;
      setBusy(false);
      ui.input.focus();
    }
  }

  function grow() {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight, 160)}px`;
  }

  // ---- wiring ----------------------------------------------------------------------------------

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.input.value.trim();
    if (!text) {
      showError("Type a message first.");
      ui.input.focus();
      return;
    }
    if (ui.input.disabled) return;
    send(text);
  });

  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });
  ui.input.addEventListener("input", grow);

  ui.copy.addEventListener("click", async () => {
    if (!conv) return;
    const label = ui.copy.textContent;
    try {
      await navigator.clipboard.writeText(shareLink());
      ui.copy.textContent = "Link copied";
    } catch (err) {
      window.prompt("Copy this link to open the conversation elsewhere:", shareLink());
    }
    setTimeout(() => (ui.copy.textContent = label), 2000);
  });

  ui.restart.addEventListener("click", () => {
    if (window.confirm("Start a new conversation? This one stays open through its link.")) reset();
  });

  window.addEventListener("hashchange", () => {
    const next = loadStored();
    if (next && (!conv || next.id !== conv.id)) {
      reset();
      conv = next;
      saveStored(conv);
      open();
    }
  });

  conv = loadStored();
  if (conv) open();
  else showWelcome();
  ui.input.focus();
})();
