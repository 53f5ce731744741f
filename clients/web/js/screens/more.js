// More: account, moderator console, clubs, spotters, and the race and drill rooms.

import { api } from "../api.js";
import { h, render } from "../ui.js";

export function moreScreen({ session, go }) {
  render(
    h("h1", "More"),
    h("section.card",
      h("p", "Signed in as ", h("b#me-handle", session.me.handle), ` (${session.me.role})`),
      h("button.secondary#sign-out", { onclick: async () => {
        try { await api.signOut(); } catch { /* offline: the token is forgotten anyway */ }
        session.clear();
        go("signin");
      } }, "Sign out")),
    session.isModerator ? h("a.button#to-mod", { href: "#/mod" }, "Moderator console") : null,
    h("a.button.secondary#to-clubs", { href: "#/clubs" }, "Clubs"),
    h("a.button.secondary#to-spotters", { href: "#/spotters" }, "Spotters"),
    h("a.button.secondary", { href: "#/race" }, "Race room"),
    h("a.button.secondary", { href: "#/drill" }, "Drill room"),
    h("p.muted.small", "RetroRun checks every run's pace against backward-running records, "
      + "so cars, bikes and spoofed GPS stay off the boards."));
}
