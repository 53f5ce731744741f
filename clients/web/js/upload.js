// Uploading finished runs: POST /api/v1/runs with the run's Idempotency-Key, retried with
// back-off while offline or while the server fails, so no run is lost and none counts twice.

import { api, ApiError, NetworkError, currentRunnerId } from "./api.js";
import { pendingRuns, runStore } from "./store.js";

const RETRY_S = [1, 2, 4, 8, 15, 30];
const listeners = new Set();
const attempts = new Map(); // run key -> failed attempts so far
let timer = null;
let flushing = null;

/** Subscribe to upload news: {key, state: "uploading"|"waiting"|"done"|"failed", ...}. */
export function onUploadNews(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function tell(news) {
  for (const fn of listeners) fn(news);
}

function retryable(err) {
  if (err instanceof NetworkError) return true;
  if (err instanceof ApiError) return err.status >= 500 || err.status === 408 || err.status === 429;
  return false;
}

async function uploadOne(run) {
  const store = await runStore();
  const points = await store.fixes(run.key);
  if (!points.length) {
    await store.deleteRun(run.key);
    tell({ key: run.key, state: "failed", error: "No GPS fix was recorded, so there is nothing to upload." });
    return;
  }
  tell({ key: run.key, state: "uploading", fixes: points.length });
  try {
    const result = await api.submitRun(
      { activity: "backward_run", points, checklist: run.checklist || {} }, run.key,
    );
    attempts.delete(run.key);
    await store.putRun({ ...run, state: "done", result, anchor: null });
    await store.dropFixes(run.key);
    tell({ key: run.key, state: "done", result });
  } catch (err) {
    if (retryable(err)) {
      const n = (attempts.get(run.key) || 0) + 1;
      attempts.set(run.key, n);
      const wait = RETRY_S[Math.min(n - 1, RETRY_S.length - 1)];
      tell({ key: run.key, state: "waiting", error: err.detail || err.message, attempt: n, wait });
      schedule(wait);
      return;
    }
    if (err instanceof ApiError && err.status === 401) {
      // Signed out or the token expired: the run waits; signing in flushes it.
      tell({ key: run.key, state: "waiting", error: "Sign in again to upload this run.", attempt: 0 });
      return;
    }
    await store.putRun({ ...run, state: "failed", error: err.detail || err.message });
    tell({ key: run.key, state: "failed", error: err.detail || err.message });
  }
}

function schedule(seconds) {
  clearTimeout(timer);
  timer = setTimeout(flushPending, seconds * 1000);
}

/** Upload every pending run (one pass; failures reschedule themselves). */
export function flushPending() {
  if (flushing) return flushing;
  flushing = (async () => {
    try {
      const me = currentRunnerId();
      if (me) for (const run of await pendingRuns(me)) await uploadOne(run);
    } finally {
      flushing = null;
    }
  })();
  return flushing;
}

/** Put a failed run back in the queue and try now. */
export async function retryRun(key) {
  const store = await runStore();
  const run = await store.getRun(key);
  if (!run) return;
  attempts.delete(key);
  await store.putRun({ ...run, state: "pending", error: null });
  return flushPending();
}

export async function discardRun(key) {
  attempts.delete(key);
  await (await runStore()).deleteRun(key);
}

window.addEventListener("online", () => flushPending());
