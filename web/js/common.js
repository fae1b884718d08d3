/* Helpers shared by the chat and desk pages: HTTP calls with clear errors, safe text, times. */
"use strict";

const Tierone = (() => {
  /** An HTTP answer that was not 2xx, carrying the API's `detail` in words. */
  class ApiError extends Error {
    constructor(status, detail, retryAfter) {
      super(detail);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  /** Turn FastAPI's `detail` (a string, or a list of validation problems) into one sentence. */
  function describeDetail(detail, status) {
    if (typeof detail === "string" && detail.trim()) return detail;
    if (Array.isArray(detail) && detail.length) {
      return detail
        .map((d) => {
          const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
          return where ? `${where}: ${d.msg}` : d.msg;
        })
        .join("; ");
    }
    const generic = {
      400: "The request was not accepted.",
      401: "You are not signed in, or the key is not valid.",
      403: "You are not allowed to do that.",
      404: "Not found.",
      409: "Someone else changed this first.",
      413: "That is too long to send.",
      422: "The request was not valid.",
      429: "Too many messages at once. Please wait a moment.",
    };
    return generic[status] || `The server answered ${status}. Please try again.`;
  }

  /** Call the API with JSON in and out; throws ApiError with the server's reason on 4xx/5xx. */
  async function api(method, path, { token, body } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "Can't reach the support service. Check your connection and try again.");
    }
    let payload = null;
    const text = await response.text();
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch (err) {
        payload = null;
      }
    }
    if (!response.ok) {
      const retry = Number(response.headers.get("Retry-After")) || null;
      let detail = describeDetail(payload && payload.detail, response.status);
      if (response.status === 429 && retry) detail = `${detail} (try again in ${retry} s)`;
      throw new ApiError(response.status, detail, retry);
    }
    return payload;
  }

  /** Append text to an element, turning http(s) links into anchors; never parses HTML. */
  function appendLinkified(el, text) {
    const pattern = /\bhttps?:\/\/[^\s<>"')\]]+/g;
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) el.append(text.slice(last, match.index));
      const a = document.createElement("a");
      a.href = match[0];
      a.textContent = match[0];
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      el.append(a);
      last = match.index + match[0].length;
    }
    if (last < text.length) el.append(text.slice(last));
  }

  /** Append text, showing redaction markers such as "[email]" as labelled chips and links as anchors. */
  function appendRich(el, text) {
    const pattern = /\[([a-z][a-z _-]{1,24})\]/g;
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) appendLinkified(el, text.slice(last, match.index));
      const chip = document.createElement("span");
      chip.className = "redacted";
      chip.textContent = match[1];
      chip.title = `A ${match[1]} was here; it is hidden to protect your data.`;
      el.append(chip);
      last = match.index + match[0].length;
    }
    if (last < text.length) appendLinkified(el, text.slice(last));
  }

  /** Create an element with a class and text. */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  /** "14:05" today, "Tue 24 Nov, 09:15" on another day, in the viewer's local time zone. */
  function localTime(iso, now = new Date()) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (sameDay(d, now)) return time;
    const day = d.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
    return `${day}, ${time}`;
  }

  /** "1:02:05", "12:05" or "0:09" for a number of seconds (sign ignored). */
  function clock(seconds) {
    const s = Math.floor(Math.abs(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = String(s % 60).padStart(2, "0");
    if (h >= 48) return `${Math.floor(h / 24)}d ${h % 24}h`;
    return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
  }

  return { ApiError, api, appendLinkified, appendRich, el, localTime, clock };
})();
