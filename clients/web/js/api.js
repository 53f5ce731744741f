// The RetroRun HTTP API (the public contract in docs/api.md). Errors become ApiError carrying
// the RFC 9457 problem document's `detail` and `code`.

const BASE = "/api/v1";
const TOKEN_KEY = "retrorun.token";
export const ME_KEY = "retrorun.me";

/** The id of the signed-in runner (cached), so buffered runs upload only under their owner. */
export function currentRunnerId() {
  try {
    return JSON.parse(localStorage.getItem(ME_KEY) || "null")?.id || null;
  } catch {
    return null;
  }
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `request failed (${status})`);
    this.status = status;
    this.detail = this.message;
    this.code = problem?.code || "error";
    this.problem = problem;
  }
}

/** A network failure (offline, server unreachable): worth retrying. */
export class NetworkError extends Error {
  constructor(cause) {
    super("no connection to the RetroRun server");
    this.detail = this.message;
    this.code = "offline";
    this.cause = cause;
  }
}

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY),
  set: (t) => localStorage.setItem(TOKEN_KEY, t),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function request(method, path, { json, form, headers = {}, auth = true } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form);
  }
  const t = token.get();
  if (auth && t) init.headers.Authorization = `Bearer ${t}`;
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch (err) {
    throw new NetworkError(err);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const err = new ApiError(response.status, body);
    if (response.status === 401 && auth && t) onUnauthorized(err);
    throw err;
  }
  return body;
}

export const api = {
  register: (handle, password) =>
    request("POST", "/auth/register", { json: { handle, password }, auth: false }),
  signIn: async (handle, password) => {
    const body = await request("POST", "/auth/token", {
      form: { username: handle, password }, auth: false,
    });
    token.set(body.access_token);
    return body;
  },
  signOut: async () => {
    try {
      if (token.get()) await request("POST", "/auth/logout");
    } finally {
      token.clear();
    }
  },
  me: () => request("GET", "/me"),
  currentChallenge: () => request("GET", "/challenges/current"),
  challenges: () => request("GET", "/challenges?state=current"),
  join: (id) => request("POST", `/challenges/${encodeURIComponent(id)}/join`),
  progress: (id) => request("GET", `/challenges/${encodeURIComponent(id)}/progress`),
  submitRun: (body, idempotencyKey) =>
    request("POST", "/runs", { json: body, headers: { "Idempotency-Key": idempotencyKey } }),
  run: (id) => request("GET", `/runs/${encodeURIComponent(id)}`),
  myRuns: (limit = 30) => request("GET", `/me/runs?limit=${limit}`),
  board: (board, limit = 20, offset = 0) =>
    request("GET", `/leaderboards/${encodeURIComponent(board)}?limit=${limit}&offset=${offset}`),
  around: (board, userId) =>
    request("GET", `/leaderboards/${encodeURIComponent(board)}/around/${encodeURIComponent(userId)}`),
  races: () => request("GET", "/races"),
  race: (id) => request("GET", `/races/${encodeURIComponent(id)}`),
  registerRace: (id) => request("POST", `/races/${encodeURIComponent(id)}/register`),
  drill: (id) => request("GET", `/drills/${encodeURIComponent(id)}`),
  queue: () => request("GET", "/moderation/queue"),
  review: (id, decision, reason, crop) =>
    request("POST", `/runs/${encodeURIComponent(id)}/review`, { json: { decision, reason, ...crop } }),
  track: (id) => request("GET", `/runs/${encodeURIComponent(id)}/track`),
  createRace: (body) => request("POST", "/races", { json: body }),
  // clubs
  myClubs: () => request("GET", "/clubs/mine"),
  createClub: (name) => request("POST", "/clubs", { json: { name } }),
  joinClub: (code) => request("POST", "/clubs/join", { json: { code } }),
  club: (id) => request("GET", `/clubs/${encodeURIComponent(id)}`),
  clubInvite: (id, handle) =>
    request("POST", `/clubs/${encodeURIComponent(id)}/invites`, { json: { handle } }),
  clubAccept: (id) => request("POST", `/clubs/${encodeURIComponent(id)}/invites/accept`),
  clubLeave: (id) => request("POST", `/clubs/${encodeURIComponent(id)}/leave`),
  clubRemove: (id, runnerId) =>
    request("DELETE", `/clubs/${encodeURIComponent(id)}/members/${encodeURIComponent(runnerId)}`),
  clubRole: (id, runnerId, role) => request("PUT",
    `/clubs/${encodeURIComponent(id)}/members/${encodeURIComponent(runnerId)}/role`, { json: { role } }),
  clubTransfer: (id, runnerId) =>
    request("POST", `/clubs/${encodeURIComponent(id)}/transfer`, { json: { runner_id: runnerId } }),
  clubRotateCode: (id) => request("POST", `/clubs/${encodeURIComponent(id)}/join-code`),
  clubCalendar: (id) => request("GET", `/clubs/${encodeURIComponent(id)}/calendar`),
  // spotters
  pairings: () => request("GET", "/spotters"),
  inviteSpotter: (handle) => request("POST", "/spotters/invites", { json: { handle } }),
  acceptSpotting: (runnerId) =>
    request("POST", `/spotters/invites/${encodeURIComponent(runnerId)}/accept`),
  unpair: (otherId) => request("DELETE", `/spotters/pairings/${encodeURIComponent(otherId)}`),
  shareLinks: () => request("GET", "/spotters/links"),
  createShareLink: (label, expiresInS) =>
    request("POST", "/spotters/links", { json: { label, expires_in_s: expiresInS } }),
  revokeShareLink: (id) => request("DELETE", `/spotters/links/${encodeURIComponent(id)}`),
  watch: (shareToken) =>
    request("GET", `/spotters/watch/${encodeURIComponent(shareToken)}`, { auth: false }),
};
