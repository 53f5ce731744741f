// Moderator console: the review queue, one run's flags and evidence, approve or reject.

import { api } from "../api.js";
import { h, render, errorBox, km, clock, pace, when, statusBadge } from "../ui.js";

function forbidden(session) {
  if (session.isModerator) return false;
  render(h("h1", "Moderator console"), errorBox("Only moderators can open the review queue."));
  return true;
}

export async function queueScreen({ session, isCurrent }) {
  if (forbidden(session)) return;
  const queue = await api.queue();
  if (!isCurrent()) return;
  render(
    h("h1", "Review queue"),
    queue.length ? h("ul.list#queue", queue.map((q) => h("li",
      h("a.rowlink", { href: `#/mod/${q.id}` },
        h("p", h("b", `Score ${q.score}`), ` · ${km(q.distance_m)} in ${clock(q.duration_s)}`,
          q.appealed ? " · appealed" : ""),
        h("p.muted.small", `${when(q.ended_at)} · ${q.codes.join(", ") || "no codes"}`)))))
      : h("p.muted#queue-empty", "Nothing waiting for review."));
}

function evidence(ev) {
  const entries = Object.entries(ev || {});
  if (!entries.length) return null;
  return h("pre.evidence", entries.map(([k, v]) =>
    `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("\n"));
}

export async function reviewScreen({ session, params: [id], isCurrent, go }) {
  if (forbidden(session)) return;
  const run = await api.run(id);
  if (!isCurrent()) return;
  const reason = h("textarea#reason", { required: true, minlength: 3, maxlength: 500,
    placeholder: "Why? (the runner sees this)" });
  const errors = h("div");
  const decide = (decision) => async () => {
    errors.replaceChildren();
    try {
      await api.review(id, decision, reason.value.trim());
      // Back to the queue, unless the moderator already moved on (then the queue would
      // replace the screen they are on).
      if (isCurrent()) go("mod");
    } catch (err) {
      errors.append(errorBox(err));
    }
  };
  render(
    h("h1", "Review run"),
    h("p", statusBadge(run.status), ` score ${run.score}`, run.appealed ? " · appealed" : ""),
    h("dl.kv",
      h("dt", "Runner"), h("dd", run.runner_id),
      h("dt", "When"), h("dd", when(run.started_at)),
      h("dt", "Distance"), h("dd", km(run.distance_m)),
      h("dt", "Time"), h("dd", clock(run.duration_s)),
      h("dt", "Pace"), h("dd", pace(run.duration_s, run.distance_m)),
      h("dt", "Fixes"), h("dd", String(run.fix_count))),
    h("h2", "Flags"),
    run.flags.length ? h("ul.list#review-flags", run.flags.map((f) => h("li",
      h("p", h("b", f.message)),
      h("p.muted.small", `${f.code} · +${f.points} points${f.hard_fail ? " · hard fail" : ""}`),
      evidence(f.evidence)))) : h("p.muted", "No flags."),
    h("h2", "Decision"),
    h("label.field", { for: "reason" }, "Reason"), reason,
    errors,
    h("div.row",
      h("button#approve", { onclick: decide("approve") }, "Approve"),
      h("button.danger#reject", { onclick: decide("reject") }, "Reject")),
    h("a.button.secondary", { href: "#/mod" }, "Back to the queue"));
}
