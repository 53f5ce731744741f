// Clubs: my clubs, my pending invitations (accept or decline), create one, join with a code; a
// club's page with its calendar (and the
// iCalendar feed phones subscribe to), club races scheduled by its admins, its leaderboard
// (members by verified distance), members and roles (the owner promotes, demotes and hands
// over; admins invite and remove), and leaving.

import { api, request } from "../api.js";
import { h, render, errorBox, km, when } from "../ui.js";

function guarded(errors, fn) {
  return async (e) => {
    e.preventDefault?.();
    const button = e.currentTarget instanceof HTMLButtonElement ? e.currentTarget
      : e.currentTarget?.querySelector?.("button[type=submit]");
    errors.replaceChildren();
    if (button) button.disabled = true;
    try {
      await fn(e);
    } catch (err) {
      errors.append(errorBox(err));
    } finally {
      if (button?.isConnected) button.disabled = false;
    }
  };
}

export async function clubsScreen({ isCurrent, go }) {
  render(h("h1", "Clubs"), h("p.muted", "Loading…"));
  const [clubs, invites] = await Promise.all([api.myClubs(),
    request("GET", "/clubs/invites").catch(() => [])]);
  if (!isCurrent()) return;
  const errors = h("div#club-errors", { "aria-live": "assertive" });
  const membersText = (n) => `${n} member${n === 1 ? "" : "s"}`;
  const inviteCard = invites.length ? h("section.card#club-invites", { "aria-labelledby": "invites-h" },
    h("h2#invites-h", "Invitations"),
    h("ul.list#invites", invites.map((i) => h("li", { dataset: { club: i.club_id } },
      h("p", h("b", i.club_name)),
      h("p.muted.small", `Invited by ${i.invited_by_handle || "a club admin"}`
        + `${i.invited_at ? ` · ${when(i.invited_at)}` : ""} · ${membersText(i.members)}`),
      h("div.row.wrap",
        h("button.accept-invite", { "aria-label": `Accept the invitation to ${i.club_name}`,
          onclick: guarded(errors, async () => {
            await api.clubAccept(i.club_id);
            go(`clubs/${i.club_id}`);
          }) }, "Accept"),
        h("button.secondary.decline-invite", { "aria-label": `Decline the invitation to ${i.club_name}`,
          onclick: guarded(errors, async () => {
            await request("POST", `/clubs/${encodeURIComponent(i.club_id)}/invites/decline`);
            clubsScreen({ isCurrent, go });
          }) }, "Decline"))))))
    : null;
  const name = h("input#club-name", { type: "text", minlength: 3, maxlength: 60, required: true,
    autocomplete: "off" });
  const code = h("input#club-code", { type: "text", minlength: 4, maxlength: 32, required: true,
    autocomplete: "off", autocapitalize: "none", spellcheck: "false" });
  render(
    h("h1", "Clubs"),
    clubs.length ? h("ul.list#my-clubs", clubs.map((c) => h("li", { dataset: { club: c.id } },
      h("a.rowlink", { href: `#/clubs/${c.id}` },
        h("p", h("b", c.name)),
        h("p.muted.small", `${c.your_role} · ${membersText(c.members)}`)))))
      : h("p.muted#no-clubs", "You are in no club yet: join one with its code, or start your own."),
    errors,
    inviteCard,
    h("form.card#join-club", { onsubmit: guarded(errors, async () => {
      const club = await api.joinClub(code.value.trim());
      go(`clubs/${club.id}`);
    }) },
    h("h2", "Join a club"),
    h("label.field", { for: "club-code" }, "Join code"), code,
    h("button", { type: "submit" }, "Join")),
    h("form.card#create-club", { onsubmit: guarded(errors, async () => {
      const club = await api.createClub(name.value.trim());
      go(`clubs/${club.id}`);
    }) },
    h("h2", "Start a club"),
    h("label.field", { for: "club-name" }, "Club name"), name,
    h("button", { type: "submit" }, "Create club")));
}

function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`
    + `T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export async function clubScreen({ session, params: [id], isCurrent, go }) {
  render(h("h1", "Club"), h("p.muted", "Loading…"));
  const club = await api.club(id);
  const member = club.your_role !== null && club.your_role !== undefined;
  const [board, calendar] = member
    ? await Promise.all([api.board(`club:${id}`, 100, 0).catch(() => null),
      api.clubCalendar(id).catch((err) => err)])
    : [null, null];
  if (!isCurrent()) return;
  const again = () => clubScreen({ session, params: [id], isCurrent, go });
  const errors = h("div#club-errors", { "aria-live": "assertive" });
  const me = session.me.id;
  const isOwner = club.your_role === "owner";
  const isAdmin = isOwner || club.your_role === "admin";

  if (!member) {
    render(h("h1", club.name),
      h("p.muted", `${club.members} member${club.members === 1 ? "" : "s"}. You are not a member.`),
      errors,
      h("button#accept-invite", { onclick: guarded(errors, async () => {
        await api.clubAccept(id);
        again();
      }) }, "Accept my invitation"),
      h("a.button.secondary", { href: "#/clubs" }, "My clubs"));
    return;
  }

  const handles = new Map((board?.entries || []).map((e) => [e.runner_id, e.handle]));
  handles.set(me, session.me.handle);
  const nameOf = (rid) => handles.get(rid) || `${rid.slice(0, 8)}…`;

  // Calendar, with the feed to subscribe to.
  const feed = new URL(club.calendar_url, location.origin).href;
  const feedField = h("input#ics-url", { type: "text", readonly: true, value: feed });
  const calendarCard = h("section.card#club-calendar", { "aria-labelledby": "cal-h" },
    h("h2#cal-h", "Calendar"),
    calendar instanceof Error ? errorBox(calendar)
      : calendar.length ? h("ul.list#calendar", calendar.map((item) => h("li",
        { dataset: { kind: item.kind, id: item.id } },
        h("p", h("b", item.title), " ", h("span.status.pending", item.kind)),
        h("p.small", when(item.starts_at), item.ends_at ? ` – ${when(item.ends_at)}` : ""),
        item.kind === "race" ? h("a", { href: `#/race/${item.id}` }, "Open the race room") : null)))
        : h("p.muted#calendar-empty", "Nothing scheduled yet."),
    h("a.button.secondary#ics-link", { href: feed, download: "club.ics" }, "Calendar feed (iCalendar)"),
    h("label.field", { for: "ics-url" }, "Subscribe on your phone with this address"), feedField);

  // Admins: schedule a club race.
  let scheduleCard = null;
  if (isAdmin) {
    const title = h("input#race-title-in", { type: "text", minlength: 3, maxlength: 80,
      required: true, autocomplete: "off" });
    const distance = h("input#race-distance", { type: "number", min: 50, max: 42195, value: 400,
      inputmode: "numeric" });
    const at = h("input#race-at", { type: "datetime-local",
      value: localInputValue(new Date(Date.now() + 86400000)) });
    const membersOnly = h("input#race-members-only", { type: "checkbox" });
    scheduleCard = h("form.card#schedule-race", { onsubmit: guarded(errors, async () => {
      const when_ = new Date(at.value);
      if (Number.isNaN(when_.getTime())) throw new Error("Choose a date and time.");
      await api.createRace({ title: title.value.trim(), distance_m: Number(distance.value),
        scheduled_at: when_.toISOString(), club_id: id, open: !membersOnly.checked });
      again();
    }) },
    h("h2", "Schedule a club race"),
    h("label.field", { for: "race-title-in" }, "Title"), title,
    h("label.field", { for: "race-distance" }, "Distance (metres)"), distance,
    h("label.field", { for: "race-at" }, "Start (your time)"), at,
    h("label.check", { for: "race-members-only" }, membersOnly, "Members only"),
    h("button", { type: "submit" }, "Schedule race"));
  }

  // Admins: join code and invitations.
  let adminCard = null;
  if (isAdmin) {
    const invitee = h("input#invite-handle", { type: "text", minlength: 3, maxlength: 32,
      required: true, autocomplete: "off", autocapitalize: "none", spellcheck: "false" });
    adminCard = h("section.card#club-admin", { "aria-labelledby": "admin-h" },
      h("h2#admin-h", "Invite members"),
      h("p", "Join code: ", h("b#join-code", club.join_code || "–")),
      h("button.secondary#rotate-code", { onclick: guarded(errors, async () => {
        await api.clubRotateCode(id);
        again();
      }) }, "New join code (the old one stops working)"),
      h("form#invite-member", { onsubmit: guarded(errors, async () => {
        await api.clubInvite(id, invitee.value.trim());
        invitee.value = "";
        errors.append(h("p.ok", "Invitation sent: they find it under Invitations on their Clubs screen."));
      }) },
      h("label.field", { for: "invite-handle" }, "Invite by handle"), invitee,
      h("button", { type: "submit" }, "Invite")));
  }

  // Leaderboard (members by verified distance).
  const boardCard = h("section.card#club-board", { "aria-labelledby": "board-h" },
    h("h2#board-h", "Club leaderboard"),
    board?.entries?.length ? h("table.board",
      h("thead", h("tr", h("th", "#"), h("th", "Runner"), h("th.num", "Distance"))),
      h("tbody", board.entries.map((e) => h(`tr${e.runner_id === me ? ".me" : ""}`,
        h("td", String(e.rank)), h("td", e.handle || "(gone)"), h("td.num", km(e.score))))))
      : h("p.muted", "Nobody has a verified run yet."));

  // Members and roles.
  const memberItems = (club.member_list || []).map((m) => {
    const actions = [];
    const self = m.runner_id === me;
    if (isOwner && !self) {
      actions.push(m.role === "admin"
        ? h("button.secondary.demote", { "aria-label": `Make ${nameOf(m.runner_id)} a member`,
          onclick: guarded(errors, async () => { await api.clubRole(id, m.runner_id, "member"); again(); }) },
        "Make member")
        : h("button.secondary.promote", { "aria-label": `Make ${nameOf(m.runner_id)} an admin`,
          onclick: guarded(errors, async () => { await api.clubRole(id, m.runner_id, "admin"); again(); }) },
        "Make admin"));
      actions.push(h("button.secondary.transfer", {
        "aria-label": `Hand ownership to ${nameOf(m.runner_id)}`,
        onclick: guarded(errors, async () => {
          if (!window.confirm(`Hand the club to ${nameOf(m.runner_id)}? You become an admin.`)) return;
          await api.clubTransfer(id, m.runner_id);
          again();
        }) }, "Make owner"));
    }
    if (isAdmin && !self && m.role !== "owner" && (isOwner || m.role === "member")) {
      actions.push(h("button.danger.remove", { "aria-label": `Remove ${nameOf(m.runner_id)}`,
        onclick: guarded(errors, async () => { await api.clubRemove(id, m.runner_id); again(); }) },
      "Remove"));
    }
    return h("li", { dataset: { member: m.runner_id, role: m.role } },
      h("p", h("b", self ? `${nameOf(m.runner_id)} (you)` : nameOf(m.runner_id)), " ",
        h("span.status.pending", m.role)),
      actions.length ? h("div.row.wrap", actions) : null);
  });
  const membersCard = h("section.card#club-members", { "aria-labelledby": "members-h" },
    h("h2#members-h", `Members (${club.members})`),
    h("ul.list#members", memberItems));

  render(
    h("h1#club-title", club.name),
    h("p.muted#club-role", `You are ${{ owner: "the owner", admin: "an admin" }[club.your_role]
      || "a member"} · ${club.members} member${club.members === 1 ? "" : "s"}`),
    errors,
    calendarCard, scheduleCard, boardCard, adminCard, membersCard,
    h("button.secondary#leave-club", { onclick: guarded(errors, async () => {
      await api.clubLeave(id);
      go("clubs");
    }) }, isOwner ? "Leave (hand the club over first)" : "Leave the club"),
    h("a.button.secondary", { href: "#/clubs" }, "My clubs"));
}
