// Race room: the list of races, registration, and the live room (lobby -> countdown -> live
// standings -> results). Registered runners stream their GPS; everyone else watches.
// Controllers (moderators, admins, the organiser) get race control; spotters (paired accounts
// or a share link) follow their runners' positions; safety alerts reach the runner, spotters
// and controllers, who acknowledge them (the runner may cancel a false alarm).

import { api } from "../api.js";
import { h, render, errorBox, km, clock, when } from "../ui.js";
import { Room, GpsOutbox } from "../room.js";
import { AlertPanel } from "../alerts.js";
import { RaceControl } from "../racecontrol.js";
import { drawTrack } from "../trackplot.js";

let current = null; // {room, gps, ticker} of the room on screen

function leave() {
  if (!current) return;
  current.room.close();
  current.gps?.stop();
  current.alerts?.stop();
  clearInterval(current.ticker);
  window.removeEventListener("hashchange", current.onLeave);
  current = null;
}

export async function racesScreen({ session, isCurrent }) {
  leave();
  render(h("h1", "Race room"), h("p.muted", "Loading races…"));
  const races = await api.races();
  if (!isCurrent()) return;
  const me = session.me.id;
  const list = h("ul.list#races", races.map((r) => {
    const registered = r.registered.includes(me);
    return h("li", { dataset: { race: r.id } },
      h("p", h("b", r.title), " ", h(`span.status.${r.status === "scheduled" ? "pending" : "verified"}`, r.status)),
      h("p.muted.small", `${km(r.distance_m)} · ${when(r.scheduled_at)} · ${r.registered.length}/${r.capacity} runners`),
      h("div.row",
        registered
          ? h("span.muted.small.registered", "You are registered")
          : h("button.secondary.register", {
            "aria-label": `Register for ${r.title}`,
            disabled: r.status !== "scheduled",
            onclick: async (e) => {
              e.target.disabled = true;
              try {
                await api.registerRace(r.id);
                location.hash = `#/race/${r.id}`;
              } catch (err) {
                e.target.disabled = false;
                e.target.after(errorBox(err));
              }
            },
          }, "Register"),
        h("a.button.open", { href: `#/race/${r.id}`, "aria-label": `Open the room of ${r.title}` },
          "Open room")));
  }));
  render(
    h("h1", "Race room"),
    h("p.muted.small", "Live backward races: register, open the room, and run when the gun goes."),
    races.length ? list : h("p.card#no-races", "No races are scheduled right now."),
    h("div.notice.small", "Run backward only where it is flat and clear, with a spotter."));
}

const shortId = (id) => (id.length > 10 ? `${id.slice(0, 8)}…` : id);

export async function raceRoomScreen({ session, params, shareToken = null, names = new Map(),
  back = "#/race" }) {
  leave();
  const raceId = params[0];
  let me = session?.me?.id || null;
  const nameOf = (id) => names.get(id) || shortId(id || "");
  const view = {
    title: h("h1#race-title", "Race"),
    conn: h("p.small#race-conn", { role: "status" }, "Connecting…"),
    phase: h("p.eyebrow#race-phase", "Lobby"),
    big: h("div.countdown#race-countdown", { "aria-live": "assertive", "aria-atomic": "true" }),
    info: h("p.muted.small#race-info"),
    you: h("div#race-you", { "aria-live": "polite" }),
    table: h("tbody"),
    news: h("ul.flags#race-news", { "aria-live": "polite" }),
    errors: h("div#race-errors"),
    gps: h("p.muted.small#race-gps"),
    extra: h("div#race-extra"),
    retire: h("button.secondary#race-retire", { type: "button", hidden: true }, "Retire from the race"),
  };
  const standings = h("section.card#standings-card",
    h("h2", "Standings"),
    h("table.board.compact#standings", { "aria-live": "polite", "aria-label": "Live standings" },
      h("thead", h("tr", h("th", "#"), h("th", "Runner"), h("th.num", "Dist."),
        h("th.num", "Time"))),
      view.table));
  render(view.title, view.conn, view.phase, view.big, view.info, view.extra, view.you, standings,
    view.gps, view.retire, view.news, view.errors,
    h("a.button.secondary", { href: back }, shareToken ? "Back" : "All races"));

  const state = { race: null, role: null, gun: null, results: null, distance: null, finished: false };
  let alerts = null; // AlertPanel once the welcome says we get alerts
  let control = null; // RaceControl for controllers
  let spotting = null; // {ids, rows, trails} for spotters
  let panelsKey = null;
  const room = new Room(raceId, {
    auth: shareToken ? () => ({ share_token: shareToken }) : null,
    onState: (s, detail) => {
      if (s === "reconnecting" && detail !== undefined) view.conn.dataset.reconnects = String(Number(view.conn.dataset.reconnects || 0) + 1);
      view.conn.textContent = {
        connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…",
        closed: detail === 4504 ? "The race is over"
          : detail === 4511 ? "This share link was revoked" : `Closed (${detail})`,
      }[s] || s;
      view.conn.className = `small ${s === "open" ? "ok" : "warn"}`;
    },
    onFrame: (f) => onFrame(f),
  });
  const gps = new GpsOutbox(room);
  gps.onChange = () => {
    view.gps.textContent = gps.error ? `GPS: ${gps.error}`
      : `GPS fixes sent ${gps.next - 1} · stored ${gps.acked} · waiting ${gps.pending.size}`;
  };
  const here = location.hash;
  current = { room, gps, ticker: setInterval(tick, 100), onLeave: () => {
    if (location.hash !== here) leave();
  } };
  window.addEventListener("hashchange", current.onLeave);

  function news(text) {
    view.news.prepend(h("li", text));
    while (view.news.children.length > 6) view.news.lastChild.remove();
  }

  function setPhase(status) {
    const label = { scheduled: "Lobby", countdown: "Countdown", running: "Live", paused: "Paused",
      finished: "Finished", aborted: "Aborted" }[status] || status;
    view.phase.textContent = label;
    view.phase.dataset.status = status;
    if (state.race) state.race.status = status;
    control?.setStatus(status);
    const live = ["countdown", "running", "paused"].includes(status);
    if (state.role === "runner" && live && !state.finished) gps.start();
    else gps.stop();
    view.retire.hidden = !(state.role === "runner" && !state.finished
      && ["running", "paused"].includes(status));
  }

  view.retire.addEventListener("click", () => {
    // final: the runner is DNF and their fixes stop; the room answers with a `retired` event
    if (window.confirm("Retire from the race? You will be DNF; this cannot be undone.")) {
      room.send({ type: "retire", cid: "retire" });
    }
  });

  function stopRacing() {
    state.finished = true;
    gps.stop();
    view.retire.hidden = true;
  }

  let shown = "";
  function tick() {
    if (!state.race) return;
    let text = "";
    if (state.gun !== null && ["countdown", "running"].includes(state.race.status)) {
      const left = state.gun - room.serverNow();
      if (left > 0) {
        text = String(Math.ceil(left));
        delete view.big.dataset.running;
      } else {
        view.big.dataset.running = "1";
        if (state.race.status === "countdown") setPhase("running");
        text = clock(-left);
      }
    }
    if (text !== shown) { view.big.textContent = text; shown = text; }
  }

  function renderStandings(leaders, you, count) {
    for (const r of leaders) if (r.handle) names.set(r.runner_id, r.handle);
    control?.setRunners([...(Array.isArray(state.race?.registered) ? state.race.registered : []),
      ...leaders.map((r) => r.runner_id)]);
    view.table.replaceChildren(...leaders.map((r) => row(r, r.runner_id === me)));
    if (you && !leaders.some((r) => r.runner_id === me)) view.table.append(row(you, true));
    const n = Math.max(count ?? leaders.length, state.registered || 0);
    view.info.textContent = `${n} runner${n === 1 ? "" : "s"} · ${km(state.distance)}`;
    if (you) {
      const lead = leaders[0];
      let gap = "–";
      if (lead && lead.runner_id === me) gap = "Lead";
      else if (lead) {
        gap = (lead.time_s !== null && you.time_s !== null)
          ? `+${(you.time_s - lead.time_s).toFixed(1)} s`
          : `−${Math.max(0, lead.distance_m - you.distance_m).toFixed(0)} m`;
      }
      view.you.replaceChildren(h("div.stats.three",
        h("div.stat", h("b#you-rank", `#${you.rank}`), h("span", "Place")),
        h("div.stat", h("b#you-distance", km(you.distance_m)), h("span", "You")),
        h("div.stat", h("b#you-gap", gap), h("span", "Gap"))));
    }
  }

  function row(r, mine) {
    return h(`tr${mine ? ".me" : ""}`, { dataset: { runner: r.runner_id } },
      h("td", String(r.rank ?? r.place ?? "–")),
      h("td", mine ? "You" : nameOf(r.runner_id)),
      h("td.num", km(r.distance_m)),
      h("td.num", r.status === "running" ? "running" : r.time_s !== null && r.time_s !== undefined
        ? clock(r.time_s) : r.status));
  }

  function showResults(results) {
    state.results = results;
    setPhase(state.race?.status === "aborted" ? "aborted" : "finished");
    view.big.textContent = "";
    shown = "";
    const table = h("table.board.compact#race-results", { "aria-label": "Results" },
      h("thead", h("tr", h("th", "Place"), h("th", "Runner"), h("th.num", "Time"), h("th.num", "Status"))),
      h("tbody", results.map((r) => h(`tr${r.runner_id === me ? ".me" : ""}`,
        h("td", r.place ?? "–"), h("td", r.runner_id === me ? "You" : nameOf(r.runner_id)),
        h("td.num", r.time_s !== null ? clock(r.time_s) : km(r.distance_m)), h("td.num", r.status)))));
    view.you.replaceChildren(h("section.card#race-final", h("h2", "Results"), table));
    standings.hidden = true;
  }

  function setupPanels(f) {
    const s = f.snapshot;
    me = f.you || me;
    const key = `${f.role}|${f.control}|${(f.spotting || []).join()}`;
    if (key === panelsKey) { // a reconnect: keep the panels and what they show
      alerts?.load(s.alerts);
      updateSpotted(s.spotted || []);
      return;
    }
    panelsKey = key;
    view.extra.replaceChildren();
    alerts?.stop();
    alerts = null;
    control = null;
    spotting = null;
    if (f.control) {
      control = new RaceControl({ send: (frame) => room.send(frame) });
      view.extra.append(control.el);
      for (const flag of s.flags || []) control.frame({ type: "event", event: "flag", ...flag });
    }
    if (f.role === "spotter" && (f.spotting || []).length) {
      spotting = { ids: f.spotting, trails: new Map(), rows: h("div#spotted") };
      view.extra.append(h("section.card#spotting-card", { "aria-labelledby": "spot-h" },
        h("h2#spot-h", "You are spotting"), spotting.rows));
      updateSpotted(s.spotted || []);
      if (!shareToken) {
        api.pairings().then((p) => {
          for (const x of p.spotting) if (x.runner_handle) names.set(x.runner_id, x.runner_handle);
          updateSpotted(spotting?.last || []);
        }).catch(() => {});
      }
    }
    if (f.control || f.role === "spotter" || f.role === "runner" || s.alerts) {
      const spotted = new Set(f.spotting || []);
      alerts = new AlertPanel({
        me, nameOf, serverNow: () => room.serverNow(),
        send: (frame) => room.send(frame),
        canAck: (runnerId) => !!f.control || spotted.has(runnerId),
      });
      view.extra.prepend(alerts.el);
      alerts.load(s.alerts);
      if (current?.room === room) current.alerts = alerts;
    }
  }

  function updateSpotted(rows) {
    if (!spotting) return;
    spotting.last = rows;
    const byId = new Map(rows.map((r) => [r.runner_id, r]));
    spotting.rows.replaceChildren(...spotting.ids.map((id) => {
      const r = byId.get(id) || {};
      const trail = spotting.trails.get(id) || [];
      const p = r.position;
      if (p && (!trail.length || trail[trail.length - 1].t !== p.t)) {
        trail.push({ lat: p.lat, lon: p.lon, t: p.t });
        if (trail.length > 600) trail.shift();
      }
      spotting.trails.set(id, trail);
      const age = p ? Math.max(0, Math.round(room.serverNow() - p.t)) : null;
      const canvas = h("canvas.track.small-track", { role: "img",
        "aria-label": `Trail of ${nameOf(id)}: ${trail.length} positions` });
      const block = h("div.spotted", { dataset: { runner: id } },
        h("p", h("b", nameOf(id)), " ", r.status ? h("span.status.pending", r.status) : null),
        h("p.small", r.rank ? `#${r.rank} · ${km(r.distance_m)}` : "Not started yet",
          age !== null ? ` · last fix ${age} s ago` : " · no position yet"),
        trail.length ? canvas : null);
      if (trail.length) requestAnimationFrame(() => drawTrack(canvas, trail, { trail: true }));
      return block;
    }));
  }

  function onFrame(f) {
    if (alerts?.frame(f)) return;
    if (control?.frame(f)) return;
    switch (f.type) {
      case "welcome": {
        const s = f.snapshot;
        setupPanels(f);
        state.race = { ...s.race };
        state.role = f.role;
        state.distance = s.race.distance_m;
        state.registered = Array.isArray(s.race.registered) ? s.race.registered.length
          : Number(s.race.registered) || 0;
        state.gun = s.race.start_at ?? null;
        view.title.textContent = s.race.title;
        view.conn.dataset.role = f.role;
        news(f.role === "runner" ? "You are registered: your GPS is sent when the race starts."
          : f.role === "spectator" ? "You are watching." : `You are in as ${f.role}.`);
        if (f.role === "runner") gps.welcome(f.acked_seq || 0);
        setPhase(s.race.status);
        renderStandings(s.leaders || [], s.you, s.count);
        if (s.results) showResults(s.results);
        break;
      }
      case "countdown":
        state.gun = f.start_at;
        setPhase("countdown");
        news(`Countdown: the gun in ${Math.round(f.countdown_s)} s`);
        break;
      case "standings":
        if (state.results) break;
        if (state.race && state.race.status === "countdown" && room.serverNow() >= state.gun) setPhase("running");
        renderStandings(f.leaders, f.you, f.count);
        if (f.spotted) updateSpotted(f.spotted);
        break;
      case "ack":
        gps.ack(f.seq);
        break;
      case "error":
        if (f.code === "disqualified" || f.code === "retired") stopRacing();
        if (f.code === "race_not_live") break; // a fix sent just before the countdown: harmless
        view.errors.replaceChildren(errorBox({ detail: `${f.message} (${f.code})` }));
        break;
      case "event":
        onEvent(f);
        break;
      default:
        break;
    }
  }

  function onEvent(f) {
    if (f.handle && f.runner_id) names.set(f.runner_id, f.handle);
    const who = f.runner_id === me ? "You" : nameOf(f.runner_id || "");
    switch (f.event) {
      case "registered": news(`${who} registered`); break;
      case "withdrew": news(`${who} withdrew`); break;
      case "retired":
        news(`${who} retired`);
        if (f.runner_id === me) stopRacing();
        break;
      case "paused": setPhase("paused"); news("The race is paused"); break;
      case "resumed": setPhase("running"); news("The race resumed"); break;
      case "runner_finished":
        news(`${who} finished in ${clock(f.time_s)} (${f.status})`);
        if (f.runner_id === me) stopRacing();
        break;
      case "disqualified":
        news(`${who} disqualified: ${f.reason}`);
        if (f.runner_id === me) stopRacing();
        break;
      case "aborted":
        state.race.status = "aborted";
        news(`The race was aborted: ${f.reason}`);
        showResults([]);
        break;
      case "closed":
        state.race.status = "finished";
        news("The race is closed");
        showResults(f.results || []);
        break;
      default: break;
    }
  }

  // Test and debug hook (localStorage `retrorun.testHooks` = "1"): the room, to drop its socket.
  if (localStorage.getItem("retrorun.testHooks") === "1") window.__retrorunRoom = room;
  room.open();
}
