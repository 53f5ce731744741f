// Small DOM and formatting helpers. Everything is built with DOM nodes (never innerHTML), so a
// runner's handle or a flag message can never inject markup.

/** h("button.secondary#go", {onclick}, "Go") -> an element. */
export function h(spec, attrs = {}, ...children) {
  const [, tag = "div", rest = ""] = /^([a-z0-9]+)?(.*)$/i.exec(spec);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs === null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the main view's content and move focus there (screen readers, one-handed use). */
export function render(...children) {
  const view = document.getElementById("view");
  view.replaceChildren();
  append(view, children);
  return view;
}

export function errorBox(err) {
  return h("div.error", { role: "alert" }, err?.detail || err?.message || String(err));
}

export function statusBadge(status) {
  return h(`span.status.${status || "pending"}`, status || "pending");
}

export function km(m) {
  if (m === null || m === undefined || Number.isNaN(m)) return "–";
  return m >= 1000 ? `${(m / 1000).toFixed(2)} km` : `${Math.round(m)} m`;
}

export function clock(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** Pace in min:ss per km, or "–" until there is enough distance to say. */
export function pace(seconds, metres, unit = " /km") {
  if (!metres || metres < 20 || !seconds) return "–";
  return `${clock((seconds / metres) * 1000)}${unit}`;
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { weekday: "short", day: "numeric", month: "short",
    hour: "2-digit", minute: "2-digit" });
}

/** A challenge value in its unit: metres, seconds, runs or drills. */
export function challengeValue(kind, value) {
  if (value === null || value === undefined) return "–";
  switch (kind) {
    case "distance": return km(value);
    case "time":
    case "best_time": return clock(value);
    case "sessions": return `${value} run${value === 1 ? "" : "s"}`;
    case "drills": return `${value} drill${value === 1 ? "" : "s"}`;
    default: return String(value);
  }
}

export function progressBar(percent) {
  const bar = h("div");
  bar.style.width = `${Math.max(0, Math.min(100, percent || 0))}%`;
  return h("div.progress", { role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": Math.round(percent || 0) }, bar);
}

export function flagList(flags) {
  if (!flags || !flags.length) return h("p.muted", "No flags: every pace check passed.");
  return h("ul.flags", flags.map((f) => h("li", f.message, " ", h("code", f.code))));
}

/** The current UTC ISO week as the weekly board id, e.g. weekly:2026-W48. */
export function isoWeekBoard(date = new Date()) {
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const day = d.getUTCDay() || 7; // Monday 1 .. Sunday 7
  d.setUTCDate(d.getUTCDate() + 4 - day); // the Thursday of this week decides the year
  const year = d.getUTCFullYear();
  const week = Math.ceil(((d - Date.UTC(year, 0, 1)) / 86400000 + 1) / 7);
  return `weekly:${year}-W${String(week).padStart(2, "0")}`;
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
