// Home: this week's challenge front and centre, my progress, the other current challenges.

import { api } from "../api.js";
import { h, render, errorBox, challengeValue, progressBar, when, km, clock } from "../ui.js";

function target(c) {
  return c.kind === "best_time" ? `fastest ${km(c.distance_m)}` : challengeValue(c.kind, c.target_value);
}

function progressBlock(challenge, progress) {
  if (!progress?.joined) return h("p.muted", "You have not joined yet.");
  const rank = progress.rank ? `#${progress.rank} of ${progress.of}` : `${progress.of} joined`;
  return h("div.progress-block",
    progressBar(progress.percent),
    h("dl.kv",
      h("dt", "Done"), h("dd#progress-value", challenge.kind === "best_time"
        ? `best ${clock(progress.value)} over ${km(progress.target_value)}`
        : `${challengeValue(challenge.kind, progress.value ?? 0)} of ${challengeValue(challenge.kind, progress.target_value)}`),
      h("dt", "Percent"), h("dd", `${progress.percent}%`),
      h("dt", "Rank"), h("dd#progress-rank", rank)));
}

function challengeCard(challenge, progress, { hero, onJoin }) {
  const joinButton = progress?.joined ? null
    : h("button#join", { onclick: onJoin, disabled: challenge.status !== "open" }, "Join challenge");
  return h(`section.card${hero ? ".hero" : ""}`, { "aria-labelledby": `c-${challenge.id}` },
    hero ? h("p.eyebrow", "This week") : null,
    h(hero ? "h1" : "h2", { id: `c-${challenge.id}` }, challenge.title),
    challenge.description ? h("p", challenge.description) : null,
    h("p.muted.small", `Goal: ${target(challenge)} · until ${when(challenge.ends_at)}`
      + ` · ${challenge.members} joined`),
    progress ? progressBlock(challenge, progress) : null,
    joinButton,
    hero && progress?.joined ? h("a.button#record-cta", { href: "#/record" }, "Record a backward run") : null);
}

export async function homeScreen({ session, isCurrent }) {
  render(h("h1", `Hi ${session.me.handle}`), h("p.muted", "Loading this week's challenge…"));
  const [current, others] = await Promise.allSettled([api.currentChallenge(), api.challenges()]);
  let progress = null;
  if (current.status === "fulfilled") {
    progress = await api.progress(current.value.id).catch(() => null);
  }
  if (!isCurrent()) return;

  const hero = h("div");
  const drawHero = (challenge, prog, error) => {
    hero.replaceChildren(challengeCard(challenge, prog, {
      hero: true,
      onJoin: async (e) => {
        e.target.disabled = true;
        try {
          drawHero(challenge, await api.join(challenge.id));
        } catch (err) {
          drawHero(challenge, prog, err);
        }
      },
    }));
    if (error) hero.append(errorBox(error));
  };
  if (current.status === "fulfilled") drawHero(current.value, progress);
  else hero.append(h("section.card.hero", h("p.eyebrow", "This week"), errorBox(current.reason)));

  const list = others.status === "fulfilled"
    ? others.value.filter((c) => c.id !== current.value?.id) : [];
  render(
    hero,
    progress?.joined ? null : h("a.button.secondary", { href: "#/record" }, "Record a run"),
    h("h2", "Other challenges"),
    others.status === "rejected" ? errorBox(others.reason)
      : list.length ? h("ul.list", list.map((c) => h("li",
        h("b", c.title), h("p.muted.small",
          `${c.status} · ${target(c)}`
          + ` · until ${when(c.ends_at)} · ${c.members} joined`))))
        : h("p.muted", "No other challenges right now."),
  );
}
