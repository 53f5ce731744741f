// Spotters: a runner's safety partners. Invite an account by handle (it accepts), or share a
// revocable link with someone without an account; a spotter follows the runner's live races and
// must acknowledge the alerts (sudden stop, no progress). Also the public share-link pages
// (#/watch/<token>), which need no account.

import { api, ApiError } from "../api.js";
import { h, render, errorBox, when } from "../ui.js";
import { raceRoomScreen } from "./race.js";

const LIFETIMES = [["3600", "1 hour"], ["86400", "1 day"], ["604800", "7 days"]];

function watchUrl(tok) {
  return `${location.origin}/#/watch/${tok}`;
}

function statusOf(p) {
  return h(`span.status.${p.status === "accepted" ? "verified" : "pending"}`, p.status);
}

export async function spottersScreen({ isCurrent }) {
  render(h("h1", "Spotters"), h("p.muted", "Loading…"));
  const [pairings, links, races] = await Promise.all([api.pairings(), api.shareLinks(),
    api.races().catch(() => [])]);
  if (!isCurrent()) return;
  const again = () => spottersScreen({ isCurrent });
  const errors = h("div#spot-errors", { "aria-live": "assertive" });
  const guard = (fn) => async (e) => {
    e.preventDefault?.();
    const button = e.currentTarget;
    errors.replaceChildren();
    if (button) button.disabled = true;
    try {
      await fn();
    } catch (err) {
      errors.append(errorBox(err));
      if (button) button.disabled = false;
    }
  };

  // I am the runner: my spotters.
  const handle = h("input#spotter-handle", { type: "text", autocomplete: "off",
    autocapitalize: "none", spellcheck: "false", minlength: 3, maxlength: 32, required: true });
  const mySpotters = h("section.card#my-spotters", { "aria-labelledby": "my-spotters-h" },
    h("h2#my-spotters-h", "Your spotters"),
    h("p.muted.small", "A spotter follows your races live and is alerted if you stop suddenly."),
    pairings.spotters.length ? h("ul.list", pairings.spotters.map((p) => h("li",
      { dataset: { spotter: p.spotter_id } },
      h("p", h("b", p.spotter_handle || p.spotter_id), " ", statusOf(p)),
      h("button.secondary", { "aria-label": `Remove ${p.spotter_handle || "spotter"}`,
        onclick: guard(async () => { await api.unpair(p.spotter_id); again(); }) }, "Remove"))))
      : h("p.muted#no-spotters", "No spotter yet."),
    h("form#invite-spotter", { onsubmit: guard(async () => {
      await api.inviteSpotter(handle.value.trim());
      again();
    }) },
    h("label.field", { for: "spotter-handle" }, "Invite a spotter by handle"), handle,
    h("button", { type: "submit" }, "Invite")));

  // I am the spotter: runners I spot (or who invited me), with their live races.
  const spotting = h("section.card#spotting", { "aria-labelledby": "spotting-h" },
    h("h2#spotting-h", "Runners you spot"),
    pairings.spotting.length ? h("ul.list", pairings.spotting.map((p) => {
      const name = p.runner_handle || p.runner_id;
      const theirRaces = races.filter((r) => r.registered.includes(p.runner_id));
      return h("li", { dataset: { runner: p.runner_id } },
        h("p", h("b", name), " ", statusOf(p)),
        p.status === "invited"
          ? h("div.row",
            h("button.accept-spotting", { "aria-label": `Accept to spot ${name}`,
              onclick: guard(async () => { await api.acceptSpotting(p.runner_id); again(); }) },
            "Accept"),
            h("button.secondary", { "aria-label": `Decline to spot ${name}`,
              onclick: guard(async () => { await api.unpair(p.runner_id); again(); }) }, "Decline"))
          : h("div",
            theirRaces.length ? h("ul.flags", theirRaces.map((r) => h("li",
              h("a.follow", { href: `#/race/${r.id}`, "aria-label": `Follow ${name} in ${r.title}` },
                `Follow live: ${r.title}`),
              h("span.muted.small", ` · ${r.status} · ${when(r.scheduled_at)}`))))
              : h("p.muted.small", "No upcoming race: the follow link appears here."),
            h("button.secondary", { "aria-label": `Stop spotting ${name}`,
              onclick: guard(async () => { await api.unpair(p.runner_id); again(); }) },
            "Stop spotting")));
    })) : h("p.muted#no-spotting", "Nobody has asked you to spot them yet."));

  // Share links for someone without an account.
  const label = h("input#link-label", { type: "text", maxlength: 60, autocomplete: "off",
    placeholder: "Mum" });
  const lifetime = h("select#link-lifetime", LIFETIMES.map(([v, t]) =>
    h("option", { value: v, selected: v === "86400" }, t)));
  const created = h("div#link-created", { "aria-live": "polite" });
  const linkList = h("section.card#share-links", { "aria-labelledby": "links-h" },
    h("h2#links-h", "Share links"),
    h("p.muted.small", "For a spotter without an account: they follow your races until the link "
      + "expires or you revoke it."),
    h("form#new-link", { onsubmit: guard(async () => {
      const link = await api.createShareLink(label.value.trim(), Number(lifetime.value));
      const url = watchUrl(link.token);
      const field = h("input#link-url", { type: "text", readonly: true, value: url });
      created.replaceChildren(h("div.notice",
        h("p", h("b", "Send this link now: it is shown only once.")),
        h("label.field", { for: "link-url" }, "Share link"), field,
        h("button.secondary#copy-link", { type: "button", onclick: async (e) => {
          try {
            await navigator.clipboard.writeText(url);
            e.currentTarget.textContent = "Copied";
          } catch {
            field.select();
          }
        } }, "Copy link")));
      const list = await api.shareLinks();
      linkItems.replaceChildren(...list.map(linkItem));
    }) },
    h("label.field", { for: "link-label" }, "Who is it for? (optional)"), label,
    h("label.field", { for: "link-lifetime" }, "Valid for"), lifetime,
    h("button", { type: "submit" }, "Create a share link")),
    created);
  const linkItem = (l) => h("li", { dataset: { link: l.id } },
    h("p", h("b", l.label || "Share link"), " ",
      h(`span.status.${l.active ? "verified" : "rejected"}`, l.active ? "active"
        : l.revoked_at ? "revoked" : "expired")),
    h("p.muted.small", `made ${when(l.created_at)} · until ${when(l.expires_at)}`),
    l.active ? h("button.secondary.revoke", { "aria-label": `Revoke ${l.label || "the share link"}`,
      onclick: guard(async () => {
        await api.revokeShareLink(l.id);
        const list = await api.shareLinks();
        linkItems.replaceChildren(...list.map(linkItem));
      }) }, "Revoke") : null);
  const linkItems = h("ul.list#links", links.map(linkItem));
  linkList.append(linkItems);

  render(h("h1", "Spotters"), errors, mySpotters, spotting, linkList,
    h("div.notice.small", "Start backward running with a spotter, on a flat, clear surface."));
}

/** A share link opened by someone without an account: whom it follows, and their races. */
export async function watchScreen({ params: [shareToken], isCurrent }) {
  render(h("h1", "Spotter"), h("p.muted", "Loading…"));
  let watch;
  try {
    watch = await api.watch(shareToken);
  } catch (err) {
    if (!isCurrent()) return;
    const gone = err instanceof ApiError && err.code === "invalid_share_link";
    render(h("h1", "Spotter"), errorBox(gone ? "This share link was revoked or has expired." : err));
    return;
  }
  if (!isCurrent()) return;
  const name = watch.handle || "the runner";
  render(
    h("h1", `Spotting ${name}`),
    h("p.muted.small", `This link works until ${when(watch.expires_at)}.`),
    watch.races.length ? h("ul.list#watch-races", watch.races.map((r) => h("li",
      h("p", h("b", r.title), " ", h("span.status.pending", r.status)),
      h("p.muted.small", when(new Date(r.scheduled_at * 1000).toISOString())),
      h("a.button", { href: `#/watch/${shareToken}/${r.id}`,
        "aria-label": `Follow ${name} in ${r.title}` }, "Follow live"))))
      : h("p.card#watch-none", `${name} has no upcoming race. Keep this page: reload it later.`),
    h("div.notice.small", "If an alert comes in, check on the runner and acknowledge it."));
}

/** The live room of a share-link spotter (no account: the room knows the link). */
export async function watchRoomScreen({ params: [shareToken, raceId], isCurrent }) {
  const names = new Map();
  try {
    const watch = await api.watch(shareToken);
    if (watch.handle) names.set(watch.runner_id, watch.handle);
  } catch { /* the room refuses a bad link with its own error */ }
  if (!isCurrent()) return;
  await raceRoomScreen({ params: [raceId], shareToken, names, back: `#/watch/${shareToken}` });
}
