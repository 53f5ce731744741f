// Record a backward run: safety checklist -> live distance/time/pace -> upload -> verdict.
// The recorder outlives this screen: switching tabs keeps recording, and a reload resumes the
// buffered run.

import { h, render, errorBox, km, clock, pace, statusBadge, flagList } from "../ui.js";
import { CHECKLIST, Recorder, newRun, requestCompassPermission } from "../recorder.js";
import { activeRun, runStore } from "../store.js";
import { flushPending, onUploadNews, retryRun, discardRun } from "../upload.js";

let recorder = null;
let live = null; // DOM nodes of the live view while it is on screen
let ticker = null;

/** Test/debug hook target: one wire fix into the run being recorded. */
export function feed(fix) {
  if (!recorder) return Promise.reject(new Error("not recording"));
  return recorder.accept(fix);
}

function update() {
  if (!live || !recorder || !document.contains(live.root)) return;
  const r = recorder.run;
  live.time.textContent = clock(Math.max(recorder.elapsed_s, recorder.fixSpan_s));
  live.distance.textContent = km(r.distance_m);
  live.pace.textContent = pace(recorder.fixSpan_s, r.distance_m, "");
  live.fixes.textContent = String(r.fixCount);
  live.acc.textContent = r.lastAcc === null ? "–" : `±${Math.round(r.lastAcc)} m`;
  live.sensors.textContent = [
    recorder.compass ? "Compass on" : "No compass",
    recorder.wakeLock ? "screen kept on" : "screen may sleep",
  ].join(" · ");
  const problems = [recorder.gpsError && `GPS: ${recorder.gpsError}`,
    recorder.storeError && `Storage: ${recorder.storeError}`].filter(Boolean);
  live.problems.replaceChildren(...problems.map((p) => errorBox(p)));
}

function stat(label, id, wide = false) {
  const b = h(`b#${id}`, "–");
  return [h(`div.stat${wide ? ".wide" : ""}`, b, h("span", label)), b];
}

function liveView(ctx, note) {
  const [timeBox, time] = stat("Time", "live-time", true);
  const [distBox, distance] = stat("Distance", "live-distance");
  const [paceBox, paceEl] = stat("Pace /km", "live-pace");
  const [fixBox, fixes] = stat("GPS fixes", "live-fixes");
  const [accBox, acc] = stat("Accuracy", "live-acc");
  const sensors = h("p.muted.small#live-sensors");
  const problems = h("div");
  const actions = h("div");
  const stopButton = h("button.danger.big#stop", { onclick: () => confirmStop() }, "Stop");
  const confirmStop = () => actions.replaceChildren(
    h("p", "Finish this run and upload it?"),
    h("button.danger.big#finish", { onclick: () => finish(ctx) }, "Finish and upload"),
    h("button.secondary#keep", { onclick: () => actions.replaceChildren(stopButton) }, "Keep running"));
  actions.append(stopButton);
  const root = render(
    h("h1", "Recording"),
    note ? h("div.notice#resumed", note) : null,
    h("div.stats", timeBox, distBox, paceBox, fixBox, accBox),
    sensors, problems,
    h("p.muted.small", "Run backward, look over your shoulder, stop if anything feels wrong."),
    actions);
  live = { root, time, distance, pace: paceEl, fixes, acc, sensors, problems };
  clearInterval(ticker);
  ticker = setInterval(() => (live && document.contains(live.root) ? update() : null), 1000);
  update();
}

async function finish(ctx) {
  const r = recorder;
  if (!r) return;
  recorder = null;
  live = null;
  clearInterval(ticker);
  const run = await r.stop();
  uploadView(ctx, run.key);
  flushPending();
}

function verdictView(result) {
  const title = { verified: "Run verified", review: "Run sent for review", rejected: "Run rejected" };
  return [
    h("h1#verdict-title", title[result.status] || "Run uploaded"),
    h("p", statusBadge(result.status)),
    h("div.stats",
      h("div.stat", h("b#verdict-distance", km(result.distance_m)), h("span", "Distance")),
      h("div.stat", h("b#verdict-duration", clock(result.duration_s)), h("span", "Time")),
      h("div.stat.wide", h("b", pace(result.duration_s, result.distance_m)), h("span", "Average pace"))),
    result.status === "review"
      ? h("p.muted", "A moderator will look at it; until then it stays off the leaderboards.") : null,
    h("h2", "Pace check"),
    h("div#verdict-flags", flagList(result.flags)),
    h("a.button#to-boards", { href: "#/boards" }, "See the leaderboard"),
    h("a.button.secondary", { href: "#/runs" }, "My runs"),
  ];
}

/** Follow one run's upload until its verdict. */
function uploadView(ctx, key) {
  const status = h("div#upload-status", { role: "status" }, h("p", "Saving your run…"));
  render(h("h1", "Uploading run"), status);
  const show = (news) => {
    if (news.state === "done") {
      render(...verdictView(news.result));
    } else if (news.state === "waiting") {
      status.replaceChildren(
        h("div.notice#upload-waiting",
          h("b", "Not uploaded yet. "), news.error || "",
          news.wait ? ` Trying again in ${news.wait} s.` : "",
          h("br"), "Your run is saved on this phone; nothing is lost."),
        h("button.secondary", { onclick: () => flushPending() }, "Try now"));
    } else if (news.state === "failed") {
      status.replaceChildren(errorBox(news.error),
        h("button", { onclick: () => retryRun(key) }, "Try again"),
        h("button.secondary", { onclick: async () => { await discardRun(key); ctx.go("record"); } },
          "Discard run"));
    } else if (news.state === "uploading") {
      status.replaceChildren(h("p", `Uploading ${news.fixes} GPS fixes…`));
    }
  };
  const stop = onUploadNews((news) => {
    if (!ctx.isCurrent()) { stop(); return; }
    if (news.key === key) show(news);
  });
  // The run may already be finished (an earlier pass, another tab).
  runStore().then((s) => s.getRun(key)).then((run) => {
    if (run?.state === "done") show({ state: "done", result: run.result });
    else if (run?.state === "failed") show({ state: "failed", error: run.error });
  });
}

async function checklistView(ctx) {
  const store = await runStore();
  const waiting = (await store.allRuns()).filter((r) => r.runnerId === ctx.session.me.id
    && (r.state === "pending" || r.state === "failed"));
  const boxes = CHECKLIST.map(([key, label]) => {
    const input = h("input", { type: "checkbox", name: key, id: `check-${key}` });
    return [key, input, h("label.check", { for: `check-${key}` }, input, label)];
  });
  const hint = h("p.muted.small", "Unticked items are recorded with your run.");
  const errors = h("div");
  const start = h("button.big#start", {
    onclick: () => {
      // Ask for the compass inside the tap (iOS refuses it later), then start.
      const compass = requestCompassPermission();
      const checklist = Object.fromEntries(boxes.map(([key, input]) => [key, input.checked]));
      start.disabled = true;
      (async () => {
        try {
          await compass;
          const run = await newRun(checklist, ctx.session.me.id);
          recorder = new Recorder(run, update);
          recorder.start();
          if (ctx.isCurrent()) liveView(ctx);
        } catch (err) {
          start.disabled = false;
          errors.replaceChildren(errorBox(err));
        }
      })();
    },
  }, "Start");
  render(
    h("h1", "Record a backward run"),
    waiting.length ? h("section.card",
      h("h2", "Waiting to upload"),
      h("ul.list", waiting.map((r) => h("li",
        h("p", `${new Date(r.startedAt).toLocaleString()} · ${km(r.distance_m)} · ${r.fixCount} fixes`),
        r.error ? errorBox(r.error) : h("p.muted.small", "Will upload when the server is reachable."),
        h("div.row",
          h("button.secondary", { onclick: () => { retryRun(r.key); uploadView(ctx, r.key); } }, "Upload now"),
          r.state === "failed"
            ? h("button.secondary", { onclick: async () => { await discardRun(r.key); ctx.go("record"); } },
              "Discard") : null))))) : null,
    h("h2", "Safety first"),
    h("p", "Check each that is true before you start:"),
    h("fieldset.checklist", { "aria-label": "Safety checklist" }, boxes.map(([, , el]) => el)),
    hint, errors, start);
}

export async function recordScreen(ctx) {
  if (recorder && recorder.run.runnerId !== ctx.session.me.id) {
    recorder.detach(); // another runner signed in on this phone: the run waits for its owner
    recorder = null;
  }
  if (recorder) return liveView(ctx);
  const run = await activeRun(ctx.session.me.id);
  if (run) {
    // A reload (or a crash) in the middle of a run: carry on with the buffered fixes.
    recorder = new Recorder(run, update);
    recorder.start();
    return liveView(ctx, `Recording resumed: ${run.fixCount} GPS fixes were kept.`);
  }
  return checklistView(ctx);
}
