// Race control for moderators, admins and the race's organiser: `control` frames to the room
// (start with a countdown, pause, resume, abort, disqualify, close). The room answers with the
// broadcast (countdown, paused, ...) or an `error` carrying the race rule's code; both are
// shown. Also lists the moderator-only `flag` events (live pace-check hard fails, safety
// signals) and who is at the start line (`ready`), each with a quick "disqualify".

import { h } from "./ui.js";

const shortId = (id) => (id.length > 10 ? `${id.slice(0, 8)}…` : id);

export class RaceControl {
  constructor({ send }) {
    this.send = send;
    this.status = "scheduled";
    this.runners = [];
    this.sent = new Set(); // cids of our control frames: their errors are ours to show
    this.countdown = h("input#ctl-countdown", { type: "number", min: 3, max: 600, value: 10,
      inputmode: "numeric" });
    this.reason = h("input#ctl-reason", { type: "text", maxlength: 500, autocomplete: "off",
      placeholder: "Seen by the runners" });
    this.runner = h("select#ctl-runner");
    this.out = h("p.small#ctl-out", { role: "status" });
    this.flags = h("ul.flags#ctl-flags");
    const button = (id, label, action, cls = "") => h(`button${cls}#${id}`, {
      onclick: () => this.control(action),
    }, label);
    this.buttons = {
      start: button("ctl-start", "Start countdown", "start"),
      pause: button("ctl-pause", "Pause", "pause", ".secondary"),
      resume: button("ctl-resume", "Resume", "resume", ".secondary"),
      close: button("ctl-close", "Close the race", "close", ".secondary"),
      disqualify: button("ctl-dq", "Disqualify", "disqualify", ".danger"),
      abort: button("ctl-abort", "Abort the race", "abort", ".danger"),
    };
    this.el = h("section.card#race-control", { "aria-labelledby": "ctl-h" },
      h("h2#ctl-h", "Race control"),
      h("label.field", { for: "ctl-countdown" }, "Countdown (seconds)"), this.countdown,
      this.buttons.start,
      h("div.row", this.buttons.pause, this.buttons.resume),
      h("label.field", { for: "ctl-runner" }, "Runner"), this.runner,
      h("label.field", { for: "ctl-reason" }, "Reason (disqualify, abort)"), this.reason,
      h("div.row", this.buttons.disqualify, this.buttons.abort),
      this.buttons.close,
      this.out,
      h("h3", "Pace and safety flags"),
      h("p.muted.small#ctl-flags-none", "None yet."),
      this.flags);
    this.setStatus("scheduled");
  }

  control(action) {
    const frame = { type: "control", action };
    if (action === "start") frame.countdown_s = Number(this.countdown.value) || 10;
    if (action === "abort" || action === "disqualify") {
      const reason = this.reason.value.trim();
      if (!reason) {
        this.say("Write a reason first: the runners see it.", true);
        this.reason.focus();
        return;
      }
      frame.reason = reason;
    }
    if (action === "disqualify") {
      if (!this.runner.value) { this.say("Choose a runner first.", true); return; }
      frame.runner_id = this.runner.value;
    }
    const cid = this.send(frame);
    if (cid) this.sent.add(cid);
    this.say(cid ? `Sent: ${action}` : "Not connected: try again in a moment.", !cid);
  }

  say(text, bad = false) {
    this.out.textContent = text;
    this.out.className = `small ${bad ? "warn" : "ok"}`;
  }

  setStatus(status) {
    this.status = status;
    const allowed = {
      start: status === "scheduled",
      pause: status === "running",
      resume: status === "paused",
      close: ["running", "paused"].includes(status),
      disqualify: ["scheduled", "countdown", "running", "paused"].includes(status),
      abort: ["scheduled", "countdown", "running", "paused"].includes(status),
    };
    for (const [k, b] of Object.entries(this.buttons)) b.disabled = !allowed[k];
    this.el.dataset.status = status;
  }

  setRunners(ids) {
    const keep = this.runner.value;
    const unique = [...new Set(ids)];
    if (unique.join() === this.runners.join()) return;
    this.runners = unique;
    this.runner.replaceChildren(h("option", { value: "" }, "Choose a runner"),
      ...unique.map((id) => h("option", { value: id, selected: id === keep }, shortId(id))));
  }

  /** A frame from the room: true when it concerned race control. */
  frame(f) {
    if (f.type === "error" && this.sent.has(f.ref)) {
      this.say(`Refused: ${f.message} (${f.code})`, true);
      return true;
    }
    if (f.type === "event" && f.event === "flag") {
      this.el.querySelector("#ctl-flags-none")?.remove();
      this.flags.prepend(h("li", { dataset: { runner: f.runner_id, code: f.code } },
        `${shortId(f.runner_id)}: ${f.message} `, h("code", f.code),
        f.hard_fail ? " hard fail" : "",
        h("button.secondary.small-button", { "aria-label": `Pick ${shortId(f.runner_id)} to disqualify`,
          onclick: () => {
            if (!this.runners.includes(f.runner_id)) this.setRunners([...this.runners, f.runner_id]);
            this.runner.value = f.runner_id;
            this.reason.value ||= `${f.code}: ${f.message}`;
            this.reason.focus();
          } }, "Pick")));
      while (this.flags.children.length > 20) this.flags.lastChild.remove();
      return true;
    }
    if (f.type === "event" && f.event === "ready") {
      this.say(`${shortId(f.runner_id)} is at the start line`);
      return true;
    }
    return false;
  }
}
