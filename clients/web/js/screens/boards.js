// Leaderboards: this week's distance, all-time XP, this week's challenge; paging and "find me".

import { api, ApiError } from "../api.js";
import { h, render, errorBox, km, clock, isoWeekBoard } from "../ui.js";

const PAGE = 20;

async function tabsFor() {
  const tabs = [
    { id: isoWeekBoard(), label: "This week", score: km },
    { id: "xp:all", label: "All-time XP", score: (v) => `${Math.round(v)} XP` },
  ];
  try {
    const c = await api.currentChallenge();
    tabs.push({ id: `challenge:${c.id}`, label: "Challenge", title: c.title,
      score: c.kind === "distance" ? km : c.kind === "time" || c.kind === "best_time" ? clock
        : (v) => String(Math.round(v)) });
  } catch {
    // no weekly challenge open: two tabs
  }
  return tabs;
}

export async function boardsScreen({ session, params: [wanted], isCurrent, go }) {
  const tabs = await tabsFor();
  if (!isCurrent()) return;
  const tab = tabs.find((t) => t.id === wanted) || tabs[0];
  let offset = 0;
  const body = h("div#board", { "aria-live": "polite" });
  const pager = h("div.row");

  const table = (page, tabDef) => h("table.board",
    h("thead", h("tr", h("th", "#"), h("th", "Runner"), h("th.num", "Score"))),
    h("tbody", page.entries.map((e) => h(`tr${e.runner_id === session.me.id ? ".me" : ""}`,
      h("td", String(e.rank)), h("td", e.handle || "(gone)"), h("td.num", tabDef.score(e.score))))));

  const show = async (load) => {
    body.replaceChildren(h("p.muted", "Loading…"));
    pager.replaceChildren();
    try {
      const page = await load();
      if (!isCurrent()) return;
      body.replaceChildren(
        h("p.muted.small", `${page.total} runner${page.total === 1 ? "" : "s"} ranked`),
        page.entries.length ? table(page, tab) : h("p.muted", "Nobody on this board yet."));
      offset = page.offset;
      pager.replaceChildren(
        h("button.secondary", { disabled: offset === 0, onclick: () => page_(Math.max(0, offset - PAGE)) },
          "Previous"),
        h("button.secondary", { disabled: offset + page.entries.length >= page.total,
          onclick: () => page_(offset + PAGE) }, "Next"));
    } catch (err) {
      const msg = err instanceof ApiError && err.code === "not_ranked"
        ? "You are not on this board yet: a verified run puts you there." : err;
      body.replaceChildren(errorBox(msg));
    }
  };
  const page_ = (o) => show(() => api.board(tab.id, PAGE, o));

  render(
    h("h1", "Leaderboards"),
    h("div.segmented", { role: "group", "aria-label": "Board" }, tabs.map((t) => h("button", {
      "aria-pressed": t.id === tab.id ? "true" : "false",
      dataset: { board: t.id },
      onclick: () => go(`boards/${t.id}`),
    }, t.label))),
    h("p.muted.small#board-name", tab.title || tab.id),
    body, pager,
    h("button#find-me", { onclick: () => show(() => api.around(tab.id, session.me.id)) }, "Find me"));
  await page_(0);
}
