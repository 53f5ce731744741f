// Moderator console: the review queue (most suspicious first), one run's track drawn on a
// map-free canvas with its flagged stretches, the flags' evidence, and the decision: approve,
// reject, or crop (credit only the fixes between two points) with a reason.

import { api } from "../api.js";
import { h, render, errorBox, km, clock, pace, when, statusBadge } from "../ui.js";
import { drawTrack, flaggedStretches } from "../trackplot.js";

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
    h("p.muted.small", "Runs the pace check held back, most suspicious first. Live races are "
      + "controlled from their room: ", h("a#to-races", { href: "#/race" }, "race control"), "."),
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

function trackPanel(points, flags) {
  const stretches = flaggedStretches(points, flags);
  const n = points.length;
  const canvas = h("canvas.track#track-plot", { role: "img",
    "aria-label": n ? `Track of ${n} GPS fixes, ${stretches.length} flagged stretch`
      + `${stretches.length === 1 ? "" : "es"} in red` : "No track stored" });
  const legend = h("ul.legend#track-legend",
    h("li", h("span.swatch.start", { "aria-hidden": "true" }), "Start"),
    h("li", h("span.swatch.end", { "aria-hidden": "true" }), "Finish"),
    stretches.map((s) => h("li", h("span.swatch.flag", { "aria-hidden": "true" }),
      `${s.code}: fixes ${s.from + 1}–${s.to + 1}`)));
  const first = h("input#crop-first", { type: "range", min: 1, max: Math.max(n, 1), value: 1,
    step: 1 });
  const lastIn = h("input#crop-last", { type: "range", min: 1, max: Math.max(n, 1),
    value: Math.max(n, 1), step: 1 });
  const cropText = h("p.small#crop-text", { "aria-live": "polite" });
  let cropping = false;
  const redraw = () => {
    let a = Number(first.value), b = Number(lastIn.value);
    if (a > b) [a, b] = [b, a];
    cropText.textContent = `Keep fixes ${a}–${b} of ${n}`;
    drawTrack(canvas, points, { stretches, keep: cropping ? [a - 1, b] : null });
  };
  first.addEventListener("input", () => { cropping = true; redraw(); });
  lastIn.addEventListener("input", () => { cropping = true; redraw(); });
  const panel = h("section#track-panel",
    canvas, legend,
    n ? h("details.crop#crop-tools",
      h("summary", "Crop: credit part of the track"),
      h("label.field", { for: "crop-first" }, "First fix kept"), first,
      h("label.field", { for: "crop-last" }, "Last fix kept"), lastIn,
      cropText) : null);
  // Drawn once the canvas is in the page (it needs its laid-out size).
  requestAnimationFrame(redraw);
  const onResize = () => { if (canvas.isConnected) redraw(); else window.removeEventListener("resize", onResize); };
  window.addEventListener("resize", onResize);
  return {
    panel,
    crop: () => {
      let a = Number(first.value), b = Number(lastIn.value);
      if (a > b) [a, b] = [b, a];
      return { crop_start: a - 1, crop_stop: b };
    },
  };
}

export async function reviewScreen({ session, params: [id], isCurrent, go }) {
  if (forbidden(session)) return;
  const [run, points] = await Promise.all([api.run(id), api.track(id).catch(() => [])]);
  if (!isCurrent()) return;
  const reason = h("textarea#reason", { required: true, minlength: 3, maxlength: 500,
    placeholder: "Why? (the runner sees this)" });
  const errors = h("div", { "aria-live": "assertive" });
  const track = trackPanel(points, run.flags);
  const decide = (decision) => async (e) => {
    const button = e.currentTarget;
    errors.replaceChildren();
    button.disabled = true;
    try {
      await api.review(id, decision, reason.value.trim(), decision === "crop" ? track.crop() : {});
      // Back to the queue, unless the moderator already moved on (then the queue would
      // replace the screen they are on).
      if (isCurrent()) go("mod");
    } catch (err) {
      errors.append(errorBox(err));
    } finally {
      button.disabled = false;
    }
  };
  render(
    h("h1", "Review run"),
    h("p", statusBadge(run.status), ` score ${run.score}`, run.appealed ? " · appealed" : ""),
    track.panel,
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
    points.length ? h("button.secondary#crop", { onclick: decide("crop") }, "Crop to the kept fixes")
      : null,
    h("a.button.secondary", { href: "#/mod" }, "Back to the queue"));
}
