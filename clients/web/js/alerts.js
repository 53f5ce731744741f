// Safety alerts in a room (docs/protocol.md, "Spotters and safety alerts"): a runner stopped
// like a fall, or made no progress for a minute. Spotters and the race's controllers must
// acknowledge an alert (`alert_ack`); the runner may cancel a false alarm (`alert_cancel`)
// until `cancel_until`. One card per alert; a closed alert stays listed with who closed it.

import { h } from "./ui.js";

const KIND = { fall: "Possible fall", no_progress: "No progress for a minute" };

function buzz() {
  try { navigator.vibrate?.([400, 150, 400, 150, 400]); } catch { /* no vibration motor */ }
}

function timeOf(at) {
  return new Date(at * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit",
    second: "2-digit" });
}

export class AlertPanel {
  /**
   * @param {{me: string, send: Function, nameOf?: Function, serverNow: Function,
   *   canAck: (runnerId: string) => boolean}} opts
   */
  constructor({ me, send, serverNow, canAck, nameOf = (id) => id }) {
    this.me = me;
    this.send = send;
    this.serverNow = serverNow;
    this.canAck = canAck;
    this.nameOf = nameOf;
    this.cards = new Map(); // id -> {el, alert, closed}
    this.sent = new Set(); // cids of our alert_ack / alert_cancel frames
    this.list = h("ul.list.alerts#alerts");
    this.errors = h("div#alert-errors", { "aria-live": "assertive" });
    this.empty = h("p.muted.small#alerts-none", "No alerts. You will hear and feel one here.");
    this.el = h("section.card#alerts-card", { "aria-labelledby": "alerts-h" },
      h("h2#alerts-h", "Safety alerts"), this.empty, this.list, this.errors);
    this.timer = setInterval(() => this.refreshCancel(), 1000);
  }

  get openCount() {
    return [...this.cards.values()].filter((c) => !c.closed).length;
  }

  stop() { clearInterval(this.timer); }

  /** Alerts from a `welcome` snapshot (open ones). */
  load(alerts) {
    for (const a of alerts || []) this.raise(a, { quiet: true });
  }

  /** Handle a frame; true when it was an alert frame. */
  frame(f) {
    switch (f.type) {
      case "alert": this.raise(f); return true;
      case "alert_escalated": this.raise(f, { escalated: true }); return true;
      case "alert_acked":
        this.close(f.id, `Acknowledged by ${f.by === this.me ? "you" : this.nameOf(f.by)}`
          + ` (${f.role}) at ${timeOf(f.at)}`, "acked");
        return true;
      case "alert_cancelled":
        this.close(f.id, `Cancelled by ${f.by === this.me ? "you" : this.nameOf(f.by)}: a false alarm`,
          "cancelled");
        return true;
      case "error":
        if (this.sent.has(f.ref)) {
          this.errors.replaceChildren(h("div.error", { role: "alert" }, `${f.message} (${f.code})`));
          for (const card of this.cards.values()) if (!card.closed) this.draw(card);
          return true;
        }
        return false;
      default:
        return false;
    }
  }

  raise(a, { quiet = false, escalated = false } = {}) {
    let card = this.cards.get(a.id);
    if (card && card.closed) return;
    if (!card) {
      card = { alert: a, closed: false, el: h("li.alert", { dataset: { alert: a.id, kind: a.kind } }) };
      this.cards.set(a.id, card);
      this.list.prepend(card.el);
    }
    card.alert = { ...card.alert, ...a, escalated: escalated || a.escalated };
    this.empty.hidden = true;
    this.draw(card);
    if (!quiet) buzz();
  }

  draw(card) {
    const a = card.alert;
    const mine = a.runner_id === this.me;
    const who = mine ? "You" : this.nameOf(a.runner_id);
    const pos = a.position
      ? `Last position ${a.position.lat.toFixed(5)}, ${a.position.lon.toFixed(5)}`
        + (a.position.acc ? ` (±${Math.round(a.position.acc)} m)` : "")
      : "No position yet";
    const ev = a.evidence || {};
    const detail = a.kind === "fall"
      ? `Dropped from ${Number(ev.from_mps || 0).toFixed(1)} m/s, stopped ${Math.round(ev.stopped_s || 0)} s`
      : `No progress for ${Math.round(ev.duration_s || 0)} s`;
    const parts = [
      h("p", h("b.alert-kind", `${KIND[a.kind] || a.kind}: ${who}`),
        a.escalated ? h("span.status.rejected.escalated", "escalated") : null),
      h("p.small", `${timeOf(a.at)} · ${detail}`),
      h("p.small.muted", pos),
    ];
    if (card.closed) {
      parts.push(h("p.ok.alert-outcome", card.outcome));
    } else {
      const row = h("div.row");
      if (!mine && this.canAck(a.runner_id)) {
        row.append(h("button.danger.ack-alert", {
          "aria-label": `Acknowledge the alert for ${who}`,
          onclick: (e) => this.act(e.currentTarget, { type: "alert_ack", id: a.id }),
        }, "Acknowledge"));
      }
      if (mine) {
        row.append(h("button.secondary.cancel-alert", {
          onclick: (e) => this.act(e.currentTarget, { type: "alert_cancel", id: a.id }),
        }, "I am fine: cancel"));
      }
      parts.push(row);
    }
    card.el.className = `alert${card.closed ? " closed" : ""}`;
    card.el.replaceChildren(...parts);
    if (!card.closed) card.el.setAttribute("role", "alert");
    else card.el.removeAttribute("role");
  }

  act(button, frame) {
    this.errors.replaceChildren();
    const cid = this.send(frame);
    if (cid) {
      this.sent.add(cid);
      button.disabled = true;
    } else {
      this.errors.append(h("div.error", { role: "alert" }, "Not connected: try again in a moment."));
    }
  }

  close(id, outcome, how) {
    const card = this.cards.get(id);
    if (!card) return;
    card.closed = true;
    card.outcome = outcome;
    card.el.dataset.outcome = how;
    this.draw(card);
  }

  refreshCancel() {
    for (const card of this.cards.values()) {
      if (card.closed || card.alert.runner_id !== this.me) continue;
      if (this.serverNow() > card.alert.cancel_until) {
        card.el.querySelector(".cancel-alert")?.remove();
      }
    }
  }
}
