// RetroRun phone client: hash routing, the signed-in runner, the service worker.

import { api, token, setUnauthorizedHandler, NetworkError, ME_KEY, currentRunnerId } from "./api.js";
import { h, render, errorBox } from "./ui.js";
import { activeRun, pendingRuns, runStore } from "./store.js";
import { flushPending, onUploadNews } from "./upload.js";
import { signInScreen, signUpScreen } from "./screens/auth.js";
import { homeScreen } from "./screens/home.js";
import { recordScreen, feed } from "./screens/record.js";
import { runsScreen, runScreen } from "./screens/runs.js";
import { boardsScreen } from "./screens/boards.js";
import { moreScreen } from "./screens/more.js";
import { racesScreen, raceRoomScreen } from "./screens/race.js";
import { drillsScreen, drillRoomScreen } from "./screens/drill.js";
import { queueScreen, reviewScreen } from "./screens/moderation.js";
import { clubsScreen, clubScreen } from "./screens/clubs.js";
import { spottersScreen, watchScreen, watchRoomScreen } from "./screens/spotters.js";

export const session = {
  me: JSON.parse(localStorage.getItem(ME_KEY) || "null"),
  get isModerator() { return ["moderator", "admin"].includes(this.me?.role); },
  async load() {
    try {
      this.me = await api.me();
      localStorage.setItem(ME_KEY, JSON.stringify(this.me));
    } catch (err) {
      if (!(err instanceof NetworkError) || !this.me) throw err; // offline: keep the cached runner
    }
    return this.me;
  },
  clear() {
    this.me = null;
    localStorage.removeItem(ME_KEY);
    token.clear();
  },
};

const PUBLIC = { signin: signInScreen, signup: signUpScreen };
// Pages for someone without an account: a spotter's share link.
const PUBLIC_ROUTES = [
  [/^watch\/([\w-]+)$/, watchScreen],
  [/^watch\/([\w-]+)\/([\w-]+)$/, watchRoomScreen],
];
const ROUTES = [
  [/^home$/, homeScreen, "home"],
  [/^record$/, recordScreen, "record"],
  [/^runs$/, runsScreen, "runs"],
  [/^runs\/([\w-]+)$/, runScreen, "runs"],
  [/^boards(?:\/([\w:-]+))?$/, boardsScreen, "boards"],
  [/^more$/, moreScreen, "more"],
  [/^race$/, racesScreen, "more"],
  [/^race\/([\w-]+)$/, raceRoomScreen, "more"],
  [/^drill$/, drillsScreen, "more"],
  [/^drill\/([\w-]+)$/, drillRoomScreen, "more"],
  [/^mod$/, queueScreen, "more"],
  [/^mod\/([\w-]+)$/, reviewScreen, "more"],
  [/^clubs$/, clubsScreen, "more"],
  [/^clubs\/([\w-]+)$/, clubScreen, "more"],
  [/^spotters$/, spottersScreen, "more"],
];

export function go(path) {
  if (location.hash === `#/${path}`) route();
  else location.hash = `#/${path}`;
}

let routing = 0;
async function route() {
  const ticket = ++routing;
  const path = location.hash.replace(/^#\/?/, "") || "home";
  const tabs = document.getElementById("tabs");
  if (PUBLIC[path]) {
    tabs.hidden = true;
    return PUBLIC[path]({ go, session });
  }
  const open = PUBLIC_ROUTES.map(([re, screen]) => [re.exec(path), screen]).find(([m]) => m);
  if (open) {
    tabs.hidden = !token.get();
    const [m, screen] = open;
    try {
      await screen({ go, session, params: m.slice(1), isCurrent: () => ticket === routing });
    } catch (err) {
      if (ticket === routing) render(errorBox(err), h("button", { onclick: route }, "Try again"));
    }
    return undefined;
  }
  if (!token.get()) return go("signin");
  if (!session.me) {
    try {
      await session.load();
    } catch (err) {
      if (err.status === 401) { session.clear(); return go("signin"); }
      return render(h("h1", "RetroRun"), errorBox(err), h("button", { onclick: route }, "Try again"));
    }
  }
  if (ticket !== routing) return undefined;
  const match = ROUTES.map(([re, screen, tab]) => [re.exec(path), screen, tab]).find(([m]) => m);
  if (!match) return go("home");
  const [m, screen, tab] = match;
  tabs.hidden = false;
  for (const a of tabs.querySelectorAll("a")) {
    if (a.dataset.tab === tab) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    await screen({ go, session, params: m.slice(1), isCurrent: () => ticket === routing });
  } catch (err) {
    if (ticket === routing) render(errorBox(err), h("button", { onclick: route }, "Try again"));
  }
  return undefined;
}

async function showNetwork() {
  const el = document.getElementById("net");
  const waiting = (await pendingRuns(currentRunnerId())).length;
  const parts = [];
  if (!navigator.onLine) parts.push("Offline");
  if (waiting) parts.push(`${waiting} run${waiting > 1 ? "s" : ""} to upload`);
  el.textContent = parts.join(" · ");
}

setUnauthorizedHandler(() => {
  session.clear();
  go("signin");
});
window.addEventListener("hashchange", route);
window.addEventListener("online", showNetwork);
window.addEventListener("offline", showNetwork);
onUploadNews(() => showNetwork());

// Test and debug hook: feed a wire fix ({t, lat, lon, acc, speed, course, heading}) to the run
// being recorded, exactly as the GPS callback does. Enabled only when localStorage has
// `retrorun.testHooks` = "1" (the browser tests set it); the server checks every run anyway.
if (localStorage.getItem("retrorun.testHooks") === "1") window.__retrorunFeed = feed;

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch(() => {});
}

(async () => {
  // Forget finished runs older than a day (their fixes are already gone).
  const store = await runStore();
  for (const run of await store.allRuns()) {
    if (run.state === "done" && Date.now() - run.startedAt > 86400000) await store.deleteRun(run.key);
  }
  showNetwork();
  if (token.get()) flushPending();
  // In the middle of a run (a reload, a crash): straight back to the recording.
  if (token.get() && (await activeRun(currentRunnerId()))) go("record");
  else route();
})();
