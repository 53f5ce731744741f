// Drill room: clock sync with the room (`sync` reports), the current phase, each cue fired on
// this phone's clock at `at − offset` with a beep and a buzz, a big tap target that acks it,
// the room's refusals, and the final results.

import { api } from "../api.js";
import { h, render, errorBox } from "../ui.js";
import { Room, nowS } from "../room.js";

let current = null;

function leave() {
  if (!current) return;
  current.room.close();
  for (const t of current.timers) clearTimeout(t);
  window.removeEventListener("hashchange", current.onLeave);
  current = null;
}

export function drillsScreen() {
  leave();
  const input = h("input#drill-id", { type: "text", name: "drill", autocomplete: "off",
    autocapitalize: "none", spellcheck: "false", placeholder: "drill-…", required: true,
    pattern: "drill-[A-Za-z0-9_-]+" });
  render(
    h("h1", "Drill room"),
    h("p.muted.small", "Coordination drills: every phone fires the cues together, your taps are scored."),
    h("form.card", { onsubmit: (e) => {
      e.preventDefault();
      const id = input.value.trim();
      if (id) location.hash = `#/drill/${id}`;
    } },
    h("label.field", { for: "drill-id" }, "Drill code from your coach"), input,
    h("button#open-drill", { type: "submit" }, "Open the drill")),
    h("div.notice.small", "Clear space around you: drills have you balancing and switching fast."));
}

let audio = null;
function unlockAudio() {
  try {
    audio ??= new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume().catch(() => {});
  } catch { audio = null; }
}

function beep(high) {
  try {
    unlockAudio();
    if (!audio) return;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = high ? 1320 : 880;
    gain.gain.setValueAtTime(0.25, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.18);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.2);
  } catch { /* no audio: the screen and the buzz still cue */ }
}

const MOVES = { switch_reaction: "Switch reaction", balance_hold: "Balance hold",
  countdown: "Countdown" };
const moveName = (m) => MOVES[m] || String(m).replace(/_/g, " ");

export async function drillRoomScreen({ params, isCurrent }) {
  leave();
  const drillId = params[0];
  render(h("h1", "Drill room"), h("p.muted", "Opening the drill…"));
  const drill = await api.drill(drillId);
  if (!isCurrent()) return;

  const view = {
    conn: h("p.small#drill-conn", { role: "status" }, "Connecting…"),
    clock: h("p.muted.small#drill-clock", "Clock: not synced yet"),
    status: h("p.eyebrow#drill-status", drill.status),
    phase: h("div.card#drill-phase", { "aria-live": "polite" }, h("p.muted", "Waiting for the coach to start.")),
    tap: h("button.tap#tap", { type: "button", disabled: true, "aria-label": "Tap when the cue fires",
      "aria-describedby": "drill-cue" }, "Wait for the cue"),
    cue: h("p#drill-cue", { "aria-live": "assertive", "aria-atomic": "true" }),
    reaction: h("p.reaction#reaction", { "aria-live": "polite" }),
    errors: h("div#drill-errors", { "aria-live": "polite" }),
    results: h("div#drill-results"),
    sound: h("button.secondary#sound", { type: "button", onclick: () => {
      unlockAudio(); beep(false);
      view.sound.textContent = "Sound on";
    } }, "Turn the beep on"),
  };
  render(h("h1#drill-title", drill.title), view.conn, view.status,
    h("p.muted.small", `${drill.phases.length} phase${drill.phases.length === 1 ? "" : "s"}: `,
      drill.phases.map((p) => moveName(p.move)).join(", ")),
    view.phase, view.cue, view.tap, view.reaction, view.errors, view.results, view.clock, view.sound,
    h("a.button.secondary", { href: "#/drill" }, "Another drill"));

  const state = { offset: null, role: null, armed: null, acked: new Set() };
  const timers = [];
  const room = new Room(drillId, {
    onState: (s, detail) => {
      view.conn.textContent = { connecting: "Connecting…", open: "Connected",
        reconnecting: "Reconnecting…", closed: detail === 4504 ? "The drill is over" : `Closed (${detail})` }[s] || s;
    },
    onPong: (times) => room.send({ type: "sync", ...times }),
    onFrame: (f) => onFrame(f),
  });
  current = { room, timers, onLeave: () => {
    if (!location.hash.startsWith(`#/drill/${drillId}`)) leave();
  } };
  window.addEventListener("hashchange", current.onLeave);

  // The offset the room applies to acks (its `clock` answer); our own estimate until then.
  const offset = () => state.offset ?? room.clock.offset;

  function showPhase(p) {
    const extra = p.prompt && p.prompt.toLowerCase() !== moveName(p.move).toLowerCase();
    view.phase.replaceChildren(
      h("p.eyebrow", `Phase ${p.index + 1} of ${p.of}`),
      h("p.phase-move", moveName(p.move)),
      ...(extra ? [h("p", p.prompt)] : []));
  }

  function schedule(cue) {
    const fireLocal = cue.at - offset();
    const delay = Math.max(0, (fireLocal - nowS()) * 1000);
    timers.push(setTimeout(() => fire(cue), delay));
  }

  function fire(cue) {
    if (state.acked.has(cue.id)) return;
    beep(cue.scored);
    try { navigator.vibrate?.(cue.scored ? [120] : [60]); } catch { /* not supported */ }
    view.cue.textContent = cue.prompt || moveName(cue.move);
    if (cue.scored) {
      state.armed = cue;
      view.tap.disabled = false;
      view.tap.classList.add("go");
      view.tap.textContent = "TAP!";
      const windowMs = Math.max(0, (cue.ack_by - offset() - nowS()) * 1000);
      timers.push(setTimeout(() => { if (state.armed === cue) disarm("Too late for that one"); }, windowMs));
    }
  }

  function disarm(text) {
    state.armed = null;
    view.tap.disabled = true;
    view.tap.classList.remove("go");
    view.tap.textContent = text || "Wait for the cue";
  }

  function tap(e) {
    const t = nowS();
    if (e.type === "click" && e.detail !== 0) return; // pointer taps are taken on pointerdown
    const cue = state.armed;
    if (!cue) return;
    state.acked.add(cue.id);
    disarm("Sent…");
    room.send({ type: "ack", cue: cue.id, t });
  }
  view.tap.addEventListener("pointerdown", tap);
  view.tap.addEventListener("click", tap);

  function showError(f) {
    const text = {
      ack_early: "Too early: wait for the cue.",
      ack_absurd: "That was faster than a human reacts; the clock is being resynced.",
      ack_late: "Too late: counted as a miss.",
      ack_duplicate: "Already counted.",
      clock_unsynced: "The clock is not synced yet.",
      drill_not_running: "The drill is not running.",
      unknown_cue: "No such cue.",
      cue_not_scored: "That cue takes no tap.",
    }[f.code] || f.message;
    view.errors.replaceChildren(errorBox({ detail: `${text} (${f.code})` }));
    if (f.code === "ack_absurd") room.startSync();
  }

  function showResults(r) {
    disarm("Drill over");
    view.status.textContent = "finished";
    view.tap.hidden = true;
    view.cue.textContent = "";
    view.phase.replaceChildren(h("p", "The drill is over. Well done."));
    const me = room.you;
    view.results.replaceChildren(h("section.card#drill-final",
      h("h2", "Results"),
      h("p", "Group sync: ", h("b#sync-score", `${Math.round((r.sync_score ?? 0) * 100)}%`)),
      r.scores.length ? h("table.board", { "aria-label": "Drill results" },
        h("thead", h("tr", h("th", "Who"), h("th.num", "Hits"), h("th.num", "Median"), h("th.num", "Best"))),
        h("tbody", r.scores.map((s) => h(`tr${s.participant_id === me ? ".me" : ""}`,
          h("td", s.participant_id === me ? "You" : `${s.participant_id.slice(0, 8)}…`),
          h("td.num", `${s.hits}/${s.hits + s.misses}`),
          h("td.num", s.median_ms !== null ? `${Math.round(s.median_ms)} ms` : "–"),
          h("td.num", s.best_ms !== null ? `${Math.round(s.best_ms)} ms` : "–")))))
        : h("p.muted", "Nobody tapped.")));
  }

  function onFrame(f) {
    switch (f.type) {
      case "welcome": {
        const s = f.snapshot;
        room.you = f.you;
        state.role = f.role;
        view.status.textContent = `${s.drill.status} · you are ${f.role}`;
        for (const id of Object.keys(s.you?.acked || {})) state.acked.add(Number(id));
        if (s.you?.clock && state.offset === null) state.offset = s.you.clock.offset;
        if (s.phase) showPhase(s.phase);
        for (const c of s.cues || []) schedule(c);
        if (s.results) showResults(s.results);
        break;
      }
      case "clock":
        state.offset = f.offset;
        view.clock.textContent = `Clock synced: offset ${(f.offset * 1000).toFixed(0)} ms, ±${(f.rtt * 500).toFixed(0)} ms (${f.samples} samples)`;
        view.clock.dataset.samples = f.samples;
        break;
      case "event":
        if (f.event === "started") {
          view.status.textContent = `running · you are ${state.role}`;
          view.phase.replaceChildren(h("p", `Starting: ${f.cues} cues, ${f.scored_cues} to tap.`));
        }
        break;
      case "phase": showPhase(f); break;
      case "cue": schedule(f); break;
      case "ack":
        view.errors.replaceChildren();
        if (f.reaction_ms !== null && f.reaction_ms !== undefined) {
          view.reaction.textContent = `Reaction ${Math.round(f.reaction_ms)} ms`;
        }
        disarm();
        break;
      case "error": showError(f); break;
      case "drill_results": showResults(f); break;
      default: break;
    }
  }

  // Test and debug hook (localStorage `retrorun.testHooks` = "1"): send an ack as a tap does.
  if (localStorage.getItem("retrorun.testHooks") === "1") {
    window.__retrorunDrillAck = (cue) => room.send({ type: "ack", cue, t: nowS() });
  }
  room.open();
}
