// Live recording of a backward run: GPS fixes from watchPosition, the device's compass heading,
// a screen wake lock, live distance/time/pace, and every fix buffered as it arrives.

import { runStore } from "./store.js";
import { uuid } from "./ui.js";

const EARTH_RADIUS_M = 6371008.8;
const MAX_ACC_M = 20;          // fixes less accurate than this are kept but not counted live
const HEADING_FRESH_MS = 2000; // a compass reading older than this is not attached to a fix
export const CHECKLIST = [
  ["flat_clear_surface", "Flat, clear surface"],
  ["soft_surface", "Soft surface (grass, track)"],
  ["spotter_present", "A spotter is with me"],
  ["route_walked_first", "I walked the route first"],
];

export function haversine(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const s = Math.sin(dLat / 2) ** 2
    + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(s)));
}

/** A Geolocation position as a wire fix ({t, lat, lon, acc, speed, course}). */
export function fixFromPosition(position) {
  const c = position.coords;
  return clean({
    t: position.timestamp / 1000,
    lat: c.latitude,
    lon: c.longitude,
    acc: c.accuracy,
    speed: c.speed,
    course: c.heading,
  });
}

function clean(fix) {
  const out = {};
  for (const [k, v] of Object.entries(fix)) {
    if (v !== null && v !== undefined && !(typeof v === "number" && !Number.isFinite(v))) out[k] = v;
  }
  return out;
}

/** A new buffered run, saved before the first fix. The key doubles as the Idempotency-Key. */
export async function newRun(checklist, runnerId) {
  const run = {
    key: uuid(),
    runnerId,
    state: "recording",
    startedAt: Date.now(),
    checklist,
    fixCount: 0,
    distance_m: 0,
    firstT: null,
    lastT: null,
    anchor: null,
    lastAcc: null,
  };
  return (await runStore()).putRun(run);
}

/**
 * Ask for the compass where the browser wants a tap for it (iOS). Call it synchronously from the
 * Start tap, before any `await`, or the permission prompt is refused.
 */
export function requestCompassPermission() {
  const DOE = globalThis.DeviceOrientationEvent;
  if (DOE && typeof DOE.requestPermission === "function") {
    return DOE.requestPermission().catch(() => "denied");
  }
  return Promise.resolve("granted");
}

export class Recorder {
  constructor(run, onUpdate = () => {}) {
    this.run = run;
    this.onUpdate = onUpdate;
    this.watchId = null;
    this.heading = null; // {deg, at}
    this.wakeLock = null;
    this.gpsError = null;
    this.storeError = null;
    this.writes = Promise.resolve();
    this.running = false;
    this.onOrientation = (e) => this.orientation(e);
    this.onVisible = () => {
      if (document.visibilityState === "visible" && this.running) this.lockScreen();
    };
  }

  start() {
    this.running = true;
    if ("geolocation" in navigator) {
      this.watchId = navigator.geolocation.watchPosition(
        (p) => { this.gpsError = null; this.accept(fixFromPosition(p)); },
        (e) => { this.gpsError = e.message || "GPS unavailable"; this.onUpdate(this); },
        { enableHighAccuracy: true, maximumAge: 0, timeout: 30000 },
      );
    } else {
      this.gpsError = "this browser has no GPS access";
    }
    const absolute = "ondeviceorientationabsolute" in window;
    this.orientationEvent = absolute ? "deviceorientationabsolute" : "deviceorientation";
    window.addEventListener(this.orientationEvent, this.onOrientation);
    document.addEventListener("visibilitychange", this.onVisible);
    this.lockScreen();
    this.onUpdate(this);
  }

  orientation(e) {
    let deg = null;
    if (typeof e.webkitCompassHeading === "number") deg = e.webkitCompassHeading; // iOS
    else if (e.absolute && typeof e.alpha === "number") deg = (360 - e.alpha) % 360;
    // A relative alpha (not tied to north) would say nothing about facing backward: skip it.
    if (deg !== null && Number.isFinite(deg)) this.heading = { deg, at: Date.now() };
  }

  async lockScreen() {
    if (!navigator.wakeLock || this.wakeLock) return;
    try {
      this.wakeLock = await navigator.wakeLock.request("screen");
      this.wakeLock.addEventListener("release", () => { this.wakeLock = null; });
    } catch {
      this.wakeLock = null; // battery saver or a hidden page: the run records anyway
    }
    this.onUpdate(this);
  }

  /** One fix, from the GPS callback or the test hook: totals updated, buffered in order. */
  accept(raw) {
    const fix = clean(raw);
    if (fix.heading === undefined && this.heading && Date.now() - this.heading.at < HEADING_FRESH_MS) {
      fix.heading = Math.round(this.heading.deg * 10) / 10;
    }
    const run = this.run;
    const seq = run.fixCount;
    run.fixCount += 1;
    run.firstT ??= fix.t;
    run.lastT = fix.t;
    run.lastAcc = fix.acc ?? null;
    if (fix.acc === undefined || fix.acc <= MAX_ACC_M) {
      const here = { lat: fix.lat, lon: fix.lon };
      if (!run.anchor) {
        run.anchor = here;
      } else {
        const d = haversine(run.anchor, here);
        // Count a step only once it clears the noise, so standing still adds nothing.
        if (d >= Math.max(3, 0.5 * (fix.acc ?? 6))) {
          run.distance_m += d;
          run.anchor = here;
        }
      }
    }
    const snapshot = { ...run };
    this.writes = this.writes
      .then(async () => (await runStore()).addFix(snapshot, seq, fix))
      .catch((err) => { this.storeError = err?.message || "could not save a fix"; });
    this.onUpdate(this);
    return this.writes;
  }

  /** Stop sensors; the run becomes `pending` (waiting for upload) once every fix is written. */
  async stop() {
    this.running = false;
    if (this.watchId !== null) navigator.geolocation.clearWatch(this.watchId);
    this.watchId = null;
    window.removeEventListener(this.orientationEvent, this.onOrientation);
    document.removeEventListener("visibilitychange", this.onVisible);
    if (this.wakeLock) await this.wakeLock.release().catch(() => {});
    this.wakeLock = null;
    await this.writes;
    this.run.state = "pending";
    this.run.stoppedAt = Date.now();
    await (await runStore()).putRun({ ...this.run });
    return this.run;
  }

  /** Stop sensors without changing the run (leaving the screen; the run stays `recording`). */
  detach() {
    this.running = false;
    if (this.watchId !== null) navigator.geolocation.clearWatch(this.watchId);
    this.watchId = null;
    window.removeEventListener(this.orientationEvent, this.onOrientation);
    document.removeEventListener("visibilitychange", this.onVisible);
    if (this.wakeLock) this.wakeLock.release().catch(() => {});
    this.wakeLock = null;
  }

  get elapsed_s() { return (Date.now() - this.run.startedAt) / 1000; }
  get fixSpan_s() {
    return this.run.firstT === null ? 0 : this.run.lastT - this.run.firstT;
  }
  get compass() {
    return this.heading && Date.now() - this.heading.at < HEADING_FRESH_MS;
  }
}
