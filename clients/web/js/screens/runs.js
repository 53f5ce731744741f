// My runs, newest first, with their status and pace-check flags.

import { api } from "../api.js";
import { h, render, km, clock, pace, when, statusBadge, flagList } from "../ui.js";

export async function runsScreen({ isCurrent }) {
  render(h("h1", "My runs"), h("p.muted", "Loading…"));
  const runs = await api.myRuns(50);
  if (!isCurrent()) return;
  render(
    h("h1", "My runs"),
    runs.length ? h("ul.list#runs", runs.map((r) => h("li",
      h("a.rowlink", { href: `#/runs/${r.id}` },
        h("p", statusBadge(r.status), " ", h("b", km(r.distance_m)), ` in ${clock(r.duration_s)}`),
        h("p.muted.small", `${when(r.ended_at)} · ${pace(r.duration_s, r.distance_m)}`
          + (r.flags.length ? ` · ${r.flags.length} flag${r.flags.length > 1 ? "s" : ""}` : ""))),
      r.flags.length ? flagList(r.flags) : null)))
      : h("p.muted", "No runs yet. Your first backward run is one tap away."),
    h("a.button", { href: "#/record" }, "Record a run"));
}

export async function runScreen({ params: [id], isCurrent }) {
  const r = await api.run(id);
  if (!isCurrent()) return;
  render(
    h("h1", "Run"),
    h("p", statusBadge(r.status), r.appealed ? " appealed" : ""),
    h("dl.kv",
      h("dt", "When"), h("dd", when(r.started_at)),
      h("dt", "Distance"), h("dd", km(r.distance_m)),
      h("dt", "Credited"), h("dd", km(r.credited_distance_m)),
      h("dt", "Time"), h("dd", clock(r.duration_s)),
      h("dt", "Moving"), h("dd", clock(r.moving_s)),
      h("dt", "Pace"), h("dd", pace(r.duration_s, r.distance_m)),
      h("dt", "GPS fixes"), h("dd", String(r.fix_count)),
      h("dt", "Check score"), h("dd", String(r.score))),
    h("h2", "Pace check"),
    flagList(r.flags),
    h("a.button.secondary", { href: "#/runs" }, "Back to my runs"));
}
